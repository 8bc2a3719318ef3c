"""EMULATING STAND-IN — not Cambricon's code; records calls so tests can check the sequence.

Stands in for ``torch_mlu.core.mlu_model`` (imported as ``ct``). ``mlu_device()`` returns the CPU device,
so "device" tensors are CPU tensors (the device's numerics come from ``mlu_quantize``'s emulation, which
a model takes on when it is moved there). ``save_as_cambricon(name)`` remembers the name; the following
``save_as_cambricon('')`` writes ``<name>.cambricon`` and ``<name>.cambricon_twins`` with placeholder
text (the real SDK writes them during the first forward after tracing).

The stand-in writes none of the SDK's profiling output. A test that wants the runner to read some sets
``YOLOMLU_STANDIN_SDK_LOG=<file>``: the file's text (a fixture of the SDK's *documented* log lines,
``tests/backends/mlu_legacy/fixtures``) is then written to the worker's stdout each time the worker
asks for the device in a batch, as the SDK's printf would land in the worker log. It measures nothing.
"""

import os

import torch

from torch_mlu._record import fail_if_asked, from_worker, record

_state = {"offline_name": ""}


def _replay_sdk_log():
    path = os.environ.get("YOLOMLU_STANDIN_SDK_LOG")
    if path:
        with open(path, "rb") as fh:
            os.write(1, fh.read())  # fd 1: the worker points it at its log, as the SDK's printf would go


def mlu_device():
    record("ct.mlu_device")
    if from_worker():
        _replay_sdk_log()
    return torch.device("cpu")


def set_core_number(number):
    record("ct.set_core_number", number)
    fail_if_asked("ct.set_core_number")


def set_core_version(version):
    record("ct.set_core_version", version)
    fail_if_asked("ct.set_core_version")


def set_input_format(input_format):
    record("ct.set_input_format", input_format)


def set_device(device_id):
    record("ct.set_device", device_id)


def save_as_cambricon(name):
    record("ct.save_as_cambricon", name)
    if name:
        _state["offline_name"] = name
        return
    if _state["offline_name"]:
        base = _state["offline_name"]
        with open(base + ".cambricon", "wb") as fh:
            fh.write(b"EMULATING STAND-IN: not a Cambricon offline model\n")
        with open(base + ".cambricon_twins", "w") as fh:
            fh.write("EMULATING STAND-IN: placeholder for the offline model's description\n")
        _state["offline_name"] = ""
