"""The cascade manifest format, defined once: what ``onnxdual train --cascade`` writes and what
``onnxdual certify cascade.json`` reads (Alg. 2's stages, in order).

A manifest is a JSON object ``{"format": "onnxdual-cascade", "version": 1, "stages": [{"onnx": FILE, ...}],
...}``; stage files are relative to the manifest's folder and must stay inside it (unless the reader is told
otherwise). Training adds its own keys (config, indices of each stage's training set, completion); readers
ignore keys they do not know. JSON nested deeper than :data:`MAX_DEPTH` is refused before it is parsed
(``json`` would recurse).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

from onnxdual.errors import ModelLoadError
from onnxdual.files import atomic_write
from onnxdual.inputfiles import contained, read_bytes

#: the manifest's file name inside a cascade's output directory
MANIFEST = "cascade.json"
#: the value of the manifest's ``format`` key
CASCADE_FORMAT = "onnxdual-cascade"
MANIFEST_VERSION = 1
#: the deepest JSON nesting a manifest may have (a written one nests 4 levels)
MAX_DEPTH = 64
_JSON_TOKEN_RE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _check_depth(text: str, p: Path) -> None:
    depth = 0
    for m in _JSON_TOKEN_RE.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ModelLoadError(f"cannot read cascade manifest {p}: nested too deeply (more than "
                                     f"{MAX_DEPTH} levels of arrays/objects)")
        elif c in "]}":
            depth -= 1


def is_manifest_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a cascade manifest (a ``.json`` file) rather than one ONNX model."""
    return Path(path).suffix.lower() == ".json"


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest at ``path``, checked to be an onnxdual cascade with a non-empty ``stages`` list.

    Raises:
        ModelLoadError: the file is missing, unreadable, not JSON or not a cascade manifest.
    """
    p = Path(path)
    data = read_bytes(p, "cascade manifest", ModelLoadError, gunzip=False)
    try:
        text = data.decode("utf-8")
        _check_depth(text, p)
        manifest = json.loads(text)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError
        raise ModelLoadError(f"cannot read cascade manifest {p}: {str(exc)[:200]}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CASCADE_FORMAT or \
            not isinstance(manifest.get("stages"), list) or not manifest["stages"]:
        raise ModelLoadError(f"{p} is not an onnxdual cascade manifest (format '{CASCADE_FORMAT}' "
                             "with a non-empty 'stages' list)")
    return manifest


def stage_files(manifest: Mapping[str, Any], path: str | os.PathLike[str], *,
                allow_outside: bool = False) -> list[Path]:
    """The ONNX file of every stage of ``manifest`` (read from ``path``), in order, resolved against the
    manifest's folder (never the current directory).

    Raises:
        ModelLoadError: a stage names no ONNX file, or one outside the manifest's folder (absolute, ``..``,
            a symlink out) unless ``allow_outside``.
    """
    p = Path(path)
    files = []
    for i, entry in enumerate(manifest["stages"], 1):
        file = entry.get("onnx") if isinstance(entry, dict) else None
        if not isinstance(file, str):
            raise ModelLoadError(f"{p}: stage {i} has no 'onnx' file name")
        files.append(contained(p.parent, file, f"{p}: stage {i} file", ModelLoadError,
                               allow_outside=allow_outside))
    return files


def write_manifest(out: Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest`` as ``out/cascade.json`` atomically (a reader sees the old or the new one)."""
    target = out / MANIFEST
    atomic_write(target, (json.dumps(dict(manifest), indent=2) + "\n").encode())
    return target
