"""Many machines, one tracking server: MLflow with a PostgreSQL store and proxied artifacts, for real.

A throwaway PostgreSQL cluster and tracking server on free ports of 127.0.0.1; sixteen job
processes log to it over HTTP at once (a sweep with 8 joblib workers and 8 separate jobs), one of
them is killed with kill -9 mid-job; then a report runs. Skipped only where PostgreSQL's server
programs are not installed (.ci/run installs them).
"""

from __future__ import annotations

import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.tracking.cli_jobs import JOB, finish, job_env, start_job, wait_for
from yolomlu.tracking.server import ServerError, ServerState, find_pg_bin, free_port, port_in_use, start, stop

HTTP_JOB = [*JOB, "data.n_images=2"]
VICTIM = "solo-7"


@pytest.fixture
def server() -> ServerState:
    try:
        find_pg_bin()
    except ServerError as exc:
        pytest.skip(str(exc))
    # Not under pytest's tmp_path: PostgreSQL runs as the user postgres, who may not enter it.
    folder = Path(tempfile.mkdtemp(prefix="yolomlu-server-test-"))
    folder.chmod(0o755)
    port = free_port()
    pg_port = free_port()
    while pg_port == port:
        pg_port = free_port()
    try:
        yield start(folder / "server", port=port, pg_port=pg_port)
    finally:
        stop(folder / "server")
        shutil.rmtree(folder, ignore_errors=True)
    assert not port_in_use(port) and not port_in_use(pg_port), "the tracking server or PostgreSQL outlived stop()"


def _run_named(client: MlflowClient, name: str):
    experiment = client.get_experiment_by_name("yolomlu")
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    return runs[0] if runs else None


def test_sixteen_jobs_over_http_are_each_recorded_once_and_a_killed_one_is_closed(server: ServerState, tmp_path: Path) -> None:
    uri = server.uri
    assert uri.startswith("http://127.0.0.1:")
    sweep = start_job(
        tmp_path / "sweep", "-m", *HTTP_JOB, f"tracking.uri={uri}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=8",
        "seed=0,1,2,3,4,5,6,7",
    )  # fmt: skip
    solos = [
        start_job(tmp_path / f"solo-{i}", *HTTP_JOB, f"tracking.uri={uri}", f"tracking.run_name=solo-{i}",
                  *(["bench.iters=100000000"] if i == 7 else []))  # the victim benchmarks until it is killed
        for i in range(8)
    ]  # fmt: skip
    victim = solos[7]
    client = MlflowClient(uri)
    try:
        # Mid-job: its run is open and its config logged.
        wait_for(lambda: (run := _run_named(client, VICTIM)) is not None and run.data.params, "the victim's job to be under way", alive=victim)
        victim.send_signal(signal.SIGKILL)
        victim.communicate()
        finish(sweep)
        for solo in solos[:7]:
            finish(solo)
    finally:
        for process in [sweep, *solos]:
            process.kill()
            process.communicate()
    # kill -9 left the victim's run RUNNING; a job that started after the kill, or else this report,
    # closes it.
    report = subprocess.run(
        [sys.executable, "-m", "yolomlu", "task=report", f"tracking.uri={uri}", f"report.out_dir={tmp_path / 'report'}"],
        cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr

    experiment = client.get_experiment_by_name("yolomlu")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    names = sorted(r.info.run_name for r in runs)
    parents = [r for r in runs if r.data.tags.get("sweep") == "true"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    # Every job exactly once: 8 sweep jobs, 8 separate ones, the sweep's parent.
    assert sorted(r.info.run_name for r in children) == [f"seed={i}" for i in range(8)]
    assert names == sorted([parents[0].info.run_name, *(f"seed={i}" for i in range(8)), *(f"solo-{i}" for i in range(8))])

    killed = _run_named(client, VICTIM)
    assert killed.info.status == "KILLED"
    assert killed.data.tags["killed_reason"].startswith(f"process {victim.pid} on host {platform.node()} is gone (found by ")
    assert "error" not in killed.data.tags  # it did not fail: it was killed
    finished = [r for r in runs if r.info.run_name != VICTIM and r.data.tags.get("sweep") != "true"]
    assert len(finished) == 15 and {r.info.status for r in finished} == {"FINISHED"}
    for run in finished:
        # Artifacts went through the server (no shared disk) into its artifacts folder.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
        listed = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "dataset_stats.json"} <= listed, (run.info.run_name, listed)
        stored = Path(server.artifacts) / experiment.experiment_id / run.info.run_id / "artifacts" / "config.yaml"
        assert stored.is_file()
        assert run.data.tags["run.host"] == platform.node() and run.data.tags["run.pid"].isdigit()
    assert server.backend_store_uri.startswith("postgresql+psycopg2://")
