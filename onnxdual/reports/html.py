"""Render a certification result as one self-contained HTML page.

The page references nothing outside itself: CSS and the one small script (sorting and filtering the
per-example table; the page reads fine without it) are inline, charts are inline SVG drawn by matplotlib
(:mod:`onnxdual.reports.charts`), images are PNG data URIs (:mod:`onnxdual.reports.images`), and collapsing
uses ``<details>``. The template is ``templates/certify_report.html.j2`` (package data); this module and
:mod:`onnxdual.reports.examples` only turn DataFrames into plain, already-formatted values for it.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from onnxdual.errors import InvalidInputError
from onnxdual.reports.charts import accuracy_vs_eps, cascade_stages, margin_histograms, margin_scatter
from onnxdual.reports.examples import (OUTCOME_LABELS, bool_column, example_rows, gallery, outcomes,
                                       per_class_rows)
from onnxdual.reports.formatting import (
    MISSING,
    as_float,
    fmt_eps,
    fmt_int,
    fmt_norm,
    fmt_num,
    fmt_pct,
    fmt_points,
    fmt_rate,
    fmt_seconds,
    is_all_stage,
    is_missing,
    stage_key,
    stage_number,
    to_jsonable,
)

MAX_EXAMPLE_ROWS = 2000
"""Default cap on the rows of the per-example table (the CSV always has all of them)."""

EXAMPLES_REQUIRED = ("index", "eps", "certified", "margin_lower_bound")
SUMMARY_REQUIRED = ("eps", "stage", "n", "clean_accuracy", "certified_accuracy", "pgd_accuracy")
CASCADE_REQUIRED = ("eps", "stage", "certified_by_stage")

KNOWN_META = ("command", "model", "dataset", "norm", "bound", "device", "started", "seconds", "versions",
              "dual_layers")
"""Meta keys with a fixed place in the page; any other key goes to the "other details" table."""

STRONG_CERTIFIED = 0.8
"""Verdict "strongly certified": at least this share of *all* examples is certified (certified accuracy)."""
PARTIAL_CERTIFIED = 0.4
"""Verdict "partially certified": at least this share of all examples (below it: "weakly certified")."""

_ACCURACY_COLUMNS = ("clean_accuracy", "certified_accuracy", "pgd_accuracy", "cumulative_certified_accuracy",
                     "standard_accuracy_stage_alone", "robust_accuracy_stage_alone")


# --------------------------------------------------------------------------------------------- inputs


def check_frames(examples: Any, summary: Any, cascade: Any, meta: Any) -> None:
    """Raise :class:`InvalidInputError` (one line) unless the inputs have the types and columns needed."""
    for name, frame, required in (("examples", examples, EXAMPLES_REQUIRED),
                                  ("summary", summary, SUMMARY_REQUIRED),
                                  ("cascade", cascade, CASCADE_REQUIRED)):
        if frame is None and name == "cascade":
            continue
        if not isinstance(frame, pd.DataFrame):
            raise InvalidInputError(f"report: {name} must be a pandas DataFrame, got {type(frame).__name__}")
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise InvalidInputError(f"report: {name} is missing column(s) {', '.join(missing)}"
                                    f" (has: {', '.join(map(str, frame.columns)) or 'none'})")
    if not isinstance(meta, Mapping):
        raise InvalidInputError(f"report: meta must be a dict, got {type(meta).__name__}")


def _as_fractions(frame: pd.DataFrame) -> pd.DataFrame:
    """Accuracy columns as floats in [0, 1]. A column whose values exceed 1 is taken to be in percent."""
    out = frame.copy()
    for col in _ACCURACY_COLUMNS:
        if col in out.columns:
            values = pd.to_numeric(out[col], errors="coerce").astype(float)
            if values.max(skipna=True) > 1.0 + 1e-9:
                values = values / 100.0
            out[col] = values
    return out


# --------------------------------------------------------------------------------------------- verdicts


def is_probabilistic(bound: Any) -> bool:
    """True when the meta ``bound`` string describes a probabilistic (random-projection) bound."""
    return "probabilistic" in str(bound or "").lower()


def _bound_label(bound: Any) -> str:
    text = str(bound) if not is_missing(bound) and bound is not None else "unknown"
    text = re.sub(r"\bdelta\b", "δ", text)
    return text[:1].upper() + text[1:]


def _bound_delta(bound: Any) -> str | None:
    """The ``delta`` of a ``"probabilistic (delta=...)"`` bound string, if it names one."""
    match = re.search(r"(?:delta|δ)\s*=\s*([^\s),;]+)", str(bound or ""))
    return match.group(1) if match else None


def _verdict(cert: float | None, clean: float | None, pgd: float | None, conflicts: int,
             probabilistic: bool) -> dict[str, str]:
    """A short badge text, a CSS level (good/fair/weak/bad/neutral) and a one-line explanation."""
    if conflicts or (cert is not None and pgd is not None and cert > pgd + 1e-9):
        what = (f"{conflicts:,} certified example(s) were broken by PGD" if conflicts
                else "certified accuracy exceeds PGD accuracy")
        if probabilistic:
            return {"level": "fair", "label": "Conflicting evidence",
                    "why": f"{what}; a probabilistic bound may fail for a few examples."}
        return {"level": "bad", "label": "Inconsistent",
                "why": f"{what}, which an exact bound rules out. Please report this as a bug."}
    if cert is None:
        return {"level": "neutral", "label": "No certificate", "why": "No certified accuracy was recorded."}
    if cert <= 0:
        return {"level": "bad", "label": "Nothing certified",
                "why": "No example is provably robust at this radius."}
    # Absolute, not relative to clean accuracy: a model right on 23% of the data that certifies 22% is weak.
    share = f"{fmt_pct(cert)} of all examples are provably robust at this radius"
    if clean:
        share += f" ({fmt_pct(min(cert / clean, 1.0))} of the {fmt_pct(clean)} classified correctly)"
    if cert >= STRONG_CERTIFIED:
        return {"level": "good", "label": "Strongly certified", "why": share + "."}
    if cert >= PARTIAL_CERTIFIED:
        return {"level": "fair", "label": "Partially certified", "why": share + "."}
    return {"level": "weak", "label": "Weakly certified", "why": share + "."}


def _outcomes(cert: float | None, pgd: float | None, clean: float | None, n: float | None) -> list[dict]:
    """Segments of the outcome bar: certified | undecided | attacked | misclassified (fractions of n)."""
    c = min(max(cert or 0.0, 0.0), 1.0)
    a = min(max(clean if clean is not None else max(c, pgd or 0.0), c), 1.0)
    if pgd is None:
        parts = [("certified", "certified", c), ("undecided", "not certified (no attack run)", a - c),
                 ("misclassified", "misclassified", 1.0 - a)]
    else:
        p = min(max(pgd, c), a)
        parts = [("certified", "certified", c), ("undecided", "undecided", p - c),
                 ("attacked", "broken by PGD", a - p), ("misclassified", "misclassified", 1.0 - a)]
    out = []
    for key, label, frac in parts:
        frac = max(0.0, frac)
        count = fmt_int(frac * n) if n is not None else ""
        out.append({"key": key, "label": label, "fraction": frac, "width": f"{100.0 * frac:.3f}%",
                    "pct": fmt_pct(frac), "count": count})
    return out


# --------------------------------------------------------------------------------------------- context


def _stage_models(cascade: pd.DataFrame | None) -> dict[int, str]:
    if cascade is None or "model" not in cascade.columns:
        return {}
    out: dict[int, str] = {}
    for stage, model in zip(cascade["stage"], cascade["model"]):
        k = stage_number(stage)
        if k is not None and not is_missing(model) and k not in out:
            out[k] = str(model)
    return out


def _overall_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per eps describing the whole model/cascade: the ``'all'`` rows, else the first per eps."""
    is_all = summary["stage"].map(is_all_stage)
    rows = summary[is_all] if is_all.any() else summary
    rows = rows.assign(_k=rows["stage"].map(stage_key)).sort_values(["eps", "_k"], kind="stable")
    return rows.drop_duplicates("eps").drop(columns="_k")


def _eps_results(summary: pd.DataFrame, examples: pd.DataFrame, probabilistic: bool) -> list[dict]:
    certified = bool_column(examples, "certified")
    attacked = bool_column(examples, "pgd_success")
    results = []
    for _, row in _overall_rows(summary).iterrows():
        eps = row["eps"]
        on_eps = examples["eps"] == eps
        conflicts = int((certified & attacked & on_eps).sum())
        cert, pgd = as_float(row["certified_accuracy"]), as_float(row["pgd_accuracy"])
        clean, n = as_float(row["clean_accuracy"]), as_float(row["n"])
        results.append({
            "eps": eps, "eps_value": as_float(eps), "eps_text": fmt_eps(eps), "n": n, "n_text": fmt_int(n),
            "cert": cert, "pgd": pgd, "clean": clean,
            "cert_text": fmt_pct(cert), "pgd_text": fmt_pct(pgd), "clean_text": fmt_pct(clean),
            "gap_text": fmt_points(pgd - cert) if cert is not None and pgd is not None else MISSING,
            "rate_text": fmt_rate(row.get("examples_per_second")),
            "seconds_text": fmt_seconds(row.get("seconds")),
            "conflicts": conflicts,
            "verdict": _verdict(cert, clean, pgd, conflicts, probabilistic),
            "outcomes": _outcomes(cert, pgd, clean, n),
        })
    return results


def _pick_headline(results: list[dict], meta: Mapping[str, Any]) -> dict | None:
    """The eps the headline talks about: ``meta['eps']`` when it is one of them, else the largest eps."""
    if not results:
        return None
    wanted = as_float(meta.get("eps")) if not isinstance(meta.get("eps"), (list, tuple)) else None
    if wanted is not None:
        for r in results:
            if r["eps_value"] is not None and math.isclose(r["eps_value"], wanted, rel_tol=1e-9, abs_tol=1e-12):
                return r
    finite = [r for r in results if r["eps_value"] is not None]
    return max(finite, key=lambda r: r["eps_value"]) if finite else results[-1]


def _summary_rows(summary: pd.DataFrame, stage_models: dict[int, str], multi_stage: bool) -> list[dict]:
    data = summary.assign(_k=summary["stage"].map(stage_key)).sort_values(["eps", "_k"], kind="stable")
    rows = []
    sizes = data.groupby("eps", sort=False).size().to_dict()
    previous = object()
    for _, row in data.iterrows():
        stage = row["stage"]
        k = stage_number(stage)
        if is_all_stage(stage):
            label, detail = ("All stages" if multi_stage else "Model"), ("cascade" if multi_stage else "")
        elif k is not None:
            label, detail = f"Stage {k}", stage_models.get(k, "")
        else:
            label, detail = str(stage), ""
        cert, pgd = as_float(row["certified_accuracy"]), as_float(row["pgd_accuracy"])
        clean, n = as_float(row["clean_accuracy"]), as_float(row["n"])
        first = row["eps"] != previous
        previous = row["eps"]
        rows.append({
            "first": first, "span": sizes.get(row["eps"], 1), "eps_text": fmt_eps(row["eps"]),
            "overall": is_all_stage(stage), "stage": label, "detail": detail, "n": fmt_int(n),
            "clean": fmt_pct(clean), "cert": fmt_pct(cert), "pgd": fmt_pct(pgd),
            "gap": fmt_points(pgd - cert) if cert is not None and pgd is not None else MISSING,
            "rate": fmt_rate(row.get("examples_per_second")), "seconds": fmt_seconds(row.get("seconds")),
            "outcomes": _outcomes(cert, pgd, clean, n),
        })
    return rows


def _cascade_rows(cascade: pd.DataFrame) -> list[dict]:
    data = cascade.assign(_k=cascade["stage"].map(stage_key)).sort_values(["eps", "_k"], kind="stable")
    sizes = data.groupby("eps", sort=False).size().to_dict()
    rows, previous = [], object()
    for _, row in data.iterrows():
        k = stage_number(row["stage"])
        cum_acc = as_float(row.get("cumulative_certified_accuracy"))
        first = row["eps"] != previous
        previous = row["eps"]
        rows.append({
            "first": first, "span": sizes.get(row["eps"], 1), "eps_text": fmt_eps(row["eps"]),
            "stage": f"Stage {k}" if k is not None else str(row["stage"]),
            "model": MISSING if is_missing(row.get("model")) else str(row.get("model")),
            "by_stage": fmt_int(row.get("certified_by_stage")),
            "cumulative": fmt_int(row.get("cumulative_certified")),
            "cum_acc": fmt_pct(cum_acc), "cum_width": f"{100.0 * min(max(cum_acc or 0.0, 0.0), 1.0):.2f}%",
            "std_alone": fmt_pct(row.get("standard_accuracy_stage_alone")),
            "rob_alone": fmt_pct(row.get("robust_accuracy_stage_alone")),
        })
    return rows


def _meta_value(value: Any) -> dict[str, Any]:
    """A meta value for the details table: ``{'text': ..., 'block': bool}`` (block = preformatted)."""
    if isinstance(value, (Mapping, list, tuple, set, np.ndarray)):
        compact = json.dumps(to_jsonable(value), ensure_ascii=False)
        if len(compact) <= 100:
            return {"text": compact, "block": False}
        return {"text": json.dumps(to_jsonable(value), indent=2, ensure_ascii=False), "block": True}
    if is_missing(value):
        return {"text": MISSING, "block": False}
    if isinstance(value, (float, np.floating)):
        return {"text": fmt_num(value, 6), "block": False}
    text = str(value)
    return {"text": text, "block": "\n" in text}


def _dual_layers(value: Any) -> list[dict[str, str]]:
    """``meta['dual_layers']`` (:func:`onnxdual.reports.meta.dual_layer_sources`) as rows for the page."""
    if not isinstance(value, Mapping):
        return []
    rows = []
    for name, info in value.items():
        info = info if isinstance(info, Mapping) else {}
        operators = info.get("operators") or []
        rows.append({"name": str(name), "version": str(info.get("version") or MISSING),
                     "kind": "built-in" if info.get("builtin") else "plugin",
                     "operators": ", ".join(map(str, operators)) if operators else MISSING})
    return rows


def _run_details(meta: Mapping[str, Any], probabilistic: bool) -> dict[str, Any]:
    versions = meta.get("versions")
    if isinstance(versions, Mapping):
        version_items = [(str(k), MISSING if is_missing(v) else str(v)) for k, v in versions.items()]
    elif versions is None:
        version_items = []
    else:
        version_items = [("versions", str(versions))]
    rows = []
    for label, key, fmt in (("Model", "model", str), ("Dataset", "dataset", str), ("Norm", "norm", fmt_norm),
                            ("Device", "device", str), ("Started", "started", str),
                            ("Duration", "seconds", fmt_seconds)):
        if key in meta and meta[key] is not None and not is_missing(meta[key]):
            rows.append({"label": label, "text": fmt(meta[key])})
    extra = [{"key": str(k), **_meta_value(v)} for k, v in meta.items() if k not in KNOWN_META]
    command = meta.get("command")
    if isinstance(command, (list, tuple)):
        command = " ".join(map(str, command))
    return {"command": None if command is None or is_missing(command) else str(command),
            "rows": rows, "versions": version_items, "extra": extra,
            "dual_layers": _dual_layers(meta.get("dual_layers")),
            "bound": _bound_label(meta.get("bound")), "probabilistic": probabilistic,
            "delta": _bound_delta(meta.get("bound"))}


# --------------------------------------------------------------------------------------------- render


@functools.lru_cache(maxsize=1)
def template_environment() -> jinja2.Environment:
    """The jinja2 environment of every report template (autoescaping, strict about missing values)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("onnxdual.reports", "templates"),
        autoescape=True,  # the templates are .html.j2, which select_autoescape would not recognise
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env


def render_html(examples: pd.DataFrame, summary: pd.DataFrame, meta: Mapping[str, Any],
                cascade: pd.DataFrame | None = None, title: str | None = None, *,
                max_example_rows: int = MAX_EXAMPLE_ROWS, adversarials: pd.DataFrame | None = None) -> str:
    """The certification report as one self-contained HTML document (no external resources).

    Args:
        examples: one row per (example, eps): ``index``, ``eps``, ``label``, ``prediction``, ``certified``,
            ``margin_lower_bound``, ``stage``, ``pgd_success``, ``pgd_margin`` (the first four of
            ``index, eps, certified, margin_lower_bound`` are required; the others are shown when present).
        summary: one row per (eps, stage), stage ``'all'`` for the whole model/cascade: ``eps``, ``stage``,
            ``n``, ``clean_accuracy``, ``certified_accuracy``, ``pgd_accuracy`` and optionally
            ``examples_per_second``, ``seconds``. Accuracies are fractions (a column with values above 1
            is read as percent).
        meta: run description (``command``, ``model``, ``norm``, ``versions``, ``device``, ``started``,
            ``seconds``, ``bound``, ``dataset``); other keys appear in a details table. ``meta['eps']``,
            when it is one of the summary's eps, picks the eps of the headline (default: the largest).
        cascade: optional per (eps, stage) cascade breakdown: ``eps``, ``stage``, ``certified_by_stage`` and
            optionally ``model``, ``cumulative_certified``, ``cumulative_certified_accuracy``,
            ``standard_accuracy_stage_alone``, ``robust_accuracy_stage_alone``.
        title: the page title; default ``"Certification report — <model>"``.
        max_example_rows: cap on the rows of the per-example table (a note says when rows are left out).
        adversarials: optional undecided / broken examples to show next to their PGD adversarial:
            ``index``, ``eps``, ``outcome`` (``"undecided"`` or ``"broken"``), ``input``, ``adversarial``
            (arrays of one example's shape; drawn when they are images) and optionally ``pgd_margin``
            (:meth:`onnxdual.certify.CertifyResult.adversarials_frame`).

    Raises:
        InvalidInputError: an input is not a DataFrame/dict or lacks a required column.
    """
    check_frames(examples, summary, cascade, meta)
    if max_example_rows < 0:
        raise InvalidInputError(f"report: max_example_rows must be >= 0, got {max_example_rows}")
    summary = _as_fractions(summary)
    cascade = _as_fractions(cascade) if cascade is not None else None
    probabilistic = is_probabilistic(meta.get("bound"))
    norm = fmt_norm(meta.get("norm"))
    model = str(meta.get("model") or "model")

    results = _eps_results(summary, examples, probabilistic)
    headline = _pick_headline(results, meta)
    numbered = summary["stage"].map(lambda s: stage_number(s) is not None and not is_all_stage(s))
    multi_stage = cascade is not None or bool(numbered.any())
    stage_models = _stage_models(cascade)

    charts = []
    overall = _overall_rows(summary)
    if len(overall) == 1:
        charts.append({"title": f"Accuracy at ε = {fmt_eps(overall['eps'].iloc[0])}",
                       "caption": "Certified accuracy (proven lower bound), PGD accuracy (attack upper bound) "
                                  "and clean accuracy; the true robust accuracy lies between the first two.",
                       "svg": Markup(accuracy_vs_eps(overall))})
    elif len(overall) > 1:
        charts.append({"title": "Accuracy against ε",
                       "caption": "Certified accuracy (proven lower bound) and PGD accuracy (attack upper bound); "
                                  "the true robust accuracy lies in the shaded band. Dashed: clean accuracy.",
                       "svg": Markup(accuracy_vs_eps(overall))})
    if cascade is not None and len(cascade):
        stages = sorted({k for k in map(stage_number, cascade["stage"]) if k is not None})
        labels = [f"stage {k}: {stage_models[k]}" if stage_models.get(k) else f"stage {k}" for k in stages]
        charts.append({"title": "Certified by each cascade stage",
                       "caption": "Each stage certifies examples its predecessors could not; the bar height is the "
                                  "cascade's cumulative count (certified accuracy in brackets).",
                       "svg": Markup(cascade_stages(cascade, labels))})
    outcome = outcomes(examples)
    attacked = "pgd_margin" in examples.columns
    if attacked and pd.to_numeric(examples["pgd_margin"], errors="coerce").notna().any():
        scatter = {"title": "Certified bound against attack, per example",
                   "caption": "x: the certified lower bound on the margin; y: the margin PGD's best point "
                              "still has. The true worst margin lies between them, so points sit on or above "
                              "the dotted diagonal. Right of 0: certified; below 0: broken; in between: "
                              "undecided.",
                   "svg": Markup(margin_scatter(examples.assign(outcome=outcome.to_numpy())))}
    else:
        scatter = None
    histogram = {"title": "Margin lower bounds",
                 "caption": "For each example, a lower bound on logit[label] − logit[j] over every j ≠ label and "
                            "every input in the perturbation set. Above the 0 line the example is certified.",
                 "svg": Markup(margin_histograms(examples))}

    order = examples.assign(outcome=outcome.to_numpy()).sort_values(
        [c for c in ("eps", "index") if c in examples.columns], kind="stable")
    rows = example_rows(order, order["outcome"], max_example_rows)
    outcome_counts = outcome.value_counts().to_dict()
    class_eps, class_rows = per_class_rows(examples, outcome)
    context = {
        "title": title or f"Certification report — {model}",
        "model": model,
        "dataset": None if is_missing(meta.get("dataset")) or meta.get("dataset") is None else
        str(meta.get("dataset")),
        "norm": norm,
        "device": None if meta.get("device") is None else str(meta.get("device")),
        "headline": headline,
        "results": results,
        "summary_rows": _summary_rows(summary, stage_models, multi_stage),
        "cascade_rows": _cascade_rows(cascade) if cascade is not None else None,
        "charts": charts,
        "histogram": histogram,
        "examples": rows,
        "example_eps": sorted({r["eps_key"] for r in rows}, key=lambda t: as_float(t.split()[0]) or 0.0),
        "outcome_labels": OUTCOME_LABELS,
        "scatter": scatter,
        "class_eps": class_eps,
        "class_rows": class_rows,
        "gallery": gallery(adversarials, headline["eps"] if headline else None),
        "n_examples": len(examples),
        "n_examples_text": fmt_int(len(examples)),
        "examples_truncated": len(examples) > len(rows),
        "outcome_counts": {k: fmt_int(outcome_counts.get(k, 0)) for k in OUTCOME_LABELS},
        "has_conflicts": outcome_counts.get("conflict", 0) > 0,
        "run": _run_details(meta, probabilistic),
        "probabilistic": probabilistic,
        "thresholds": {"strong": fmt_pct(STRONG_CERTIFIED, 0), "partial": fmt_pct(PARTIAL_CERTIFIED, 0)},
        "missing": MISSING,
    }
    return template_environment().get_template("certify_report.html.j2").render(**context)
