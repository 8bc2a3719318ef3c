"""Figures for the report: Pareto plot (map50_95 vs fps), per-class AP, layer profiles side by side,
and how the speed-ups of repeated sweeps spread.

Each function returns a ``matplotlib.figure.Figure`` drawn on its own Agg canvas. Nothing goes
through ``pyplot``: no global backend is chosen, no figure is registered (so none needs closing),
and importing this module changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # matplotlib itself is imported when a figure is drawn
    from matplotlib.figure import Figure

# The study's layer-type taxonomy, in the order its tables list them, then the MLU profiler's own rows
# (TFU: fused blocks; PLUGIN: the on-device decode + NMS; POLL, NOTIFY, INIT_SYNC: runtime waits and
# synchronisation); other types follow, by time.
LAYER_ORDER = (
    "CONV", "ACTIVE", "STRIDEDSLICE", "CONCAT", "MULT", "ADD", "MAXPOOL", "INTERP", "SPLIT",
    "TFU", "PLUGIN", "POLL", "NOTIFY", "INIT_SYNC",
)  # fmt: skip
FRONT_COLOR = "tab:red"
POINT_COLOR = "tab:blue"
MIN_MAP_SPAN = 0.02  # smallest map50_95 range the Pareto plot's y axis shows
FPS_LABEL = "fps (images/s, inference, at each variant's batch size)"


def _figure(width: float, height: float) -> Figure:
    """A figure on an Agg canvas, independent of pyplot's current backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def pareto_front(fps: Sequence[float], accuracy: Sequence[float]) -> np.ndarray:
    """Boolean mask of the points no other point beats: higher or equal in both fps and accuracy,
    strictly higher in one. Both are maximised; equal points are all on the front; a point with a
    NaN coordinate is never on it."""
    x = np.asarray(fps, dtype=float)
    y = np.asarray(accuracy, dtype=float)
    valid = ~(np.isnan(x) | np.isnan(y))
    front = np.zeros(len(x), dtype=bool)
    for i in np.flatnonzero(valid):
        others = valid & (x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i]))
        front[i] = not others.any()
    return front


def pareto_plot(table: pd.DataFrame) -> Figure:
    """map50_95 against fps, one labelled point per finished variant, the Pareto front in red.

    Variants with fps but no map50_95 (accuracy not measured, evaluation off) sit on a strip below
    the main axes at their fps, so they are shown but never mistaken for accuracy 0; with no
    measured variant at all the strip is the whole figure. ``table`` is
    :func:`yolomlu.report.compare.comparison_table`'s output.
    """
    finished = table[(table["status"] == "FINISHED") & table["fps"].notna()]
    measured = finished[finished["map50_95"].notna()]
    unmeasured = finished[finished["map50_95"].isna()]
    fps_range = (float(finished["fps"].min()), float(finished["fps"].max())) if len(finished) else (0.0, 1.0)
    if len(measured) and len(unmeasured):
        fig = _figure(8, 5.5)
        ax, strip = fig.subplots(2, 1, sharex=True, height_ratios=[5, 1])
    elif len(measured):
        fig = _figure(8, 5)
        ax, strip = fig.subplots(), None
    else:
        fig = _figure(8, 2.2)
        ax, strip = None, fig.subplots()
    title = "Accuracy against speed (Pareto front: no other variant is both faster and more accurate)"
    if ax is not None:
        ax.set_title(title)
        ax.set_ylabel("map50_95")
        ax.grid(True, alpha=0.3)
        front = pareto_front(measured["fps"], measured["map50_95"])
        rest = measured[~front]
        on = measured[front].sort_values("fps")
        ax.scatter(rest["fps"], rest["map50_95"], color=POINT_COLOR, label="variant", zorder=3)
        ax.scatter(on["fps"], on["map50_95"], color=FRONT_COLOR, s=60, label="Pareto front", zorder=4)
        # The front as a staircase: everything below and left of it is beaten by a point on it.
        ax.plot(on["fps"], on["map50_95"], color=FRONT_COLOR, drawstyle="steps-pre", alpha=0.6, gid="pareto-front")
        if (budget := table.attrs.get("budget_map50_95")) is not None:
            # A search's accuracy budget: the variants below the line are infeasible, never winners.
            ax.axhline(budget, color="tab:gray", linestyle="--", linewidth=1, label="accuracy budget", gid="budget")
        # Variants that match in accuracy differ by ~1e-4; autoscaling would blow that noise up to
        # the full height. Show at least MIN_MAP_SPAN so equal-looking accuracy looks equal.
        low, high = measured["map50_95"].min(), measured["map50_95"].max()
        if (budget := table.attrs.get("budget_map50_95")) is not None:
            low, high = min(low, budget), max(high, budget)
        if high - low < MIN_MAP_SPAN:
            middle = (high + low) / 2
            ax.set_ylim(middle - MIN_MAP_SPAN / 2, middle + MIN_MAP_SPAN / 2)
        _labels(ax, measured["fps"], measured["map50_95"], [_name(r) for _, r in measured.iterrows()], fps_range)
        ax.legend(loc="best")
        ax.set_xlabel("" if strip is not None else FPS_LABEL)
    if strip is not None:
        if ax is None:
            strip.set_title("Speed only: no variant has a measured map50_95", fontsize="medium")
        strip.scatter(unmeasured["fps"], np.zeros(len(unmeasured)), color="tab:gray", marker="s", zorder=3)
        strip.set_yticks([0.0], ["accuracy\nnot measured"])
        strip.set_ylim(-1, 1)
        _labels(strip, unmeasured["fps"], np.zeros(len(unmeasured)), [_name(r) for _, r in unmeasured.iterrows()], fps_range)
        strip.grid(True, axis="x", alpha=0.3)
        strip.set_xlabel(FPS_LABEL)
    return fig


def per_class_plot(per_class: Mapping[str, pd.DataFrame]) -> Figure:
    """AP50-95 per class, one bar per variant in each class's group (classes in the first
    variant's order). ``per_class`` maps a variant to its ``per_class_ap.json`` table
    (columns ``category_id name ap50_95 ap50 n_gt``)."""
    names: list[str] = []
    for frame in per_class.values():
        names += [n for n in frame["name"].astype(str) if n not in names]
    variants = list(per_class)
    fig = _figure(8, min(40.0, max(2.5, 0.18 * len(names) * max(1, len(variants)) + 1.2)))
    ax = fig.subplots()
    ax.set_title("Per-class AP (AP50-95)")
    if not variants or not names:
        ax.text(0.5, 0.5, "no per-class AP logged", transform=ax.transAxes, ha="center", va="center")
        ax.set_axis_off()
        return fig
    height = 0.8 / len(variants)
    colors = _colors(len(variants))
    y = np.arange(len(names))
    for k, variant in enumerate(variants):
        frame = per_class[variant].assign(name=per_class[variant]["name"].astype(str)).set_index("name")
        values = [float(frame.at[n, "ap50_95"]) if n in frame.index else math.nan for n in names]
        # pycocotools reports -1 for a class with no ground truth: not an AP, leave the bar out.
        values = [v if v >= 0 else math.nan for v in values]
        ax.barh(y + (k - (len(variants) - 1) / 2) * height, values, height=height, color=colors[k], label=variant)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("AP50-95")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return fig


def layer_order(profiles: Mapping[str, pd.DataFrame]) -> list[str]:
    """Every layer type in any profile: the study's taxonomy order first, then the rest by total time."""
    present: dict[str, float] = {}
    for frame in profiles.values():
        for layer, time_us in zip(frame["layer_type"].astype(str), frame["time_us"]):
            present[layer] = present.get(layer, 0.0) + float(time_us)
    known = [t for t in LAYER_ORDER if t in present]
    others = sorted((t for t in present if t not in LAYER_ORDER), key=lambda t: (-present[t], t))
    return known + others


def profile_plots(profiles: Mapping[str, pd.DataFrame]) -> Figure:
    """Layer-profile bar charts side by side (``layer_type count time_us ratio`` tables, one per
    variant): the same rows, order and colour per layer type in every chart, so a type one
    variant lacks (Focus->Conv has no STRIDEDSLICE) shows as an empty row marked "absent".

    Each chart has its own time axis: one forward at batch 16 takes many times one at batch 1, and
    a shared axis would flatten the faster variants' bars to nothing. Compare shares via the
    percentages beside the bars, absolute speed in the comparison table."""
    variants = list(profiles)
    order = layer_order(profiles)
    ncols = min(4, max(1, len(variants)))
    nrows = max(1, math.ceil(len(variants) / ncols))
    fig = _figure(3.6 * ncols + 0.8, max(2.5, 0.32 * len(order) + 1.2) * nrows)
    if not variants or not order:
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no layer profile logged", transform=ax.transAxes, ha="center", va="center")
        ax.set_axis_off()
        return fig
    fig.suptitle("Time per layer type (count and share of the forward beside each bar)")
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
    colors = dict(zip(order, _colors(len(order))))
    y = np.arange(len(order))
    for ax, variant in zip(axes, variants):
        frame = profiles[variant].assign(layer_type=profiles[variant]["layer_type"].astype(str)).set_index("layer_type")
        percent = _percent(frame["ratio"])
        for i, layer in enumerate(order):
            if layer in frame.index:
                row = frame.loc[layer]
                ms = float(row["time_us"]) / 1000
                ax.barh(i, ms, color=colors[layer])
                ax.text(ms, i, f" {int(row['count'])}× {percent[layer]:.0f}%", va="center", fontsize="x-small")
            else:
                ax.text(0, i, " absent", va="center", fontsize="x-small", color="tab:gray", style="italic")
        longest = float(frame["time_us"].max()) / 1000 if len(frame) else 0.0
        ax.set_xlim(0, longest * 1.4 or 1.0)  # room for the labels beside the longest bar
        ax.set_title(variant, fontsize="small")
        ax.set_xlabel("time (ms)")
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(y, order)
    axes[0].invert_yaxis()
    for ax in axes[len(variants) :]:
        ax.set_axis_off()
    return fig


def repeat_plot(repeats: pd.DataFrame) -> Figure:
    """One row per variant: the speed-up each repeated sweep measured (dots), joined from min to
    max, with the median marked; a dashed line at 1 (the baseline). ``repeats`` is
    :func:`yolomlu.report.compare.repeat_table`'s output."""
    sweeps = [c for c in repeats.columns if c.startswith("sweep ")]
    fig = _figure(7.5, 0.45 * len(repeats) + 1.4)
    ax = fig.add_subplot()
    ys = np.arange(len(repeats))[::-1]
    for y, (_, row) in zip(ys, repeats.iterrows()):
        values = row[sweeps].astype(float).dropna()
        if values.empty:
            continue
        ax.plot([values.min(), values.max()], [y, y], color="0.7", linewidth=3, solid_capstyle="round", zorder=1)
        ax.scatter(values, [y] * len(values), color=POINT_COLOR, s=22, zorder=2)
        ax.scatter([row["median"]], [y], color=FRONT_COLOR, marker="|", s=260, zorder=3)
    ax.axvline(1.0, color="0.4", linestyle="--", linewidth=1)
    ax.set_yticks(ys, list(repeats["variant"]))
    ax.set_xlabel(f"{repeats.attrs.get('metric', 'speedup_fps')} against each sweep's baseline (dots: sweeps, bar: median)")
    ax.set_title(f"Repeatability over {len(sweeps)} sweeps")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _percent(ratio: pd.Series) -> pd.Series:
    """The ``ratio`` column in percent, whether it was logged as fractions (each at most 1) or in %.
    Not by the sum: the MLU profiler's shares overlap (the study's add up to 117 %)."""
    ratio = ratio.astype(float)
    return ratio * 100 if ratio.max() <= 1.0 + 1e-6 else ratio


def _labels(ax, xs, ys, texts: list[str], x_range: tuple[float, float]) -> None:
    """Name each point without printing names over each other.

    Variants that tie in accuracy (the usual case: fused, offline and Focus->Conv keep the
    baseline's mAP) sit on one horizontal line, often a few pixels apart. Each label goes beside
    its point where it overlaps no label placed before (tried a line above, then below, then two
    ...), measured as drawn; a label that had to move gets a thin leader line to its point. Labels
    in the right half of the x range go to the left of their point, so they stay inside the axes.
    Call after the axes' limits are final."""
    from matplotlib.text import Text

    fig = ax.figure
    fig.canvas.draw()  # settle the layout and the limits: positions below are final
    renderer = fig.canvas.get_renderer()
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    points = ax.transData.transform(np.column_stack([xs, ys]))
    middle = sum(x_range) / 2
    placed = []
    for i in sorted(range(len(texts)), key=lambda i: (-points[i][1], points[i][0])):
        right = xs[i] > middle and x_range[1] > x_range[0]
        base = (-5.0 if right else 5.0, 3.0)
        style = {"textcoords": "offset points", "ha": "right" if right else "left", "va": "bottom", "fontsize": "x-small"}
        label = ax.annotate(texts[i], (xs[i], ys[i]), xytext=base, **style)
        line = Text.get_window_extent(label, renderer).height * 72 / fig.dpi + 1.0
        for step in [0, *[k * s for k in range(1, 40) for s in (1, -1)]]:
            label.xyann = (base[0], base[1] + step * line)
            box = Text.get_window_extent(label, renderer)
            if not any(box.overlaps(other) for other in placed):
                break
        placed.append(box)
        if step:  # moved away from its point: draw the way back
            label.remove()
            arrow = {"arrowstyle": "-", "color": "0.55", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 3}
            ax.annotate(texts[i], (xs[i], ys[i]), xytext=(base[0], base[1] + step * line), arrowprops=arrow, **style)


def _name(row: pd.Series) -> str:
    """The variant with the report's marks: † reused, ‡ timed under contention."""
    return f"{row['variant']}{'†' if row.get('reused', False) else ''}{'‡' if row.get('contended', False) else ''}"


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]
