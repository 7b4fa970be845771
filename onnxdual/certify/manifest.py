"""The cascade manifest format, defined once: what ``onnxdual train --cascade`` writes and what
``onnxdual certify cascade.json`` reads (Alg. 2's stages, in order).

A manifest is a JSON object ``{"format": "onnxdual-cascade", "version": 1, "stages": [{"onnx": FILE, ...}],
...}``; stage files are relative to the manifest's folder. Training adds its own keys (config, indices of
each stage's training set, completion); readers ignore keys they do not know.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from onnxdual.errors import ModelLoadError
from onnxdual.files import atomic_write

#: the manifest's file name inside a cascade's output directory
MANIFEST = "cascade.json"
#: the value of the manifest's ``format`` key
CASCADE_FORMAT = "onnxdual-cascade"
MANIFEST_VERSION = 1


def is_manifest_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a cascade manifest (a ``.json`` file) rather than one ONNX model."""
    return Path(path).suffix.lower() == ".json"


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest at ``path``, checked to be an onnxdual cascade with a non-empty ``stages`` list.

    Raises:
        ModelLoadError: the file is missing, unreadable, not JSON or not a cascade manifest.
    """
    p = Path(path)
    try:
        manifest = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise ModelLoadError(f"cascade manifest not found: {p}") from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read cascade manifest {p}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != CASCADE_FORMAT or \
            not isinstance(manifest.get("stages"), list) or not manifest["stages"]:
        raise ModelLoadError(f"{p} is not an onnxdual cascade manifest (format '{CASCADE_FORMAT}' "
                             "with a non-empty 'stages' list)")
    return manifest


def stage_files(manifest: Mapping[str, Any], path: str | os.PathLike[str]) -> list[Path]:
    """The ONNX file of every stage of ``manifest`` (read from ``path``), in order, resolved against the
    manifest's folder.

    Raises:
        ModelLoadError: a stage names no ONNX file.
    """
    p = Path(path)
    files = []
    for i, entry in enumerate(manifest["stages"], 1):
        file = entry.get("onnx") if isinstance(entry, dict) else None
        if not isinstance(file, str):
            raise ModelLoadError(f"{p}: stage {i} has no 'onnx' file name")
        files.append((p.parent / file).resolve())
    return files


def write_manifest(out: Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest`` as ``out/cascade.json`` atomically (a reader sees the old or the new one)."""
    target = out / MANIFEST
    atomic_write(target, (json.dumps(dict(manifest), indent=2) + "\n").encode())
    return target
