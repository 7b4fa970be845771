"""The one filesystem helper: output directories, directory locks and all-or-nothing writes.

Every file onnxdual writes for a user (reports, checkpoints, trained models, manifests) goes through here.

* One file (:func:`atomic_write`): written to a hidden temporary file next to the target (same file
  system), fsynced, then moved into place with :func:`os.replace`, which is atomic.
* A set of files that belong together (a report: :func:`write_files_atomically`): written into a fresh
  hidden sibling directory, which is then swapped with the target directory in **one** atomic rename
  (``renameat2(RENAME_EXCHANGE)``), so a reader, or whatever a kill or an I/O error leaves behind, sees the
  whole old set or the whole new one, never a mix. Other files already in the target directory are carried
  into the new one as hard links (their contents are never copied or rewritten); a target holding folders
  is refused, since those cannot be carried over atomically.
* Writers of a directory hold its lock (:func:`lock_dir`), so two concurrent runs on one directory cannot
  both succeed silently: the second gets an error at once.
* Temporary files and directories left by a killed process (its pid is no longer running) are removed the
  next time the directory is written (:func:`clean_stale_temps`).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from onnxdual.errors import InvalidInputError, OutputBusyError

#: ``.NAME.PID.HEX12.tmp``: a temporary file of :func:`atomic_write`
_TEMP_FILE = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{12}\.tmp$")
#: ``.NAME.onnxdual-new.PID.XXXX`` / ``.NAME.onnxdual-old.PID.XXXX``: a staged or replaced file set
_TEMP_DIR = re.compile(r"^\.(.+)\.onnxdual-(new|old)\.(\d+)\.[^.]+$")
_RENAME_EXCHANGE = 2


class WrittenFiles(dict):
    """``file name -> path`` of a set written by :func:`write_files_atomically`; ``replaced`` says whether
    the directory held a file of the same name before (a previous report was replaced)."""

    def __init__(self, paths: Mapping[str, Path], replaced: bool):
        super().__init__(paths)
        self.replaced = replaced


def prepare_dir(path: str | os.PathLike[str], what: str = "output directory") -> Path:
    """Create ``path`` (with parents) or raise :class:`InvalidInputError` saying why it cannot be used.

    ``what`` names the directory in the message (``"report directory"``, ``"output directory"``).
    """
    if os.fspath(path).strip() == "":
        raise InvalidInputError(f"the {what} must not be an empty path")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{what} {str(out)!r} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"cannot create {what} {str(out)!r}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InvalidInputError(f"{what} {str(out)!r} is not writable")
    return out


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temps(directory: str | os.PathLike[str]) -> list[str]:
    """Remove the temporary files and staged/replaced sets in ``directory`` whose writing process is no
    longer running (a killed run's leftovers); return their names. Best effort: errors are ignored."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        m_file, m_dir = _TEMP_FILE.match(entry.name), _TEMP_DIR.match(entry.name)
        try:
            if m_file and entry.is_file(follow_symlinks=False) and not _alive(int(m_file.group(1))):
                os.unlink(entry.path)
                removed.append(entry.name)
            elif m_dir and entry.is_dir(follow_symlinks=False) and not _alive(int(m_dir.group(3))):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.name)
        except OSError:
            pass
    return removed


@contextmanager
def lock_dir(path: str | os.PathLike[str], what: str = "output directory") -> Iterator[None]:
    """Hold an exclusive lock on the directory ``path`` (``flock``; released when the block ends or the
    process dies). Raises :class:`OutputBusyError` at once when another process holds it."""
    for _ in range(10):  # the directory may be swapped between open and lock: lock the one at ``path``
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise InvalidInputError(f"cannot open {what} {os.fspath(path)!r}: "
                                    f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OutputBusyError(f"another onnxdual run is writing to {what} {os.fspath(path)!r}; "
                                      "wait for it or choose another directory") from None
            raise InvalidInputError(f"cannot lock {what} {os.fspath(path)!r}: "
                                    f"{exc.strerror or exc}") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    else:
        raise OutputBusyError(f"{what} {os.fspath(path)!r} keeps being replaced by another process")
    try:
        yield
    finally:
        os.close(fd)


def _temp_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def _write_file(path: Path, data: str | bytes) -> None:
    """Write ``data`` to the new file ``path``, fsynced; on failure the file is removed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, like a normal file
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path, strict: bool = False) -> None:
    """Persist the directory entries. Best effort after a rename (not possible on every platform); with
    ``strict`` an error is raised, for a staged set that must be on disk before it replaces the old one."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if strict:
            raise
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if strict and exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # a file system without directory fsync
            raise
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path``: a reader sees the old file or the new one, never
    a partial one. OS errors propagate (callers that face users wrap them)."""
    target = Path(path)
    tmp = _temp_path(target)
    _write_file(tmp, data)
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_libc = None


def _exchange(a: Path, b: Path) -> None:
    """Swap the directory entries ``a`` and ``b`` atomically (Linux ``renameat2(RENAME_EXCHANGE)``).
    Raises ``OSError`` (``ENOSYS``/``EINVAL`` where the system or file system cannot)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def _restore_interrupted_swap(target: Path) -> None:
    """Where a swap without ``RENAME_EXCHANGE`` was killed between its two renames, ``target`` is missing
    and the previous set waits in a replaced-set sibling of a dead process: put it back."""
    if target.exists() or target.is_symlink():
        return
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return
    for entry in entries:
        m = _TEMP_DIR.match(entry.name)
        if m and m.group(1) == target.name and m.group(2) == "old" and not _alive(int(m.group(3))):
            try:
                os.rename(entry.path, target)
            except OSError:
                continue
            return


def _carry_over(old: Path, new: Path, names: set[str], what: str) -> bool:
    """Hard-link every other file of ``old`` into ``new`` (symlinks are recreated); return whether ``old``
    held one of ``names``. Refuses folders and special files, which cannot be carried over atomically."""
    replaced = False
    for entry in os.scandir(old):
        if _TEMP_FILE.match(entry.name):
            continue
        if entry.name in names:
            replaced = True
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), new / entry.name)
        elif entry.is_file(follow_symlinks=False):
            os.link(entry.path, new / entry.name, follow_symlinks=False)
        else:
            raise InvalidInputError(f"{what} {str(old)!r} holds {entry.name!r}, which is not a plain file: "
                                    "a report is swapped in as a whole directory; "
                                    "choose a directory of its own")
    return replaced


def write_files_atomically(out: str | os.PathLike[str], contents: Mapping[str, str | bytes],
                           what: str = "report directory") -> WrittenFiles:
    """Write every ``name -> text or bytes`` of ``contents`` into the directory ``out``, all or nothing
    (module docstring): the set is written into a fresh sibling directory with ``out``'s other files linked
    in, which then replaces ``out`` in one atomic exchange.

    Raises:
        InvalidInputError: ``out`` cannot be used (it is the current directory or holds it, holds folders,
            cannot be created) or a file could not be written; ``out`` is then left as it was.
        OutputBusyError: another process is writing to ``out``.
    """
    if os.fspath(out).strip() == "":
        raise InvalidInputError(f"the {what} must not be an empty path")
    target = Path(os.path.abspath(out))
    if target.is_symlink():
        target = target.resolve()
    cwd = Path.cwd()
    if target == cwd or target in cwd.parents:
        raise InvalidInputError(f"{what} {os.fspath(out)!r} is the current directory or holds it: a report "
                                "is swapped in as a whole directory; choose a directory of its own")
    _restore_interrupted_swap(target)
    prepare_dir(target, what)
    with lock_dir(target, what):
        clean_stale_temps(target)
        clean_stale_temps(target.parent)
        staging: Path | None = None
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.onnxdual-new.{os.getpid()}.",
                                            dir=target.parent))
            with lock_dir(staging, what):
                for name, data in contents.items():
                    _write_file(staging / name, data)
                replaced = _carry_over(target, staging, set(contents), what)
                os.chmod(staging, stat.S_IMODE(os.stat(target).st_mode))
                _fsync_dir(staging, strict=True)
                try:
                    _exchange(staging, target)
                    old = staging
                except OSError as exc:
                    if exc.errno not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
                        raise
                    old = target.with_name(staging.name.replace(".onnxdual-new.", ".onnxdual-old.", 1))
                    os.rename(target, old)  # a kill here is undone by _restore_interrupted_swap
                    os.rename(staging, target)
                staging = old  # now holds the previous set
                _fsync_dir(target.parent)
        except OSError as exc:
            raise InvalidInputError(f"cannot write {what} {os.fspath(out)!r}: "
                                    f"{exc.strerror or exc}") from None
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
    return WrittenFiles({name: Path(out) / name for name in contents}, replaced)
