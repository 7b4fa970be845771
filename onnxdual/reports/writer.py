"""Write a certification report to a directory: ``examples.csv``, ``summary.csv``, ``summary.json`` and
``report.html``, all or nothing.

Every file is first rendered in memory, then the set is written through
:func:`onnxdual.files.write_files_atomically`: into a fresh hidden sibling directory, swapped with the
target in one atomic rename. So a failure or a kill while rendering or writing leaves the previous report
whole (the stale staging directory is removed by the next write), a reader never sees a mix of two reports,
and a concurrent writer of the same directory gets an error instead of silently interleaving.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from onnxdual.files import WrittenFiles, write_files_atomically
from onnxdual.reports.formatting import to_jsonable
from onnxdual.reports.html import check_frames, render_html

REPORT_FILES: dict[str, str] = {
    "examples_csv": "examples.csv",
    "summary_csv": "summary.csv",
    "summary_json": "summary.json",
    "report_html": "report.html",
}
"""Keys of :func:`write_certify_report`'s result and the file name each stands for."""

SUMMARY_DIGITS = {"clean_accuracy": 6, "certified_accuracy": 6, "pgd_accuracy": 6,
                  "cumulative_certified_accuracy": 6, "standard_accuracy_stage_alone": 6,
                  "robust_accuracy_stage_alone": 6, "examples_per_second": 3, "seconds": 3}
"""Decimals a summary column is written with (``summary.csv``, ``summary.json``): accuracies to a millionth
(finer than one example in 10^5), rates and durations to a millisecond; other columns as they are."""


def rounded(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its :data:`SUMMARY_DIGITS` columns rounded (a copy; missing values stay missing)."""
    digits = {c: d for c, d in SUMMARY_DIGITS.items() if c in frame.columns}
    out = frame.copy()
    for column, d in digits.items():
        values = pd.to_numeric(out[column], errors="coerce")
        if values.notna().sum() == out[column].notna().sum():  # numbers only: round; else leave it be
            out[column] = values.round(d)
    return out


def summary_json(summary: pd.DataFrame, meta: Mapping[str, Any], cascade: pd.DataFrame | None = None) -> str:
    """The text of ``summary.json``: ``{"meta": ..., "summary": [records], "cascade": [records] | null}``.

    numpy values become plain JSON numbers and NaN/±inf/NA become ``null``, so the result is strict JSON;
    numbers are rounded as in ``summary.csv`` (:data:`SUMMARY_DIGITS`).
    """
    document = {
        "meta": to_jsonable(dict(meta)),
        "summary": to_jsonable(rounded(summary).to_dict(orient="records")),
        "cascade": None if cascade is None else to_jsonable(rounded(cascade).to_dict(orient="records")),
    }
    return json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_certify_report(out_dir: str | os.PathLike[str], examples: pd.DataFrame, summary: pd.DataFrame,
                         meta: Mapping[str, Any], cascade: pd.DataFrame | None = None, *,
                         adversarials: pd.DataFrame | None = None) -> WrittenFiles:
    """Write ``examples.csv``, ``summary.csv``, ``summary.json`` and ``report.html`` into ``out_dir``.

    The directory is created if missing. Everything is rendered before anything is written, and the set
    replaces the directory's previous one in one atomic swap (:func:`write_files_atomically`; other plain
    files in ``out_dir`` are kept): on any error no partial or temporary file is left and ``out_dir`` is
    untouched.

    Args:
        out_dir: target directory.
        examples, summary, meta, cascade, adversarials: as for :func:`onnxdual.reports.render_html`.
            ``examples.csv`` holds the examples as given, ``summary.csv`` the summary with its accuracies,
            rates and durations rounded (:data:`SUMMARY_DIGITS`), no index column; ``summary.json`` is
            ``{"meta": meta, "summary": records, "cascade": records or null}`` with NaN as ``null``.

    Returns:
        ``{"examples_csv": path, "summary_csv": path, "summary_json": path, "report_html": path}``
        (see :data:`REPORT_FILES`), whose ``replaced`` attribute says whether a previous report was replaced.

    Raises:
        InvalidInputError: bad inputs, or ``out_dir`` cannot be created or written (or is the current
            directory, or holds folders).
        OutputBusyError: another run is writing to ``out_dir``.
    """
    check_frames(examples, summary, cascade, meta)
    contents = {
        REPORT_FILES["examples_csv"]: examples.to_csv(index=False, lineterminator="\n"),
        REPORT_FILES["summary_csv"]: rounded(summary).to_csv(index=False, lineterminator="\n"),
        REPORT_FILES["summary_json"]: summary_json(summary, meta, cascade),
        REPORT_FILES["report_html"]: render_html(examples, summary, meta, cascade, adversarials=adversarials),
    }
    paths = write_files_atomically(out_dir, contents, "report directory")
    return WrittenFiles({key: paths[name] for key, name in REPORT_FILES.items()}, paths.replaced)
