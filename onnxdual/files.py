"""The one filesystem helper: output directories and all-or-nothing writes.

Every file onnxdual writes for a user (reports, checkpoints, trained models, manifests) goes through here.
A file is first written to a hidden temporary file in the target directory (same file system) and fsynced;
only then is it moved into place with :func:`os.replace`, which is atomic per file. A group of files is moved
into place only once every one of them is on disk, so a failure leaves the directory exactly as it was
(temporary files are removed) and a reader never sees a half-written file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path

from onnxdual.errors import InvalidInputError


def prepare_dir(path: str | os.PathLike[str], what: str = "output directory") -> Path:
    """Create ``path`` (with parents) or raise :class:`InvalidInputError` saying why it cannot be used.

    ``what`` names the directory in the message (``"report directory"``, ``"output directory"``).
    """
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


def _temp_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def _write_temp(target: Path, data: str | bytes) -> Path:
    """Write ``data`` to a new hidden temporary file next to ``target``, fsynced; return its path."""
    tmp = _temp_path(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, like a normal file
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _fsync_dir(path: Path) -> None:
    """Persist the directory entries after renames (best effort; not possible on every platform)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path``: a reader sees the old file or the new one, never
    a partial one. OS errors propagate (callers that face users wrap them)."""
    target = Path(path)
    tmp = _write_temp(target, data)
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_files_atomically(out: Path, contents: Mapping[str, str | bytes],
                           what: str = "report files") -> dict[str, Path]:
    """Write every ``name -> text or bytes`` of ``contents`` into ``out``, all or nothing (module docstring).

    Raises:
        InvalidInputError: a file could not be written (the directory is left unchanged).
    """
    temps: dict[str, Path] = {}
    try:
        for name, data in contents.items():
            temps[name] = _write_temp(out / name, data)
        for name, tmp in temps.items():
            os.replace(tmp, out / name)
    except OSError as e:
        raise InvalidInputError(f"cannot write {what} to {str(out)!r}: {e.strerror or e}") from None
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)  # no-op for the ones already moved into place
    _fsync_dir(out)
    return {name: out / name for name in contents}
