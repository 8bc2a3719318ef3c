"""Backends behind one :class:`Runner` interface, looked up by name.

SDK modules are imported only when their runner is asked for, so ``import yolomlu`` works without
onnxruntime or torch_mlu.
"""

from __future__ import annotations

import importlib

from yolomlu.backends.base import BackendError, Runner

# name -> "module:Class"; the only place that knows which backends exist.
_REGISTRY = {
    "torch": "yolomlu.backends.torch_runner:TorchRunner",
    "mlu_legacy": "yolomlu.backends.mlu_legacy.runner:MluLegacyRunner",
    "onnxruntime": "yolomlu.backends.onnxruntime_runner:OrtRunner",
    "openvino": "yolomlu.backends.openvino_runner:OpenVinoRunner",
}


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def runner_class(name: str) -> type[Runner]:
    """The runner class registered as ``name``; an unknown name lists the known ones."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; available: {available_backends()}") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["BackendError", "Runner", "available_backends", "runner_class"]
