"""Which process owns an open run, and a heartbeat that says it is still there.

A run that stays ``RUNNING`` after its process died (``kill -9``, an out-of-memory kill, a node
that went down) looks like work in progress forever. So every run records the process that owns
it (tags ``run.host``, ``run.pid``, ``run.started`` — the process's own start time — and
``run.pid_scope``, the boot and pid namespace in which that pid means something) and, while it is
open, a daemon thread refreshes ``run.heartbeat`` every :data:`HEARTBEAT_S` seconds.
``tracking.liveness`` reads these back to close the runs of processes that are gone.

This module knows nothing of MLflow: the heartbeat is given the function that writes the tag.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

HOST_TAG = "run.host"
PID_TAG = "run.pid"
STARTED_TAG = "run.started"  # when the owning process started (UTC), not when the run was opened
SCOPE_TAG = "run.pid_scope"  # boot id and pid namespace: where run.pid can be looked up
HEARTBEAT_TAG = "run.heartbeat"  # the owner's last sign of life (UTC)
OWNER_TAGS = (HOST_TAG, PID_TAG, STARTED_TAG, SCOPE_TAG, HEARTBEAT_TAG)

HEARTBEAT_S = 30.0  # how often an open run's process refreshes run.heartbeat

_log = logging.getLogger(__name__)


def utc_text(epoch_s: float) -> str:
    """``2026-12-02T01:57:03.410+00:00``: a time as the tags hold it."""
    return datetime.fromtimestamp(epoch_s, tz=timezone.utc).isoformat(timespec="milliseconds")


def parse_utc(text: str | None) -> float | None:
    """The epoch seconds of a time written by :func:`utc_text`; None for a missing or foreign value."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


@dataclass(frozen=True)
class ProcessState:
    """A process as /proc shows it: alive (not a zombie) and when it started (epoch seconds)."""

    alive: bool
    started: float | None  # None where /proc cannot tell (not Linux)


def process_state(pid: int) -> ProcessState:
    """Whether ``pid`` is a live process on this machine and when it started.

    A zombie (killed, not yet reaped by its parent) counts as gone: it will never write again.
    Without /proc (not Linux) only existence can be checked, and the start time is unknown.
    """
    stat = Path(f"/proc/{pid}/stat")
    try:
        text = stat.read_text()
    except FileNotFoundError:
        return ProcessState(alive=False, started=None)
    except OSError:
        return ProcessState(alive=_exists(pid), started=None)
    # The command name (field 2) may hold spaces and parentheses: split after its closing one.
    fields = text[text.rindex(")") + 2 :].split()
    state, start_ticks = fields[0], int(fields[19])  # fields 3 and 22 of proc(5)
    if state in ("Z", "X"):
        return ProcessState(alive=False, started=None)
    return ProcessState(alive=True, started=_boot_time() + start_ticks / os.sysconf("SC_CLK_TCK"))


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but it exists
    return True


@functools.cache
def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise RuntimeError("/proc/stat has no btime line")


@functools.cache
def pid_scope() -> str:
    """``<boot id>/<pid namespace>``: two processes may look each other's pids up only when this
    is the same for both (same boot, same namespace); "" where the system cannot tell."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}/{namespace}"


@functools.cache
def _owner(pid: int) -> tuple[str, str, str, str]:
    started = process_state(pid).started
    return platform.node(), str(pid), utc_text(started if started is not None else time.time()), pid_scope()


def owner_tags() -> dict[str, str]:
    """The tags that say which process owns a run opened now: host, pid, the process's start time,
    its pid scope, and a first heartbeat."""
    host, pid, started, scope = _owner(os.getpid())  # keyed by pid: a forked child is another owner
    return {HOST_TAG: host, PID_TAG: pid, STARTED_TAG: started, SCOPE_TAG: scope, HEARTBEAT_TAG: utc_text(time.time())}


class Heartbeat:
    """A daemon thread that calls ``beat(now_text)`` every ``interval_s`` seconds until stopped.

    It never blocks the job: a failing or slow write (a tracking server that is down) is the
    thread's own business, reported once in the log, and the job goes on.
    """

    def __init__(self, beat: Callable[[str], None], interval_s: float = HEARTBEAT_S, name: str = "heartbeat") -> None:
        if interval_s <= 0:
            raise ValueError(f"heartbeat interval_s={interval_s} must be positive")
        self._beat = beat
        self._interval = interval_s
        self._stop = threading.Event()
        self._warned = False
        self._thread = threading.Thread(target=self._loop, name=f"yolomlu-{name}", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the thread to end; wait a moment, never long (it may be inside a slow write)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._beat(utc_text(time.time()))
            except Exception as exc:  # noqa: BLE001 - a missed beat must not end the job
                if not self._warned:
                    self._warned = True
                    _log.warning("heartbeat %s failed (%s: %s); the job goes on", self._thread.name, type(exc).__name__, exc)


_beating: dict[str, Heartbeat] = {}  # run id -> its heartbeat, in this process
_beating_lock = threading.Lock()


def start_heartbeat(run_id: str, beat: Callable[[str], None], interval_s: float | None = None) -> Heartbeat:
    """Start the heartbeat of ``run_id`` in this process, every ``interval_s`` (default
    :data:`HEARTBEAT_S`) seconds. Kept here, not on the run's logger, so that a logger which a
    launcher pickles to its workers carries no thread."""
    heartbeat = Heartbeat(beat, HEARTBEAT_S if interval_s is None else interval_s, name=f"heartbeat-{run_id[:8]}")
    with _beating_lock:
        previous = _beating.pop(run_id, None)
        _beating[run_id] = heartbeat
    if previous is not None:
        previous.stop()
    return heartbeat.start()


def stop_heartbeat(run_id: str) -> None:
    """Stop the heartbeat of ``run_id`` if this process runs one."""
    with _beating_lock:
        heartbeat = _beating.pop(run_id, None)
    if heartbeat is not None:
        heartbeat.stop()
