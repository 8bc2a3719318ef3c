"""Runs -> the comparison table: one row per variant, with deltas and speed-ups against the baseline.

Pure pandas on the frame ``mlflow.search_runs`` (or :func:`yolomlu.tracking.fetch_runs`) returns;
no store access, so it is tested with hand-built frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

ACCURACY_METRICS = (
    "map50_95", "map50", "map75", "map_small", "map_medium", "map_large",
    "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large",
)  # fmt: skip
SPEED_METRICS = (
    "fps", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "pre_ms", "infer_ms", "post_ms", "e2e_fps",
    "device_fps", "device_ms", "alone_fps", "alone_latency_ms_p50", "alone_ratio",
)  # fmt: skip
# What a timing was measured under (evaluate.conditions): load, steal, others' cores, CPU use.
CONDITION_METRICS = ("cond_others_cores", "cond_steal_pct", "cond_cpu_util", "cond_loadavg_before")
MEMORY_METRICS = ("peak_rss_mb", "gpu_mem_mb")
MODEL_METRICS = ("params", "gflops", "layers", "model_mb")
FIDELITY_METRICS = ("parity_max_abs", "parity_box_agreement")
# Quantization evidence: layers quantized, layer SQNR, and the float fallback's mAP and recovery.
QUANT_METRICS = ("quant_layers", "sqnr_mean_db", "sqnr_min_db", "fallback_map50_95", "fallback_recovered_map50_95")
DERIVED = ("delta_map50_95", "speedup_fps", "speedup_latency", "speedup_device_fps")

# Column order of the table. Every column is always present (NaN where a run did not log it), so
# the table has one shape whatever the sweep measured; renderers drop the empty ones.
COLUMNS = (
    ("run_id", "variant", "status", "baseline", "reused", "reused_from", "reused_from_sweep", "reused_from_start")
    + ("contended", "contended_reason", "timing_device", "accuracy", "batch_size", "img_size")
    + ACCURACY_METRICS
    + ("delta_map50_95",)
    + SPEED_METRICS
    + ("speedup_fps", "speedup_latency", "speedup_device_fps")
    + MEMORY_METRICS
    + MODEL_METRICS
    + FIDELITY_METRICS
    + QUANT_METRICS
    + CONDITION_METRICS
    + ("error",)
)


def comparison_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run of ``runs`` (sweep parents, tagged ``sweep=true``, are left out).

    Columns (see ``COLUMNS``): ``variant`` (tag ``variant``, else the run name), ``status``,
    ``baseline`` (True for the one run the deltas refer to), ``reused`` (the result was carried
    over from ``reused_from`` instead of measured by this run), ``accuracy`` (the run's tag; without
    one, "measured" if it logged ``map50_95``, else "off"), ``batch_size`` and ``img_size`` (the
    conditions fps and latency were measured under), the metrics as logged, and:

    - ``delta_map50_95`` = map50_95 - the baseline's map50_95;
    - ``speedup_fps`` = fps / the baseline's fps (>1: more images per second);
    - ``speedup_latency`` = the baseline's latency_ms_p50 / latency_ms_p50 (>1: a batch takes less
      time; latency is per batch, so across batch sizes this is not a throughput ratio, fps is);
    - ``speedup_device_fps`` = device_fps / the baseline's device_fps (the forward on the device
      alone, where the backend times its device).

    ``timing_device`` is the run's ``timing.device`` tag. A run timed on a stand-in of the target's SDK
    (``standin ...``: the MLU worker on the torch_mlu stand-in, whose times are this machine's CPU
    times) gets no speed-ups, and none are computed against such a baseline: its fps are shown, never
    compared.

    The baseline is the FINISHED run tagged ``baseline=true`` (several: the first measured, not
    reused, one). Without one the derived columns are NaN. FAILED and KILLED runs are kept, with
    their ``error``. Rows: the baseline first, then in start order. Remarks a reader needs (no
    baseline, several baselines, a baseline without accuracy) are in ``table.attrs["notes"]``.
    """
    notes: list[str] = []
    if "tags.sweep" in runs.columns:
        runs = runs[runs["tags.sweep"].fillna("") != "true"]
    if runs.empty:
        table = pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in COLUMNS})
        table.attrs["notes"] = ["no runs to compare"]
        return table
    if "start_time" in runs.columns:
        runs = runs.sort_values("start_time", kind="stable")
    runs = runs.reset_index(drop=True)

    def tag(key: str) -> pd.Series:
        return _column(runs, f"tags.{key}", None)

    def metric(key: str) -> pd.Series:
        return pd.to_numeric(_column(runs, f"metrics.{key}", math.nan), errors="coerce").astype("float64")

    table = pd.DataFrame(index=runs.index)
    table["run_id"] = runs["run_id"].astype(str)
    table["variant"] = tag("variant").fillna(tag("mlflow.runName")).fillna(table["run_id"].str[:8]).astype(str)
    table["status"] = runs["status"].astype(str)
    reused_from = tag("reused_from").fillna("").astype(str)
    table["reused"] = reused_from != ""
    table["reused_from"] = reused_from
    table["reused_from_sweep"] = tag("reused_from_sweep").fillna("").astype(str)
    table["reused_from_start"] = tag("reused_from_start").fillna("").astype(str)
    table["contended"] = tag("contended").fillna("").astype(str).str.lower() == "true"
    table["contended_reason"] = tag("contended_reason").fillna("").astype(str)
    table["timing_device"] = tag("timing.device").fillna("").astype(str)
    maps = metric("map50_95")
    accuracy = tag("accuracy")
    table["accuracy"] = accuracy.where(accuracy.notna(), maps.notna().map({True: "measured", False: "off"})).astype(str)
    table["batch_size"] = _first_number(runs, ("params.bench.batch_size", "tags.bench.batch_size"))
    table["img_size"] = _first_number(runs, ("params.img_size", "tags.img_size"))
    for key in ACCURACY_METRICS + SPEED_METRICS + MEMORY_METRICS + MODEL_METRICS + FIDELITY_METRICS + QUANT_METRICS + CONDITION_METRICS:
        table[key] = metric(key)
    table["error"] = tag("error").fillna("").astype(str)

    reference = _choose_baseline(table, tag("baseline").fillna("").str.lower() == "true", notes)
    table["baseline"] = table.index == reference if reference is not None else False
    if reference is None:
        for key in DERIVED:
            table[key] = math.nan
    else:
        base = table.loc[reference]
        if math.isnan(base["map50_95"]):
            notes.append(
                f"the baseline {base['variant']} has no map50_95 (accuracy: {base['accuracy']}): delta_map50_95 is blank"
            )
        table["delta_map50_95"] = table["map50_95"] - base["map50_95"]
        table["speedup_fps"] = table["fps"] / base["fps"]
        table["speedup_latency"] = base["latency_ms_p50"] / table["latency_ms_p50"]
        table["speedup_device_fps"] = table["device_fps"] / base["device_fps"]
        standin = standin_timed(table)
        speedups = ["speedup_fps", "speedup_latency", "speedup_device_fps"]
        table.loc[standin | bool(standin.loc[reference]), speedups] = math.nan

    # Baseline first, then the sweep's order.
    order = sorted(table.index, key=lambda i: (not table.at[i, "baseline"], i))
    table = table.loc[order, list(COLUMNS)].reset_index(drop=True)
    table["baseline"] = table["baseline"].astype(bool)
    failed = table[~table["status"].isin(["FINISHED", "RUNNING"])]
    if len(failed):
        notes.append(f"{len(failed)} of {len(table)} runs did not finish: {', '.join(failed['variant'])}")
    if table["reused"].any():
        n = int(table["reused"].sum())
        were = "results were" if n > 1 else "result was"
        notes.append(f"{n} {were} reused from earlier runs of the same sweep with the same config_hash, not measured again")
    notes += contention_notes(table)
    timed = standin_timed(table) & table["fps"].notna()
    if timed.any():
        notes.append(
            f"STAND-IN TIMES: {int(timed.sum())} runs were timed on a stand-in of the device's SDK ({', '.join(table.loc[timed, 'variant'])}): "
            "their fps and latencies are this machine's CPU times, not the device's; no speed-ups are computed for them "
            "and the Pareto plot leaves them out"
        )
    table.attrs["notes"] = notes
    return table


def standin_timed(table: pd.DataFrame) -> pd.Series:
    """True for the rows timed on a stand-in of the target's SDK (tag ``timing.device=standin ...``)."""
    if "timing_device" not in table:
        return pd.Series(False, index=table.index)
    return table["timing_device"].fillna("").astype(str).str.startswith("standin")


def contention_notes(table: pd.DataFrame) -> list[str]:
    """What a reader must know before trusting the speed columns: which runs were timed while
    other work competed for the machine (tag ``contended=true``), above all the baseline."""
    contended = table[table["contended"].eq(True) & (table["status"] == "FINISHED")]
    if contended.empty:
        return []
    notes = [
        f"CONTENDED: {len(contended)} of {int((table['status'] == 'FINISHED').sum())} runs were timed while other work "
        f"competed for the machine ({'; '.join(f'{r.variant}: {r.contended_reason}' for r in contended.itertuples())}); "
        "their speed is not comparable: run them again on a quiet machine"
    ]
    base = table[table["baseline"].eq(True)]
    if len(base) and bool(base["contended"].eq(True).iloc[0]):
        notes.append(
            f"the baseline {base.iloc[0]['variant']} itself was timed under contention: every speed-up (fps ×, latency ×) "
            "below is measured against a disturbed baseline"
        )
    return notes


def _choose_baseline(table: pd.DataFrame, tagged: pd.Series, notes: list[str]) -> int | None:
    """Index of the reference run among those tagged baseline=true, or None (with a note)."""
    candidates = table[tagged & (table["status"] == "FINISHED")]
    if candidates.empty:
        failed = table[tagged]
        if len(failed):
            row = failed.iloc[0]
            notes.append(
                f"the baseline {row['variant']} did not finish ({row['status']}: {row['error']}): no deltas or speed-ups"
            )
        else:
            notes.append("no baseline run (tag baseline=true) among these runs: no deltas or speed-ups")
        return None
    # A fresh measurement beats a reused one; then the earliest (the frame is in start order).
    chosen = candidates.sort_values("reused", kind="stable").index[0]
    if len(candidates) > 1:
        notes.append(
            f"{len(candidates)} runs are tagged baseline=true; deltas and speed-ups use "
            f"{table.at[chosen, 'variant']} ({table.at[chosen, 'run_id']})"
        )
    return int(chosen)


def _column(runs: pd.DataFrame, name: str, missing) -> pd.Series:
    if name in runs.columns:
        return runs[name]
    return pd.Series([missing] * len(runs), index=runs.index, dtype="float64" if missing is not None else "object")


def _first_number(runs: pd.DataFrame, names: tuple[str, ...]) -> pd.Series:
    """The first of ``names`` that a run has, as a number (NaN if none)."""
    values = pd.Series(math.nan, index=runs.index, dtype="float64")
    for name in names:
        values = values.fillna(pd.to_numeric(_column(runs, name, None), errors="coerce").astype("float64"))
    return values


def _dtype(column: str) -> str:
    if column in ("baseline", "reused", "contended"):
        return "bool"
    if column in ("run_id", "variant", "status", "reused_from", "reused_from_sweep", "reused_from_start", "contended_reason",
                  "timing_device", "accuracy", "error"):  # fmt: skip
        return "object"
    return "float64"


def repeat_table(tables: Sequence[pd.DataFrame], metric: str = "speedup_fps") -> pd.DataFrame:
    """How one sweep's result holds up when the sweep is run again: ``metric`` of each variant in
    each of ``tables`` (comparison tables of repeated sweeps, oldest first), with its min, median
    and max and ``spread`` = (max - min) / median.

    Columns: ``variant``, ``sweep 1`` … ``sweep N``, ``min``, ``median``, ``max``, ``spread``. Rows:
    the variants of the last table, in its order. A cell is NaN where that sweep has no clean
    measurement of its own: the variant failed, was missing, was reused from an earlier run (a copy
    is not a second sample), or it or its baseline was timed under contention (a disturbed timing
    says nothing about how the variant's speed-up spreads).
    """
    sweeps = [f"sweep {i + 1}" for i in range(len(tables))]
    variants = list(tables[-1]["variant"]) if tables else []
    out = pd.DataFrame({"variant": variants})
    for label, table in zip(sweeps, tables):
        clean = ~table["contended"].eq(True) if "contended" in table else True
        if "contended" in table and table.loc[table["baseline"].eq(True), "contended"].eq(True).any():
            clean = False  # every speed-up of this sweep is against a disturbed baseline
        measured = table[(table["status"] == "FINISHED") & ~table["reused"].astype(bool) & clean]
        values = measured.drop_duplicates("variant").set_index("variant")[metric]
        out[label] = [float(values.get(v, math.nan)) for v in variants]
    samples = out[sweeps] if sweeps else pd.DataFrame(index=out.index)
    out["min"], out["median"], out["max"] = samples.min(axis=1), samples.median(axis=1), samples.max(axis=1)
    out["spread"] = (out["max"] - out["min"]) / out["median"]
    out.attrs["metric"] = metric
    return out
