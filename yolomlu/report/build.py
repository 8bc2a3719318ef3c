"""A sweep's runs -> comparison table, figures, HTML and Markdown report, logged to the sweep's parent."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from yolomlu.report.compare import comparison_table, repeat_table, standin_timed
from yolomlu.report.deploy import deploy_frame, deploy_plot, deploy_title, throughput_table
from yolomlu.report.plots import pareto_plot, per_class_plot, profile_plots, repeat_plot
from yolomlu.report.render import CSV_NAME, figure_filename, write_report
from yolomlu.report.search import search_sections
from yolomlu.tracking import TrackingSettings, fetch_runs, latest_sweep, load_table_artifact, log_report, repeat_sweeps, run_label, run_tags

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PER_CLASS_ARTIFACT = "per_class_ap.json"
PROFILE_ARTIFACT = "layer_profile.json"
PARETO_TITLE = "Pareto plot: map50_95 against fps"
PER_CLASS_TITLE = "Per-class AP"
PROFILE_TITLE = "Layer profiles"
REPEAT_TITLE = "Speed-ups over repeated sweeps"


@dataclass
class ReportResult:
    table: pd.DataFrame  # comparison_table of the runs
    html: Path
    md: Path
    parent_run_id: str | None = None  # where the report was logged (None: all runs of the experiment)
    notes: list[str] = field(default_factory=list)
    repeats: pd.DataFrame | None = None  # repeat_table over the repeated sweeps, when asked for


def select_runs(settings: TrackingSettings, parent_run_id: str | None) -> tuple[pd.DataFrame, str | None, str]:
    """The runs a report covers: the children of ``parent_run_id``, else of the newest sweep,
    else (no sweep at all) every run of the experiment. Returns (runs, parent id, what was chosen)."""
    parent = parent_run_id or latest_sweep(settings)
    if parent:
        how = "given" if parent_run_id else "the newest sweep"
        return fetch_runs(settings, parent_run_id=parent), parent, f"children of sweep run {parent} ({how})"
    runs = fetch_runs(settings, experiment=settings.experiment)
    return runs, None, f"all runs of experiment {settings.experiment!r} (it has no sweep run)"


def load_tables(settings: TrackingSettings, table: pd.DataFrame, artifact: str) -> dict[str, pd.DataFrame]:
    """``artifact`` of each finished run, keyed by variant (a duplicate variant name gets its run id).

    A reused run carries metrics but no artifacts, so its table is read from ``reused_from``.
    """
    tables: dict[str, pd.DataFrame] = {}
    for _, row in table[table["status"] == "FINISHED"].iterrows():
        frame = load_table_artifact(settings, row["run_id"], artifact)
        if frame is None and row["reused_from"]:
            frame = load_table_artifact(settings, row["reused_from"], artifact)
        if frame is None or frame.empty:
            continue
        name = f"{row['variant']}†" if row["reused"] else str(row["variant"])
        if name in tables:
            name = f"{name} ({row['run_id'][:8]})"
        tables[name] = frame
    return tables


def build_figures(
    table: pd.DataFrame, per_class: dict[str, pd.DataFrame], profiles: dict[str, pd.DataFrame]
) -> dict[str, Figure]:
    """Section title -> Figure, leaving out what no run logged. Runs timed on a stand-in of the device's
    SDK stay off the Pareto plot: their fps are CPU times, not the device's speed."""
    figures = {}
    timed = table[~standin_timed(table)]
    if (timed["status"].eq("FINISHED") & timed["fps"].notna()).any():
        figures[PARETO_TITLE] = pareto_plot(timed)
    if per_class:
        figures[PER_CLASS_TITLE] = per_class_plot(per_class)
    if profiles:
        figures[PROFILE_TITLE] = profile_plots(profiles)
    return figures


LATEST = "latest"  # out_dir/latest: the newest report's folder, always at the same path


def report_folder(out_dir: Path, label: str) -> Path:
    """``out_dir/<label>``, and ``out_dir/latest`` pointed at it (a symbolic link replaced
    atomically; where links cannot be made, a text file naming the folder)."""
    folder = Path(out_dir) / label
    folder.mkdir(parents=True, exist_ok=True)
    latest = Path(out_dir) / LATEST
    temporary = Path(out_dir) / f".{LATEST}.{os.getpid()}"
    try:
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(label, target_is_directory=True)
        temporary.replace(latest)
    except OSError:
        temporary.unlink(missing_ok=True)
        (Path(out_dir) / f"{LATEST}.txt").write_text(f"{label}\n", encoding="utf-8")
    return folder


def build_report(settings: TrackingSettings, parent_run_id: str | None, out_dir: Path, repeats: int = 1) -> ReportResult:
    """Read a sweep's runs, compare them, write ``report.html`` and ``report.md`` (with PNGs and
    ``comparison.csv``) into ``out_dir/<sweep run name>-<id>/`` (``out_dir/latest`` points at the
    newest), and log those files to the parent run under ``report/``.

    ``parent_run_id`` None: the newest sweep in ``settings.experiment``; with no sweep at all, every
    run of the experiment (then nothing is logged: there is no parent to log to). ``repeats`` > 1
    adds how the speed-ups spread over that many runs of the same sweep (the newest ones up to it).
    """
    if repeats < 1:
        raise ValueError(f"report.repeats={repeats} must be 1 or more")
    runs, parent, chosen = select_runs(settings, parent_run_id)
    table = comparison_table(runs)
    extra: list[tuple[str, pd.DataFrame]] = []
    search_notes: list[str] = []
    parent_tags = run_tags(settings, parent) if parent else {}
    if parent_tags.get("search") == "true":
        search_notes, extra = search_sections(settings, {**parent_tags, "run_id": parent}, table)
    per_class = load_tables(settings, table, PER_CLASS_ARTIFACT)
    profiles = load_tables(settings, table, PROFILE_ARTIFACT)
    figures = build_figures(table, per_class, profiles)
    sections = []
    deploy = deploy_frame(table, runs)
    if deploy is not None:  # a deployment sweep (core_number x batch size): MagicMind-style throughput
        figures[deploy_title(deploy)] = deploy_plot(deploy)
        sections.append((f"{deploy_title(deploy)}: fps (device fps in brackets where the SDK printed hardware times)",
                         throughput_table(deploy)))  # fmt: skip

    notes = [f"Runs: {chosen}, store {settings.uri}; written {time.strftime('%Y-%m-%d %H:%M:%S')}."]
    spread = None
    if repeats > 1 and parent:
        sweeps = repeat_sweeps(settings, parent, repeats)
        spread = repeat_table([comparison_table(fetch_runs(settings, parent_run_id=s)) for s in sweeps])
        figures[REPEAT_TITLE] = repeat_plot(spread)
        notes.append(f"Repeatability: {len(sweeps)} runs of this sweep ({', '.join(s[:8] for s in sweeps)}), oldest first")
        if len(sweeps) < repeats:
            notes.append(f"report.repeats={repeats} but the store holds {len(sweeps)} runs of this sweep")
    elif repeats > 1:
        notes.append("report.repeats needs a sweep: these runs have none")
    notes += search_notes + table.attrs.get("notes", [])
    if not profiles and len(table):
        notes.append(f"no run logged {PROFILE_ARTIFACT}: no layer-profile charts")
    title = f"yolomlu comparison — {settings.experiment}" + (f" / sweep {parent[:8]}" if parent else "")
    folder = report_folder(out_dir, run_label(settings, parent) if parent else f"experiment-{settings.experiment}")
    html_path, md_path = write_report(table, figures, folder, title, notes, repeats=spread, sections=extra + sections)
    if parent:
        files = [html_path, md_path, html_path.parent / CSV_NAME] + [html_path.parent / figure_filename(t) for t in figures]
        log_report(settings, parent, files)
    return ReportResult(table=table, html=html_path, md=md_path, parent_run_id=parent, notes=notes, repeats=spread)
