"""The torch backend: the model as a torch module on a torch device."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from yolomlu.backends.base import BackendError, Runner
from yolomlu.backends.taxonomy import build_profile
from yolomlu.types import LayerProfile

DEVICES = ("cpu", "cuda", "mlu")
# Ops of the runner's own input/output handling, not of the model.
_NOT_LAYERS = {"aten::to", "aten::_to_copy", "aten::copy_", "aten::empty", "aten::empty_strided"}
MODES = ("eager",)


class TorchRunner(Runner):
    """Layer-by-layer (eager) execution of a torch module.

    Args:
        model: the (transformed) detection model; its forward returns the Detect outputs.
        device: "cpu", "cuda" or "mlu" (torch_mlu 2.x, imported lazily).
        mode: "eager".
        half: run in reduced precision (bf16 on the CPU, fp16 on an accelerator).
        channels_last: use the NHWC memory format.
        threads: intra-op threads on the CPU (None keeps torch's default).
    """

    name = "torch"

    def __init__(
        self,
        model: nn.Module,
        device: str = "cpu",
        mode: str = "eager",
        half: bool = False,
        channels_last: bool = False,
        threads: int | None = None,
    ) -> None:
        super().__init__()
        if device not in DEVICES:
            raise BackendError(f"backend.device={device!r} is not supported; choose one of {list(DEVICES)}")
        if mode not in MODES:
            raise BackendError(f"backend.mode={mode!r} is not supported by the torch backend; choose one of {list(MODES)}")
        if threads is not None and threads < 1:
            raise BackendError(f"backend.threads must be a positive integer or null, got {threads}")
        self.model = model
        self.device_name = device
        self.mode = mode
        self.half = half
        self.channels_last = channels_last
        self.threads = threads
        self._device: torch.device | None = None
        self._dtype = torch.float32
        self._previous_threads: int | None = None

    def _activate_impl(self) -> None:
        self._device = _acquire_device(self.device_name)
        if self.half:
            self._dtype = torch.bfloat16 if self._device.type == "cpu" else torch.float16
        if self.threads is not None and self._device.type == "cpu":
            self._previous_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = self.model.eval().to(self._device, dtype=self._dtype, memory_format=memory_format)

    def _deactivate_impl(self) -> None:
        if self._previous_threads is not None:
            torch.set_num_threads(self._previous_threads)
            self._previous_threads = None

    @torch.inference_mode()
    def _infer_impl(self, batch: torch.Tensor) -> list[torch.Tensor]:
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        x = batch.to(self._device, dtype=self._dtype, memory_format=memory_format)
        return [y.float().cpu() for y in self.model(x)]

    def _profile_impl(self, batch: torch.Tensor, passes: int) -> LayerProfile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if self._device is not None and self._device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        with profile(activities=activities) as prof:
            for _ in range(passes):
                self._infer_impl(batch)
                self._synchronize()
        # Top-level ops only (no parent op): their totals include their own children, so nothing
        # is counted twice and each layer appears once (conv2d, not also its mkldnn kernel).
        device_time = "device_time_total" if len(activities) > 1 else None
        events = [
            (e.name, getattr(e, device_time) if device_time else e.cpu_time_total)
            for e in prof.events()
            if e.cpu_parent is None and e.name.startswith("aten::") and e.name not in _NOT_LAYERS
        ]
        return build_profile(events, passes=passes)

    def _synchronize(self) -> None:
        if self._device is not None and self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        elif self._device is not None and self._device.type == "mlu":
            torch.mlu.synchronize(self._device)  # type: ignore[attr-defined]

    def evidence(self) -> dict[str, Any]:
        return {
            "backend.device_resolved": str(self._device),
            "backend.compute_dtype": str(self._dtype).removeprefix("torch."),
            "backend.threads_used": torch.get_num_threads(),
        }


def _acquire_device(name: str) -> torch.device:
    if name == "cuda":
        if not torch.cuda.is_available():
            raise BackendError("backend.device=cuda but torch reports no CUDA device (torch.cuda.is_available() is False)")
        return torch.device("cuda")
    if name == "mlu":
        try:
            import torch_mlu  # noqa: F401  (registers the 'mlu' device with torch)
        except ImportError as exc:
            raise BackendError(
                "backend.device=mlu needs Cambricon's torch_mlu 2.x, which is not installed here "
                f"(torch {torch.__version__}); for the legacy MLU270/220 SDK use backend=mlu_legacy"
            ) from exc
        return torch.device("mlu")
    return torch.device("cpu")
