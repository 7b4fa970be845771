"""Report of a training run (``onnxdual train``): ``training.html``, one self-contained page with the
training curves of ``metrics.csv`` (robust loss, robust error estimate, clean error, the eps ramp), the
per-epoch table and the run's configuration, next to the certification report of the test split.

    from onnxdual.reports.training import read_metrics, write_training_report
    write_training_report(out / "training.html", read_metrics(out), meta)
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
from onnxdual.files import atomic_write
from onnxdual.reports.curves import training_curves
from onnxdual.reports.formatting import fmt_eps, fmt_num, fmt_pct, fmt_seconds, to_jsonable
from onnxdual.reports.html import template_environment

METRICS_REQUIRED = ("epoch", "robust_loss", "robust_err_estimate", "clean_err", "eps")
TRAINING_REPORT = "training.html"


def read_metrics(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """``metrics.csv`` of a run directory, or the ``stageK/metrics.csv`` of a cascade's stages with a
    ``stage`` column (stage order). Raises :class:`InvalidInputError` when there is none."""
    root = Path(run_dir)
    stages = sorted(root.glob("stage*/metrics.csv"), key=lambda p: (len(p.parent.name), p.parent.name))
    if (root / "metrics.csv").is_file() and not stages:
        return pd.read_csv(root / "metrics.csv")
    if not stages:
        raise InvalidInputError(f"no metrics.csv in {root}")
    frames = [pd.read_csv(p).assign(stage=i) for i, p in enumerate(stages, 1)]
    return pd.concat(frames, ignore_index=True)


def render_training_html(metrics: pd.DataFrame, meta: Mapping[str, Any]) -> str:
    """The training report as one HTML document. ``metrics``: :func:`read_metrics`'s frame (columns
    :data:`METRICS_REQUIRED`, optionally ``lr``, ``seconds``, ``stage``); ``meta``: ``model``, ``command``,
    ``config`` (a mapping), ``certify_report`` (a relative link to the certification report) and any other
    facts, shown as details."""
    if not isinstance(metrics, pd.DataFrame):
        raise InvalidInputError("training report: metrics must be a pandas DataFrame, got "
                                f"{type(metrics).__name__}")
    missing = [c for c in METRICS_REQUIRED if c not in metrics.columns]
    if missing:
        raise InvalidInputError(f"training report: metrics is missing column(s) {', '.join(missing)}")
    cascade = "stage" in metrics.columns and metrics["stage"].nunique() > 1
    rows = [{"stage": str(r.get("stage", "")), "epoch": str(int(r["epoch"])),
             "loss": fmt_num(r["robust_loss"]),
             "robust_err": fmt_pct(r["robust_err_estimate"]), "clean_err": fmt_pct(r["clean_err"]),
             "eps": fmt_eps(r["eps"]), "lr": fmt_num(r.get("lr")), "seconds": fmt_seconds(r.get("seconds"))}
            for r in metrics.to_dict(orient="records")]
    last = metrics.iloc[-1].to_dict() if len(metrics) else {}
    total = pd.to_numeric(metrics.get("seconds", pd.Series(dtype=float)), errors="coerce").sum()
    config = meta.get("config") if isinstance(meta.get("config"), Mapping) else {}
    context = {
        "title": f"Training report — {meta.get('model') or 'model'}",
        "model": str(meta.get("model") or "model"),
        "command": meta.get("command"),
        "certify_report": meta.get("certify_report"),
        "cascade": cascade,
        "kpis": [("epochs", str(len(metrics))), ("robust loss", fmt_num(last.get("robust_loss"))),
                 ("robust error (estimate)", fmt_pct(last.get("robust_err_estimate"))),
                 ("clean error", fmt_pct(last.get("clean_err"))), ("final ε", fmt_eps(last.get("eps"))),
                 ("training time", fmt_seconds(total))] if len(metrics) else [],
        "chart": Markup(training_curves(metrics)) if len(metrics) else None,
        "rows": rows,
        "config": [(str(k), json.dumps(to_jsonable(v)) if isinstance(v, (Mapping, list, tuple)) else str(v))
                   for k, v in config.items()],
        "extra": [(str(k), str(v)) for k, v in meta.items()
                  if k not in ("model", "command", "config", "certify_report") and v is not None],
    }
    return template_environment().get_template("training_report.html.j2").render(**context)


def write_training_report(path: str | os.PathLike[str], metrics: pd.DataFrame,
                          meta: Mapping[str, Any]) -> Path:
    """Render and write the training report to ``path`` in one atomic replace; returns the path."""
    html = render_training_html(metrics, meta)
    target = Path(path)
    try:
        atomic_write(target, html)
    except OSError as exc:
        raise InvalidInputError(f"cannot write the training report {target}: {exc.strerror or exc}") from None
    return target
