"""The one interface every backend implements.

A runner is cheap to construct and acquires its resources (device memory, sessions, compiled
graphs) in :meth:`Runner.activate`; use it as a context manager. Subclasses override only the
``_*_impl`` hooks; the public methods do the checks and the timing.
"""

from __future__ import annotations

import abc
import time
from typing import Any, ClassVar

import torch

from yolomlu import interrupts
from yolomlu.types import LayerProfile


class BackendError(RuntimeError):
    """A backend cannot do what was asked (missing SDK, unsupported setting)."""


class Runner(abc.ABC):
    """Runs a detection model on one backend.

    ``infer`` takes a preprocessed batch, float32 [B, 3, H, W] in 0..1 on the CPU, and returns the
    raw per-level Detect convolution outputs, each float32 [B, na*(5+nc), H/stride, W/stride] on
    the CPU. Decode, NMS and rescaling happen elsewhere, once, for every backend.
    """

    name: ClassVar[str]
    # True where the backend quantizes the float model by itself from the job's quant config (then
    # the job hands it calibration batches instead of emulating int8 in torch).
    quantizes_itself: ClassVar[bool] = False
    # The quant.scheme values a job may use with this backend: its own quantizer's, or the MLU's
    # emulated before the model reaches it (the torch backend).
    quant_schemes: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.is_active = False
        # Set by backends whose device does decode + NMS: how to read their detection buffer.
        self.detection_buffer = None
        # Seconds the device spent on the last batch, input on the device to outputs on the
        # device (no host copies), where the backend can time its device (CUDA events); else None.
        self.last_device_seconds: float | None = None
        # The file the backend runs from (an offline model, an .onnx, an IR), once activated: the job
        # logs it as the run's offline model and takes its size as model_mb.
        self.artifact = None

    def set_quantization(self, settings, calibration) -> None:
        """Before :meth:`activate`, for a backend that quantizes by itself (``quantizes_itself``): the
        job's typed quant settings (``yolomlu.quant.QuantSettings``) and calibration batches
        (float32 [b, 3, H, W] in 0..1). The backend checks every setting now and refuses, by name, what
        it cannot honour; it quantizes while activating."""
        raise BackendError(f"the {self.name} backend does not quantize by itself")

    def quantized_layers(self) -> int | None:
        """How many layers run quantized in what this (active) runner runs; None where it did not
        quantize (an emulated model's count is the quant stage's)."""
        return None

    # -- lifecycle ---------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if not self.is_active:
            self._activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate_impl()
            self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # -- inference ---------------------------------------------------------------------------
    def infer(self, batch: torch.Tensor) -> list[torch.Tensor]:
        outputs, _ = self.timed_infer(batch)
        return outputs

    def timed_infer(self, batch: torch.Tensor) -> tuple[list[torch.Tensor], float]:
        """Run one batch; return the outputs and the seconds it took, device synchronised."""
        if not self.is_active:
            raise BackendError(f"{self.name} runner is not active: use it as a context manager")
        interrupts.check()  # a Ctrl-C or SIGTERM that library code swallowed still stops the loop
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a batch [B, 3, H, W], got {tuple(batch.shape)}")
        self._synchronize()
        start = time.perf_counter()
        outputs = self._infer_impl(batch)
        self._synchronize()
        return outputs, time.perf_counter() - start

    def profile(self, batch: torch.Tensor, passes: int = 3) -> LayerProfile:
        """Per-layer-type time table of one forward, averaged over ``passes`` after a warm-up."""
        if not self.is_active:
            raise BackendError(f"{self.name} runner is not active: use it as a context manager")
        self._infer_impl(batch)  # warm-up: first calls allocate and pick kernels
        return self._profile_impl(batch, passes)

    def _profile_impl(self, batch: torch.Tensor, passes: int) -> LayerProfile:
        raise BackendError(f"the {self.name} backend cannot profile layers")

    def device_memory_mb(self) -> float | None:
        """Peak accelerator memory allocated since activation or :meth:`reset_device_memory_peak`,
        in MiB; None where the backend cannot tell (host memory is ``peak_rss_mb``)."""
        return None

    def reset_device_memory_peak(self) -> None:
        """Start a new peak for :meth:`device_memory_mb` (after a warm-up whose autotuning
        workspaces are not what running the model needs)."""

    def evidence(self) -> dict[str, Any]:
        """Facts that show the variant ran as asked (mode, dtype, artifact type and size)."""
        return {}

    # -- timing in a process of its own -----------------------------------------------------------
    def timing_twin(self) -> "Runner | None":
        """An inactive runner that opens the engine this (active) runner built, without building it
        again where a file can be reused, for timing in a fresh process (it is pickled there).

        None: time this runner where it is, because its batches already run in a process of its
        own (a device worker). A backend must choose: timings taken in the job's process are
        disturbed by whatever ran there before (another engine's thread pool still spinning)."""
        raise BackendError(f"the {self.name} backend does not say how to time it in a fresh process (timing_twin)")

    def standalone_engine(self):
        """A ``yolomlu.backends.engines.EngineSpec`` for the engine this active runner built, to time
        it alone with its plain API; None where there is no such counterpart."""
        return None

    def accuracy_caveat(self) -> str | None:
        """Why this (active) runner's outputs say nothing about the target's accuracy, or None when
        they do. A stand-in for an SDK that computes nothing like the device says so here."""
        return None

    def accuracy_prediction(self) -> tuple[str, str] | None:
        """(tag value, why) when this (active) runner's outputs are a prediction of the target's, not
        the target's own: a stand-in that emulates the device's numerics. The job then logs its mAP
        tagged ``accuracy=<tag value>`` (e.g. ``predicted_standin``), never as measured. None: the
        outputs are the target's."""
        return None

    def threads_in_use(self) -> int:
        """CPU threads the engine computes with (for judging the CPU time a timing took)."""
        return torch.get_num_threads()

    def helper_pids(self) -> list[int]:
        """Processes this runner started that do its work (a device worker): their CPU time is the
        timing's own, not other processes' load."""
        return []

    # -- hooks -------------------------------------------------------------------------------
    @abc.abstractmethod
    def _activate_impl(self) -> None: ...

    def _deactivate_impl(self) -> None:
        pass

    @abc.abstractmethod
    def _infer_impl(self, batch: torch.Tensor) -> list[torch.Tensor]: ...

    def _synchronize(self) -> None:
        pass
