"""A sweep killed outright (kill -9) leaves RUNNING runs; the next sweep on the store closes them."""

from __future__ import annotations

import platform
import signal
from pathlib import Path

from tests.tracking.cli_jobs import JOB, child_statuses, start_job, wait_for

# Three jobs; the third times more batches, and the sweep is killed while it runs.
SWEEP = ["-m", *JOB, "bench.iters=2,3,400"]


def test_a_killed_sweep_is_closed_by_the_next_one_and_left_out_of_repeats(run_cli, read_runs, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # run_cli's processes share the 2 cores like start_job's
    db = tmp_path / "mlflow.db"
    sweep = start_job(tmp_path, *SWEEP)
    try:
        wait_for(lambda: sorted(child_statuses(db)) == ["FINISHED", "FINISHED", "RUNNING"], "two finished jobs and a third running", alive=sweep)
    finally:
        sweep.send_signal(signal.SIGKILL)  # no chance to close anything
        sweep.communicate()
    left = read_runs(db)
    dead_parent = left[left["tags.sweep"] == "true"].iloc[0]
    dead_job = left[left["status"] == "RUNNING"].drop(dead_parent.name)
    assert dead_parent["status"] == "RUNNING" and len(dead_job) == 1  # what kill -9 leaves
    assert dead_parent["tags.run.pid"] == dead_job.iloc[0]["tags.run.pid"] == str(sweep.pid)  # one process: the sweep's

    again = run_cli(*SWEEP)  # the same sweep: closes the dead runs, reuses the two finished jobs
    runs = read_runs(db)
    assert "RUNNING" not in set(runs["status"])
    by_id = runs.set_index("run_id")
    for run_id in (dead_parent["run_id"], dead_job.iloc[0]["run_id"]):
        assert by_id.loc[run_id, "status"] == "KILLED"
        reason = by_id.loc[run_id, "tags.killed_reason"]
        assert reason.startswith(f"process {sweep.pid} on host {platform.node()} is gone (found by the sweep adhoc, process ")
        assert f"closed run {run_id} (" in again.stdout
    parents = runs[runs["tags.sweep"] == "true"]
    rerun = parents[parents["run_id"] != dead_parent["run_id"]].iloc[0]
    assert rerun["status"] == "FINISHED" and rerun["tags.jobs"] == "3"
    # The killed sweep's two finished jobs stand (reused, unless timed while other work held the
    # cores: those are measured again).
    done = left[(left["status"] == "FINISHED") & (left["tags.contended"].fillna("") != "true")]
    assert rerun["tags.jobs_reused"] == str(len(done))

    report = run_cli("task=report", "report.repeats=3", f"report.out_dir={tmp_path / 'report'}")
    # Only sweeps that ran to their end count as repeats: the killed one is left out.
    assert f"Repeatability: 1 runs of this sweep ({rerun['run_id'][:8]})" in report.stdout
    assert "report.repeats=3 but the store holds 1 runs of this sweep" in report.stdout
    assert dead_parent["run_id"][:8] not in report.stdout
