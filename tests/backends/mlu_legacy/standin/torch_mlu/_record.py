"""EMULATING STAND-IN — not Cambricon's code; this part records calls so tests can check the sequence.

Each call is appended as one JSON line ``{"call": name, "args": [...], "kwargs": {...}}`` to the file named
by ``YOLOMLU_STANDIN_RECORD`` (nothing is recorded when it is unset). Tensors are summarised as
``{"tensor": shape, "dtype", "device"}``, modules as ``{"module": class name}``.
"""

import json
import os
import sys

import torch


def summary(value):
    if isinstance(value, torch.Tensor):
        return {"tensor": [int(s) for s in value.shape], "dtype": str(value.dtype).replace("torch.", ""), "device": str(value.device)}
    if isinstance(value, torch.nn.Module):
        return {"module": type(value).__name__}
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, dict):
        return {str(k): summary(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [summary(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def record(call, *args, **kwargs):
    path = os.environ.get("YOLOMLU_STANDIN_RECORD")
    if not path:
        return
    line = {"call": call, "args": summary(list(args)), "kwargs": summary(kwargs)}
    with open(path, "a") as fh:
        fh.write(json.dumps(line) + "\n")


def fail_if_asked(call):
    """Raise where a test asked the stand-in to fail (``YOLOMLU_STANDIN_FAIL=<call name>``)."""
    if os.environ.get("YOLOMLU_STANDIN_FAIL") == call:
        sys.stderr.write("stand-in: simulating an SDK failure in %s\n" % call)
        raise RuntimeError("CNML error (stand-in): %s failed as the test asked" % call)


def from_worker(depth=2):
    """True when the caller's caller is the device worker script (not torch's own internals)."""
    return sys._getframe(depth).f_code.co_filename.endswith("worker.py")
