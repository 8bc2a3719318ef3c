"""Runs that say which process owns them, and runs of dead processes closed (real MLflow, real processes)."""

from __future__ import annotations

import os
import pickle
import platform
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from yolomlu.tracking import TrackingSettings, close_dead_runs, ensure_experiment, start_run
from yolomlu.tracking import owner
from yolomlu.tracking.liveness import REASON_TAG, STALE_AFTER_S, why_dead
from yolomlu.tracking.store_lock import store_lock

ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def settings(tmp_path: Path) -> TrackingSettings:
    return TrackingSettings(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="unit")


def _wait_for(condition, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def _run_with_tags(settings: TrackingSettings, name: str, tags: dict[str, str], start_s: float | None = None) -> str:
    """A RUNNING run carrying exactly ``tags`` (no owner tags of this process), opened at ``start_s``."""
    client = MlflowClient(settings.uri)
    start_ms = int(start_s * 1000) if start_s is not None else None
    return client.create_run(ensure_experiment(settings), run_name=name, tags=tags, start_time=start_ms).info.run_id


def test_a_run_records_its_process_and_its_heartbeat_beats_until_it_ends(settings, monkeypatch) -> None:
    monkeypatch.setattr(owner, "HEARTBEAT_S", 0.2)
    run = start_run(settings, "beating")
    client = MlflowClient(settings.uri)
    tags = client.get_run(run.run_id).data.tags
    assert tags[owner.HOST_TAG] == platform.node() and tags[owner.PID_TAG] == str(os.getpid())
    # run.started is when this process started (from /proc), so a reused pid can be told apart.
    started = owner.process_state(os.getpid()).started
    assert abs(owner.parse_utc(tags[owner.STARTED_TAG]) - started) < 0.05
    first = tags[owner.HEARTBEAT_TAG]
    _wait_for(lambda: client.get_run(run.run_id).data.tags[owner.HEARTBEAT_TAG] != first, "a second heartbeat")
    # The sweep callback ships its parent's logger to launcher workers: it must pickle while beating.
    assert pickle.loads(pickle.dumps(run)).run_id == run.run_id
    thread_name = f"yolomlu-heartbeat-{run.run_id[:8]}"
    assert thread_name in {t.name for t in threading.enumerate()}
    run.end("FINISHED")
    assert thread_name not in {t.name for t in threading.enumerate()}
    assert client.get_run(run.run_id).info.status == "FINISHED"


def test_a_failing_heartbeat_never_reaches_the_job() -> None:
    calls = []

    def broken(now: str) -> None:
        calls.append(now)
        raise ConnectionError("tracking server down")

    heartbeat = owner.Heartbeat(broken, interval_s=0.05).start()
    _wait_for(lambda: len(calls) >= 3, "three attempts")  # it keeps trying after a failure
    heartbeat.stop()
    assert not heartbeat.running


_OPEN_A_RUN = textwrap.dedent(
    """
    import sys, time
    from yolomlu.tracking import TrackingSettings, start_run
    run = start_run(TrackingSettings(uri=sys.argv[1], experiment="unit"), "doomed")
    print(run.run_id, flush=True)
    time.sleep(600)
    """
)


def test_the_run_of_a_killed_process_is_closed_and_a_live_one_is_not(settings) -> None:
    mine = start_run(settings, "alive")  # owned by this (live) process
    doomed = subprocess.Popen([sys.executable, "-c", _OPEN_A_RUN, settings.uri], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        run_id = doomed.stdout.readline().strip()
        assert run_id, "the child opened no run"
        doomed.send_signal(signal.SIGKILL)
        # Not reaped yet: the killed process is a zombie, which never writes again either.
        _wait_for(lambda: not owner.process_state(doomed.pid).alive, "the kill to land")
        closed = close_dead_runs(settings, finder="the unit test")
    finally:
        doomed.kill()
        doomed.wait()
    client = MlflowClient(settings.uri)
    assert [c.run_id for c in closed] == [run_id]
    dead = client.get_run(run_id)
    assert dead.info.status == "KILLED"
    reason = dead.data.tags[REASON_TAG]
    assert reason.startswith(f"process {doomed.pid} on host {platform.node()} is gone (found by the unit test, process {os.getpid()}")
    assert dead.info.end_time >= dead.info.start_time
    assert client.get_run(mine.run_id).info.status == "RUNNING"
    assert close_dead_runs(settings, finder="the unit test") == []  # nothing left to close
    mine.end("FINISHED")


def test_a_live_pid_that_is_another_process_now_is_closed(settings) -> None:
    # This process's pid, but a start an hour before this process started: the pid was reused.
    here = owner.owner_tags()
    earlier = owner.utc_text(owner.parse_utc(here[owner.STARTED_TAG]) - 3600)
    run_id = _run_with_tags(settings, "reused-pid", {**here, owner.STARTED_TAG: earlier})
    closed = close_dead_runs(settings, finder="the unit test")
    assert [c.run_id for c in closed] == [run_id]
    assert f"pid {os.getpid()} is now another process" in MlflowClient(settings.uri).get_run(run_id).data.tags[REASON_TAG]


def test_runs_owned_elsewhere_are_judged_by_their_heartbeat(settings) -> None:
    now = time.time()
    elsewhere = {owner.HOST_TAG: "gpu-box-7", owner.PID_TAG: "4242", owner.STARTED_TAG: owner.utc_text(now - 7200), owner.SCOPE_TAG: "b/pid:[1]"}
    silent = _run_with_tags(settings, "silent", {**elsewhere, owner.HEARTBEAT_TAG: owner.utc_text(now - STALE_AFTER_S - 60)}, now - 7000)
    beating = _run_with_tags(settings, "beating", {**elsewhere, owner.HEARTBEAT_TAG: owner.utc_text(now - 60)})
    unowned = _run_with_tags(settings, "unowned", {})  # opened by another tool: not ours to judge
    closed = close_dead_runs(settings, finder="the unit test")
    client = MlflowClient(settings.uri)
    assert [c.run_id for c in closed] == [silent]
    reason = client.get_run(silent).data.tags[REASON_TAG]
    assert reason.startswith("process 4242 on host gpu-box-7 sent no heartbeat for ") and "limit 600 s" in reason
    # The run ends at its last sign of life, not when it was found.
    assert client.get_run(silent).info.end_time == pytest.approx((now - STALE_AFTER_S - 60) * 1000, abs=1)
    assert client.get_run(beating).info.status == "RUNNING" and client.get_run(unowned).info.status == "RUNNING"


def test_a_pid_in_another_namespace_is_not_looked_up_here() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid is free now
    now = time.time()
    tags = {owner.HOST_TAG: platform.node(), owner.PID_TAG: str(gone.pid), owner.SCOPE_TAG: "another-boot/pid:[1]"}
    # Same host name, but a container with its own pids: the heartbeat decides, not our /proc.
    assert why_dead({**tags, owner.HEARTBEAT_TAG: owner.utc_text(now - 5)}, None, now) is None
    stale = why_dead({**tags, owner.HEARTBEAT_TAG: owner.utc_text(now - 3600)}, None, now)
    assert stale is not None and "pid scope another-boot/pid:[1], not this one's" in stale
    # The same pid in our own scope is looked up, and is gone.
    assert why_dead({**tags, owner.SCOPE_TAG: owner.pid_scope()}, None, now) == f"process {gone.pid} on host {platform.node()} is gone"


def test_looking_for_dead_runs_creates_no_store(tmp_path: Path) -> None:
    settings = TrackingSettings(uri=f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}", experiment="unit")
    assert close_dead_runs(settings, finder="the unit test") == []
    assert not (tmp_path / "none").exists()


_HOLD_THE_LOCK = textwrap.dedent(
    """
    import fcntl, sys, time
    from pathlib import Path
    with open(sys.argv[1], "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        print("held", flush=True)
        time.sleep(1.0)
        Path(sys.argv[2]).write_text("done")
    """
)


def test_the_store_lock_waits_for_another_process_holding_it(settings, tmp_path: Path) -> None:
    marker = tmp_path / "released"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_THE_LOCK, str(tmp_path / "mlflow.db.lock"), str(marker)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with store_lock(settings.uri):
            # Inside only once the holder let go: it wrote its marker before unlocking.
            assert marker.read_text() == "done"
    finally:
        holder.kill()
        holder.wait()
