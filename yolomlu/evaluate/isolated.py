"""Run one function in a fresh Python process that has done nothing else, and get its result back.

Why: a benchmark in the job's own process shares the cores with whatever ran there before — the
model build, the parity reference, the evaluation, an earlier job of the sweep — and with the thread
pools those left behind (torch's OpenMP workers keep spinning for a while after torch work; an
engine timed right after shares the cores with them). A fresh process has imported the libraries
and nothing more. Its peak memory is the timed engine's own.

How: the caller's arguments are pickled into a private temporary folder; ``python -m
yolomlu.evaluate.isolated <folder> <parent pid>`` loads them, arms :func:`die_with_parent` (a killed
job takes its timing process with it), calls ``module:function`` and pickles the result or the
exception back. The pickles are this process's own, written and read within one call, never user
files. An exception in the child is raised again here, with a note saying where it happened.
"""

from __future__ import annotations

import importlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import yolomlu
from yolomlu.processes import die_with_parent

_PAYLOAD = "payload.pkl"
_RESULT = "result.pkl"


class IsolatedProcessError(RuntimeError):
    """The fresh process died without a result (killed, crashed in native code, out of memory)."""


def run_isolated(target: str, *args: Any, env: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """``module:function(*args, **kwargs)`` in a fresh Python process; its return value.

    ``env``: variables set for the child on top of this process's environment. The child's
    stdout and stderr are this process's (progress bars show through). Ctrl-C, SIGTERM or a job
    time limit raised here while waiting kill the child before they propagate.
    """
    folder = Path(tempfile.mkdtemp(prefix="yolomlu-isolated-"))
    try:
        with open(folder / _PAYLOAD, "wb") as fh:
            pickle.dump((target, args, kwargs), fh, protocol=pickle.HIGHEST_PROTOCOL)
        # The child imports the same yolomlu as this process, wherever it was imported from.
        package_root = str(Path(yolomlu.__file__).resolve().parents[1])
        child_env = {**os.environ, **(env or {})}
        child_env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, child_env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(
            [sys.executable, "-m", "yolomlu.evaluate.isolated", str(folder), str(os.getpid())], env=child_env
        )
        try:
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        result = folder / _RESULT
        if not result.is_file():
            raise IsolatedProcessError(f"{target} died in its fresh process (pid {proc.pid}, exit status {code}) without a result")
        with open(result, "rb") as fh:
            ok, value = pickle.load(fh)
        if not ok:
            exc, text = value
            exc.add_note(f"(raised in the fresh process pid {proc.pid} that ran {target}; its traceback:\n{text.rstrip()})")
            raise exc
        return value
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _child(folder: Path) -> int:
    with open(folder / _PAYLOAD, "rb") as fh:
        target, args, kwargs = pickle.load(fh)
    module_name, function_name = target.split(":")
    try:
        value = (True, getattr(importlib.import_module(module_name), function_name)(*args, **kwargs))
    except Exception as exc:  # sent back and raised in the parent, which records it
        text = traceback.format_exc()
        try:
            pickle.dumps(exc)
        except Exception:
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        value = (False, (exc, text))
    partial = folder / (_RESULT + ".partial")
    with open(partial, "wb") as fh:
        pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
    partial.replace(folder / _RESULT)
    return 0 if value[0] else 1


if __name__ == "__main__":
    die_with_parent(int(sys.argv[2]))
    sys.exit(_child(Path(sys.argv[1])))
