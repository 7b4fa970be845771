"""Charts as inline SVG strings, drawn with matplotlib's object-oriented API.

No pyplot and no global backend switch: each chart is a :class:`matplotlib.figure.Figure` on an Agg canvas,
saved with ``savefig(format="svg")``, so this works headless and leaves a caller's matplotlib state alone.
The SVG text is post-processed for embedding in an HTML page: the XML prologue, DOCTYPE, comments and namespace URLs are
removed, every ``id`` is prefixed so several charts can share one page, the fixed pixel size is replaced
by a ``viewBox`` that scales with CSS, and a ``<title>`` is added for screen readers.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from html import escape
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import rc_context, rcParams
from matplotlib import style as mpl_style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from onnxdual.reports.formatting import fmt_eps, fmt_pct

# Okabe-Ito palette: distinguishable with the common colour-vision deficiencies.
CERTIFIED = "#009E73"
PGD = "#E69F00"
CLEAN = "#6B7280"
NOT_CERTIFIED = "#A3AAB5"
ATTACKED = "#D55E00"
STAGE_COLORS = ("#0072B2", "#56B4E9", "#CC79A7", "#009E73", "#E69F00", "#D55E00", "#F0E442", "#000000")
INK = "#1F2937"
MUTED = "#6B7280"
GRID = "#E5E7EB"

_FONT_STACK = ("system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, "
               "'Noto Sans', 'Liberation Sans', 'DejaVu Sans', sans-serif")

_RC = {
    "svg.fonttype": "none",          # real <text>: crisp, selectable, small
    "svg.hashsalt": "onnxdual",      # deterministic ids, so identical inputs give identical reports
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],  # layout metrics; the browser draws with _FONT_STACK
    "font.size": 10,
    "axes.edgecolor": "#9CA3AF",
    "axes.labelcolor": INK,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.titlecolor": INK,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "xtick.labelcolor": INK,
    "ytick.labelcolor": INK,
    "legend.frameon": False,
    "legend.fontsize": 9,
}


@contextmanager
def chart_style() -> Iterator[None]:
    """matplotlib's defaults plus :data:`_RC`, whatever style the caller set; restored on exit."""
    with rc_context():
        mpl_style.use("default")
        rcParams.update(_RC)
        yield


def mpl_text(text: str) -> str:
    """Text for a matplotlib label: ``$`` would start mathtext, so escape it."""
    return str(text).replace("$", r"\$")


def to_svg(fig: Figure, chart_id: str, title: str) -> str:
    """``fig`` as an ``<svg>`` element ready to be inlined into HTML (see the module docstring)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", dpi=144, bbox_inches="tight", pad_inches=0.08,
                metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<!--.*?-->", "", svg, flags=re.DOTALL)
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.DOTALL)
    # Ids: prefix every definition and every reference to it.
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{chart_id}-{m.group(1)}"', svg)
    svg = re.sub(r'(xlink:href|href)="#([^"]+)"', lambda m: f'{m.group(1)}="#{chart_id}-{m.group(2)}"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{chart_id}-{m.group(1)})", svg)
    # matplotlib's global "*{...}" rule would leak into the page; scope it to this chart.
    svg = svg.replace("*{stroke-linejoin", f"#{chart_id} *{{stroke-linejoin")
    svg = re.sub(r"font-family: [^;\"]*", "font-family: " + _FONT_STACK, svg)

    def root(match: re.Match[str]) -> str:
        attrs = match.group(1)
        view_box = re.search(r'viewBox="([^"]+)"', attrs)
        vb = view_box.group(1) if view_box else "0 0 400 300"
        width = float(vb.split()[2])
        return (f'<svg id="{chart_id}" class="chart" viewBox="{vb}" role="img" '
                f'aria-labelledby="{chart_id}-title" style="max-width:{width * 4 / 3:.0f}px" '
                f'preserveAspectRatio="xMidYMid meet"><title id="{chart_id}-title">{escape(title)}</title>')

    svg = re.sub(r"<svg\b([^>]*)>", root, svg, count=1)
    return svg.strip()


def new_figure(**kwargs: Any) -> Figure:
    """A new figure on its own Agg canvas (headless; pyplot's global state is never touched)."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def style_axes(ax: Any) -> None:
    ax.grid(axis="y", color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(length=3)


def accuracy_vs_eps(rows: pd.DataFrame) -> str:
    """Line chart of certified and PGD accuracy against eps, with clean accuracy as a reference.

    ``rows``: one row per eps with float columns ``eps``, ``clean_accuracy``, ``certified_accuracy``,
    ``pgd_accuracy`` (fractions in [0, 1]; NaN allowed).
    """
    rows = rows.sort_values("eps")
    if len(rows) == 1:
        return _accuracy_bars(rows.iloc[0])
    eps = rows["eps"].to_numpy(dtype=float)
    cert = rows["certified_accuracy"].to_numpy(dtype=float)
    pgd = rows["pgd_accuracy"].to_numpy(dtype=float)
    clean = rows["clean_accuracy"].to_numpy(dtype=float)
    single = len(eps) == 1
    with chart_style():
        fig = new_figure(figsize=(6.0, 3.6))
        ax = fig.add_subplot()
        style_axes(ax)
        x = np.arange(len(eps)) if not np.all(np.isfinite(eps)) else eps
        if np.isfinite(clean).any():
            ax.plot(x, clean, color=CLEAN, linestyle="--", linewidth=1.4, label="clean", zorder=2)
        if np.isfinite(pgd).any() and np.isfinite(cert).any() and not single:
            ax.fill_between(x, cert, pgd, where=np.isfinite(cert) & np.isfinite(pgd), color=PGD, alpha=0.12,
                            linewidth=0, label="undecided", zorder=1)
        if np.isfinite(pgd).any():
            ax.plot(x, pgd, color=PGD, marker="s", markersize=6, linewidth=2, label="PGD (upper bound)",
                    zorder=3)
        ax.plot(x, cert, color=CERTIFIED, marker="o", markersize=6.5, linewidth=2.4,
                label="certified (lower bound)", zorder=4)
        if len(x) <= 8:
            for xi, ci in zip(x, cert):
                if np.isfinite(ci):
                    ax.annotate(fmt_pct(ci), (xi, ci), textcoords="offset points", xytext=(0, -15),
                                ha="center", fontsize=9, color=CERTIFIED, fontweight="bold")
            for xi, pi, ci, ai in zip(x, pgd, cert, clean):
                near_clean = np.isfinite(ai) and abs(ai - pi) < 0.07
                if np.isfinite(pi) and not near_clean and (not np.isfinite(ci) or abs(pi - ci) > 0.025):
                    ax.annotate(fmt_pct(pi), (xi, pi), textcoords="offset points", xytext=(0, 8),
                                ha="center", fontsize=9, color="#9A6700")
        last = int(np.flatnonzero(np.isfinite(clean))[-1]) if np.isfinite(clean).any() else None
        if last is not None:
            ax.annotate(f"clean {fmt_pct(clean[last])}", (x[last], clean[last]), textcoords="offset points",
                        xytext=(0, 4), ha="right", va="bottom", fontsize=8.5, color=MUTED)
        ax.set_ylim(0, 1.08)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xticks(x)
        ax.set_xticklabels([fmt_eps(e) for e in eps])
        if single:
            ax.set_xlim(x[0] - 1 if x[0] == 0 else x[0] * 0.5, x[0] * 1.5 if x[0] != 0 else 1)
        else:
            pad = 0.06 * (x.max() - x.min())
            ax.set_xlim(x.min() - pad, x.max() + pad)
        ax.set_xlabel("ε (perturbation radius)")
        ax.set_ylabel("accuracy")
        handles, labels = ax.get_legend_handles_labels()
        order = [labels.index(k) for k in ("certified (lower bound)", "PGD (upper bound)", "undecided", "clean")
                 if k in labels]
        ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper center",
                  bbox_to_anchor=(0.5, -0.2), ncol=4, handlelength=1.8, columnspacing=1.2)
        return to_svg(fig, "chart-accuracy", "Certified, PGD and clean accuracy against ε")


def _accuracy_bars(row: pd.Series) -> str:
    """The single-eps form of :func:`accuracy_vs_eps`: one horizontal bar per accuracy."""
    items = [("clean", row["clean_accuracy"], CLEAN), ("PGD (upper bound)", row["pgd_accuracy"], PGD),
             ("certified (lower bound)", row["certified_accuracy"], CERTIFIED)]
    with chart_style():
        fig = new_figure(figsize=(6.0, 2.6))
        ax = fig.add_subplot()
        ax.grid(axis="x", color=GRID, linewidth=0.8)
        ax.set_axisbelow(True)
        for y, (name, value, color) in enumerate(items):
            v = float(value) if pd.notna(value) else np.nan
            if np.isfinite(v):
                ax.barh(y, v, height=0.62, color=color, zorder=2)
                ax.text(min(v, 1.0) + 0.01, y, fmt_pct(v), va="center", ha="left", fontsize=10, color=INK,
                        fontweight="bold")
            else:
                ax.text(0.01, y, "not measured", va="center", ha="left", fontsize=9, color=MUTED)
        ax.set_yticks(range(len(items)))
        ax.set_yticklabels([name for name, _, _ in items])
        ax.set_xlim(0, 1.12)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
        ax.spines["left"].set_visible(False)
        ax.tick_params(axis="y", length=0)
        ax.set_xlabel(f"accuracy at ε = {fmt_eps(row['eps'])}")
        return to_svg(fig, "chart-accuracy", f"Certified, PGD and clean accuracy at ε = {fmt_eps(row['eps'])}")


def _edges(lo: float, hi: float, bins: int) -> np.ndarray:
    """Histogram bin edges over [lo, hi] with 0 as an edge whenever 0 lies inside."""
    if lo < 0 < hi:
        width = (hi - lo) / bins
        left = max(1, round(-lo / width))
        right = max(1, round(hi / width))
        return np.concatenate([np.linspace(lo, 0, left + 1)[:-1], np.linspace(0, hi, right + 1)])
    return np.linspace(lo, hi, bins + 1)


def margin_histograms(examples: pd.DataFrame, max_panels: int = 6) -> str:
    """One histogram of ``margin_lower_bound`` per eps, the 0 threshold marked, certified side in green.

    Long tails are clipped to the 1st/99th percentile; the clipped examples are piled into the edge bins and
    counted in the panel's note. ``examples``: columns ``eps`` and ``margin_lower_bound``.
    """
    eps_values = sorted(pd.unique(examples["eps"].dropna()))[:max_panels] if len(examples) else []
    n = max(1, len(eps_values))
    cols = min(n, 3)
    nrows = int(np.ceil(n / cols))
    with chart_style():
        fig = new_figure(figsize=(3.6 * cols + 0.4, 2.8 * nrows + 0.3), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
        for ax in axes[len(eps_values):]:
            ax.set_visible(False)
        if not eps_values:
            axes[0].set_visible(True)
            axes[0].text(0.5, 0.5, "no examples", ha="center", va="center", color=MUTED,
                         transform=axes[0].transAxes)
            axes[0].set_axis_off()
        for ax, e in zip(axes, eps_values):
            style_axes(ax)
            m = pd.to_numeric(examples.loc[examples["eps"] == e, "margin_lower_bound"], errors="coerce")
            m = m.to_numpy(dtype=float)
            m = m[np.isfinite(m)]
            ax.set_title(f"ε = {fmt_eps(e)}", loc="left")
            if m.size == 0:
                ax.text(0.5, 0.5, "no finite margins", ha="center", va="center", color=MUTED,
                        transform=ax.transAxes)
                ax.set_yticks([])
                continue
            lo, hi = float(m.min()), float(m.max())
            clipped = 0
            if m.size >= 20:
                qlo, qhi = (float(q) for q in np.quantile(m, [0.01, 0.99]))
                if hi - lo > 3 * max(qhi - qlo, 1e-12):
                    lo, hi = qlo, qhi
                    clipped = int(((m < lo) | (m > hi)).sum())
            lo, hi = min(lo, 0.0), max(hi, 0.0)
            span = hi - lo if hi > lo else 1.0
            if lo == 0.0:
                lo = -0.08 * span
            if hi == 0.0:
                hi = 0.08 * span
            edges = _edges(lo, hi, 30)
            mc = np.clip(m, lo, hi)
            ax.hist(mc[mc <= 0], bins=edges, color=NOT_CERTIFIED, label="≤ 0: not certified")
            ax.hist(mc[mc > 0], bins=edges, color=CERTIFIED, alpha=0.9, label="> 0: certified")
            ax.axvline(0, color=INK, linewidth=1.3, linestyle="-")
            share = float((m > 0).mean())
            note = f"{fmt_pct(share)} > 0"
            if clipped:
                note += f"\n{clipped} beyond axis"
            ax.text(0.98, 0.97, note, transform=ax.transAxes, ha="right", va="top", fontsize=8.5, color=INK,
                    bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": GRID, "alpha": 0.9})
            ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
            ax.set_xlim(lo, hi)
        if eps_values:
            fig.supxlabel("lower bound on the margin  logit[label] − max logit[other]", fontsize=9.5,
                          color=INK)
            fig.supylabel("examples", fontsize=9.5, color=INK)
            handles, labels = axes[0].get_legend_handles_labels()
            if handles:
                fig.legend(handles, labels, loc="outside upper right", ncol=2)
        return to_svg(fig, "chart-margins", "Histogram of margin lower bounds per ε; above 0 means certified")


def cascade_stages(cascade: pd.DataFrame, stage_labels: Sequence[str] | None = None) -> str:
    """Stacked bars: for each eps, how many examples each cascade stage certified; totals on top.

    ``cascade``: columns ``eps``, ``stage``, ``certified_by_stage`` and optionally
    ``cumulative_certified_accuracy``. ``stage_labels``: legend text per stage, in stage order.
    """
    data = cascade.copy()
    data["stage"] = pd.to_numeric(data["stage"], errors="coerce")
    data = data.dropna(subset=["stage"])
    eps_values = sorted(pd.unique(data["eps"].dropna()))
    stages = sorted(int(s) for s in pd.unique(data["stage"]))
    x = np.arange(len(eps_values))
    with chart_style():
        fig = new_figure(figsize=(6.0, 3.6))
        ax = fig.add_subplot()
        style_axes(ax)
        bottom = np.zeros(len(eps_values))
        for i, stage in enumerate(stages):
            heights = []
            for e in eps_values:
                sel = data[(data["eps"] == e) & (data["stage"] == stage)]["certified_by_stage"]
                val = pd.to_numeric(sel, errors="coerce").sum() if len(sel) else 0.0
                heights.append(float(val) if np.isfinite(val) else 0.0)
            h = np.asarray(heights)
            label = stage_labels[i] if stage_labels and i < len(stage_labels) else f"stage {stage}"
            ax.bar(x, h, bottom=bottom, width=0.55, color=STAGE_COLORS[i % len(STAGE_COLORS)],
                   edgecolor="white", linewidth=1, label=mpl_text(label), zorder=2)
            for xi, hi, bi in zip(x, h, bottom):
                if hi > 0 and hi >= 0.07 * max(1.0, float(np.max(bottom + h))):
                    ax.text(xi, bi + hi / 2, f"{round(float(hi)):,}", ha="center", va="center", fontsize=8.5,
                            color="white" if i % len(STAGE_COLORS) in (0, 2, 5, 7) else INK,
                            fontweight="bold", zorder=3)
            bottom = bottom + h
        top = float(bottom.max()) if len(bottom) else 1.0
        for xi, e, total in zip(x, eps_values, bottom):
            text = f"{round(float(total)):,}"
            if "cumulative_certified_accuracy" in data.columns:
                last = data[data["eps"] == e].sort_values("stage")["cumulative_certified_accuracy"]
                acc = pd.to_numeric(last, errors="coerce").dropna()
                if len(acc):
                    text += f"  ({fmt_pct(acc.iloc[-1])})"
            ax.text(xi, total + 0.02 * max(top, 1.0), text, ha="center", va="bottom", fontsize=9, color=INK,
                    fontweight="bold")
        ax.set_ylim(0, max(top, 1.0) * 1.15)
        ax.set_xticks(x)
        ax.set_xticklabels([f"ε = {fmt_eps(e)}" for e in eps_values])
        ax.set_ylabel("certified examples")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=min(len(stages), 2))
        return to_svg(fig, "chart-cascade", "Examples certified by each cascade stage, per ε")


#: marker colour and legend text of each example outcome in :func:`margin_scatter`
OUTCOME_STYLE = {"certified": (CERTIFIED, "certified"), "undecided": (PGD, "undecided"),
                 "attacked": (ATTACKED, "broken by PGD"), "misclassified": (NOT_CERTIFIED, "misclassified"),
                 "conflict": (INK, "certified, yet broken")}


#: above this many points a scatter panel is drawn as a bitmap inside the SVG
RASTER_POINTS = 400


def margin_scatter(examples: pd.DataFrame, max_panels: int = 3) -> str:
    """Per eps, each example's certified margin lower bound (x) against the margin PGD reached (y).

    The true worst-case margin lies between the two, so every correctly classified example sits on or above
    the diagonal ``y = x``; right of ``x = 0`` it is certified, below ``y = 0`` PGD broke it, and the points
    in between are the undecided ones. Axes are symmetric-log when the margins span orders of magnitude.
    ``examples``: columns ``eps``, ``margin_lower_bound``, ``pgd_margin`` and ``outcome`` (a key of
    :data:`OUTCOME_STYLE`).
    """
    eps_values = sorted(pd.unique(examples["eps"].dropna()))[-max_panels:] if len(examples) else []
    n = max(1, len(eps_values))
    with chart_style():
        fig = new_figure(figsize=(3.9 * n + 0.4, 3.7), layout="constrained")
        axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)).ravel()
        if not eps_values:
            axes[0].text(0.5, 0.5, "no examples", ha="center", va="center", color=MUTED,
                         transform=axes[0].transAxes)
            axes[0].set_axis_off()
        shown: dict[str, Any] = {}
        for ax, e in zip(axes, eps_values):
            style_axes(ax)
            ax.grid(axis="x", color=GRID, linewidth=0.8)
            rows = examples[examples["eps"] == e]
            lb = pd.to_numeric(rows["margin_lower_bound"], errors="coerce").to_numpy(dtype=float)
            pm = pd.to_numeric(rows["pgd_margin"], errors="coerce").to_numpy(dtype=float)
            keep = np.isfinite(lb) & np.isfinite(pm)
            ax.set_title(f"ε = {fmt_eps(e)}", loc="left")
            if not keep.any():
                ax.text(0.5, 0.5, "no finite margins", ha="center", va="center", color=MUTED,
                        transform=ax.transAxes)
                continue
            both = np.concatenate([lb[keep], pm[keep]])
            lo, hi = float(both.min()), float(both.max())
            scale = float(np.median(np.abs(both))) or 1.0
            if hi - lo > 40 * scale:
                ax.set_xscale("symlog", linthresh=scale)
                ax.set_yscale("symlog", linthresh=scale)
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color=MUTED, linewidth=0.9, linestyle=":",
                    zorder=1)
            ax.axvline(0, color=INK, linewidth=1.0, zorder=1)
            ax.axhline(0, color=INK, linewidth=1.0, zorder=1)
            outcome = rows["outcome"].to_numpy()
            for key, (color, label) in OUTCOME_STYLE.items():
                sel = keep & (outcome == key)
                if sel.any():
                    # many points: one embedded bitmap instead of an SVG element each (a bounded page)
                    shown[key] = ax.scatter(lb[sel], pm[sel], s=11, color=color, alpha=0.75, linewidths=0,
                                            label=label, zorder=3 if key != "conflict" else 4,
                                            rasterized=bool(keep.sum() > RASTER_POINTS))
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
        if eps_values:
            fig.supxlabel("certified margin lower bound", fontsize=9.5, color=INK)
            fig.supylabel("margin reached by PGD", fontsize=9.5, color=INK)
            if shown:
                fig.legend(list(shown.values()), [OUTCOME_STYLE[k][1] for k in shown],
                           loc="outside upper right", ncol=len(shown), markerscale=1.6)
        return to_svg(fig, "chart-scatter", "Certified margin lower bound against PGD margin, per example")
