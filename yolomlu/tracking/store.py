"""MLflow runs for workbench jobs: one SQLite store, explicit artifact location, no global state.

Everything goes through an ``MlflowClient`` bound to the configured URI instead of mlflow's fluent
API, so several jobs in one process (a Hydra basic-launcher sweep, the tests) never share an
"active run" by accident.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolomlu.interrupts import uninterrupted
from yolomlu.tracking import owner
from yolomlu.tracking.records import OfflineRunLogger, find_records, read_record
from yolomlu.tracking.store_lock import first_use, store_lock

# mlflow's SQLite store runs alembic migrations on first use and logs every step at INFO.
_NOISY_LOGGERS = ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent")

_MAX_PARAMS_PER_BATCH = 100  # MLflow's limit for one log_batch call
_MAX_PARAM_VALUE = 6000  # MLflow's limit on a param value's length


@dataclass(frozen=True)
class TrackingSettings:
    """Where runs go. ``artifact_root`` is a folder; ``None`` puts it beside a SQLite database."""

    uri: str
    experiment: str
    artifact_root: str | None = None
    offline_dir: str | None = None  # write self-contained run records here instead of to MLflow


def default_tracking_uri(cwd: Path) -> str:
    """SQLite database ``mlflow.db`` in ``cwd``, as an absolute URI (workers may run elsewhere)."""
    return f"sqlite:///{(cwd / 'mlflow.db').resolve()}"


def _artifact_location(settings: TrackingSettings) -> str | None:
    if settings.artifact_root:
        return Path(settings.artifact_root).resolve().as_uri()
    if settings.uri.startswith("sqlite:///"):
        db = Path(settings.uri.removeprefix("sqlite:///"))
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None  # a tracking server decides


class _UninterruptedClient:
    """An MlflowClient whose every call completes before a Ctrl-C or SIGTERM is raised."""

    def __init__(self, client) -> None:
        self._inner = client

    def __getattr__(self, name: str) -> Any:
        if name == "_inner" or name.startswith("__"):
            # Unpickling (a launcher ships the sweep's callback to its workers) looks these up
            # before _inner exists: answer without recursing.
            raise AttributeError(name)
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            with uninterrupted():
                return attribute(*args, **kwargs)

        return call


def _client(uri: str):
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    from mlflow import MlflowClient

    # Constructing the first client of a process builds its store, which creates or migrates a
    # SQLite database's schema: one process at a time (see store_lock).
    with first_use(uri):
        return _UninterruptedClient(MlflowClient(tracking_uri=uri))


def ensure_experiment(settings: TrackingSettings) -> str:
    """Create the store and the experiment if missing; return the experiment id.

    Safe when many processes do it at once: a SQLite store's schema and its experiments are
    created under the store's lock (store_lock); elsewhere, a process that loses the race to
    create the experiment uses the winner's.
    """
    client = _client(settings.uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is None:
        with store_lock(settings.uri):
            experiment = client.get_experiment_by_name(settings.experiment)
            if experiment is None:
                return _create_experiment(client, settings)
    if experiment.lifecycle_stage == "deleted":
        raise ValueError(
            f"MLflow experiment {settings.experiment!r} is deleted in {settings.uri}; "
            "restore it in the UI or choose another tracking.experiment"
        )
    return experiment.experiment_id


def _create_experiment(client, settings: TrackingSettings) -> str:
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(settings.experiment, artifact_location=_artifact_location(settings))
    except MlflowException:
        # Another process (another machine, on a tracking server) created it between our lookup
        # and create: use theirs.
        experiment = client.get_experiment_by_name(settings.experiment)
        if experiment is None:
            raise
        return experiment.experiment_id


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b.c": "value"}``; lists become their string form."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            text = "null" if value is None else str(value)
            flat[name] = text[:_MAX_PARAM_VALUE]
    return flat


class RunLogger:
    """Logging calls for one open MLflow run. Obtain it from :func:`job_run` or :func:`start_run`."""

    def __init__(self, client, run_id: str) -> None:
        self._client = client
        self.run_id = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:_MAX_PARAM_VALUE]) for k, v in params.items()]
        for start in range(0, len(items), _MAX_PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, params=items[start : start + _MAX_PARAMS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if items:
            self._client.log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        if items:
            self._client.log_batch(self.run_id, tags=items)

    def log_table(self, data, artifact_file: str) -> None:
        """A pandas DataFrame (or dict of columns) as an MLflow table (JSON, shown in the UI)."""
        self._client.log_table(self.run_id, data=data, artifact_file=artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, dictionary: Mapping[str, Any], artifact_file: str) -> None:
        self._client.log_dict(self.run_id, dict(dictionary), artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        self._client.log_figure(self.run_id, figure, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str) -> None:
        owner.stop_heartbeat(self.run_id)
        self._client.set_terminated(self.run_id, status=status)


def start_run(
    settings: TrackingSettings,
    run_name: str,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
    heartbeat: bool = True,
) -> RunLogger | OfflineRunLogger:
    """Open a run (or, with ``settings.offline_dir``, a run record); close it with ``.end(status)``.

    The run records the process that owns it (``owner.owner_tags``: host, pid, the process's
    start time; they replace any such tags in ``tags``) and, while it is open and ``heartbeat``,
    refreshes ``run.heartbeat`` from a daemon thread, so that a run whose process died can be
    told apart from one still at work (``tracking.liveness``).
    """
    all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    all_tags.update(owner.owner_tags())
    if settings.offline_dir:
        return OfflineRunLogger(Path(settings.offline_dir), run_name, all_tags, settings.experiment)
    client = _client(settings.uri)
    run = client.create_run(ensure_experiment(settings), run_name=run_name, tags=all_tags)
    run_id = run.info.run_id
    if heartbeat:
        owner.start_heartbeat(run_id, lambda now: client.set_tag(run_id, owner.HEARTBEAT_TAG, now))
    return RunLogger(client, run_id)


@contextmanager
def job_run(
    settings: TrackingSettings,
    run_name: str,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> Iterator[RunLogger | OfflineRunLogger]:
    """Open a run; it ends FINISHED only if the block completes, else FAILED with the error logged.

    The error's one-line summary goes to the tag ``error`` (visible in the runs table) and the
    full traceback to the artifact ``error.txt``; the exception is re-raised. With
    ``settings.offline_dir`` the run becomes a run record in that folder (see ``records``).
    """
    logger = start_run(settings, run_name, tags, parent_run_id)
    try:
        yield logger
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        try:
            logger.set_tags({"error": f"{type(exc).__name__}: {exc}"[:5000]})
            logger.log_text("".join(traceback.format_exception(exc)), "error.txt")
        finally:
            logger.end(status)
        raise
    logger.end("FINISHED")


def child_runs(settings: TrackingSettings, parent_run_id: str) -> list[dict[str, str]]:
    """The runs under ``parent_run_id``: name, status, error (or why the run was found dead and
    closed) and reused_from, oldest first."""
    if settings.offline_dir:
        records = [read_record(f) for f in find_records(Path(settings.offline_dir))] if Path(settings.offline_dir).is_dir() else []
        children = [r for r in records if r["tags"].get("mlflow.parentRunId") == parent_run_id]
        rows = [(r["start_time"], r["run_name"], r["status"], r["tags"]) for r in children]
    else:
        client = _client(settings.uri)
        runs = client.search_runs(
            [ensure_experiment(settings)], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'", max_results=10000
        )
        rows = [(r.info.start_time, r.info.run_name, r.info.status, r.data.tags) for r in runs]
    return [
        {
            "name": name,
            "status": status,
            "error": tags.get("error") or tags.get("killed_reason", ""),
            "reused_from": tags.get("reused_from", ""),
        }
        for _, name, status, tags in sorted(rows, key=lambda row: row[0])
    ]


def find_finished_run(settings: TrackingSettings, config_hash: str, same: Mapping[str, str] | None = None) -> str | None:
    """Id of the newest FINISHED run with this ``config_hash`` and the tag values in ``same`` (the
    sweep, code and machine that measured it) that is neither itself a copy nor timed under
    contention (its numbers should be measured again), MLflow only."""
    if settings.offline_dir:
        return None
    client = _client(settings.uri)
    conditions = [f"tags.{key} = {_quoted(value)}" for key, value in {"config_hash": config_hash, **(same or {})}.items()]
    runs = client.search_runs(
        [ensure_experiment(settings)],
        filter_string=" and ".join(conditions + ["attributes.status = 'FINISHED'"]),
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    for run in runs:
        if "reused_from" not in run.data.tags and run.data.tags.get("contended") != "true":
            return run.info.run_id
    return None


def _quoted(value: str) -> str:
    """``value`` as a string literal of MLflow's filter syntax (which has no escapes)."""
    value = str(value)
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"cannot search MLflow for a tag value holding both kinds of quote: {value!r}")


def reuse_run(
    settings: TrackingSettings,
    source_run_id: str,
    run_name: str,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> str:
    """A new FINISHED run that carries ``source_run_id``'s params, metrics and tags (``tags``
    override them), tagged ``reused_from`` so nobody mistakes it for a fresh measurement."""
    client = _client(settings.uri)
    source = client.get_run(source_run_id)
    own = {k: v for k, v in source.data.tags.items() if not k.startswith("mlflow.")}
    own.update({k: str(v) for k, v in (tags or {}).items()})
    own.update(
        reused_from=source_run_id,
        reused_from_sweep=source.data.tags.get("mlflow.parentRunId", "none (a standalone job)"),
        reused_from_start=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(source.info.start_time / 1000)),
        reused_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    tags = own
    # Closed at once: no heartbeat. (start_run replaces the source's owner tags with this process's.)
    logger = start_run(settings, run_name, tags, parent_run_id, heartbeat=False)
    logger.log_params(source.data.params)
    logger.log_metrics(source.data.metrics)
    logger.end("FINISHED")
    return logger.run_id


def import_records(source: Path, settings: TrackingSettings) -> list[str]:
    """Load the run records at ``source`` into MLflow; return the new run ids.

    Everything in a record arrives: name, status, start and end times, params, metrics, tags and
    artifacts. The record's own experiment name is used unless it is missing. Each imported run is
    tagged ``imported_from`` (the record folder) and ``offline_run_id``.
    """
    from mlflow.entities import Metric, Param, RunTag

    client = _client(settings.uri)
    run_ids = []
    records = [(folder, read_record(folder)) for folder in find_records(source)]
    # Parents first, so their children can point at the parents' new MLflow run ids.
    records.sort(key=lambda item: "mlflow.parentRunId" in item[1]["tags"])
    new_id: dict[str, str] = {}
    for folder, record in records:
        experiment = TrackingSettings(settings.uri, record.get("experiment") or settings.experiment, settings.artifact_root)
        experiment_id = ensure_experiment(experiment)
        tags = {**record["tags"], "imported_from": str(folder.resolve()), "offline_run_id": folder.name}
        # The run is open here until its status is set below, and this process owns it meanwhile:
        # the record's own owner tags (the machine that ran the job) move to record.run.*, so
        # that nobody judges the open run by a process that ended long ago elsewhere.
        tags.update({f"record.{key}": tags.pop(key) for key in owner.OWNER_TAGS if key in tags})
        tags.update(owner.owner_tags())
        parent = tags.get("mlflow.parentRunId")
        if parent in new_id:
            tags["mlflow.parentRunId"] = new_id[parent]
        run = client.create_run(experiment_id, start_time=record.get("start_time"), tags=tags, run_name=record["run_name"])
        run_id = run.info.run_id
        params = [Param(k, v) for k, v in record["params"].items()]
        for start in range(0, len(params), _MAX_PARAMS_PER_BATCH):
            client.log_batch(run_id, params=params[start : start + _MAX_PARAMS_PER_BATCH])
        metrics = [Metric(m["key"], float(m["value"]), int(m["timestamp"]), int(m["step"])) for m in record["metrics"]]
        for start in range(0, len(metrics), 1000):  # MLflow's per-batch limit
            client.log_batch(run_id, metrics=metrics[start : start + 1000])
        client.log_batch(run_id, tags=[RunTag("mlflow.runName", record["run_name"])])
        artifacts = folder / "artifacts"
        if artifacts.is_dir() and any(artifacts.iterdir()):
            client.log_artifacts(run_id, str(artifacts))
        client.set_terminated(run_id, status=record["status"], end_time=record.get("end_time"))
        new_id[folder.name] = run_id
        run_ids.append(run_id)
    return run_ids
