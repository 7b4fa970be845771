"""Entry point: read a VNN-LIB file (or text), detect its version and hand it to the right reader."""

from __future__ import annotations

import gc
import os
import re

from onnxdual.inputfiles import read_bytes
from onnxdual.specs.model import Property, SpecError

_COMMENT_RE = re.compile(r";[^\n]*")
_V2_RE = re.compile(r"\(\s*(?:vnnlib-version|declare-network)\b")


def detect_version(text: str) -> str:
    """``"2.0"`` if the text has a ``(vnnlib-version ...)`` or ``(declare-network ...)`` command outside
    comments, else ``"1.0"``."""
    return "2.0" if _V2_RE.search(_COMMENT_RE.sub("", text)) else "1.0"


def read_text(path: str | os.PathLike) -> str:
    """Contents of a ``.vnnlib`` (or gzip-compressed ``.vnnlib.gz``) file; :class:`SpecError` if
    unreadable (only regular files are read; see :mod:`onnxdual.inputfiles`)."""
    return read_bytes(path, "property file", SpecError).decode("utf-8", errors="replace")


def parse_vnnlib(path_or_text: str | os.PathLike, *, name: str | None = None) -> Property:
    """Parse a VNN-LIB property into a :class:`~onnxdual.specs.Property`.

    ``path_or_text``: a path (``str`` or ``os.PathLike``; ``.gz`` is decompressed) or the property text
    itself; a ``str`` containing ``(`` is taken as text. ``name`` overrides the name used in error
    messages and in ``Property.source`` (default: the path, or ``"<string>"``). Text read from a file is
    passed to :func:`parse_vnnlib_text`, never back here: a file's content is never taken as a path.
    """
    if isinstance(path_or_text, str) and "(" in path_or_text:
        return parse_vnnlib_text(path_or_text, name=name or "<string>")
    return parse_vnnlib_text(read_text(path_or_text), name=name or str(path_or_text))


def parse_vnnlib_text(text: str, *, name: str = "<string>") -> Property:
    """Parse the VNN-LIB text ``text`` (whatever it holds: it is never opened as a path).

    VNN-LIB 1.0 (VNN-COMP) is read by our own parser (:mod:`onnxdual.specs.vnnlib1`), 2.0 through the
    reference parser (:mod:`onnxdual.specs.vnnlib2`). Raises :class:`~onnxdual.specs.SpecError`.
    """
    if not _COMMENT_RE.sub("", text).strip():
        raise SpecError(f"{name}: the property file holds no VNN-LIB commands (it is empty or only comments)")
    if detect_version(text) == "2.0":
        from onnxdual.specs.vnnlib2 import parse_vnnlib2 as parse
    else:
        from onnxdual.specs.vnnlib1 import parse_vnnlib1 as parse
    # Parsing allocates tens of thousands of small containers that all stay alive until the end: the cyclic
    # garbage collector would repeatedly scan them for nothing (it roughly doubles the time on 3072-input
    # files). Pause it for the duration and restore the previous state.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return parse(text, name)
    finally:
        if was_enabled:
            gc.enable()
