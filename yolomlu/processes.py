"""Child processes that never outlive the process that started them.

A timing process or a device worker left behind by a parent that was killed (``kill -9``, an
out-of-memory kill, a scheduler's time limit) would keep a core or an accelerator busy and corrupt
every measurement after it. On Linux the kernel can send a child a signal when its parent dies
(``prctl(PR_SET_PDEATHSIG)``); :func:`die_with_parent` asks for SIGKILL, and it survives ``exec``, so
it works as a ``preexec_fn`` for :class:`subprocess.Popen` and as the first call of a Python child.
Elsewhere it does nothing (and the child then relies on its parent's clean-up).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(expected_parent: int | None = None) -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies; True where that is in place.

    ``expected_parent``: the pid the parent had when it started this process. If the parent already
    died before the request (a race the kernel cannot see), this process exits at once.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        armed = False
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)  # orphaned already: nobody waits for our result
    return armed


def preexec_die_with_parent() -> None:
    """``preexec_fn`` for :class:`subprocess.Popen`: the started program dies with this process."""
    die_with_parent()
