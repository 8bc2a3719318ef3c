"""Close the runs whose process is gone, so that nothing stays RUNNING forever.

A process killed without a chance to clean up (``kill -9``, the out-of-memory killer, a node that
went down) leaves its runs ``RUNNING``: a sweep's parent and its running child, a job's run. The
next job, sweep or report on the store calls :func:`close_dead_runs`, which closes each such run as
``KILLED`` with a tag ``killed_reason`` saying whose process is gone and who found out. It judges
by the owner tags every run records (``tracking.owner``):

- a run owned here (same host, same boot and pid namespace): its process is gone when the pid is
  not alive (or a zombie), or is alive but is another process (its start time is not
  ``run.started``: the pid was reused);
- a run owned elsewhere (another host, or a pid namespace this process cannot see into): its
  process is taken for gone when its heartbeat is older than ``stale_after_s`` (10 minutes by
  default, against a beat every 30 s; the hosts' clocks are assumed to agree within minutes).

A run whose process is alive is never closed, and a run without owner tags (older runs, runs that
other tools opened) is left alone.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass

from yolomlu.tracking import owner
from yolomlu.tracking.store import TrackingSettings, _client
from yolomlu.tracking.store_lock import sqlite_path

STALE_AFTER_S = 600.0  # a run owned elsewhere whose heartbeat is older than this is taken for dead
START_TOLERANCE_S = 2.0  # process start times read at different moments agree within this
REASON_TAG = "killed_reason"
_PAGE = 1000


@dataclass(frozen=True)
class ClosedRun:
    run_id: str
    run_name: str
    reason: str

    def __str__(self) -> str:
        return f"closed run {self.run_id} ({self.run_name}) as KILLED: {self.reason}"


def why_dead(
    tags: Mapping[str, str], start_time_ms: int | None, now: float, stale_after_s: float = STALE_AFTER_S
) -> str | None:
    """Why the process that owns a run with these tags is gone; None while it may be alive (or
    when the run does not say who owns it)."""
    host, pid_text = tags.get(owner.HOST_TAG), tags.get(owner.PID_TAG)
    if not host or not pid_text or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    scope = tags.get(owner.SCOPE_TAG, "")
    if host == platform.node() and scope == owner.pid_scope():
        state = owner.process_state(pid)
        if not state.alive:
            return f"process {pid} on host {host} is gone"
        recorded = owner.parse_utc(tags.get(owner.STARTED_TAG))
        if state.started is not None and recorded is not None and abs(state.started - recorded) > START_TOLERANCE_S:
            return (
                f"process {pid} on host {host} is gone (pid {pid} is now another process, started "
                f"{owner.utc_text(state.started)}, not {owner.utc_text(recorded)})"
            )
        return None
    last = _last_sign_of_life(tags, start_time_ms)
    if last is None or now - last <= stale_after_s:
        return None
    where = f"host {host}" if host != platform.node() else f"host {host} (pid scope {scope or 'unknown'}, not this one's)"
    return (
        f"process {pid} on {where} sent no heartbeat for {now - last:.0f} s "
        f"(last {owner.utc_text(last)}; limit {stale_after_s:.0f} s)"
    )


def _last_sign_of_life(tags: Mapping[str, str], start_time_ms: int | None) -> float | None:
    for key in (owner.HEARTBEAT_TAG, owner.STARTED_TAG):
        if (moment := owner.parse_utc(tags.get(key))) is not None:
            return moment
    return start_time_ms / 1000 if start_time_ms else None


def close_dead_runs(
    settings: TrackingSettings, finder: str, stale_after_s: float = STALE_AFTER_S, now: float | None = None
) -> list[ClosedRun]:
    """Close as KILLED every RUNNING run of the store (all its active experiments) whose process is
    gone (see :func:`why_dead`); return what was closed.

    ``finder`` names who looks (``"the job demo-torch-cpu-..."``); the reason records it with this
    process and the time. The run's end time is its last heartbeat (its last sign of life). A
    store that does not exist yet, and run records (``tracking.offline_dir``), hold nothing to close.
    """
    if settings.offline_dir:
        return []
    db = sqlite_path(settings.uri)
    if db is not None and not db.is_file():
        return []  # looking must not create a store
    from mlflow.entities import RunTag, ViewType

    client = _client(settings.uri)
    experiment_ids, token = [], None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=_PAGE, page_token=token)
        experiment_ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            break
    if not experiment_ids:
        return []
    now = time.time() if now is None else now
    found_by = f"found by {finder}, process {os.getpid()} on host {platform.node()}, at {owner.utc_text(now)}"
    closed = []
    for run in _running(client, experiment_ids):
        reason = why_dead(run.data.tags, run.info.start_time, now, stale_after_s)
        if reason is None:
            continue
        reason = f"{reason} ({found_by})"
        last = _last_sign_of_life(run.data.tags, run.info.start_time) or now
        end_ms = max(int(last * 1000), run.info.start_time or 0)
        client.log_batch(run.info.run_id, tags=[RunTag(REASON_TAG, reason)])
        client.set_terminated(run.info.run_id, status="KILLED", end_time=end_ms)
        closed.append(ClosedRun(run.info.run_id, run.info.run_name or "", reason))
    return closed


def _running(client, experiment_ids: list[str]) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string="attributes.status = 'RUNNING'", max_results=_PAGE, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs
