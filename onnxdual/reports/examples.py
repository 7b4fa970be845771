"""The per-example parts of the certification report, as plain values for its template: each example's
outcome, the per-class table, the rows of the sortable per-example table (display text plus the raw value
it sorts by) and the gallery of undecided and broken examples next to their PGD adversarial.

Only counting and formatting happens here: the margins and attacks come from the run
(:class:`onnxdual.certify.CertifyResult`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from onnxdual.reports.formatting import (MISSING, as_float, fmt_eps, fmt_int, fmt_num, fmt_pct, is_missing,
                                         stage_number)
from onnxdual.reports.images import adversarial_pair

OUTCOME_LABELS = {"certified": "certified", "attacked": "broken by PGD", "misclassified": "misclassified",
                  "undecided": "undecided", "conflict": "certified, yet broken"}
"""Each outcome of an example and how the page names it."""

ADVERSARIAL_COLUMNS = ("index", "eps", "outcome", "input", "adversarial")


def bool_column(frame: pd.DataFrame, column: str) -> pd.Series:
    """A boolean column with missing values as False (all False when the column is absent)."""
    if column not in frame.columns:
        return pd.Series(False, index=frame.index)
    return frame[column].map(lambda v: False if is_missing(v) else bool(v)).astype(bool)


def outcomes(examples: pd.DataFrame) -> pd.Series:
    """Each row's outcome (a key of :data:`OUTCOME_LABELS`): certified and broken is a conflict; else
    certified, misclassified, broken by PGD, or undecided."""
    certified = bool_column(examples, "certified")
    attacked = bool_column(examples, "pgd_success")
    if "prediction" in examples.columns and "label" in examples.columns:
        wrong = examples["prediction"].ne(examples["label"]) & examples["prediction"].notna()
        wrong = wrong.fillna(False).astype(bool)
    else:
        wrong = pd.Series(False, index=examples.index)
    values = np.select([certified & attacked, certified, wrong, attacked],
                       ["conflict", "certified", "misclassified", "attacked"], default="undecided")
    return pd.Series(values, index=examples.index, name="outcome")


def _plain(value: Any) -> str:
    return MISSING if is_missing(value) else str(value)


def _sort_value(value: Any) -> str:
    """What a cell sorts by: the number to 7 significant digits ("" for a missing value: sorts last)."""
    x = as_float(value)
    return "" if x is None else f"{x:.7g}"


def example_rows(examples: pd.DataFrame, outcome: pd.Series, limit: int) -> list[dict]:
    """The first ``limit`` rows, in the frame's order, each cell as ``{"text": ..., "sort": ...}``."""
    rows = []
    for (_, row), kind in zip(examples.head(limit).iterrows(), outcome.head(limit)):
        margin = row["margin_lower_bound"]
        k = stage_number(row.get("stage"))
        pgd = row.get("pgd_success")
        rows.append({
            "outcome": kind, "outcome_text": OUTCOME_LABELS[kind], "eps_key": fmt_eps(row["eps"]),
            "margin_sign": "pos" if (as_float(margin) or 0.0) > 0 else "neg",
            "cells": {
                "index": {"text": _plain(row["index"]), "sort": _sort_value(row["index"])},
                "eps": {"text": fmt_eps(row["eps"]), "sort": _sort_value(row["eps"])},
                "label": {"text": _plain(row.get("label")), "sort": _sort_value(row.get("label"))},
                "prediction": {"text": _plain(row.get("prediction")),
                               "sort": _sort_value(row.get("prediction"))},
                "margin": {"text": fmt_num(margin), "sort": _sort_value(margin)},
                "stage": {"text": str(k) if k is not None else MISSING, "sort": "" if k is None else repr(k)},
                "pgd_success": {"text": MISSING if is_missing(pgd) else ("yes" if bool(pgd) else "no"),
                                "sort": "" if is_missing(pgd) else str(int(bool(pgd)))},
                "pgd_margin": {"text": fmt_num(row.get("pgd_margin")),
                               "sort": _sort_value(row.get("pgd_margin"))},
            },
        })
    return rows


def per_class_rows(examples: pd.DataFrame, outcome: pd.Series) -> tuple[list[str], list[dict]]:
    """The per-class table: its eps headers and one row per label (``n``, clean accuracy at the smallest
    eps, certified and PGD accuracy at each eps, the certified share as a bar at the largest). Empty
    without a ``label`` column."""
    if "label" not in examples.columns or not len(examples):
        return [], []
    eps_values = sorted(pd.unique(examples["eps"].dropna()))
    frame = examples.assign(_outcome=outcome.to_numpy())
    rows = []
    for label, group in frame.groupby("label", sort=True):
        first = group[group["eps"] == eps_values[0]]
        correct = (first["_outcome"] != "misclassified").mean() if len(first) else None
        cells, last = [], None
        for e in eps_values:
            at = group[group["eps"] == e]
            if not len(at):
                cells.append({"cert": MISSING, "pgd": MISSING})
                continue
            cert = (at["_outcome"] == "certified").mean()
            pgd = (~at["_outcome"].isin(("attacked", "misclassified", "conflict"))).mean()
            cells.append({"cert": fmt_pct(cert), "pgd": fmt_pct(pgd)})
            last = cert
        rows.append({"label": fmt_int(label) if as_float(label) is not None else str(label),
                     "n": fmt_int(len(first)), "clean": fmt_pct(correct), "cells": cells,
                     "width": f"{100.0 * (last or 0.0):.2f}%", "last": last})
    finite = [r["last"] for r in rows if r["last"] is not None]
    worst = min(finite) if finite and len(rows) > 1 else None
    for r in rows:
        r["worst"] = worst is not None and r["last"] == worst
    return [fmt_eps(e) for e in eps_values], rows


def gallery(adversarials: pd.DataFrame | None, headline_eps: Any) -> dict[str, Any]:
    """Undecided and broken examples with their PGD adversarial, grouped by eps (the headline's first):
    ``{"groups": [{"eps_text", "open", "tiles"}], "not_images": bool, "count": int}``."""
    out: dict[str, Any] = {"groups": [], "not_images": False, "count": 0}
    if adversarials is None or not len(adversarials):
        return out
    missing = [c for c in ADVERSARIAL_COLUMNS if c not in adversarials.columns]
    if missing:
        from onnxdual.errors import InvalidInputError

        raise InvalidInputError(f"report: adversarials is missing column(s) {', '.join(missing)}")
    eps_values = sorted(pd.unique(adversarials["eps"].dropna()))
    head = as_float(headline_eps)
    eps_values.sort(key=lambda e: (head is None or not np.isclose(float(e), head), float(e)))
    for e in eps_values:
        tiles = []
        at = adversarials[adversarials["eps"] == e].sort_values(["outcome", "index"], kind="stable")
        for _, row in at.iterrows():
            pair = adversarial_pair(row["input"], row["adversarial"])
            if pair is None:
                out["not_images"] = True
                continue
            kind = "attacked" if row["outcome"] == "broken" else "undecided"
            tiles.append({**pair, "index": fmt_int(row["index"]), "outcome": kind,
                          "outcome_text": OUTCOME_LABELS[kind], "pgd_margin": fmt_num(row.get("pgd_margin")),
                          "change_text": fmt_num(pair["change"], 3)})
        if tiles:
            out["groups"].append({"eps_text": fmt_eps(e), "open": not out["groups"], "tiles": tiles})
            out["count"] += len(tiles)
    return out
