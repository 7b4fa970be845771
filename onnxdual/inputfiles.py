"""Reading the files a user names (models, properties, manifests, external tensor data): regular files only,
a bounded decompressed size for gzip, and paths that a file names resolved inside its own folder.

Every read of a user-named input goes through here, so the same rules hold everywhere:

* only regular files are read: a FIFO would block forever and ``/dev/zero`` never ends, so both are refused
  before any byte is read (the file is opened non-blocking and checked with ``fstat``);
* a gzip-compressed file is decompressed in chunks up to :func:`max_decompressed_bytes` (default
  :data:`DEFAULT_MAX_DECOMPRESSED`, ``ONNXDUAL_MAX_DECOMPRESSED_BYTES`` overrides it); a larger result (a
  decompression bomb) is refused with the limit in the message instead of exhausting memory;
* a path *inside* a file (ONNX external data, a cascade's stage) is resolved against that file's folder,
  never the current directory, and refused when it leaves the folder (absolute, ``..``, a symlink out).
"""

from __future__ import annotations

import os
import stat
import zlib
from pathlib import Path

from onnxdual.errors import OnnxDualError

#: default limit on the decompressed size of a ``.gz`` input (bytes); larger than any VNN-COMP model
DEFAULT_MAX_DECOMPRESSED = 2**30
#: environment variable that overrides :data:`DEFAULT_MAX_DECOMPRESSED` (a number of bytes)
MAX_DECOMPRESSED_ENV = "ONNXDUAL_MAX_DECOMPRESSED_BYTES"
_CHUNK = 1 << 20


def max_decompressed_bytes() -> int:
    """The limit on a decompressed ``.gz`` input: ``$ONNXDUAL_MAX_DECOMPRESSED_BYTES`` or the default."""
    text = os.environ.get(MAX_DECOMPRESSED_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_DECOMPRESSED
    try:
        value = int(text)
    except ValueError:
        raise OnnxDualError(f"{MAX_DECOMPRESSED_ENV}={text!r} is not a number of bytes") from None
    if value < 1:
        raise OnnxDualError(f"{MAX_DECOMPRESSED_ENV} must be positive, got {value}")
    return value


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_path(path: str | os.PathLike[str], what: str, error: type[OnnxDualError]) -> Path:
    """``path`` as a :class:`Path`, refusing a name the operating system cannot hold (a NUL byte)."""
    text = os.fspath(path)
    if "\0" in str(text):
        raise error(f"{what} path {str(text)!r} contains a NUL byte")
    return Path(text)


def read_bytes(path: str | os.PathLike[str], what: str, error: type[OnnxDualError], *,
               gunzip: bool = True) -> bytes:
    """The bytes of the regular file ``path``, gunzipped when they start with the gzip magic and ``gunzip``.
    ``what`` names the file in messages (``"model file"``); failures raise ``error``."""
    p = check_path(path, what, error)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{what} not found: {p}") from None
    except IsADirectoryError:
        raise error(f"{what} is a directory: {p}") from None
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {_reason(exc)}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise error(f"{what} is a directory: {p}")
        if not stat.S_ISREG(mode):
            raise error(f"{what} {p} is not a regular file (a pipe, device or socket cannot be read)")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            head = f.read(2)
            if gunzip and head == b"\x1f\x8b":
                return _gunzip(f, head, p, what, error)
            return head + f.read()
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {_reason(exc)}") from None
    finally:
        os.close(fd)


def _gunzip(f, head: bytes, p: Path, what: str, error: type[OnnxDualError]) -> bytes:
    """Decompress the (possibly multi-member) gzip stream ``head + f`` up to the configured limit."""
    limit = max_decompressed_bytes()
    out = bytearray()
    decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending = head
    try:
        while True:
            if not pending:
                pending = f.read(_CHUNK)
                if not pending:
                    break
            # max_length (>= 1) keeps each step's output bounded: a bomb never expands past the limit
            out += decomp.decompress(pending, limit + 1 - len(out))
            if len(out) > limit:
                raise error(f"{what} {p} decompresses to more than {limit} bytes (the limit; set "
                            f"{MAX_DECOMPRESSED_ENV} to raise it)")
            pending = decomp.unconsumed_tail
            if decomp.eof:
                rest = decomp.unused_data or f.read(_CHUNK)
                if not rest.strip(b"\0"):
                    return bytes(out)  # end of file, or zero padding (which gzip accepts too)
                if rest[:2] != b"\x1f\x8b":
                    raise error(f"cannot read {what} {p}: trailing garbage after the gzip data")
                decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)  # the next gzip member
                pending = rest
    except zlib.error as exc:
        raise error(f"cannot read {what} {p}: corrupt gzip data ({exc})") from None
    raise error(f"cannot read {what} {p}: truncated gzip data")


def contained(folder: str | os.PathLike[str], name: str, what: str, error: type[OnnxDualError], *,
              allow_outside: bool = False) -> Path:
    """``name`` (a path written inside a file) resolved against ``folder``, the folder of that file.

    Refused unless it stays inside ``folder`` after resolving ``..`` and symlinks (``allow_outside`` lifts
    that for a user who asked for it explicitly). Never resolved against the current directory."""
    check_path(name, what, error)
    if not name:
        raise error(f"{what}: empty file name")
    base = Path(folder).resolve()
    target = (base / name).resolve()
    if not allow_outside and target != base and base not in target.parents:
        raise error(f"{what} {name!r} leaves the folder {str(base)!r} (absolute paths, '..' and symlinks "
                    "out of it are refused)")
    return target
