"""What a search's report adds: its trials (the rejected ones and why), its cost, the budget line on
the Pareto plot, and the best the grid sweeps of the same model found within the same budget."""

from __future__ import annotations

import math

import pandas as pd

from yolomlu.report.compare import comparison_table
from yolomlu.tracking import TrackingSettings, fetch_runs, load_table_artifact

TRIALS_ARTIFACT = "search_trials.json"  # written by tasks.search on the parent run


def search_sections(settings: TrackingSettings, parent_tags: dict, table: pd.DataFrame) -> tuple[list[str], list[tuple[str, pd.DataFrame]]]:
    """Notes and tables for a search parent (tag ``search=true``); sets ``table.attrs["budget_map50_95"]``
    for the Pareto plot."""
    parent = parent_tags["run_id"]
    max_drop = float(parent_tags.get("search.max_drop", "nan"))
    trials = load_table_artifact(settings, parent, TRIALS_ARTIFACT)
    notes, extra = [], []
    base = table[table["baseline"].astype(bool)]
    if len(base) and not math.isnan(max_drop) and not math.isnan(base.iloc[0]["map50_95"]):
        table.attrs["budget_map50_95"] = float(base.iloc[0]["map50_95"]) - max_drop
    if trials is not None and len(trials):
        interrupted = trials["why"].fillna("").str.startswith("interrupted")
        ran = trials[trials["state"].isin(["COMPLETE", "FAIL"]) & ~interrupted]
        pruned = trials[trials["state"] == "PRUNED"]
        infeasible = trials[(trials["state"] == "COMPLETE") & (trials["feasible"] == False)]  # noqa: E712 (a column of bools and Nones)
        seconds = pd.to_numeric(trials["seconds"], errors="coerce").sum()
        notes.append(
            f"Search {parent_tags.get('search_study', '')}: {len(ran)} trials ran ({len(infeasible)} over the budget of "
            f"{max_drop} map50_95, {int(((trials['state'] == 'FAIL') & ~interrupted).sum())} failed), {len(pruned)} combinations refused "
            f"before any work, {int(interrupted.sum())} interrupted; cost {seconds / 60:.1f} minutes of trials"
        )
        done = trials[(trials["state"] == "COMPLETE") & (trials["feasible"] == True) & trials["same_as"].isna()]  # noqa: E712
        front = [
            row for _, row in done.iterrows()
            if not any(o["fps"] >= row["fps"] and o["map50_95"] >= row["map50_95"] and (o["fps"], o["map50_95"]) != (row["fps"], row["map50_95"]) for _, o in done.iterrows())
        ]  # fmt: skip
        if front:
            best = "; ".join(f"#{int(r['trial'])} {r['overrides']} ({r['fps']:.3g} fps, map50_95 {r['map50_95']:.4f})" for r in sorted(front, key=lambda r: -r["fps"]))
            notes.append(f"Pareto front within the budget (fastest first): {best}")
        shown = trials[["trial", "state", "overrides", "fps", "map50_95", "drop", "feasible", "same_as", "why"]].copy()
        for column, digits in (("fps", 3), ("map50_95", 4), ("drop", 4)):
            shown[column] = [("–" if pd.isna(v) else f"{float(v):.{digits}f}") for v in shown[column]]
        shown["same_as"] = ["" if pd.isna(v) else f"#{int(v)}" for v in shown["same_as"]]
        extra.append(("Search trials (every one tried, the rejected ones with why)", shown.fillna("")))
    best = grid_best(settings, parent_tags, table, max_drop)
    if best is not None:
        extra.append(("Grid sweeps of the same model: their best within the same budget", best))
    return notes, extra


def grid_best(settings: TrackingSettings, parent_tags: dict, table: pd.DataFrame, max_drop: float) -> pd.DataFrame | None:
    """For the newest grid sweeps (not searches) whose jobs ran the search's model: the fastest variant
    within ``max_drop`` of that sweep's own baseline."""
    runs = fetch_runs(settings, experiment=settings.experiment)
    model = runs.loc[runs["run_id"].isin(table["run_id"]), "params.model.name"].dropna() if "params.model.name" in runs else pd.Series(dtype=str)
    if model.empty or math.isnan(max_drop):
        return None
    sweeps = runs[(runs.get("tags.sweep") == "true") & (runs.get("tags.search") != "true") & (runs["status"] == "FINISHED")]
    rows = []
    for _, sweep in sweeps.iterrows():
        children = runs[runs.get("tags.mlflow.parentRunId") == sweep["run_id"]]
        if children.empty or set(children["params.model.name"].dropna()) != {model.iloc[0]}:
            continue
        compared = comparison_table(children)
        feasible = compared[(compared["status"] == "FINISHED") & (compared["delta_map50_95"] >= -max_drop) & compared["fps"].notna()]
        if feasible.empty:
            continue
        top = feasible.sort_values("fps", ascending=False).iloc[0]
        rows.append(
            {"sweep": f"{sweep['tags.mlflow.runName']}", "variant": top["variant"], "fps": f"{top['fps']:.3g}",
             "map50_95": f"{top['map50_95']:.4f}", "Δ mAP50-95": f"{top['delta_map50_95']:+.4f}"}
        )  # fmt: skip
        if len(rows) == 3:
            break
    return pd.DataFrame(rows) if rows else None
