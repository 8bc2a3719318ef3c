"""Reading runs back for reports: runs as a pandas DataFrame, table artifacts, the report's files.

Everything goes through an ``MlflowClient`` bound to ``settings.uri``. ``mlflow.search_runs`` and
``MlflowClient.load_table`` both read mlflow's *global* tracking URI, so using them would mean
switching process-wide state (and racing any other store user in the process); instead
:func:`fetch_runs` pages through ``MlflowClient.search_runs`` and builds the same frame that
``mlflow.search_runs`` returns.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from yolomlu.tracking.store import TrackingSettings, _client, _quoted

if TYPE_CHECKING:  # pandas is imported where it is used, so `import yolomlu.tracking` stays cheap
    import pandas as pd

_PAGE = 1000  # runs per search_runs page (MLflow's pandas helper uses the same)
# Command-line overrides that say where and how a job is recorded, not what it measures.
BOOKKEEPING_OVERRIDES = (
    "experiments/sweep=", "sweep.", "tracking.", "paths.", "report.", "hydra", "baseline=",
    # Where the MLU SDK's Python is and how long to wait for it: the same variant on any box.
    "backend.python=", "backend.timeout_s=", "backend.keep_exchange=",
)  # fmt: skip
REPORT_ARTIFACT_DIR = "report"


def _reader(settings: TrackingSettings):
    """A client for reading; refuses a SQLite store that does not exist instead of creating one."""
    if settings.offline_dir:
        raise ValueError(
            f"tracking.offline_dir={settings.offline_dir!r} holds run records, not a store: "
            "load them with task=import first, then report from the store"
        )
    if settings.uri.startswith("sqlite:///"):
        db = Path(settings.uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise FileNotFoundError(f"no MLflow store at {settings.uri} (run a job or a sweep first)")
    return _client(settings.uri)


def _experiment_id(client, settings: TrackingSettings, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        known = sorted(e.name for e in client.search_experiments())
        raise ValueError(f"no experiment {name!r} in {settings.uri}; experiments there: {known}")
    return experiment.experiment_id


def runs_to_frame(runs) -> pd.DataFrame:
    """MLflow ``Run`` objects -> the frame ``mlflow.search_runs`` returns.

    Columns: ``run_id experiment_id status artifact_uri start_time end_time`` (times as UTC
    timestamps), then ``metrics.<key>`` (float, NaN where missing), ``params.<key>`` and
    ``tags.<key>`` (str, None where missing).
    """
    import pandas as pd

    info = {
        "run_id": [r.info.run_id for r in runs],
        "experiment_id": [r.info.experiment_id for r in runs],
        "status": [r.info.status for r in runs],
        "artifact_uri": [r.info.artifact_uri for r in runs],
        "start_time": [pd.to_datetime(r.info.start_time, unit="ms", utc=True) for r in runs],
        "end_time": [pd.to_datetime(r.info.end_time, unit="ms", utc=True) for r in runs],
    }
    columns: dict[str, list] = dict(info)
    for prefix, attr, missing in (("metrics", "metrics", float("nan")), ("params", "params", None), ("tags", "tags", None)):
        keys = sorted({k for r in runs for k in getattr(r.data, attr)})
        for key in keys:
            columns[f"{prefix}.{key}"] = [getattr(r.data, attr).get(key, missing) for r in runs]
    frame = pd.DataFrame(columns)
    metric_cols = [c for c in frame.columns if c.startswith("metrics.")]
    frame[metric_cols] = frame[metric_cols].astype("float64")
    return frame


def fetch_runs(settings: TrackingSettings, parent_run_id: str | None = None, experiment: str | None = None) -> pd.DataFrame:
    """Runs as a DataFrame shaped like ``mlflow.search_runs``'s, newest first.

    With ``parent_run_id``: the children of that run, searched in the parent's own experiment.
    Otherwise: every run of ``experiment`` (default ``settings.experiment``), parents included.
    Deleted runs are left out.
    """
    client = _reader(settings)
    if parent_run_id:
        from mlflow.exceptions import MlflowException

        try:
            parent = client.get_run(parent_run_id)
        except MlflowException as exc:
            raise ValueError(f"no run {parent_run_id!r} in {settings.uri}") from exc
        experiment_id = parent.info.experiment_id
        filter_string = f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    else:
        experiment_id = _experiment_id(client, settings, experiment or settings.experiment)
        filter_string = ""
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=_PAGE,
            order_by=["attributes.start_time DESC"], page_token=token,
        )  # fmt: skip
        runs.extend(page)
        token = page.token
        if not token:
            return runs_to_frame(runs)


def latest_sweep(settings: TrackingSettings) -> str | None:
    """Id of the newest parent run tagged ``sweep=true`` in ``settings.experiment``; None if none."""
    client = _reader(settings)
    if client.get_experiment_by_name(settings.experiment) is None:
        return None
    runs = client.search_runs(
        [_experiment_id(client, settings, settings.experiment)],
        filter_string="tags.sweep = 'true'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def repeat_sweeps(settings: TrackingSettings, parent_run_id: str, n: int) -> list[str]:
    """Ids of the newest ``n`` sweeps (oldest first, ``parent_run_id`` last) that ran the same sweep
    preset with the same overrides as ``parent_run_id`` (bookkeeping ones such as
    ``sweep.rerun=true`` aside), with the same code on the same host (the same ``sweep_key``), ran
    to their end (FINISHED) and started no later than it. A sweep all of whose jobs were reused
    measured nothing: it is skipped."""
    from mlflow.exceptions import MlflowException

    client = _reader(settings)
    try:
        parent = client.get_run(parent_run_id)
    except MlflowException as exc:
        raise ValueError(f"no run {parent_run_id!r} in {settings.uri}") from exc
    # Only sweeps that ran to their end: a killed one measured a part, maybe under other conditions.
    conditions = ["tags.sweep = 'true'", f"attributes.start_time <= {parent.info.start_time}", "attributes.status = 'FINISHED'"]
    keys = ("sweep_key",) if "sweep_key" in parent.data.tags else ("sweep_preset", "code_hash", "host")
    for key in keys:
        if (value := parent.data.tags.get(key)) is not None:
            conditions.append(f"tags.{key} = {_quoted(value)}")
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=" and ".join(conditions),
        order_by=["attributes.start_time DESC"], max_results=_PAGE,
    )  # fmt: skip

    def what_it_measures(run) -> list[str]:
        overrides = run.data.tags.get("sweep_overrides", "").split()
        return sorted(o for o in overrides if not o.lstrip("+~").startswith(BOOKKEEPING_OVERRIDES))

    def measured(run) -> bool:
        jobs, reused = run.data.tags.get("jobs"), run.data.tags.get("jobs_reused")
        return not (jobs and jobs != "0" and reused == jobs)

    same = what_it_measures(parent)
    repeats = [r for r in runs if r.info.run_id != parent_run_id and measured(r) and what_it_measures(r) == same]
    ids = [r.info.run_id for r in repeats][: n - 1]
    return ids[::-1] + [parent_run_id]


def run_tags(settings: TrackingSettings, run_id: str) -> dict[str, str]:
    """The run's tags."""
    return dict(_reader(settings).get_run(run_id).data.tags)


def run_label(settings: TrackingSettings, run_id: str) -> str:
    """``<run name>-<first 8 characters of the id>``: a name for the run's files on disk."""
    run = _reader(settings).get_run(run_id)
    return f"{run.info.run_name or 'run'}-{run_id[:8]}"


def load_table_artifact(settings: TrackingSettings, run_id: str, path: str) -> pd.DataFrame | None:
    """A table logged with ``log_table`` (JSON, ``orient='split'``); None if the run has no such file."""
    client = _reader(settings)
    folder = str(PurePosixPath(path).parent)
    listed = client.list_artifacts(run_id, None if folder == "." else folder)
    if not any(item.path == path and not item.is_dir for item in listed):
        return None
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="yolomlu-table-") as tmp, _no_progress_bar():
        local = client.download_artifacts(run_id, path, tmp)
        # dtype=False: the types JSON gives, no guessing (pandas would turn a float column of
        # whole numbers into ints, and a column named like a date into timestamps).
        return pd.read_json(Path(local), orient="split", dtype=False)


@contextmanager
def _no_progress_bar() -> Iterator[None]:
    """mlflow draws a tqdm bar for every download, even of one small JSON file; a report reads two
    per run, which would bury the table it prints. Its only switch is an environment variable, so
    set it for the duration of the call (unless the user chose a value) and restore it."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if key in os.environ:
        yield
        return
    os.environ[key] = "false"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def log_report(settings: TrackingSettings, run_id: str, files: list[Path]) -> None:
    """Attach the report's files to ``run_id`` under ``report/`` (the run may already be closed)."""
    client = _reader(settings)
    for file in files:
        client.log_artifact(run_id, str(file), REPORT_ARTIFACT_DIR)
