"""The onnxruntime backend: the model exported to ONNX (the offline model), optionally quantized to
int8, run by an ONNX Runtime CPU session.

| setting               | what it does                                                            |
|-----------------------|-------------------------------------------------------------------------|
| graph_optimization    | ORT's graph optimisation level, this backend's "fusion" setting:        |
|                       | disabled / basic (constant folding, redundant nodes) / extended         |
|                       | (op fusions, QDQ -> QLinearConv) / layout (+ NCHWc layouts) / all       |
| threads               | intra-op threads (null = ORT's default, one per physical core)          |
| quant_format          | how int8 is written: qdq (default) or qoperator (ort_quant.py)          |

int8: :meth:`OrtRunner.set_quantization` hands over the job's typed quant settings and calibration
batches (static quantization, ``ort_quant.py``).

The export and the int8 file are cached in ``work_dir``, keyed by what produced them.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from yolomlu.backends.base import BackendError, Runner
from yolomlu.backends.engines import EngineSpec
from yolomlu.backends.onnx_export import DEFAULT_OPSET, MIN_OPSET, OnnxModelInfo, cached_export, check_onnx
from yolomlu.backends.ort_quant import FORMATS, OrtQuantSettings, QuantResult, quantize_int8, resolve_float_layers
from yolomlu.backends.taxonomy import build_profile
from yolomlu.types import LayerProfile

__all__ = ["GRAPH_OPTIMIZATIONS", "OrtRunner", "import_onnxruntime"]

# config value -> onnxruntime.GraphOptimizationLevel member
GRAPH_OPTIMIZATIONS = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "layout": "ORT_ENABLE_LAYOUT",
    "all": "ORT_ENABLE_ALL",
}
_PROVIDER = "CPUExecutionProvider"


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        installed = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
        for package in ("onnx", "onnxruntime-gpu", "onnxruntime-openvino"):
            try:
                installed.append(f"{package} {metadata.version(package)}")
            except metadata.PackageNotFoundError:
                pass
        raise BackendError(
            f"backend=onnxruntime needs the onnxruntime package, which is not installed here "
            f"(installed: {', '.join(installed)}); install it with: pip install onnxruntime onnx"
        ) from exc
    return onnxruntime


class OrtRunner(Runner):
    """Runs a detection model as an ONNX file in ONNX Runtime on the CPU.

    Args:
        model: the (transformed) detection model; its forward returns the Detect outputs. It is
            exported in :meth:`activate`, not at construction.
        threads: intra-op threads (None keeps ORT's default: one per physical core).
        graph_optimization: one of :data:`GRAPH_OPTIMIZATIONS`.
        half: must be False: this backend runs fp32 or int8 (named so a half preset is refused, not
            silently run in fp32).
        opset: ONNX opset of the export (13 or newer).
        work_dir: where the .onnx files are written (a cache keyed by what produced each file).
        img_size: side of the (square) network input; the file has a fixed spatial size.
        quant_format: "qdq" or "qoperator", how an int8 model is written (when the job quantizes).
        onnx_file: run this ONNX file as it is (no export, no quantization; ``model`` is then
            unused): how a timing process reopens the file the job's runner made.
    """

    name = "onnxruntime"
    # Quantizes by itself from the job's quant config (no torch-side emulation before export).
    quantizes_itself: ClassVar[bool] = True
    quant_schemes = ("onnxruntime",)

    def __init__(
        self,
        model: nn.Module,
        threads: int | None = None,
        graph_optimization: str = "all",
        half: bool = False,
        opset: int = DEFAULT_OPSET,
        work_dir: str | Path | None = None,
        img_size: int = 640,
        quant_format: str = "qdq",
        onnx_file: str | Path | None = None,
    ) -> None:
        super().__init__()
        if graph_optimization not in GRAPH_OPTIMIZATIONS:
            raise BackendError(
                f"backend.graph_optimization={graph_optimization!r} is not supported by the onnxruntime backend; "
                f"choose one of {list(GRAPH_OPTIMIZATIONS)}"
            )
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise BackendError(f"backend.threads must be a positive integer or null, got {threads!r}")
        if half:
            raise BackendError(
                "backend.half=true is not supported by the onnxruntime backend: it runs the exported model in fp32 "
                "or, with a quant config, int8 (fp16/bf16 on the CPU: backend=torch backend.half=true)"
            )
        if not isinstance(opset, int) or opset < MIN_OPSET:
            raise BackendError(f"backend.opset={opset!r} must be an integer >= {MIN_OPSET}")
        if work_dir is None:
            raise BackendError("the onnxruntime backend needs a work_dir to write the exported .onnx file to")
        self.model = model
        self.threads = threads
        self.graph_optimization = graph_optimization
        self.opset = opset
        self.work_dir = Path(work_dir)
        self.img_size = img_size
        if quant_format not in FORMATS:
            raise BackendError(f"backend.quant_format={quant_format!r} is not valid; choose one of {list(FORMATS)}")
        self.quant_format = quant_format
        self.quant_settings: OrtQuantSettings | None = None  # set by set_quantization
        self.calibration: list[torch.Tensor] | None = None
        self.onnx_file = Path(onnx_file) if onnx_file is not None else None
        self.artifact: Path | None = None  # the .onnx file that runs (the int8 one when quantized)
        self.export: OnnxModelInfo | None = None
        self.quant: QuantResult | None = None
        self._ort: Any = None
        self._session: Any = None
        self._output_names: list[str] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def set_quantization(self, settings, calibration: Sequence[torch.Tensor]) -> None:
        """The job's typed quant settings and calibration batches; refuses, by name, what ORT cannot
        honour (see ``ort_quant``)."""
        if self.onnx_file is not None:
            raise BackendError("backend.onnx_file runs a file as it is: it cannot be quantized again (quant=none)")
        self.quant_settings = OrtQuantSettings.from_settings(settings, self.quant_format)
        self.calibration = list(calibration)

    def _activate_impl(self) -> None:
        self._ort = import_onnxruntime()
        if self.onnx_file is not None:
            if not self.onnx_file.is_file():
                raise BackendError(f"backend.onnx_file={str(self.onnx_file)!r} is not a file")
            self.export = check_onnx(self.onnx_file)
        else:
            self.export = cached_export(self.model, self.work_dir, self.img_size, self.opset)
        path = self.export.path
        if self.quant_settings is not None:
            if not self.calibration:
                raise BackendError(
                    "int8 on the onnxruntime backend needs calibration batches (runner.calibration): "
                    f"the quant config asks for {self.quant_settings.calib_images} images, none were given"
                )
            for batch in self.calibration:
                if tuple(batch.shape[1:]) != (3, self.img_size, self.img_size):
                    raise BackendError(
                        f"calibration batch {tuple(batch.shape)} does not match the model input [B, 3, {self.img_size}, {self.img_size}]"
                    )
            float_layers = resolve_float_layers(self.model, self.quant_settings.mixed_layer)
            self.quant = quantize_int8(self.export, self.calibration, self.quant_settings, self.work_dir, float_layers)
            path = self.quant.info.path
        self.artifact = path
        self._session = self._make_session(path)
        self._output_names = [o.name for o in self._session.get_outputs()]

    def _deactivate_impl(self) -> None:
        self._session = None

    def _session_options(self, profile_prefix: Path | None = None) -> Any:
        ort = self._ort
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATIONS[self.graph_optimization])
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL  # the model is one chain: no inter-op pool
        options.inter_op_num_threads = 1
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        options.log_severity_level = 3  # errors only: ORT warns per run about things it handles
        if profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = str(profile_prefix)
        return options

    def _make_session(self, path: Path, profile_prefix: Path | None = None) -> Any:
        ort = self._ort
        available = ort.get_available_providers()
        if _PROVIDER not in available:
            raise BackendError(f"the onnxruntime backend runs on {_PROVIDER}, which this build lacks; available: {available}")
        return ort.InferenceSession(str(path), self._session_options(profile_prefix), providers=[_PROVIDER])

    # -- inference ---------------------------------------------------------------------------
    def _feed(self, batch: torch.Tensor) -> dict[str, Any]:
        return {self.export.input_name: batch.detach().to("cpu", torch.float32).contiguous().numpy()}

    def _infer_impl(self, batch: torch.Tensor) -> list[torch.Tensor]:
        outputs = self._session.run(self._output_names, self._feed(batch))
        return [torch.from_numpy(y) for y in outputs]

    def _profile_impl(self, batch: torch.Tensor, passes: int) -> LayerProfile:
        """ORT's profiler on a second session over the same file: one warm-up run, then ``passes``;
        Node events (``cat == "Node"``, ``dur`` in us, ``args.op_name``) of the timed runs only."""
        prefix = self.work_dir / f"ort-profile-{os.getpid()}"  # ORT adds only a timestamp to a second
        session = self._make_session(self.artifact, profile_prefix=prefix)
        feed = self._feed(batch)
        for _ in range(passes + 1):
            session.run(self._output_names, feed)
        trace = Path(session.end_profiling())
        try:
            events = json.loads(trace.read_text())
        finally:
            trace.unlink(missing_ok=True)
        runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"), key=lambda e: e["ts"])
        timed = [(e["ts"], e["ts"] + e["dur"]) for e in runs[1:]]  # runs[0] is the warm-up
        if len(timed) != passes:
            raise BackendError(f"ORT's profile holds {len(runs)} model runs, expected {passes + 1}")
        nodes = [
            (e["args"]["op_name"], float(e["dur"]))
            for e in events
            if e.get("cat") == "Node"
            and e.get("name", "").endswith("_kernel_time")  # not the _fence_before/_fence_after markers
            and any(start <= e["ts"] <= end for start, end in timed)
        ]
        return build_profile(nodes, passes=passes)

    # -- timing elsewhere ---------------------------------------------------------------------
    def timing_twin(self) -> "OrtRunner":
        """A runner over the very file this one runs (fp32 export or int8), nothing rebuilt."""
        return OrtRunner(
            None, threads=self.threads, graph_optimization=self.graph_optimization, opset=self.opset,
            work_dir=self.work_dir, img_size=self.img_size, onnx_file=self.artifact,
        )  # fmt: skip

    def standalone_engine(self) -> EngineSpec:
        return EngineSpec("onnx", path=self.artifact, threads=self.threads, graph_optimization=self.graph_optimization)

    def threads_in_use(self) -> int:
        return self.threads or os.cpu_count() or 1  # ORT's default: one per core

    def quantized_layers(self) -> int | None:
        return self.quant.quantized_nodes if self.quant is not None else None

    def evidence(self) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "backend.graph": "onnx (torch.onnx TorchScript exporter)" if self.onnx_file is None else f"onnx file {self.onnx_file.name}",
            "backend.graph_optimization": self.graph_optimization,
            "backend.threads_used": self.threads if self.threads is not None else "ort default (physical cores)",
            "backend.compute_dtype": "float32" if self.quant is None else (
                f"int8 ({self.quant.settings.quant_format}: "
                f"{'uint8' if self.quant.settings.activations == 'asymmetric' else 'int8'} activations, int8 weights)"
            ),
        }
        if self._ort is not None:
            facts["backend.onnxruntime_version"] = self._ort.__version__
        if self._session is not None:
            facts["backend.providers"] = ",".join(self._session.get_providers())
        if self.export is not None:
            facts["backend.opset"] = self.export.opset
            facts["backend.onnx_outputs"] = ",".join(self.export.output_names)
            if self.export.export_s is not None:
                facts["backend.export_s"] = round(self.export.export_s, 3)
        if self.quant is not None:
            q = self.quant
            facts.update(
                {
                    "backend.quantized_nodes": q.quantized_nodes,
                    "backend.conv_nodes": q.conv_nodes,
                    "backend.quant.per_channel": q.settings.per_channel,
                    "backend.quant.activations": q.settings.activations,
                    "backend.quant.format": q.settings.quant_format,
                    "backend.quant.calibrate_method": q.settings.calibrate_method,
                    "backend.quant.calib_images_used": q.calib_images,
                    "backend.quant.calib_batches_used": q.calib_batches,
                    "backend.quant.excluded_nodes": ",".join(q.excluded_nodes) or "none",
                    "backend.fp32_model_mb": round(self.export.mb, 3),
                }
            )
            if q.quantize_s is not None:
                facts["backend.quantize_s"] = round(q.quantize_s, 3)
        if self.artifact is not None:
            facts["backend.artifact"] = self.artifact.name
            facts["backend.artifact_bytes"] = self.artifact.stat().st_size
            facts["backend.model_mb"] = round(self.artifact.stat().st_size / 2**20, 3)
        return facts
