"""Engines on their own: an ONNX file in ONNX Runtime, a TorchScript or torch.export file, or a torch
module, opened with the engine's plain API and nothing of the runners around it.

These are the check on the workbench's own timings: the same engine, timed alone in a fresh process
(``yolomlu.evaluate.engine_alone``), should run as fast as the workbench says it does. A spec is a
small picklable description; :meth:`open` loads the engine and returns a callable that runs one
batch, float32 [B, 3, H, W] on the CPU, to its outputs on the device (synchronised).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from yolomlu.backends.base import BackendError

KINDS = ("onnx", "openvino", "torchscript", "export", "module")


@dataclass(frozen=True)
class EngineSpec:
    """One engine to time alone.

    kind: "onnx" (ONNX Runtime, CPU), "openvino" (an IR or ONNX file compiled by OpenVINO for the CPU,
    ``dtype`` its inference precision: f32, bf16 or auto), "torchscript" (``torch.jit.load``), "export"
    (a ``torch.export`` ``.pt2``) or "module" (``module`` as it is, eager, or ``compiler`` "trace" /
    "compile" applied first, as the torch runner's fused mode does).
    threads: intra-op threads (None: the engine's default). device: "cpu" or "cuda" (torch kinds).
    dtype: the torch kinds' input dtype ("float32", "bfloat16", "float16"). graph_optimization:
    ONNX Runtime's level (see ``onnxruntime_runner.GRAPH_OPTIMIZATIONS``).
    """

    kind: str
    path: Path | None = None
    module: Any = None
    threads: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    channels_last: bool = False
    compiler: str | None = None
    img_size: int = 640  # side of the example input a trace or compile specialises to
    graph_optimization: str = "all"
    hint: str = "latency"  # openvino: PERFORMANCE_HINT

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BackendError(f"engine kind {self.kind!r} is not known; choose one of {list(KINDS)}")
        if (self.kind == "module") != (self.module is not None) or (self.kind != "module") != (self.path is not None):
            raise BackendError(f"an engine of kind {self.kind!r} needs {'a module' if self.kind == 'module' else 'a file'}")

    def describe(self) -> str:
        what = {"onnx": "ONNX Runtime", "openvino": "OpenVINO", "torchscript": "TorchScript", "export": "torch.export",
                "module": "torch eager"}[self.kind]  # fmt: skip
        if self.kind == "module" and self.compiler:
            what = {"trace": "torch.jit.trace+freeze", "compile": "torch.compile"}.get(self.compiler, what)
        source = self.path.name if self.path is not None else type(self.module).__name__
        threads = f"threads {self.threads or 'default'}"
        if self.kind == "onnx":  # the file says its precision (fp32 or QDQ int8)
            return f"{what} ({source}, {threads})"
        if self.kind == "openvino":
            return f"{what} ({source}, precision {self.dtype}, {self.hint}, {threads})"
        return f"{what} ({source}, {self.dtype}, {self.device}, {threads})"

    def open(self) -> Callable[[torch.Tensor], Any]:
        """Load the engine; return ``run(batch) -> outputs`` (device work finished on return)."""
        if self.kind == "onnx":
            return _open_onnx(self)
        if self.kind == "openvino":
            return _open_openvino(self)
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError("engine device cuda but torch reports no CUDA device")
        dtype = getattr(torch, self.dtype)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        if self.kind == "torchscript":
            module = torch.jit.load(str(self.path), map_location=device)
        elif self.kind == "export":
            module = torch.export.load(str(self.path)).module()
        else:
            module = self.module.eval().to(device, dtype=dtype, memory_format=fmt)
            if self.compiler:
                from yolomlu.backends.torch_runner import fuse_module

                example = torch.zeros(2, 3, self.img_size, self.img_size, device=device, dtype=dtype).contiguous(memory_format=fmt)
                module = fuse_module(module, example, self.compiler)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

        @torch.inference_mode()
        def run(batch: torch.Tensor) -> Any:
            outputs = module(batch.to(device, dtype=dtype).contiguous(memory_format=fmt))
            sync()
            return outputs

        return run


def _open_onnx(spec: EngineSpec) -> Callable[[torch.Tensor], Any]:
    from yolomlu.backends.onnxruntime_runner import GRAPH_OPTIMIZATIONS, import_onnxruntime

    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATIONS[spec.graph_optimization])
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if spec.threads is not None:
        options.intra_op_num_threads = spec.threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(spec.path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(batch: torch.Tensor) -> Any:
        return session.run(None, {name: batch.numpy()})

    return run


def _open_openvino(spec: EngineSpec) -> Callable[[torch.Tensor], Any]:
    from yolomlu.backends.openvino_runner import HINTS, PRECISIONS, import_openvino

    ov = import_openvino()
    config: dict[str, Any] = {"PERFORMANCE_HINT": HINTS[spec.hint]}
    if PRECISIONS.get(spec.dtype) is not None:
        config["INFERENCE_PRECISION_HINT"] = PRECISIONS[spec.dtype]
    if spec.threads is not None:
        config["INFERENCE_NUM_THREADS"] = spec.threads
    request = ov.Core().compile_model(str(spec.path), "CPU", config).create_infer_request()

    def run(batch: torch.Tensor) -> Any:
        return request.infer({0: batch.numpy()})

    return run


def spec_for_file(path: str | Path, threads: int | None = None, device: str = "cpu") -> EngineSpec:
    """The engine a file holds, judged by its contents: an ONNX model, a TorchScript archive, or a
    ``torch.export`` package. Anything else is refused, naming the file and what would do."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"source={str(path)!r} is not a file (expected a .onnx, TorchScript .pt or torch.export .pt2 file)")
    if path.suffix == ".onnx":
        return EngineSpec("onnx", path=path, threads=threads)
    if path.suffix == ".xml":  # an OpenVINO IR (its weights in the .bin beside it)
        return EngineSpec("openvino", path=path, threads=threads, dtype="auto")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return EngineSpec("torchscript", path=path, threads=threads, device=device)
        if any(n.endswith(("/models/model.json", "/serialized_exported_program.json")) or "/models/" in n for n in names):
            return EngineSpec("export", path=path, threads=threads, device=device)
    raise ValueError(
        f"source={str(path)!r} holds no engine this task can open: expected an ONNX file (.onnx), an OpenVINO IR (.xml), a TorchScript "
        "archive (torch.jit.save) or a torch.export package (.pt2); a checkpoint of weights is timed with "
        "source=null and model.weights=<file>"
    )
