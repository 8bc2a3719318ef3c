"""The MLU deployment sweep (``experiments/sweep=mlu_deploy``) as MagicMind's benchmark tables it:
throughput per mode and core count (rows) and batch size (columns), and the same as a chart.

Pure pandas and matplotlib on the comparison table and the runs' params; nothing is drawn or listed
for a sweep that varies neither ``backend.core_number`` nor the batch size of ``mlu_legacy`` runs.
Times taken on the torch_mlu stand-in (tag ``timing.device=standin ...``) are this machine's CPU
times: the title says so, and they are shown as what was measured, not as the device's speed.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from yolomlu.report.compare import standin_timed
from yolomlu.report.plots import _colors, _figure
from yolomlu.report.render import STANDIN_MARK, _fixed

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["DEPLOY_TITLE", "deploy_frame", "deploy_plot", "deploy_title", "throughput_table"]

DEPLOY_TITLE = "MLU deployment throughput"
_PARAMS = {"backend": "params.backend.name", "mode": "params.backend.mode", "core_number": "params.backend.core_number"}


def deploy_frame(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame | None:
    """One row per finished, timed ``mlu_legacy`` run: variant, mode, core_number, batch_size, fps,
    latency_ms_p50, device_fps, standin (timed on the stand-in). ``table``: the comparison table of
    ``runs`` (``mlflow.search_runs``' frame, with its ``params.*`` columns). None unless the runs vary
    core_number or batch size (a deployment sweep)."""
    if runs.empty or any(c not in runs for c in _PARAMS.values()):
        return None
    params = runs[["run_id", *_PARAMS.values()]].rename(columns={v: k for k, v in _PARAMS.items()})
    rows = table.merge(params, on="run_id", how="inner")
    rows = rows[(rows["backend"] == "mlu_legacy") & (rows["status"] == "FINISHED") & rows["fps"].notna()]
    if rows.empty:
        return None
    rows = rows.assign(
        core_number=pd.to_numeric(rows["core_number"], errors="coerce"),
        standin=standin_timed(rows),
    )
    if rows["core_number"].nunique() < 2 and rows["batch_size"].nunique() < 2:
        return None
    columns = ["variant", "mode", "core_number", "batch_size", "fps", "latency_ms_p50", "device_fps", "standin"]
    return rows[columns].sort_values(["mode", "core_number", "batch_size"], kind="stable").reset_index(drop=True)


def deploy_title(frame: pd.DataFrame) -> str:
    """The section's title; it says when the times are the stand-in's CPU times."""
    if frame["standin"].any():
        return f"{DEPLOY_TITLE} (torch_mlu stand-in: CPU times, not MLU throughput)"
    return DEPLOY_TITLE


def throughput_table(frame: pd.DataFrame) -> pd.DataFrame:
    """fps as display strings: a row per (mode, cores), a column per batch size (``bs 1`` ...); where the
    SDK printed hardware times, the device's own fps in brackets. A stand-in's CPU fps carry the
    report's stand-in mark (§)."""

    def cell(rows: pd.DataFrame) -> str:
        if rows.empty:
            return "–"
        row = rows.iloc[-1]  # a repeated configuration: the newest run
        text = _fixed(float(row["fps"]))
        if not math.isnan(float(row["device_fps"])):
            text += f" ({_fixed(float(row['device_fps']))})"
        return text + (STANDIN_MARK if row["standin"] else "")

    batches = sorted(int(b) for b in frame["batch_size"].dropna().unique())
    out = []
    for (mode, cores), rows in frame.groupby(["mode", "core_number"], sort=True):
        entry = {"mode": str(mode), "cores": f"{cores:.0f}"}
        for batch in batches:
            entry[f"bs {batch}"] = cell(rows[rows["batch_size"] == batch])
        out.append(entry)
    return pd.DataFrame(out)


def deploy_plot(frame: pd.DataFrame) -> Figure:
    """Throughput (fps) against batch size, one line per mode and core count (log2 batch axis)."""
    fig = _figure(7.5, 4.5)
    ax = fig.subplots()
    groups = list(frame.groupby(["mode", "core_number"], sort=True))
    for color, ((mode, cores), rows) in zip(_colors(len(groups)), groups):
        rows = rows.drop_duplicates("batch_size", keep="last").sort_values("batch_size")
        style = "-" if mode == "fused" else "--"
        ax.plot(rows["batch_size"], rows["fps"], style, marker="o", color=color, label=f"{mode}, {cores:.0f} cores")
    ax.set_xscale("log", base=2)
    batches = sorted(int(b) for b in frame["batch_size"].dropna().unique())
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size")
    standin = bool(frame["standin"].any())
    ax.set_ylabel("fps on this machine's CPU (stand-in)" if standin else "fps (images/s, inference)")
    ax.set_title(deploy_title(frame), fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig
