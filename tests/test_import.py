"""`import yolomlu` is cheap and has no side effects."""

import subprocess
import sys

PROBE = """
import logging, os, sys, warnings
env = dict(os.environ); handlers = list(logging.getLogger().handlers)
import yolomlu, yolomlu.types, yolomlu.backends, yolomlu.tracking, yolomlu.tasks
assert dict(os.environ) == env, "environment changed"
assert logging.getLogger().handlers == handlers, "logging configured"
heavy = [m for m in ("onnxruntime", "torch_mlu", "mlflow", "hydra") if m in sys.modules]
assert not heavy, heavy
print("ok")
"""


def test_import_has_no_side_effects_and_needs_no_sdk() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
