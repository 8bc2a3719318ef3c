"""The conditions of a timing: judged by hand from kernel counters, pooled over rounds, and seen
for real when other processes keep the cores busy."""

import subprocess
import sys
import time

import pytest

from yolomlu.evaluate.conditions import OTHERS_CORES_LIMIT, ConditionsProbe, _Sample, judge, pool


def _pair(wall: float, own_cpu: float, machine_busy: float, steal: float = 0.0, total: float | None = None) -> tuple[_Sample, _Sample]:
    total = total if total is not None else 2 * wall  # two cores' worth of time
    before = _Sample(wall=100.0, own_cpu=5.0, busy=1000.0, steal=10.0, total=5000.0, loadavg=0.5)
    after = _Sample(100.0 + wall, 5.0 + own_cpu, 1000.0 + machine_busy, 10.0 + steal, 5000.0 + total, 1.5)
    return before, after


def test_busy_time_beyond_our_own_is_others_load() -> None:
    # 2 s of wall time, our 2 threads busy (4 s of CPU), the machine busy 5 s: others used 0.5 cores.
    conditions = judge(*_pair(wall=2.0, own_cpu=4.0, machine_busy=5.0), threads=2)
    assert conditions.others_cores == pytest.approx(0.5)
    assert conditions.cpu_util == pytest.approx(1.0)
    assert conditions.contended and "0.50 of" in conditions.reasons[0]
    assert conditions.tags()["contended"] == "true" and "other processes" in conditions.tags()["contended_reason"]


def test_a_quiet_section_is_not_contended_and_steal_is_judged_apart() -> None:
    quiet = judge(*_pair(wall=2.0, own_cpu=4.0, machine_busy=4.1), threads=2)
    assert quiet.others_cores == pytest.approx(0.05) and not quiet.contended
    assert quiet.tags() == {"contended": "false"}
    stolen = judge(*_pair(wall=2.0, own_cpu=3.0, machine_busy=3.0, steal=0.4), threads=2)
    assert stolen.steal_pct == pytest.approx(10.0) and stolen.contended
    assert "stole 10.0 %" in stolen.reasons[0]


def test_pooled_rounds_weigh_by_time_and_keep_each_reason() -> None:
    calm = judge(*_pair(wall=3.0, own_cpu=6.0, machine_busy=6.0), threads=2)
    busy = judge(*_pair(wall=1.0, own_cpu=2.0, machine_busy=3.0), threads=2)
    both = pool([calm, busy])
    assert both.wall_s == pytest.approx(4.0) and both.others_cores == pytest.approx(0.25)
    assert both.contended and both.reasons == [f"round 2: {busy.reasons[0]}"]


def test_other_processes_busy_on_every_core_are_seen() -> None:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.5)
        with ConditionsProbe(threads=1) as probe:
            deadline = time.perf_counter() + 1.5
            while time.perf_counter() < deadline:  # our own one-thread busy loop
                pass
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert probe.result.others_cores > OTHERS_CORES_LIMIT
    assert probe.result.contended


def test_a_section_too_short_for_the_kernels_counters_is_not_judged() -> None:
    # 5 ms of wall time: a single 10 ms tick of someone else's would read as two cores busy.
    brief = judge(*_pair(wall=0.005, own_cpu=0.005, machine_busy=0.015), threads=1)
    assert not brief.contended
    tags = brief.tags()
    assert tags["contended"] == "unknown" and "too short to judge" in tags["contended_reason"]
