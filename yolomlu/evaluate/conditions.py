"""What a timing was measured under: load, CPU time, steal, and whether others were busy.

A timed number is only comparable with another if nothing else competed for the machine while it
was taken. :class:`ConditionsProbe` samples the kernel's counters before and after a timed section
and reports:

- ``loadavg_before`` / ``loadavg_after``: the 1-minute load average (context only: it lags, and
  includes work this process did a moment before);
- ``cpu_s`` and ``cpu_util``: this process's CPU time (all its threads) in the section, and that
  time over wall time x the threads the engine was given;
- ``steal_pct``: CPU time the hypervisor gave to other guests, in % of the machine's time
  (``/proc/stat``, Linux only);
- ``others_cores``: how many cores *other* processes kept busy on average during the section
  (the machine's busy time from ``/proc/stat`` minus this process's own) — the direct evidence of
  contention, whoever the other process is (another job, a browser, this job's own parent).

A section counts as ``contended`` when others kept more than :data:`OTHERS_CORES_LIMIT` cores busy
or steal took more than :data:`STEAL_PCT_LIMIT` % of the time. The kernel's machine-wide counters
tick every 10 ms, so a section shorter than :data:`MIN_JUDGED_S` is not judged (``contended`` is
then "unknown", with the reason); nor where ``/proc/stat`` is missing (not Linux).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

# Others busy on more than a quarter of a core on average: on a 2-core machine timing 2 threads,
# that is an eighth of the machine taken from the measurement.
OTHERS_CORES_LIMIT = 0.25
STEAL_PCT_LIMIT = 5.0
# Kernel ticks are 10 ms: over 0.2 s, a miscount of two ticks per core reads as 0.1 core at most.
MIN_JUDGED_S = 0.2
_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class _Sample:
    wall: float
    own_cpu: float  # this process, all threads, seconds
    busy: float | None  # whole machine, seconds (None: no /proc/stat)
    steal: float | None
    total: float | None
    loadavg: float | None


@dataclass(frozen=True)
class Conditions:
    """The conditions of one timed section (see the module docstring for each field)."""

    wall_s: float
    cpu_s: float
    threads: int
    cpu_util: float
    loadavg_before: float | None
    loadavg_after: float | None
    steal_pct: float | None
    others_cores: float | None
    cores: int
    contended: bool
    reasons: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Numbers worth plotting, prefixed ``cond_``."""
        values = {
            "cond_cpu_util": self.cpu_util,
            "cond_loadavg_before": self.loadavg_before,
            "cond_loadavg_after": self.loadavg_after,
            "cond_steal_pct": self.steal_pct,
            "cond_others_cores": self.others_cores,
        }
        return {k: float(v) for k, v in values.items() if v is not None}

    def tags(self) -> dict[str, str]:
        """``contended`` (true/false/unknown) and, when true or unknown, the evidence in words."""
        if self.others_cores is None:
            return {"contended": "unknown", "contended_reason": "no /proc/stat on this system: load not observable"}
        if self.wall_s < MIN_JUDGED_S:
            return {
                "contended": "unknown",
                "contended_reason": f"timed section of {self.wall_s * 1000:.0f} ms: too short to judge the load "
                f"(the kernel's counters tick every 10 ms; time at least {MIN_JUDGED_S} s)",
            }
        tags = {"contended": str(self.contended).lower()}
        if self.contended:
            tags["contended_reason"] = "; ".join(self.reasons)
        return tags


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a live process, 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, ValueError, IndexError):
        return 0.0


def _sample(also_own: tuple[int, ...] = ()) -> _Sample:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    own = usage.ru_utime + usage.ru_stime + sum(_process_cpu(pid) for pid in also_own)
    busy = steal = total = None
    try:
        fields = _STAT.read_text().split("\n", 1)[0].split()[1:]
        ticks = [int(v) for v in fields]
        hz = os.sysconf("SC_CLK_TCK")
        # user nice system idle iowait irq softirq steal [guest guest_nice: already inside user/nice]
        user, nice, system, idle, iowait, irq, softirq = ticks[:7]
        steal_ticks = ticks[7] if len(ticks) > 7 else 0
        busy = (user + nice + system + irq + softirq) / hz
        steal = steal_ticks / hz
        total = (user + nice + system + idle + iowait + irq + softirq + steal_ticks) / hz
    except (OSError, ValueError, IndexError):
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return _Sample(time.perf_counter(), own, busy, steal, total, load)


class ConditionsProbe:
    """``with ConditionsProbe(threads) as probe: <timed section>`` then ``probe.result``.

    ``also_own``: pids of helper processes that do the timed work for this one (a device worker),
    whose CPU time is the measurement's own, not other processes' load.
    """

    def __init__(self, threads: int, also_own: list[int] | tuple[int, ...] = ()) -> None:
        self.threads = max(1, int(threads))
        self.also_own = tuple(also_own)
        self.result: Conditions | None = None
        self._before: _Sample | None = None

    def __enter__(self) -> "ConditionsProbe":
        self._before = _sample(self.also_own)
        return self

    def __exit__(self, *exc: object) -> None:
        self.result = judge(self._before, _sample(self.also_own), self.threads)


def pool(parts: list[Conditions]) -> Conditions:
    """The conditions of several timed sections (rounds) together: times added, loads averaged
    over wall time, contended if any part was (with each part's reasons)."""
    if not parts:
        raise ValueError("no conditions to pool")
    if len(parts) == 1:
        return parts[0]
    wall = sum(p.wall_s for p in parts)
    cpu = sum(p.cpu_s for p in parts)

    def weighted(values: list[float | None]) -> float | None:
        if any(v is None for v in values):
            return None
        return sum(v * p.wall_s for v, p in zip(values, parts)) / wall

    threads, cores = parts[0].threads, parts[0].cores
    reasons = [f"round {i + 1}: {r}" for i, p in enumerate(parts) for r in p.reasons]
    return Conditions(
        wall_s=wall,
        cpu_s=cpu,
        threads=threads,
        cpu_util=cpu / (wall * min(threads, cores)),
        loadavg_before=parts[0].loadavg_before,
        loadavg_after=parts[-1].loadavg_after,
        steal_pct=weighted([p.steal_pct for p in parts]),
        others_cores=weighted([p.others_cores for p in parts]),
        cores=cores,
        contended=any(p.contended for p in parts),
        reasons=reasons,
    )


def judge(before: _Sample, after: _Sample, threads: int) -> Conditions:
    """The conditions between two samples of this process and the machine."""
    wall = max(after.wall - before.wall, 1e-9)
    cpu = max(after.own_cpu - before.own_cpu, 0.0)
    cores = os.cpu_count() or 1
    steal_pct = others = None
    reasons: list[str] = []
    if before.busy is not None and after.busy is not None:
        span = max(after.total - before.total, 1e-9)
        steal_pct = 100.0 * max(after.steal - before.steal, 0.0) / span
        # Kernel ticks are 10 ms: a short section reads a little high or low; never below zero.
        others = max((after.busy - before.busy) - cpu, 0.0) / wall
        if others > OTHERS_CORES_LIMIT and wall >= MIN_JUDGED_S:
            reasons.append(f"other processes kept {others:.2f} of {cores} cores busy during the timing")
        if steal_pct > STEAL_PCT_LIMIT and wall >= MIN_JUDGED_S:
            reasons.append(f"the hypervisor stole {steal_pct:.1f} % of the CPU time")
    return Conditions(
        wall_s=wall,
        cpu_s=cpu,
        threads=threads,
        cpu_util=cpu / (wall * min(threads, cores)),
        loadavg_before=before.loadavg,
        loadavg_after=after.loadavg,
        steal_pct=steal_pct,
        others_cores=others,
        cores=cores,
        contended=bool(reasons),
        reasons=reasons,
    )
