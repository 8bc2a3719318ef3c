"""SIGTERM and SIGINT to a running job and to a running sweep, through the real command line.

The four commands run at once (each spends most of its time starting up); each gets its signal as
soon as its job has logged its params, and must end with its run(s) closed as KILLED, one
``yolomlu: stopped`` line, the conventional exit status (128 + the signal), and the earlier run in
its store untouched.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from .battery import JOB, Command, Outcome

LONG_JOB = [*JOB, "data.n_images=2", "data.image_size=64", "bench.enabled=true", "bench.warmup=0", "bench.iters=10000000"]
# case -> (a sweep?, signal, what the stop line says, what a killed run's error says)
CASES = {
    "job-sigterm": (False, signal.SIGTERM, "yolomlu: stopped: terminated by signal 15 (SIGTERM)", "SIGTERM"),
    "job-sigint": (False, signal.SIGINT, "yolomlu: stopped: interrupted (Ctrl-C)", "KeyboardInterrupt"),
    "sweep-sigterm": (True, signal.SIGTERM, "yolomlu: stopped: terminated by signal 15 (SIGTERM)", "SIGTERM"),
    "sweep-sigint": (True, signal.SIGINT, "yolomlu: stopped: interrupted (Ctrl-C)", "KeyboardInterrupt"),
}


def _job_started(db: Path) -> bool:
    """Whether a running job (not a sweep's parent) has logged its params: read-only SQL, no MLflow
    client racing the command's own writes."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as conn:
            row = conn.execute(
                "SELECT count(*) FROM params WHERE run_uuid IN (SELECT run_uuid FROM runs WHERE status = 'RUNNING')"
                " AND run_uuid NOT IN (SELECT run_uuid FROM tags WHERE key = 'sweep')"
            ).fetchone()
        return row[0] > 0
    except sqlite3.Error:  # busy: ask again
        return False


@pytest.fixture(scope="module")
def stopped(template_store: Path, tmp_path_factory) -> dict[str, Outcome]:
    """Start the four commands, signal each once its job has started, and collect what they did."""
    running = {}
    for case, (sweep, signum, _, _) in CASES.items():
        args = ["-m", *LONG_JOB, "bench.warmup=0,1"] if sweep else LONG_JOB
        running[case] = (Command(tmp_path_factory.mktemp(case), template_store, args), signum)
    try:
        waiting, deadline = set(running), time.monotonic() + 240
        while waiting and time.monotonic() < deadline:
            for case in sorted(waiting):
                command, signum = running[case]
                if command.proc.poll() is not None:  # ended on its own: the case says how
                    waiting.discard(case)
                elif _job_started(command.store.db):
                    command.proc.send_signal(signum)
                    waiting.discard(case)
            time.sleep(0.2)
        return {case: command.outcome(timeout=120) for case, (command, _) in running.items()}
    finally:
        for command, _ in running.values():
            command.proc.kill()


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_a_signal_closes_the_running_runs_as_killed(case, stopped) -> None:
    sweep, signum, line, error = CASES[case]
    outcome = stopped[case]
    assert outcome.status == 128 + signum, outcome.stderr[-3000:]
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert outcome.message == line
    if sweep:
        parents = [r for r in outcome.runs if r["tags"].get("sweep") == "true"]
        children = [r for r in outcome.runs if r["tags"].get("mlflow.parentRunId")]
        assert [p["status"] for p in parents] == ["KILLED"] and parents[0]["tags"]["jobs"] == "1"
        assert [c["status"] for c in children] == ["KILLED"]  # the second job never started
        assert len(outcome.runs) == 2
        killed = children[0]
    else:
        assert [r["status"] for r in outcome.runs] == ["KILLED"]
        killed = outcome.runs[0]
    assert error in killed["tags"]["error"]
