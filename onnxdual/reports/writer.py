"""Write a certification report to a directory: ``examples.csv``, ``summary.csv``, ``summary.json`` and
``report.html``, all or nothing.

Every file is first rendered in memory, then written through :mod:`onnxdual.files`: to a hidden temporary
file in the target directory, fsynced; only when all four are on disk are they moved into place with
:func:`os.replace`, which is atomic per file. So a failure while rendering or writing leaves the directory
exactly as it was (temporary files are removed), and a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from onnxdual.files import prepare_dir, write_files_atomically
from onnxdual.reports.formatting import to_jsonable
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
    prepare_dir(out, "report directory")
    contents = {
        REPORT_FILES["examples_csv"]: examples.to_csv(index=False, lineterminator="\n"),
        REPORT_FILES["summary_csv"]: summary.to_csv(index=False, lineterminator="\n"),
        REPORT_FILES["summary_json"]: summary_json(summary, meta, cascade),
        REPORT_FILES["report_html"]: render_html(examples, summary, meta, cascade),
    }
    paths = write_files_atomically(out, contents)
    return {key: paths[name] for key, name in REPORT_FILES.items()}
