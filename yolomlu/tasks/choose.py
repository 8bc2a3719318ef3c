"""Which run a promotion or a gate is about, and the parts of a run's config that make its port.

The rule (``promote`` and ``gate`` without ``source=<run id>``): among the jobs of the newest sweep or
search, the fastest one within the accuracy budget — finished, accuracy measured, not timed under
contention, and its ``map50_95`` at most ``max_drop`` below the sweep's baseline (a search's own
``search.max_drop``, else the task's). The same drop as ``quant.max_drop`` and ``search.max_drop``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from yolomlu.report.compare import comparison_table
from yolomlu.tracking import TrackingSettings, fetch_runs, latest_sweep, run_tags
from yolomlu.tracking.lookup import download_artifact

# What a run's config says about the port itself (the model, its rewrites, quantization, backend and
# input size); the data it was measured on, the thresholds and the benchmark are the task's.
PORT_KEYS = ("model", "backend", "quant", "transforms", "img_size")


def choose_run(settings: TrackingSettings, parent: str | None, max_drop: float | None) -> tuple[str, str]:
    """(run id, why it was chosen) by the rule above, in the sweep ``parent`` (None: the newest)."""
    parent = parent or latest_sweep(settings)
    if parent is None:
        raise ValueError(f"no sweep or search in experiment {settings.experiment!r} of {settings.uri}: name a run with source=<run id>")
    tags = run_tags(settings, parent)
    budget = float(tags["search.max_drop"]) if "search.max_drop" in tags else max_drop
    if budget is None:
        raise ValueError("no accuracy budget for the rule: set max_drop (or name a run with source=<run id>)")
    table = comparison_table(fetch_runs(settings, parent_run_id=parent))
    ok = table[(table["status"] == "FINISHED") & table["map50_95"].notna() & table["fps"].notna() & ~table["contended"].eq(True)]
    feasible = ok[ok["delta_map50_95"] >= -budget - 1e-12]
    if feasible.empty:
        raise ValueError(
            f"no job of sweep {parent} is finished, measured, uncontended and within {budget} map50_95 of its baseline "
            f"({len(table)} jobs): name a run with source=<run id>"
        )
    best = feasible.sort_values("fps", ascending=False, kind="stable").iloc[0]
    run_id = best["reused_from"] or best["run_id"]  # a copy's files are its source's
    why = (
        f"the fastest job of sweep {tags.get('mlflow.runName', parent)} within {budget} map50_95 of its baseline: "
        f"{best['variant']} ({best['fps']:.3g} fps, map50_95 {best['map50_95']:.4f}, {best['delta_map50_95']:+.4f})"
    )
    return run_id, why


def chosen_run(settings: TrackingSettings, source: str | None, parent: str | None, max_drop: float | None) -> tuple[str, str]:
    """(run id, why): ``source`` when the command names a run, else the rule on the sweep ``parent``."""
    if source is not None:
        return str(source), f"named by source={source}"
    return choose_run(settings, parent, max_drop)


def run_config(settings: TrackingSettings, run_id: str) -> dict[str, Any]:
    """The resolved config a run recorded (its ``config.yaml`` artifact)."""
    with tempfile.TemporaryDirectory(prefix="yolomlu-config-") as folder:
        path = download_artifact(settings, run_id, "config.yaml", Path(folder))
        if path is None:
            raise ValueError(f"run {run_id} has no config.yaml: it is not a job's run")
        return yaml.safe_load(path.read_text())


def with_port(base: dict[str, Any], port_of: dict[str, Any], weights: str | None = None) -> dict[str, Any]:
    """``base`` (a resolved config) running the port of ``port_of``; ``weights`` replaces the model's."""
    config = {**base, **{k: port_of[k] for k in PORT_KEYS if k in port_of}}
    config["model"] = dict(config["model"])
    if weights is not None:
        config["model"]["weights"] = weights
    return config
