"""A small but complete sweep in a real SQLite MLflow store, written with yolomlu.tracking directly
(no model runs, so it takes a second or two): an older sweep, and a newer one with a baseline, a
Focus->Conv variant, a result reused from the older sweep, and a job that failed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from yolomlu.tracking import TrackingSettings, job_run, reuse_run, start_run


@dataclass
class SweepStore:
    settings: TrackingSettings
    db: Path
    old_parent: str
    parent: str
    runs: dict[str, str]  # variant -> run id in the newer sweep
    tables: dict[str, dict[str, pd.DataFrame]]  # run id -> artifact path -> the table logged there


def _metrics(map50_95: float, fps: float, latency: float) -> dict[str, float]:
    accuracy = {k: map50_95 + d for k, d in {
        "map50_95": 0.0, "map50": 0.2, "map75": 0.05, "map_small": -0.2, "map_medium": 0.0, "map_large": 0.1,
        "ar1": -0.1, "ar10": 0.05, "ar100": 0.1, "ar_small": -0.1, "ar_medium": 0.1, "ar_large": 0.2,
    }.items()}  # fmt: skip
    speed = {
        "fps": fps, "latency_ms_p50": latency, "latency_ms_p90": latency * 1.1, "latency_ms_p99": latency * 1.3,
        "pre_ms": 1.0, "infer_ms": 1000 / fps, "post_ms": 0.5, "e2e_fps": fps * 0.8,
    }  # fmt: skip
    return {**accuracy, **speed, "peak_rss_mb": 512.0, "params": 1.9e6, "gflops": 4.5, "layers": 157, "model_mb": 7.3}


def _per_class(shift: float) -> pd.DataFrame:
    names = ["circle", "square", "triangle"]
    return pd.DataFrame(
        {"category_id": [1, 2, 3], "name": names, "ap50_95": [0.6 + shift, 0.5 + shift, 0.4 + shift],
         "ap50": [0.9, 0.8, 0.7], "n_gt": [10, 12, 8]}
    )  # fmt: skip


def _profile(focus: bool) -> pd.DataFrame:
    rows = [("CONV", 60, 9000.0), ("ACTIVE", 57, 2000.0), ("CONCAT", 14, 500.0), ("INTERP", 2, 100.0)]
    if focus:
        rows.insert(2, ("STRIDEDSLICE", 4, 400.0))
    frame = pd.DataFrame(rows, columns=["layer_type", "count", "time_us"])
    return frame.assign(ratio=frame["time_us"] / frame["time_us"].sum())


def _job(settings, name, parent, variant, baseline, metrics, tables, logged, extra_tags=()):
    tags = {"variant": variant, "baseline": str(baseline).lower(), "accuracy": "measured", "config_hash": variant}
    tags.update(extra_tags)
    with job_run(settings, name, tags=tags, parent_run_id=parent) as run:
        run.log_params({"bench.batch_size": 1, "img_size": 320, "model.name": "demo"})
        run.log_metrics(metrics)
        for path, frame in tables.items():
            run.log_table(frame, path)
    logged[run.run_id] = tables
    return run.run_id


def build_sweep_store(root: Path) -> SweepStore:
    db = root / "mlflow.db"
    settings = TrackingSettings(uri=f"sqlite:///{db}", experiment="yolomlu")
    logged: dict[str, dict[str, pd.DataFrame]] = {}
    old = start_run(settings, "sweep-old", tags={"sweep": "true"})
    fused_source = _job(
        settings, "demo-fused", old.run_id, "fused", False, _metrics(0.55, 80.0, 12.5),
        {"per_class_ap.json": _per_class(0.0), "layer_profile.json": _profile(focus=True)}, logged,
    )  # fmt: skip
    old.end("FINISHED")

    parent = start_run(settings, "sweep-new", tags={"sweep": "true"})
    runs = {
        "cpu_reference": _job(
            settings, "demo-eager", parent.run_id, "cpu_reference", True, _metrics(0.55, 50.0, 20.0),
            {"per_class_ap.json": _per_class(0.0), "layer_profile.json": _profile(focus=True)}, logged,
        ),
        "focus_conv": _job(
            settings, "demo-focus", parent.run_id, "focus_conv", False, {**_metrics(0.5498, 55.0, 18.0), "parity_max_abs": 2e-6},
            {"per_class_ap.json": _per_class(-0.01), "layer_profile.json": _profile(focus=False)}, logged,
        ),
    }  # fmt: skip
    # A result reused from the older sweep: reuse_run copies metrics and tags, not artifacts.
    runs["fused"] = reuse_run(settings, fused_source, "demo-fused", parent_run_id=parent.run_id)
    try:
        broken = {"variant": "broken", "baseline": "false"}
        with job_run(settings, "demo-broken", tags=broken, parent_run_id=parent.run_id) as run:
            runs["broken"] = run.run_id
            raise MemoryError("out of memory at batch 64")
    except MemoryError:
        pass
    parent.end("FINISHED")
    return SweepStore(settings=settings, db=db, old_parent=old.run_id, parent=parent.run_id, runs=runs, tables=logged)


@pytest.fixture(scope="session")
def sweep_store(tmp_path_factory) -> SweepStore:
    """Built once per session (a fresh SQLite store costs seconds of migrations). Tests read it;
    the only writes they make are report files logged to a parent, which no test asserts absent."""
    return build_sweep_store(tmp_path_factory.mktemp("sweep_store"))
