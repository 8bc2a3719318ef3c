"""Sweeps that lose nothing: parent run, failures recorded, exit status, finished jobs reused."""

from pathlib import Path

import pytest

TINY = ["model=yolov5n_v5", "img_size=64", "data.n_images=4", "data.image_size=128", "bench.iters=1", "eval.enabled=false", "bench.profile=false"]


def test_failing_job_is_recorded_and_rerun_reuses_finished_ones(run_cli, read_runs, tmp_path: Path) -> None:
    # bench.warmup=-1 fails inside its job (validation happens inside the run).
    first = run_cli("-m", *TINY, "bench.warmup=0,1,-1", check=False)
    assert first.returncode != 0
    assert "1 of 3 jobs failed" in first.stderr
    runs = read_runs(tmp_path / "mlflow.db")
    parents = runs[runs["tags.sweep"] == "true"]
    children = runs[runs["tags.mlflow.parentRunId"] == parents.iloc[0]["run_id"]]
    assert len(parents) == 1 and parents.iloc[0]["status"] == "FINISHED"
    assert sorted(children["status"]) == ["FAILED", "FINISHED", "FINISHED"]
    failed = children[children["status"] == "FAILED"].iloc[0]
    assert failed["params.bench.warmup"] == "-1" and "bench.warmup=-1" in failed["tags.error"]
    assert parents.iloc[0]["tags.jobs_failed"] == "1"

    # The same sweep again: the two finished jobs are reused, the bad one fails again.
    second = run_cli("-m", *TINY, "bench.warmup=0,1,-1", check=False)
    assert second.returncode != 0
    runs = read_runs(tmp_path / "mlflow.db")
    newest = runs[runs["tags.sweep"] == "true"].sort_values("start_time").iloc[-1]
    children = runs[runs["tags.mlflow.parentRunId"] == newest["run_id"]]
    reused = children[children["tags.reused_from"].notna()]
    assert len(reused) == 2 and set(reused["status"]) == {"FINISHED"}
    assert set(reused["tags.reused_from"]) <= set(runs["run_id"])
    assert (reused["metrics.fps"] > 0).all()  # the earlier measurement, carried over and marked; noqa: timing
    assert newest["tags.jobs_reused"] == "2"
    assert "reused" in second.stdout


def test_rerun_flag_measures_again(run_cli, read_runs, tmp_path: Path) -> None:
    run_cli("-m", *TINY, "bench.warmup=0")
    run_cli("-m", *TINY, "bench.warmup=0", "sweep.rerun=true")
    runs = read_runs(tmp_path / "mlflow.db")
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(children) == 2
    assert "tags.reused_from" not in children.columns or children["tags.reused_from"].isna().all()


def test_job_timeout_fails_the_job(run_cli, read_runs, tmp_path: Path) -> None:
    proc = run_cli("-m", *TINY, "bench.iters=100000", "sweep.timeout_s=3", check=False)
    assert proc.returncode != 0
    runs = read_runs(tmp_path / "mlflow.db")
    child = runs[runs["tags.mlflow.parentRunId"].notna()].iloc[0]
    assert child["status"] == "FAILED" and "sweep.timeout_s=3" in child["tags.error"]


def test_offline_records_import_into_mlflow(run_cli, read_runs, tmp_path: Path) -> None:
    records = tmp_path / "records"
    run_cli(*TINY, f"tracking.offline_dir={records}")
    assert not (tmp_path / "mlflow.db").exists()  # nothing talked to the store
    run_cli("task=import", f"source={records}")
    runs = read_runs(tmp_path / "mlflow.db")
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED" and runs.iloc[0]["metrics.fps"] > 0  # noqa: timing (a measurement exists, no speed claim)
    assert runs.iloc[0]["tags.imported_from"].startswith(str(records))


@pytest.mark.parametrize("launcher", ["submitit_local", "joblib"])
def test_other_launchers_record_children_under_one_parent(run_cli, read_runs, tmp_path: Path, launcher: str) -> None:
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=10"]
    run_cli("-m", *TINY, f"hydra/launcher={launcher}", *extra, "bench.batch_size=1,2")
    runs = read_runs(tmp_path / "mlflow.db")
    parent = runs[runs["tags.sweep"] == "true"]
    children = runs[runs["tags.mlflow.parentRunId"] == parent.iloc[0]["run_id"]]
    assert len(parent) == 1 and parent.iloc[0]["status"] == "FINISHED"
    assert sorted(children["params.bench.batch_size"]) == ["1", "2"] and set(children["status"]) == {"FINISHED"}


def _job_started(db: Path) -> bool:
    """Whether a child run in ``db`` has logged its params (so its job is under way). Read-only
    SQL: an MLflow client here could race the sweep's own creation of the store's schema."""
    import sqlite3

    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute(
                "SELECT count(*) FROM params WHERE run_uuid IN"
                " (SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId')"
            ).fetchone()
        return row[0] > 0
    except sqlite3.Error:  # the schema is still being created
        return False


def test_a_terminated_sweep_closes_its_runs_as_killed(read_runs, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    # Two jobs; the first benchmarks (nearly) forever, so SIGTERM lands inside it.
    proc = subprocess.Popen(
        [sys.executable, "-m", "yolomlu", "-m", *TINY, "bench.iters=10000000", "bench.warmup=0,1"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not _job_started(tmp_path / "mlflow.db"):
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    runs = read_runs(tmp_path / "mlflow.db")
    parent = runs[runs["tags.sweep"] == "true"].iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]]
    assert parent["status"] == "KILLED" and parent["tags.jobs"] == "1"
    assert list(children["status"]) == ["KILLED"]  # the second job never started
    assert "SIGTERM" in children.iloc[0]["tags.error"]
    assert "sweep interrupted" in err


def test_a_standalone_job_is_never_reused_by_a_sweep_but_the_same_sweep_is(run_cli, read_runs, tmp_path: Path) -> None:
    run_cli(*TINY, "bench.warmup=0")  # a standalone job with the first sweep job's very config
    run_cli("-m", *TINY, "bench.warmup=0,1")
    runs = read_runs(tmp_path / "mlflow.db")
    first = runs[runs["tags.sweep"] == "true"].iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"] == first["run_id"]]
    assert len(children) == 2
    assert "tags.reused_from" not in runs.columns or children["tags.reused_from"].isna().all()
    # The same sweep again: it resumes itself, reusing its own finished jobs, and says from where.
    run_cli("-m", *TINY, "bench.warmup=0,1")
    runs = read_runs(tmp_path / "mlflow.db")
    second = runs[runs["tags.sweep"] == "true"].sort_values("start_time").iloc[-1]
    again = runs[runs["tags.mlflow.parentRunId"] == second["run_id"]]
    assert set(again["tags.reused_from"]) == set(children["run_id"])
    assert set(again["tags.reused_from_sweep"]) == {first["run_id"]}
    assert second["tags.sweep_key"] == first["tags.sweep_key"]
    # Another sweep (other overrides) with a job of the same config measures it anew.
    run_cli("-m", *TINY, "bench.warmup=0,2")
    runs = read_runs(tmp_path / "mlflow.db")
    third = runs[runs["tags.sweep"] == "true"].sort_values("start_time").iloc[-1]
    assert runs[runs["tags.mlflow.parentRunId"] == third["run_id"]]["tags.reused_from"].isna().all()
    assert second["tags.sweep_key"] != third["tags.sweep_key"]


def test_jobs_are_named_by_what_sets_them_apart(run_cli, read_runs, tmp_path: Path) -> None:
    proc = run_cli("-m", *TINY, "experiments=cpu_reference,focus_to_conv", "sweep.timeout_s=600")
    runs = read_runs(tmp_path / "mlflow.db")
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    # The sweep's shared overrides and bookkeeping keys (sweep.timeout_s) name no variant.
    assert sorted(children["tags.mlflow.runName"]) == ["cpu_reference", "focus_to_conv"]
    assert sorted(children["tags.variant"]) == ["cpu_reference", "focus_to_conv"]
    assert "FINISHED  focus_to_conv" in proc.stdout


def test_a_sweep_timed_while_other_processes_hold_the_cores_is_tagged_and_reported(run_cli, read_runs, tmp_path: Path) -> None:
    import subprocess
    import sys

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        # One engine thread: two OpenMP threads fighting two busy processes for two cores slow to a crawl.
        run_cli("-m", *TINY, "bench.iters=100", "backend.threads=1", "bench.batch_size=1,2")
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    runs = read_runs(tmp_path / "mlflow.db")
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert set(children["tags.contended"]) == {"true"}
    assert (children["metrics.cond_others_cores"] > 0.25).all()
    assert children["tags.contended_reason"].str.contains("other processes kept").all()
    report = run_cli("task=report")
    assert "CONTENDED: 2 of 2 runs" in report.stdout
    markdown = (tmp_path / "outputs" / "report" / "latest" / "report.md").read_text()
    assert markdown.index("CONTENDED: 2 of 2 runs") < markdown.index("## Variants")  # said above the table
    assert "bs1‡" in markdown or "bench.batch_size=1‡" in markdown
    # A contended result is measured again when the sweep is resumed, never reused.
    run_cli("-m", *TINY, "bench.iters=100", "backend.threads=1", "bench.batch_size=1,2")
    runs = read_runs(tmp_path / "mlflow.db")
    assert "tags.reused_from" not in runs.columns
