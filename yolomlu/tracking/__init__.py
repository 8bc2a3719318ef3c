"""Experiment tracking. The only package that imports mlflow."""

from yolomlu.tracking.liveness import close_dead_runs
from yolomlu.tracking.query import fetch_runs, latest_sweep, load_table_artifact, log_report, repeat_sweeps, run_label, run_tags
from yolomlu.tracking.store import (
    RunLogger,
    TrackingSettings,
    child_runs,
    default_tracking_uri,
    ensure_experiment,
    find_finished_run,
    flatten_params,
    import_records,
    job_run,
    reuse_run,
    start_run,
)

__all__ = [
    "RunLogger",
    "TrackingSettings",
    "child_runs",
    "close_dead_runs",
    "default_tracking_uri",
    "ensure_experiment",
    "fetch_runs",
    "find_finished_run",
    "flatten_params",
    "import_records",
    "job_run",
    "latest_sweep",
    "load_table_artifact",
    "log_report",
    "repeat_sweeps",
    "reuse_run",
    "run_label",
    "run_tags",
    "start_run",
]
