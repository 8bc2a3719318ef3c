"""Ctrl-C and SIGTERM that never cut a write to the tracking store in half.

The command line installs :func:`install`: SIGINT and SIGTERM (a scheduler, ``timeout``, ``kill``)
then raise :class:`KeyboardInterrupt` / :class:`Terminated` in the main thread, so the running job's
run ends ``KILLED`` and an open sweep is closed, instead of both staying ``RUNNING`` forever. Inside
:func:`uninterrupted` (every tracking-store call) a signal waits until the block ends: an exception
raised in the middle of a database transaction would leave the store locked for the very writes
that record the interruption. And since some library code swallows every exception (an import
deep inside torch caught one here), long loops call :func:`check`, which raises a requested
interrupt again if it was lost.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """The process was asked to stop with SIGTERM."""


_depth = 0  # nesting of uninterrupted blocks in the main thread
_pending: int | None = None  # a signal that arrived inside one
_requested: int | None = None  # the last signal received, until check() or a deferred raise acts on it


def _interrupt(signum: int) -> KeyboardInterrupt:
    if signum == signal.SIGTERM:
        return Terminated(f"terminated by signal {signum} (SIGTERM)")
    return KeyboardInterrupt()


def _handler(signum: int, frame: object) -> None:
    global _pending, _requested
    _requested = signum
    if _depth:
        _pending = signum
        return
    raise _interrupt(signum)


def install() -> None:
    """Route SIGINT and SIGTERM through this module (main thread only: Python's rule)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _handler)


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then raise. A no-op outside the main thread
    (signal handlers run only there)."""
    global _depth, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            signum, _pending, _requested = _pending, None, None
            raise _interrupt(signum)


def check() -> None:
    """Raise the interrupt a signal asked for, in case the exception its handler raised was
    swallowed on the way. Call it where long loops go round (each inference, each training step)."""
    global _requested
    if _requested is not None and _depth == 0:
        signum, _requested = _requested, None
        raise _interrupt(signum)
