"""Fixtures for the legacy-MLU backend tests: a tiny YOLOv5, the recording stand-in of torch_mlu, and a
reader for the calls it records.

The worker runs as a real subprocess (our Python, torch 2.x) with ``PYTHONPATH`` pointing at
``standin/``, whose ``torch_mlu`` package is a RECORDING STAND-IN, not Cambricon's code.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from yolomlu.model import build_yolov5

STANDIN = Path(__file__).resolve().parent / "standin"
IMG = 64  # tiny inputs: the whole worker run takes seconds

# The quant group as the job hands it over (conf/quant/int8.yaml: the study's qconfig).
INT8 = {
    "name": "int8", "enabled": True, "dtype": "int8", "iteration": 1, "use_avg": False, "data_scale": 1.0,
    "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "firstconv": False, "per_channel": False,
    "scheme": "mlu270", "mixed_layer": [], "calib": {"images": 4, "batch_size": 2}, "fallback_topk": 0,
}  # fmt: skip
# What the worker must hand to quantize_dynamic_mlu as its qconfig dict for INT8.
INT8_QCONFIG = {
    "iteration": 1, "use_avg": False, "data_scale": 1.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
    "firstconv": False, "per_channel": False,
}  # fmt: skip
ANCHORS_18 = [10, 13, 16, 30, 33, 23, 30, 61, 62, 45, 59, 119, 116, 90, 156, 198, 373, 326]


@pytest.fixture
def tiny_model():
    """A v5.0 YOLOv5 at n's depth and a quarter of l's width, 3 classes, eval mode."""
    torch.manual_seed(0)
    return build_yolov5("v5", 0.33, 0.25, nc=3).eval()


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """Route the worker's ``import torch_mlu`` to the recording stand-in; returns the record file."""
    record = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(STANDIN), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("YOLOMLU_STANDIN_RECORD", str(record))
    monkeypatch.delenv("YOLOMLU_STANDIN_FAIL", raising=False)
    return record


def read_calls(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()]


def names(calls: list[dict]) -> list[str]:
    return [c["call"] for c in calls]


def python_cmd() -> list[str]:
    return [sys.executable]


@pytest.fixture
def boxy_model(tiny_model):
    """``tiny_model`` whose head is confident: objectness logits near 2 and class 0 ahead of the others, so a
    64 px input gives boxes above YOLOv5's speed-mode threshold (0.25) at every level, under several classes,
    more than a small buffer holds."""
    head = tiny_model.detect
    with torch.no_grad():
        for conv in head.m:
            bias = conv.bias.view(head.na, head.no)
            bias[:, 4] = 2.0
            bias[:, 5:] = 0.0
            bias[:, 5] = 1.5
    return tiny_model


def host_emulation(model: torch.nn.Module, params: Path, qconfig: dict) -> torch.nn.Module:
    """yolomlu's own emulation of the MLU (the torch backend's quant=int8 road) of ``model`` with the scales
    of a quant-params file in Cambricon's layout (the worker's ``quant_params.npz`` or a ``.pth``): what the
    stand-in should compute on the device."""
    import copy

    import numpy as np

    from yolomlu.quant import QConfig, emulate_float_precision, load_quant_params, quantize_model

    pth = Path(params)
    if pth.suffix == ".npz":
        with np.load(pth, allow_pickle=False) as npz:
            state = {k: torch.from_numpy(np.array(npz[k])) for k in npz.files}
        pth = pth.with_suffix(".host.pth")
        torch.save(state, pth)
    scales, _ = load_quant_params(pth)
    keys = ("iteration", "use_avg", "data_scale", "mean", "std", "firstconv", "per_channel", "dtype", "mixed_layer")
    emulated = copy.deepcopy(model).eval()
    quantize_model(emulated, scales, QConfig(**{k: qconfig[k] for k in keys if k in qconfig}))
    emulate_float_precision(emulated, "float16")
    return emulated
