"""Functions run in a fresh process: results and errors come back, and a killed parent takes its
child with it."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from yolomlu.evaluate.isolated import run_isolated


def test_the_result_comes_back_from_another_process() -> None:
    pid = run_isolated("os:getpid")
    assert isinstance(pid, int) and pid != os.getpid()
    assert run_isolated("math:hypot", 3.0, 4.0) == 5.0


def test_an_error_in_the_child_is_raised_here_with_its_origin() -> None:
    with pytest.raises(ValueError, match="math domain error") as info:
        run_isolated("math:sqrt", -1.0)
    assert any("fresh process" in note for note in info.value.__notes__)


def test_a_child_that_dies_without_a_result_is_an_error() -> None:
    from yolomlu.evaluate.isolated import IsolatedProcessError

    with pytest.raises(IsolatedProcessError, match="died in its fresh process"):
        run_isolated("os:_exit", 3)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_dies_with_a_parent_killed_by_sigkill(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            from yolomlu.evaluate.isolated import run_isolated
            run_isolated("tests.evaluate.sleeper:sleep_forever", {str(pid_file)!r})
        """)],
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        child = int(pid_file.read_text())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the timing process outlived its killed parent"
    finally:
        parent.kill()
