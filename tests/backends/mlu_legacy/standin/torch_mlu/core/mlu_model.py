"""RECORDING STAND-IN — not Cambricon's code; records calls so tests can check the sequence.

Stands in for ``torch_mlu.core.mlu_model`` (imported as ``ct``). ``mlu_device()`` returns the CPU device,
so "device" tensors are CPU tensors. ``save_as_cambricon(name)`` remembers the name; the following
``save_as_cambricon('')`` writes ``<name>.cambricon`` and ``<name>.cambricon_twins`` with placeholder
text (the real SDK writes them during the first forward after tracing).
"""

import torch

from torch_mlu._record import fail_if_asked, record

_state = {"offline_name": ""}


def mlu_device():
    record("ct.mlu_device")
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
            fh.write(b"RECORDING STAND-IN: not a Cambricon offline model\n")
        with open(base + ".cambricon_twins", "w") as fh:
            fh.write("RECORDING STAND-IN: placeholder for the offline model's description\n")
        _state["offline_name"] = ""
