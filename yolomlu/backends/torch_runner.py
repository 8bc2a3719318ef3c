"""The torch backend: the model as a torch module on a torch device, in one of three modes.

| mode    | what runs                                            | the study's name   |
|---------|------------------------------------------------------|--------------------|
| eager   | the nn.Module, op by op                              | layer by layer     |
| fused   | torch.jit.trace + freeze, torch.compile, or a CUDA graph | fusion mode    |
| offline | a saved TorchScript file or torch.export .pt2 package, loaded back from disk | offline model |
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolomlu.backends.base import BackendError, Runner
from yolomlu.backends.engines import EngineSpec
from yolomlu.backends.taxonomy import build_profile
from yolomlu.types import LayerProfile

DEVICES = ("cpu", "cuda", "mlu")
MODES = ("eager", "fused", "offline")
COMPILERS = ("trace", "compile", "cudagraph")
OFFLINE_FORMATS = ("torchscript", "export")
# Ops of the runner's own input/output handling, not of the model.
_NOT_LAYERS = {"aten::to", "aten::_to_copy", "aten::copy_", "aten::empty", "aten::empty_strided"}


class TorchRunner(Runner):
    """Runs a torch detection model.

    Args:
        model: the (transformed) detection model; its forward returns the Detect outputs.
        device: "cpu", "cuda" or "mlu" (torch_mlu 2.x, imported lazily).
        mode: "eager", "fused" or "offline" (see the module docstring).
        half: run in reduced precision (bf16 on the CPU, fp16 on an accelerator).
        channels_last: use the NHWC memory format.
        threads: intra-op threads on the CPU (None keeps torch's default).
        compiler: how mode=fused fuses: "trace" (torch.jit.trace + freeze), "compile"
            (torch.compile, default inductor mode; slow to compile on a CPU) or "cudagraph" (the
            eager model captured once per input shape as a CUDA graph and replayed: one launch per
            batch instead of one per kernel; CUDA only).
        offline_format: what mode=offline writes: "torchscript" (.pt) or "export" (.pt2).
        work_dir: where mode=offline writes its file (a cache: reused when the same model,
            precision and format produced it before).
        img_size: side of the example input used to trace or export.
    """

    name = "torch"
    quant_schemes = ("mlu270", "mlu370")  # the MLU's quantization, emulated in torch before the runner

    def __init__(
        self,
        model: nn.Module,
        device: str = "cpu",
        mode: str = "eager",
        half: bool = False,
        channels_last: bool = False,
        threads: int | None = None,
        compiler: str = "trace",
        offline_format: str = "torchscript",
        work_dir: str | Path | None = None,
        img_size: int = 640,
    ) -> None:
        super().__init__()
        for key, value, choices in (
            ("device", device, DEVICES),
            ("mode", mode, MODES),
            ("compiler", compiler, COMPILERS),
            ("offline_format", offline_format, OFFLINE_FORMATS),
        ):
            if value not in choices:
                raise BackendError(f"backend.{key}={value!r} is not supported by the torch backend; choose one of {list(choices)}")
        if threads is not None and threads < 1:
            raise BackendError(f"backend.threads must be a positive integer or null, got {threads}")
        if compiler == "cudagraph" and (device != "cuda" or mode != "fused"):
            raise BackendError(
                f"backend.compiler=cudagraph needs backend.device=cuda and backend.mode=fused (got device={device!r}, mode={mode!r})"
            )
        if mode == "offline" and work_dir is None:
            raise BackendError("backend.mode=offline needs a work_dir to write the offline model to")
        self.model = model
        self.device_name = device
        self.mode = mode
        self.half = half
        self.channels_last = channels_last
        self.threads = threads
        self.compiler = compiler
        self.offline_format = offline_format
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.img_size = img_size
        self.artifact: Path | None = None  # the offline model file, once written
        self._device: torch.device | None = None
        self._dtype = torch.float32
        self._module: Any = None  # what actually runs
        self._output_dtype: torch.dtype | None = None
        self._previous_threads: int | None = None
        self._events: tuple[Any, Any] | None = None  # CUDA start/end events around the forward
        self._previous_cudnn_benchmark: bool | None = None

    @property
    def _memory_format(self) -> torch.memory_format:
        # Derived, not stored: a memory_format object pickles by a bare name that pickle resolves by
        # scanning sys.modules, which can pick a module the timing process does not have.
        return torch.channels_last if self.channels_last else torch.contiguous_format

    # -- lifecycle ---------------------------------------------------------------------------
    def _activate_impl(self) -> None:
        self._device = _acquire_device(self.device_name)
        if self.half:
            self._dtype = torch.bfloat16 if self._device.type == "cpu" else torch.float16
        if self._device.type == "cuda":
            # Fixed input shapes: let cuDNN time its algorithms once per shape (in the warm-up).
            self._previous_cudnn_benchmark = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = True
            torch.cuda.reset_peak_memory_stats(self._device)
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        if self.threads is not None and self._device.type == "cpu":
            self._previous_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        model = self.model.eval().to(self._device, dtype=self._dtype, memory_format=self._memory_format)
        # Batch 2, not 1: torch.export specialises a dimension of size 1 to a constant.
        example = torch.zeros(2, 3, self.img_size, self.img_size, device=self._device, dtype=self._dtype)
        example = example.contiguous(memory_format=self._memory_format)
        if self.mode == "eager":
            self._module = model
        elif self.mode == "fused":
            self._module = fuse_module(model, example, self.compiler)
        else:
            self.artifact = self._write_offline(model, example)
            self._module = self._load_offline(self.artifact)

    def _deactivate_impl(self) -> None:
        if self._previous_cudnn_benchmark is not None:
            torch.backends.cudnn.benchmark = self._previous_cudnn_benchmark
            self._previous_cudnn_benchmark = None
        if self._previous_threads is not None:
            torch.set_num_threads(self._previous_threads)
            self._previous_threads = None
        self._module = None

    # -- offline model -----------------------------------------------------------------------
    def _write_offline(self, model: nn.Module, example: torch.Tensor) -> Path:
        suffix = ".pt" if self.offline_format == "torchscript" else ".pt2"
        path = self.work_dir / f"{self.offline_format}-{self._fingerprint(model)}{suffix}"
        if path.is_file():
            return path  # the same model, precision and format wrote it before
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + f".{os.getpid()}.partial")
        if self.offline_format == "torchscript":
            torch.jit.save(_trace(model, example), str(partial))
        else:
            # Batch size stays dynamic: evaluation and benchmark batches differ.
            program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
            torch.export.save(program, str(partial))
        partial.replace(path)  # atomic: a crash never leaves a file that looks complete
        return path

    def _load_offline(self, path: Path) -> Any:
        if self.offline_format == "torchscript":
            return torch.jit.load(str(path), map_location=self._device)
        return torch.export.load(str(path)).module()

    def _fingerprint(self, model: nn.Module) -> str:
        digest = hashlib.sha256(repr(model).encode())  # the module tree: SPP->SPPF changes no weights
        for key, tensor in model.state_dict().items():
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        digest.update(f"{self._dtype}{self.channels_last}{self.img_size}{self._device}{torch.__version__}".encode())
        return digest.hexdigest()[:12]

    # -- inference ---------------------------------------------------------------------------
    def _on_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self._device, dtype=self._dtype).contiguous(memory_format=self._memory_format)

    @torch.inference_mode()
    def _infer_impl(self, batch: torch.Tensor) -> list[torch.Tensor]:
        x = self._on_device(batch)
        if self._events is None:
            outputs = self._module(x)
        else:
            start, end = self._events
            start.record()
            outputs = self._module(x)
            end.record()
        self._output_dtype = outputs[0].dtype
        if self._events is None:
            return [y.float().cpu() for y in outputs]
        # Non-blocking copies land in pinned host memory that torch's host allocator caches: no
        # page faults on fresh pageable memory for each batch's raw maps (137 MB for yolov5x, bs 16).
        result = [y.float().to("cpu", non_blocking=True) for y in outputs]
        torch.cuda.current_stream(self._device).synchronize()
        self.last_device_seconds = start.elapsed_time(end) / 1000.0
        return result

    def device_memory_mb(self) -> float | None:
        if self._device is None or self._device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self._device) / 2**20

    def reset_device_memory_peak(self) -> None:
        if self._device is not None and self._device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self._device)

    @torch.inference_mode()
    def _infer_uncaptured(self, batch: torch.Tensor) -> list[torch.Tensor]:
        return [y.float().cpu() for y in self._module.module(self._on_device(batch))]

    def _profile_impl(self, batch: torch.Tensor, passes: int) -> LayerProfile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if self._device is not None and self._device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        # A graph replay shows the profiler one launch and no layers: profile the captured module.
        run = self._infer_impl if self.compiler != "cudagraph" else self._infer_uncaptured
        with profile(activities=activities):
            run(batch)  # the profiler's own first-use cost lands here, not in the table
        with profile(activities=activities) as prof:
            for _ in range(passes):
                run(batch)
                self._synchronize()
        events = layer_events(prof.events(), device_time=len(activities) > 1)
        return build_profile(events, passes=passes)

    def _synchronize(self) -> None:
        if self._device is not None and self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        elif self._device is not None and self._device.type == "mlu":
            torch.mlu.synchronize(self._device)  # type: ignore[attr-defined]

    # -- timing elsewhere ---------------------------------------------------------------------
    def timing_twin(self) -> "TorchRunner":
        """The same module and settings; an offline twin finds the file this runner wrote in the
        cache (same model, precision and format), a fused twin traces or compiles again."""
        return TorchRunner(
            self.model, device=self.device_name, mode=self.mode, half=self.half, channels_last=self.channels_last,
            threads=self.threads, compiler=self.compiler, offline_format=self.offline_format,
            work_dir=self.work_dir, img_size=self.img_size,
        )  # fmt: skip

    def standalone_engine(self) -> EngineSpec | None:
        dtype = str(self._dtype).removeprefix("torch.")
        common = dict(threads=self.threads, device=self.device_name, dtype=dtype)
        if self.mode == "offline" and self.artifact is not None:
            return EngineSpec("torchscript" if self.offline_format == "torchscript" else "export", path=self.artifact, **common)
        if self.mode == "fused" and self.compiler == "cudagraph":
            return None  # a replayed graph has no plain-API counterpart worth timing apart
        compiler = self.compiler if self.mode == "fused" else None
        return EngineSpec(
            "module", module=self.model, channels_last=self.channels_last, compiler=compiler, img_size=self.img_size, **common
        )

    def evidence(self) -> dict[str, Any]:
        graph = {
            "eager": "nn.Module (eager)",
            "fused": {"trace": "torch.jit.trace+freeze", "compile": "torch.compile", "cudagraph": "CUDA graph replay"}[
                self.compiler
            ],
            "offline": f"{self.offline_format} file loaded back",
        }[self.mode]
        facts: dict[str, Any] = {
            "backend.device_resolved": str(self._device),
            "backend.compute_dtype": str(self._dtype).removeprefix("torch."),
            "backend.threads_used": torch.get_num_threads(),
            "backend.graph": graph,
            "backend.runs_type": type(self._module).__name__,
        }
        if self._device is not None and self._device.type == "cuda":
            facts["backend.cudnn_benchmark"] = True
        if self._output_dtype is not None:
            facts["backend.output_dtype"] = str(self._output_dtype).removeprefix("torch.")
        if isinstance(self._module, CudaGraphed):
            facts["backend.cuda_graphs_captured"] = len(self._module.graphs)
            facts["backend.profile_of"] = "the captured eager module (a replay hides its layers)"
        if self.artifact is not None:
            facts["backend.artifact"] = self.artifact.name
            facts["backend.artifact_bytes"] = self.artifact.stat().st_size
        return facts


def layer_events(events: Iterable[Any], device_time: bool) -> list[tuple[str, float]]:
    """(op name, microseconds) of each layer in torch.profiler ``events`` (FunctionEvents).

    Outermost aten ops only (no aten op above them): their totals include their own children, so
    nothing is counted twice and each layer appears once (conv2d, not also its mkldnn kernel). A
    TorchScript module's ops sit under its "forward" event, which is not an aten op. With
    ``device_time``, kernels launched outside any aten op count too, under their launcher's name:
    torch.compile's generated kernels (``triton_poi_fused_add_cat_silu_3``), which fuse several
    layers into one kernel and would otherwise be missing from the table.
    """
    layers = []
    for e in events:
        if _under_aten_op(e):
            continue
        if e.name.startswith("aten::") and e.name not in _NOT_LAYERS:
            layers.append((e.name, e.device_time_total if device_time else e.cpu_time_total))
        elif device_time and not e.name.startswith("aten::") and e.kernels:
            layers.append((e.name, sum(k.duration for k in e.kernels)))  # its own kernels, not its children's
    return layers


def _under_aten_op(event: Any) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return True
        parent = parent.cpu_parent
    return False


def _trace(model: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    with torch.no_grad(), warnings.catch_warnings():
        # The model returns a list of per-level maps whose structure never changes.
        warnings.filterwarnings("ignore", message="Encountering a list at the output of the tracer")
        traced = torch.jit.trace(model, example, check_trace=False, strict=False)
    return torch.jit.freeze(traced)


class CudaGraphed:
    """Runs a module by replaying CUDA graphs, one captured per input shape.

    Each graph reads a static input tensor and writes static outputs: a call copies its batch
    [B, 3, H, W] into that input, replays, and returns the static outputs, which the next call
    with that shape overwrites (callers copy them off the device first, as the runner does).
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.graphs: dict[tuple[Any, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor, Any]] = {}

    def __call__(self, x: torch.Tensor) -> Any:
        key = (tuple(x.shape), x.dtype, x.is_contiguous(memory_format=torch.channels_last))
        if key not in self.graphs:
            self.graphs[key] = self._capture(x)
        graph, static_input, static_outputs = self.graphs[key]
        static_input.copy_(x)
        graph.replay()
        return static_outputs

    def _capture(self, x: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, Any]:
        static_input = x.clone()
        # Warm up on a side stream, as capture requires: cuDNN picks its kernels here, not inside the graph.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.module(static_input)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_outputs = self.module(static_input)
        return graph, static_input, static_outputs


def fuse_module(model: nn.Module, example: torch.Tensor, compiler: str) -> Any:
    """``model`` as fusion mode runs it: traced and frozen, compiled, or replayed as CUDA graphs."""
    if compiler == "trace":
        return _trace(model, example)
    if compiler == "cudagraph":
        return CudaGraphed(model)
    compiled = torch.compile(model)
    with torch.inference_mode():
        compiled(example)  # compile now, not inside the first timed batch
    return compiled


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
                f"(torch {torch.__version__})"
            ) from exc
        return torch.device("mlu")
    return torch.device("cpu")
