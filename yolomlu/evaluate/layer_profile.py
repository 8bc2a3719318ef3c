"""Per-layer-type profile tables as DataFrames and bar charts."""

from __future__ import annotations

import pandas as pd

from yolomlu.types import LayerProfile

COLUMNS = ["layer_type", "count", "time_us", "ratio"]


def profile_frame(profile: LayerProfile) -> pd.DataFrame:
    """The table the porting study prints: layer_type, count, time_us, ratio (slowest first)."""
    return pd.DataFrame([(r.layer_type, r.count, r.time_us, r.ratio) for r in profile.rows], columns=COLUMNS)


def profile_figure(frame: pd.DataFrame, title: str):
    """Horizontal bars of each layer type's share of the forward time."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry

    figure = Figure(figsize=(6, 0.35 * max(len(frame), 3) + 1.2))
    axes = figure.add_subplot()
    ordered = frame.iloc[::-1]
    bars = axes.barh(ordered["layer_type"], ordered["ratio"] * 100, color="#4c72b0")
    for bar, (count, us) in zip(bars, zip(ordered["count"], ordered["time_us"])):
        axes.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {us:,.0f} us  ({count})", va="center", fontsize=8)
    axes.set_xlabel("share of forward time (%)")
    axes.set_title(title, fontsize=10)
    axes.set_xlim(0, max(100.0, float(ordered["ratio"].max() * 100) * 1.35) if len(frame) else 100)
    figure.tight_layout()
    return figure
