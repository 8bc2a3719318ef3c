"""Finding runs again by their tags, and reopening one: what a resumed search or a gate needs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from yolomlu.tracking import owner
from yolomlu.tracking.query import _no_progress_bar
from yolomlu.tracking.store import RunLogger, TrackingSettings, _client, _quoted, ensure_experiment


def find_run(settings: TrackingSettings, tags: Mapping[str, str]) -> str | None:
    """Id of the newest run of ``settings.experiment`` carrying every tag value in ``tags``."""
    client = _client(settings.uri)
    conditions = " and ".join(f"tags.`{key}` = {_quoted(value)}" for key, value in tags.items())
    runs = client.search_runs(
        [ensure_experiment(settings)], filter_string=conditions, order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0].info.run_id if runs else None


def reopen(settings: TrackingSettings, run_id: str) -> RunLogger:
    """The run, RUNNING again and owned by this process (a resumed search logs into the parent its
    first part opened; the owner tags and heartbeat keep other jobs from closing it as dead)."""
    client = _client(settings.uri)
    for key, value in owner.owner_tags().items():
        client.set_tag(run_id, key, value)
    client.update_run(run_id, status="RUNNING")
    owner.start_heartbeat(run_id, lambda now: client.set_tag(run_id, owner.HEARTBEAT_TAG, now))
    return RunLogger(client, run_id)


def tag_of(settings: TrackingSettings, run_id: str, key: str) -> str | None:
    return _client(settings.uri).get_run(run_id).data.tags.get(key)


def child_with_tag(settings: TrackingSettings, parent_run_id: str, key: str, value: str) -> dict | None:
    """The newest child of ``parent_run_id`` tagged ``key=value``: run_id, status, error, fps and
    map50_95 (None where not logged)."""
    client = _client(settings.uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.`{key}` = {_quoted(value)}",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]

    def metric(name: str) -> float | None:
        value = run.data.metrics.get(name)
        return None if value is None or math.isnan(value) else float(value)

    return {
        "run_id": run.info.run_id,
        "status": run.info.status,
        "error": run.data.tags.get("error", ""),
        "fps": metric("fps"),
        "map50_95": metric("map50_95"),
    }


def download_artifact(settings: TrackingSettings, run_id: str, path: str, dst: Path) -> Path | None:
    """The run's artifact ``path`` (a file or a folder) downloaded into ``dst``; None if it has none."""
    from mlflow.exceptions import MlflowException

    client = _client(settings.uri)
    parent = str(PurePosixPath(path).parent)
    listed = {item.path for item in client.list_artifacts(run_id, None if parent == "." else parent)}
    if path not in listed:
        return None
    try:
        with _no_progress_bar():
            return Path(client.download_artifacts(run_id, path, str(dst)))
    except MlflowException:
        return None


def log_folder(settings: TrackingSettings, run_id: str, folder: Path, artifact_path: str) -> None:
    """Every file under ``folder`` into the (possibly closed) run, under ``artifact_path``."""
    _client(settings.uri).log_artifacts(run_id, str(folder), artifact_path)


def run_metrics(settings: TrackingSettings, run_id: str) -> tuple[str, dict[str, float]]:
    """The run's name and its metrics' latest values."""
    run = _client(settings.uri).get_run(run_id)
    return run.info.run_name, {k: float(v) for k, v in run.data.metrics.items()}
