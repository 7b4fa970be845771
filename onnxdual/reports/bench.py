"""Report of a benchmark run (``onnxdual bench``): ``results.csv``, ``summary.csv``, ``summary.json`` and a
self-contained ``report.html`` (same jinja2 environment and look as the certification report; no scripts),
with a cactus plot of the instances solved within a time (:func:`onnxdual.reports.curves.cactus`).

    from onnxdual.reports.bench import write_bench_report
    paths = write_bench_report("out/", results, summary, meta, unsound=..., regressions=...)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup

from onnxdual.errors import InvalidInputError
from onnxdual.reports.curves import cactus
from onnxdual.reports.formatting import fmt_num, fmt_seconds, is_missing, to_jsonable
from onnxdual.reports.html import template_environment
from onnxdual.files import prepare_dir, write_files_atomically

BENCH_FILES: dict[str, str] = {
    "results_csv": "results.csv",
    "summary_csv": "summary.csv",
    "summary_json": "summary.json",
    "report_html": "report.html",
}

_ANSWER_ORDER = ("unsat", "sat", "unknown", "timeout", "unsupported", "error")


def _cell(value: Any, kind: str = "text") -> str:
    if is_missing(value):
        return "—"
    if kind == "seconds":
        return fmt_seconds(value)
    if kind == "num":
        return fmt_num(value)
    return str(value)


def render_bench_html(results: pd.DataFrame, summary: pd.DataFrame, meta: Mapping[str, Any],
                      unsound: list[dict] | None = None, regressions: list[dict] | None = None) -> str:
    """The benchmark report as one HTML document."""
    for name, frame in (("results", results), ("summary", summary)):
        if not isinstance(frame, pd.DataFrame):
            raise InvalidInputError(f"bench report: {name} must be a pandas DataFrame")
    has_truth = "verdict" in results.columns
    rows = []
    for r in results.to_dict(orient="records"):
        rows.append({
            "benchmark": r.get("benchmark", ""), "instance": r.get("instance", ""),
            "answer": r.get("answer", ""), "expected": r.get("expected", "") if has_truth else "",
            "verdict": r.get("verdict", "") if has_truth else "",
            "seconds": _cell(r.get("seconds"), "seconds"), "timeout": _cell(r.get("timeout"), "seconds"),
            "margin": _cell(r.get("best_margin"), "num"), "boxes": _cell(r.get("boxes")),
            "note": "" if is_missing(r.get("note")) else str(r.get("note")),
        })
    summary_rows = []
    for s in summary.to_dict(orient="records"):
        total = max(int(s.get("instances", 0)), 1)
        segments = [{"key": a, "count": int(s.get(a, 0)), "width": f"{100 * int(s.get(a, 0)) / total:.2f}%"}
                    for a in _ANSWER_ORDER]
        summary_rows.append({**{k: _cell(v) for k, v in s.items()}, "segments": segments,
                             "overall": s.get("benchmark") == "all"})
    overall = summary.iloc[-1].to_dict() if len(summary) else {}
    context = {
        "title": str(meta.get("title") or "Benchmark report"),
        "meta": [(k, json.dumps(to_jsonable(v)) if isinstance(v, (dict, list)) else str(v))
                 for k, v in meta.items() if k != "title" and v is not None],
        "rows": rows, "summary": summary_rows, "has_truth": has_truth,
        "answers": _ANSWER_ORDER,
        "overall": {a: int(overall.get(a, 0)) for a in _ANSWER_ORDER}
        | {"instances": int(overall.get("instances", 0)), "unsound": int(overall.get("unsound", 0) or 0),
           "correct": int(overall.get("correct", 0) or 0)},
        "unsound": unsound or [], "regressions": regressions or [],
        "cactus": Markup(cactus(results)) if {"benchmark", "answer", "seconds"} <= set(results.columns)
        and len(results) else None,
    }
    return template_environment().get_template("bench_report.html.j2").render(**context)


def write_bench_report(out_dir: str | os.PathLike[str], results: pd.DataFrame, summary: pd.DataFrame,
                       meta: Mapping[str, Any], *, unsound: list[dict] | None = None,
                       regressions: list[dict] | None = None) -> dict[str, Path]:
    """Write ``results.csv``, ``summary.csv``, ``summary.json`` and ``report.html`` into ``out_dir``, all or
    nothing. Returns ``{key: path}`` for the keys of :data:`BENCH_FILES`."""
    out = Path(out_dir)
    prepare_dir(out, "report directory")
    document = {"meta": to_jsonable(dict(meta)), "summary": to_jsonable(summary.to_dict(orient="records")),
                "unsound": to_jsonable(unsound or []), "regressions": to_jsonable(regressions or [])}
    contents = {
        BENCH_FILES["results_csv"]: results.to_csv(index=False, lineterminator="\n"),
        BENCH_FILES["summary_csv"]: summary.to_csv(index=False, lineterminator="\n"),
        BENCH_FILES["summary_json"]: json.dumps(document, indent=2, allow_nan=False) + "\n",
        BENCH_FILES["report_html"]: render_bench_html(results, summary, meta, unsound, regressions),
    }
    paths = write_files_atomically(out, contents)
    return {key: paths[name] for key, name in BENCH_FILES.items()}
