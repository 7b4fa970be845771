"""Charts over time, as inline SVG in the style of :mod:`onnxdual.reports.charts`: training curves
(``metrics.csv``: loss, errors and the eps ramp per epoch) and the benchmark's cactus plot (instances solved
within a time)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator, PercentFormatter

from onnxdual.reports.charts import (CERTIFIED, CLEAN, GRID, INK, MUTED, PGD, STAGE_COLORS, chart_style,
                                     mpl_text, new_figure, style_axes, to_svg)

SOLVED = ("sat", "unsat")


def training_curves(metrics: pd.DataFrame) -> str:
    """Robust loss (left) and the robust error estimate and clean error (right, with the eps schedule on a
    second axis) against the epoch. ``metrics``: ``metrics.csv``'s columns ``epoch, robust_loss,
    robust_err_estimate, clean_err, eps`` and optionally ``stage`` (one line per cascade stage, epochs
    counted on)."""
    data = metrics.copy()
    if "stage" not in data.columns:
        data["stage"] = 1
    stages = sorted(pd.unique(data["stage"]))
    with chart_style():
        fig = new_figure(figsize=(9.6, 3.5), layout="constrained")
        loss_ax, err_ax = fig.subplots(1, 2)
        eps_ax = err_ax.twinx()
        for ax in (loss_ax, err_ax):
            style_axes(ax)
        offset = 0
        for i, stage in enumerate(stages):
            rows = data[data["stage"] == stage].sort_values("epoch")
            x = rows["epoch"].to_numpy(dtype=float) + offset
            offset = float(x.max()) if len(x) else offset
            color = STAGE_COLORS[i % len(STAGE_COLORS)]
            name = f"stage {stage}: " if len(stages) > 1 else ""
            loss_ax.plot(x, rows["robust_loss"], color=color, marker="o", markersize=3.5, linewidth=1.8,
                         label=mpl_text(f"{name}robust loss"))
            err_ax.plot(x, rows["robust_err_estimate"], color=PGD if len(stages) == 1 else color, marker="o",
                        markersize=3.5, linewidth=1.8, label=mpl_text(f"{name}robust error (estimate)"))
            err_ax.plot(x, rows["clean_err"], color=CLEAN if len(stages) == 1 else color, linestyle="--",
                        linewidth=1.4, label=mpl_text(f"{name}clean error"))
            eps_ax.plot(x, rows["eps"], color=CERTIFIED, linewidth=1.0, linestyle=":", alpha=0.9,
                        label="ε of the epoch's last step" if i == 0 else None)
        loss_ax.set_title("Robust loss (upper bound, training batches)", loc="left")
        loss_ax.set_xlabel("epoch")
        loss_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        err_ax.set_title("Errors (training batches)", loc="left")
        err_ax.set_xlabel("epoch")
        err_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        err_ax.set_ylim(0, 1.02)
        err_ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        eps_ax.set_ylabel("ε", color=CERTIFIED)
        eps_ax.tick_params(axis="y", colors=CERTIFIED)
        eps_ax.set_ylim(0, max(float(pd.to_numeric(data["eps"], errors="coerce").max() or 0) * 1.1, 1e-9))
        eps_ax.spines["right"].set_visible(True)
        handles, labels = err_ax.get_legend_handles_labels()
        if len(stages) > 1:  # each stage's loss line needs its name too
            h0, l0 = loss_ax.get_legend_handles_labels()
            handles, labels = h0 + handles, l0 + labels
        h2, l2 = eps_ax.get_legend_handles_labels()
        fig.legend(handles + h2, labels + l2, loc="outside lower center", ncol=min(len(labels) + len(l2), 3))
        return to_svg(fig, "chart-training", "Training curves: robust loss, errors and ε per epoch")


def cactus(results: pd.DataFrame) -> str:
    """Instances solved (sat or unsat) within a time, per benchmark and over all: each line steps up at the
    sorted solve times. ``results``: ``benchmark``, ``answer``, ``seconds``."""
    solved = results[results["answer"].isin(SOLVED)]
    groups = [(str(name), frame) for name, frame in solved.groupby("benchmark", sort=True)]
    if len(groups) != 1:
        groups.append(("all", solved))
    times = pd.to_numeric(solved["seconds"], errors="coerce").to_numpy(dtype=float)
    times = times[np.isfinite(times)]
    with chart_style():
        fig = new_figure(figsize=(6.4, 3.8))
        ax = fig.add_subplot()
        style_axes(ax)
        ax.grid(axis="x", color=GRID, linewidth=0.8)
        if not times.size:
            ax.text(0.5, 0.5, "no instance solved", ha="center", va="center", color=MUTED,
                    transform=ax.transAxes)
        floor = max(float(times[times > 0].min()) if (times > 0).any() else 1e-3, 1e-4)
        ceiling = max(float(times.max()) * 1.25 if times.size else 1.0, floor * 10)
        for i, (name, frame) in enumerate(groups):
            t = np.sort(pd.to_numeric(frame["seconds"], errors="coerce").dropna().to_numpy(dtype=float))
            if not t.size:
                continue
            t = np.maximum(t, floor)
            counts = np.arange(1, t.size + 1)
            overall = name == "all"
            # from the fastest solve to the slowest of any group, so every line ends at the right edge
            ax.step(np.concatenate([[floor], t, [ceiling]]), np.concatenate([[0], counts, [t.size]]),
                    where="post",
                    color=INK if overall else STAGE_COLORS[i % len(STAGE_COLORS)],
                    linewidth=2.2 if overall else 1.5, label=mpl_text(f"{name} ({t.size})"))
        if times.size:
            ax.set_xscale("log")
            ax.legend(loc="upper left", fontsize=8.5)
        ax.set_xlabel("time limit per instance (s)")
        ax.set_ylabel("instances solved")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(bottom=0)
        return to_svg(fig, "chart-cactus", "Cactus plot: instances solved within a time")
