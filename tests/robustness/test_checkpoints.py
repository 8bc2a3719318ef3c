"""Bad and malicious checkpoints, through task=evaluate (``model.weights=<file>``).

A job opens its run first, so every refused file is one FAILED run whose error names the file. The
malicious ones would each create the marker file if their payload ran; the jobs run in this very
process, so a payload that got through would run here, and the ``marker`` fixture would see it.
"""

from __future__ import annotations

import io
import os
import pickle
import runpy
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from yolomlu.model import build_yolov5
from yolomlu.model.checkpoint import save_state_dict

from .battery import JOB, verdict

# ---------------------------------------------------------------------------------- payloads


class _Reduce:
    """Pickles as ``function(*args)``: what a malicious pickle runs on load."""

    def __init__(self, function, *args) -> None:
        self.call = (function, args)

    def __reduce__(self):
        return self.call


def _touch(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('ran')"


def os_system(marker: Path, _: Path) -> bytes:
    return pickle.dumps({"model": _Reduce(os.system, f"touch {marker}")}, protocol=2)


def builtins_exec(marker: Path, _: Path) -> bytes:
    return pickle.dumps(_Reduce(exec, _touch(marker)), protocol=4)


def builtins_eval(marker: Path, _: Path) -> bytes:
    return pickle.dumps(_Reduce(eval, _touch(marker)), protocol=0)


def subprocess_popen(marker: Path, _: Path) -> bytes:
    return pickle.dumps(_Reduce(subprocess.Popen, ["touch", str(marker)]), protocol=2)


def module_global(marker: Path, tmp_path: Path) -> bytes:
    """A GLOBAL naming a module that is importable from here and runs code when imported: the
    refusal must come before any import."""
    (tmp_path / "yolomlu_evil_payload.py").write_text(f"{_touch(marker)}\ndef make():\n    return {{}}\n")
    return b"cyolomlu_evil_payload\nmake\n(tR."


def nested_pickle(marker: Path, tmp_path: Path) -> bytes:
    """pickle.loads of an inner malicious pickle; at protocol 2 its bytes travel through
    ``_codecs.encode(text, 'latin1')``, which the allowlist does let through."""
    inner = os_system(marker, tmp_path)
    data = pickle.dumps(_Reduce(pickle.loads, inner), protocol=2)
    assert b"_codecs" in data and b"encode" in data
    return data


def torch_zip(marker: Path, _: Path) -> bytes:
    """A real torch zip archive (as torch.save writes it, tensors included) whose data.pkl carries
    the payload."""
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(2)}, "meta": _Reduce(os.system, f"touch {marker}")}, buffer)
    assert zipfile.is_zipfile(io.BytesIO(buffer.getvalue()))
    return buffer.getvalue()


def runpy_script(marker: Path, tmp_path: Path) -> bytes:
    """A pickle that runs another file: ``runpy.run_path(script)``."""
    script = tmp_path / "setup_weights.py"
    script.write_text(_touch(marker))
    return pickle.dumps(_Reduce(runpy.run_path, str(script)), protocol=2)


SYSTEM = f"{os.system.__module__}.system"  # posix.system here
# case -> (payload maker, the global the message must name)
MALICIOUS = {
    "os-system-via-reduce": (os_system, SYSTEM),
    "builtins-exec": (builtins_exec, "builtins.exec"),
    "builtins-eval": (builtins_eval, "builtins.eval"),
    "subprocess-popen": (subprocess_popen, "subprocess.Popen"),
    "global-of-an-arbitrary-module": (module_global, "yolomlu_evil_payload.make"),
    "nested-pickle-via-codecs": (nested_pickle, "pickle.loads"),
    "torch-zip-with-payload": (torch_zip, SYSTEM),
    "runpy-of-a-script": (runpy_script, "runpy.run_path"),
}


@pytest.mark.parametrize("case", list(MALICIOUS), ids=list(MALICIOUS))
def test_each_payload_would_run_without_the_allowlist(case, tmp_path: Path, monkeypatch) -> None:
    """The control: loaded the way ``torch.load(weights_only=False)`` loads, each payload does
    create its marker, so the refusals below refuse something real."""
    make, _ = MALICIOUS[case]
    ran = tmp_path / "control_ran"
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / f"{case}.pt"
    path.write_bytes(make(ran, tmp_path))
    try:
        torch.load(path, weights_only=False)
    except Exception:  # noqa: BLE001 - what a payload returns need not be a checkpoint
        pass
    finally:
        sys.modules.pop("yolomlu_evil_payload", None)  # imported anew by the next case that asks
    deadline = time.monotonic() + 10  # subprocess.Popen does not wait for its child
    while not ran.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ran.exists()


@pytest.mark.parametrize("case", list(MALICIOUS), ids=list(MALICIOUS))
def test_a_malicious_checkpoint_is_refused_and_runs_nothing(case, run_job, marker: Path, tmp_path: Path, monkeypatch) -> None:
    make, global_name = MALICIOUS[case]
    monkeypatch.syspath_prepend(str(tmp_path))  # the arbitrary module would be importable
    path = tmp_path / f"{case}.pt"
    path.write_bytes(make(marker, tmp_path))
    outcome = run_job([*JOB, f"model.weights={path}"])
    verdict(outcome, status=1, names=[str(path), global_name], valid=["nothing was executed"], run="FAILED")
    assert not marker.exists()


# ------------------------------------------------------------------------------ broken files


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Real checkpoints of the wrong model, made once: v5.0 n with 6 classes, v5.0 n with 80."""
    folder = tmp_path_factory.mktemp("checkpoints")
    return {
        "v5-nc6": save_state_dict(build_yolov5("v5", 0.33, 0.25, nc=6), folder / "v5_nc6.pt"),
        "v5-nc80": save_state_dict(build_yolov5("v5", 0.33, 0.25, nc=80), folder / "v5_nc80.pt"),
    }


def _truncated(checkpoints) -> bytes:
    data = checkpoints["v5-nc80"].read_bytes()
    return data[: len(data) // 2]


def _torchscript(_) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.ReLU()), buffer)
    return buffer.getvalue()


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# case -> (file content from the module's checkpoints, model overrides, what the message must say)
BROKEN = {
    "garbage-bytes": (lambda c: np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(), [], "(truncated or corrupt?); expected a file written by torch.save"),
    "empty-file": (lambda c: b"", [], "checkpoint file is empty"),
    "truncated-zip": (_truncated, [], "(truncated or corrupt?); expected a file written by torch.save"),
    "torchscript-archive": (_torchscript, [], "is a TorchScript archive (it carries code), not a checkpoint"),
    "no-weights-inside": (lambda c: _saved({"epoch": 3, "note": "no weights"}), [], "holds no model weights"),
    "a-list-of-tensors": (lambda c: _saved([torch.zeros(3)]), [], "holds a list, not a model or a dict of weights"),
    "wrong-nc": (lambda c: c["v5-nc6"].read_bytes(), [], "was the checkpoint trained for another number of classes? (model.24.m.0.weight: checkpoint nc=6, model nc=80)"),
    "v5-checkpoint-into-v6-model": (lambda c: c["v5-nc80"].read_bytes(), ["model=yolov5n"], "is this a v5.0 checkpoint loaded into a v6 model?"),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_a_broken_or_mismatched_checkpoint_fails_the_job_naming_the_file(case, checkpoints, run_job, tmp_path: Path) -> None:
    content, model, says = BROKEN[case]
    path = tmp_path / f"{case}.pt"
    path.write_bytes(content(checkpoints))
    verdict(run_job([*JOB, *model, f"model.weights={path}"]), status=1, names=[str(path)], valid=[says], run="FAILED")


def test_a_missing_checkpoint_is_named(run_job, tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "best.pt"
    verdict(run_job([*JOB, f"model.weights={path}"]), status=1, names=[str(path)], valid=["checkpoint file not found"], run="FAILED")


def test_a_malicious_checkpoint_on_the_command_line(run_command, marker: Path, tmp_path: Path) -> None:
    path = tmp_path / "yolov5s.pt"
    path.write_bytes(torch_zip(marker, tmp_path))
    outcome = run_command(*JOB, f"model.weights={path}")
    verdict(outcome, status=1, names=[str(path), SYSTEM], valid=["nothing was executed"], run="FAILED")
    assert outcome.stderr.strip().splitlines()[-1] == outcome.message
