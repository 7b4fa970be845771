"""Write a certification report to a directory: ``examples.csv``, ``summary.csv``, ``summary.json`` and
``report.html``, all or nothing.

Every file is first rendered in memory, then written to a hidden temporary file in the target directory
(same file system) and fsynced; only when all four are on disk are they moved into place with
:func:`os.replace`, which is atomic per file. So a failure while rendering or writing leaves the directory
exactly as it was (temporary files are removed), and a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from onnxdual.errors import InvalidInputError
from onnxdual.reports._format import to_jsonable
from onnxdual.reports.html import check_frames, render_html

REPORT_FILES: dict[str, str] = {
    "examples_csv": "examples.csv",
    "summary_csv": "summary.csv",
    "summary_json": "summary.json",
    "report_html": "report.html",
}
"""Keys of :func:`write_certify_report`'s result and the file name each stands for."""


def summary_json(summary: pd.DataFrame, meta: Mapping[str, Any], cascade: pd.DataFrame | None = None) -> str:
    """The text of ``summary.json``: ``{"meta": ..., "summary": [records], "cascade": [records] | null}``.

    numpy values become plain JSON numbers and NaN/±inf/NA become ``null``, so the result is strict JSON.
    """
    document = {
        "meta": to_jsonable(dict(meta)),
        "summary": to_jsonable(summary.to_dict(orient="records")),
        "cascade": None if cascade is None else to_jsonable(cascade.to_dict(orient="records")),
    }
    return json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _prepare_dir(out: Path) -> None:
    """Create ``out`` (with parents) or raise :class:`InvalidInputError` saying why it cannot be used."""
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"report directory {str(out)!r} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidInputError(f"cannot create report directory {str(out)!r}: {e.strerror or e}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise InvalidInputError(f"report directory {str(out)!r} is not writable")


def _write_temp(out: Path, name: str, text: str) -> Path:
    """Write ``text`` to a new hidden temporary file next to ``out/name``, fsynced; return its path."""
    tmp = out / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & ~umask, like a normal file
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
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


def write_files_atomically(out: Path, contents: Mapping[str, str]) -> dict[str, Path]:
    """Write every ``name -> text`` of ``contents`` into ``out``, all or nothing (see the module docstring).

    Raises:
        InvalidInputError: a file could not be written (the directory is left unchanged).
    """
    temps: dict[str, Path] = {}
    try:
        for name, text in contents.items():
            temps[name] = _write_temp(out, name, text)
        for name, tmp in temps.items():
            os.replace(tmp, out / name)
    except OSError as e:
        raise InvalidInputError(f"cannot write report files to {str(out)!r}: {e.strerror or e}") from None
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)  # no-op for the ones already moved into place
    _fsync_dir(out)
    return {name: out / name for name in contents}


def write_certify_report(out_dir: str | os.PathLike[str], examples: pd.DataFrame, summary: pd.DataFrame,
                         meta: Mapping[str, Any], cascade: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write ``examples.csv``, ``summary.csv``, ``summary.json`` and ``report.html`` into ``out_dir``.

    The directory is created if missing. Everything is rendered before anything is written, and the files
    are moved into place only once all of them are written (:func:`write_files_atomically`): on any error
    no partial or temporary file is left and files already in ``out_dir`` are untouched.

    Args:
        out_dir: target directory.
        examples, summary, meta, cascade: as for :func:`onnxdual.reports.render_html`. The CSV files hold
            the DataFrames as given (no index column); ``summary.json`` is
            ``{"meta": meta, "summary": records, "cascade": records or null}`` with NaN as ``null``.

    Returns:
        ``{"examples_csv": path, "summary_csv": path, "summary_json": path, "report_html": path}``
        (see :data:`REPORT_FILES`).

    Raises:
        InvalidInputError: bad inputs, or ``out_dir`` cannot be created or written.
    """
    check_frames(examples, summary, cascade, meta)
    out = Path(out_dir)
    _prepare_dir(out)
    contents = {
        REPORT_FILES["examples_csv"]: examples.to_csv(index=False, lineterminator="\n"),
        REPORT_FILES["summary_csv"]: summary.to_csv(index=False, lineterminator="\n"),
        REPORT_FILES["summary_json"]: summary_json(summary, meta, cascade),
        REPORT_FILES["report_html"]: render_html(examples, summary, meta, cascade),
    }
    paths = write_files_atomically(out, contents)
    return {key: paths[name] for key, name in REPORT_FILES.items()}
