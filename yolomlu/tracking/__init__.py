"""Experiment tracking. The only package that imports mlflow."""

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
    "default_tracking_uri",
    "ensure_experiment",
    "find_finished_run",
    "flatten_params",
    "import_records",
    "job_run",
    "reuse_run",
    "start_run",
]
