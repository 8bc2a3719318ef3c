"""The openvino backend: the model exported to ONNX (``onnx_export``), read and compiled by OpenVINO
for the CPU, optionally quantized to int8 by NNCF's post-training quantization first.

| setting     | what it does                                                                       |
|-------------|------------------------------------------------------------------------------------|
| precision   | INFERENCE_PRECISION_HINT: f32, bf16, or auto (OpenVINO's choice: bf16 where the CPU |
|             | has AVX512_BF16 / AMX, else f32); what ran is read back and recorded               |
| hint        | PERFORMANCE_HINT: latency (one request at a time, as the benchmark runs) or         |
|             | throughput                                                                         |
| threads     | INFERENCE_NUM_THREADS (null: OpenVINO's default, every core)                       |

int8: :meth:`OpenVinoRunner.set_quantization` hands over the job's typed quant settings and
calibration batches; NNCF quantizes the OpenVINO model (``nncf.quantize``) with what it can honour:
per-channel or per-tensor weights, symmetric or asymmetric activations (NNCF's ``performance`` /
``mixed`` preset), the layers of ``mixed_layer`` kept in float (an ignored scope of their ONNX node
names), and the calibration images. Settings NNCF has no counterpart for (the MLU's use_avg,
data_scale, firstconv, int16) are refused by name. The quantized model is written as an IR
(``.xml`` + ``.bin``), the run's offline model, and cached by what produced it.

Nothing is sent anywhere: NNCF's telemetry is switched off (``NNCF_CI``) before it is imported;
reading, compiling and running a model sends nothing.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from yolomlu.backends.base import BackendError, Runner
from yolomlu.backends.engines import EngineSpec
from yolomlu.backends.onnx_export import DEFAULT_OPSET, MIN_OPSET, cached_export, conv_node_names
from yolomlu.backends.taxonomy import build_profile
from yolomlu.types import LayerProfile

__all__ = ["HINTS", "PRECISIONS", "OpenVinoRunner", "import_openvino"]

PRECISIONS = {"auto": None, "f32": "f32", "bf16": "bf16"}
HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
# The quant settings NNCF honours here, and the values the others must keep (nothing honours them).
_NEUTRAL = {"use_avg": False, "data_scale": 1.0, "firstconv": False, "fallback_topk": 0, "params_file": None}


def import_openvino() -> Any:
    """The ``openvino`` package, or a BackendError naming the package and how to install it.

    ``import openvino`` sends a usage event (``openvino.tools.ovc``'s telemetry, on by default, which
    also writes a consent file under ``~/intel``) unless it believes it runs in CI: it is imported
    with ``CI=true`` for the duration of the import, so it sends and writes nothing. (The variable is
    put back at once; the telemetry object keeps its "declined".)"""
    previous = os.environ.get("CI")
    first = "openvino" not in sys.modules
    if first:
        os.environ["CI"] = "true"
    try:
        import openvino
    except ImportError as exc:
        raise BackendError(
            "backend=openvino needs the openvino package, which is not installed here; install it with "
            "`pip install openvino nncf` (or `make setup`, whose openvino extra brings both)"
        ) from exc
    finally:
        if first and previous is None:
            os.environ.pop("CI", None)
        elif first:
            os.environ["CI"] = previous
    return openvino


def _import_nncf() -> Any:
    os.environ.setdefault("NNCF_CI", "1")  # NNCF's own switch: no telemetry from this process
    try:
        import nncf
    except ImportError as exc:
        raise BackendError("int8 on backend=openvino needs the nncf package, which is not installed here: pip install nncf") from exc
    return nncf


class OpenVinoRunner(Runner):
    """Runs a detection model compiled by OpenVINO for the CPU.

    Args:
        model: the (transformed) float model; exported to ONNX in :meth:`activate`.
        precision: "auto", "f32" or "bf16" (see the module docstring).
        hint: "latency" or "throughput".
        threads: INFERENCE_NUM_THREADS (None: OpenVINO's default).
        half: must be False: precision says what OpenVINO computes in.
        opset, work_dir, img_size: of the ONNX export (and where the IR is cached).
        ir_file: run this IR (``.xml``) as it is (no export, no quantization): how a timing process
            reopens what the job's runner made.
    """

    name = "openvino"
    quantizes_itself: ClassVar[bool] = True
    quant_schemes = ("openvino",)

    def __init__(
        self,
        model: nn.Module | None,
        precision: str = "auto",
        hint: str = "latency",
        threads: int | None = None,
        half: bool = False,
        opset: int = DEFAULT_OPSET,
        work_dir: str | Path | None = None,
        img_size: int = 640,
        ir_file: str | Path | None = None,
    ) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise BackendError(f"backend.precision={precision!r} is not supported by the openvino backend; choose one of {list(PRECISIONS)}")
        if hint not in HINTS:
            raise BackendError(f"backend.hint={hint!r} is not supported by the openvino backend; choose one of {list(HINTS)}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise BackendError(f"backend.threads must be a positive integer or null, got {threads!r}")
        if half:
            raise BackendError("backend.half=true is not an openvino setting: choose backend.precision=bf16 (or f32, auto)")
        if not isinstance(opset, int) or opset < MIN_OPSET:
            raise BackendError(f"backend.opset={opset!r} must be an integer >= {MIN_OPSET}")
        if work_dir is None:
            raise BackendError("the openvino backend needs a work_dir for its ONNX export and IR files")
        self.model = model
        self.precision = precision
        self.hint = hint
        self.threads = threads
        self.opset = opset
        self.work_dir = Path(work_dir)
        self.img_size = img_size
        self.ir_file = Path(ir_file) if ir_file is not None else None
        self.quant = None  # typed QuantSettings, when the job quantizes
        self.calibration: list[torch.Tensor] | None = None
        self.artifact: Path | None = None
        self._ov: Any = None
        self._compiled: Any = None
        self._request: Any = None
        self._ran_precision: str | None = None
        self._quantized_convs: int | None = None
        self._quantize_s: float | None = None

    # -- quantization ------------------------------------------------------------------------
    def set_quantization(self, settings, calibration: Sequence[torch.Tensor]) -> None:
        """The job's quant settings (``yolomlu.quant.QuantSettings``) and calibration batches, float32
        [b, 3, S, S] in 0..1. Refuses, by name, any setting NNCF cannot honour."""
        qc = settings.qconfig
        if qc.scheme != "openvino":
            raise BackendError(
                f"quant.scheme={qc.scheme!r} is not OpenVINO's: set quant.scheme=openvino to quantize with NNCF "
                "(the MLU schemes run in the MLU emulation on backend=torch)"
            )
        if qc.dtype != "int8":
            raise BackendError(f"quant.dtype={qc.dtype!r}: NNCF's post-training quantization here is int8 only")
        for key, neutral in _NEUTRAL.items():
            value = getattr(qc, key, getattr(settings, key, None))
            if value != neutral:
                raise BackendError(f"quant.{key}={value!r} cannot be honoured by the openvino backend (needs {neutral!r})")
        if settings.calib_method != "minmax":
            raise BackendError(f"quant.calib.method={settings.calib_method!r}: the openvino backend calibrates with NNCF's min-max")
        if settings.target_float_dtype != "float32":
            raise BackendError(f"quant.float_dtype={settings.float_dtype!r}: OpenVINO keeps what is not int8 in backend.precision")
        if self.ir_file is not None:
            raise BackendError("backend.ir_file runs an IR as it is: it cannot be quantized again")
        self.quant, self.calibration = settings, list(calibration)

    # -- lifecycle ---------------------------------------------------------------------------
    def _activate_impl(self) -> None:
        ov = self._ov = import_openvino()
        core = ov.Core()
        if self.ir_file is not None:
            if not self.ir_file.is_file():
                raise BackendError(f"backend.ir_file={str(self.ir_file)!r} is not a file")
            path = self.ir_file
        else:
            export = cached_export(self.model, self.work_dir, self.img_size, self.opset)
            path = export.path if self.quant is None else self._quantized_ir(core, export.path)
        self.artifact = path
        model = core.read_model(str(path))
        self._quantized_convs = _count_quantized_convs(model)
        self._compiled = core.compile_model(model, "CPU", self._config())
        self._request = self._compiled.create_infer_request()
        self._ran_precision = self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # f32, bf16

    def _config(self, profile: bool = False) -> dict[str, Any]:
        config: dict[str, Any] = {"PERFORMANCE_HINT": HINTS[self.hint]}
        if PRECISIONS[self.precision] is not None:
            config["INFERENCE_PRECISION_HINT"] = PRECISIONS[self.precision]
        if self.threads is not None:
            config["INFERENCE_NUM_THREADS"] = self.threads
        if profile:
            config["PERF_COUNT"] = True
        return config

    def _quantized_ir(self, core: Any, onnx_path: Path) -> Path:
        """NNCF's int8 IR of the exported model, cached by the export, the settings and the images."""
        if not self.calibration:
            raise BackendError("int8 on the openvino backend needs calibration batches; none were given")
        q = self.quant
        qc = q.qconfig
        used = self.calibration[: max(1, -(-q.observed_images // q.calib_batch_size))]
        digest = hashlib.sha256(onnx_path.name.encode())
        digest.update(repr((qc.per_channel, qc.mixed_layer, q.observed_images, q.target_activations, "swish-fused")).encode())
        for batch in used:
            digest.update(batch.detach().cpu().float().contiguous().numpy().tobytes())
        xml = self.work_dir / f"{onnx_path.stem}-nncf-int8-{digest.hexdigest()[:12]}.xml"
        if xml.is_file() and xml.with_suffix(".bin").is_file():
            return xml
        nncf = _import_nncf()
        float_model = _with_fused_activations(core.read_model(str(onnx_path)))
        ignored = _ignored_nodes(self.model, qc.mixed_layer, onnx_path, float_model)
        items = [b.detach().cpu().float().contiguous().numpy() for b in used]
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

        advanced = AdvancedQuantizationParameters(weights_quantization_params=QuantizationParameters(per_channel=qc.per_channel))
        start = time.perf_counter()
        quantized = nncf.quantize(
            float_model,
            nncf.Dataset(items),
            # performance: symmetric weights and activations; mixed: asymmetric activations.
            preset=nncf.QuantizationPreset.PERFORMANCE if q.target_activations == "symmetric" else nncf.QuantizationPreset.MIXED,
            target_device=nncf.TargetDevice.CPU,
            subset_size=len(items),  # NNCF counts dataset items: here, batches
            ignored_scope=nncf.IgnoredScope(names=list(ignored)) if ignored else None,
            advanced_parameters=advanced,
        )
        self._quantize_s = time.perf_counter() - start
        partial = xml.with_name(f"{xml.stem}.{os.getpid()}.partial.xml")
        try:
            self._ov.save_model(quantized, str(partial), compress_to_fp16=False)
            partial.with_suffix(".bin").replace(xml.with_suffix(".bin"))
            partial.replace(xml)  # the .xml last: its presence says the pair is complete
        finally:
            partial.unlink(missing_ok=True)
            partial.with_suffix(".bin").unlink(missing_ok=True)
        return xml

    def _deactivate_impl(self) -> None:
        self._request = self._compiled = None

    # -- inference ---------------------------------------------------------------------------
    def _infer_impl(self, batch: torch.Tensor) -> list[torch.Tensor]:
        self._request.infer({0: batch.detach().to("cpu", torch.float32).contiguous().numpy()})
        return [torch.from_numpy(np.array(self._request.get_output_tensor(i).data)) for i in range(len(self._compiled.outputs))]

    def _profile_impl(self, batch: torch.Tensor, passes: int) -> LayerProfile:
        """OpenVINO's per-node performance counters of ``passes`` requests (a second compiled model
        with PERF_COUNT on), executed nodes only, by node type."""
        core = self._ov.Core()
        compiled = core.compile_model(core.read_model(str(self.artifact)), "CPU", self._config(profile=True))
        request = compiled.create_infer_request()
        feed = {0: batch.detach().to("cpu", torch.float32).contiguous().numpy()}
        request.infer(feed)  # warm-up
        events: list[tuple[str, float]] = []
        for _ in range(passes):
            request.infer(feed)
            for info in request.profiling_info:
                if str(info.status).endswith("EXECUTED") and not str(info.status).endswith("NOT_EXECUTED"):
                    events.append((str(info.node_type), info.real_time.total_seconds() * 1e6))
        return build_profile(events, passes=passes)

    # -- timing elsewhere ----------------------------------------------------------------------
    def timing_twin(self) -> "OpenVinoRunner":
        """A runner over the very IR or ONNX file this one runs, nothing rebuilt."""
        return OpenVinoRunner(
            None, precision=self.precision, hint=self.hint, threads=self.threads, opset=self.opset,
            work_dir=self.work_dir, img_size=self.img_size, ir_file=self.artifact,
        )  # fmt: skip

    def standalone_engine(self) -> EngineSpec:
        return EngineSpec(
            "openvino", path=self.artifact, threads=self.threads, dtype=PRECISIONS[self.precision] or "auto", hint=self.hint
        )

    def threads_in_use(self) -> int:
        return self.threads or os.cpu_count() or 1

    def quantized_layers(self) -> int | None:
        return self._quantized_convs if self.quant is not None else None

    def evidence(self) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "backend.graph": "OpenVINO compiled model (CPU)" if self.ir_file is None else f"OpenVINO IR {self.ir_file.name}",
            "backend.precision_asked": self.precision,
            "backend.performance_hint": self.hint,
            "backend.threads_used": self.threads if self.threads is not None else "openvino default (every core)",
        }
        if self._ov is not None:
            facts["backend.openvino_version"] = self._ov.get_version()
        if self._ran_precision is not None:
            facts["backend.compute_dtype"] = self._ran_precision if self.quant is None else f"int8 (NNCF), the rest {self._ran_precision}"
        if self.quant is not None:
            qc = self.quant.qconfig
            facts.update(
                {
                    "backend.quant.tool": "nncf.quantize (post-training, min-max)",
                    "backend.quant.per_channel": qc.per_channel,
                    "backend.quant.activations": self.quant.target_activations,
                    "backend.quant.float_layers": ",".join(qc.mixed_layer) or "none",
                    "backend.quantized_nodes": self._quantized_convs,
                }
            )
            if self._quantize_s is not None:
                facts["backend.quantize_s"] = round(self._quantize_s, 3)
        if self.artifact is not None:
            facts["backend.artifact"] = self.artifact.name
            size = self.artifact.stat().st_size + (self.artifact.with_suffix(".bin").stat().st_size if self.artifact.suffix == ".xml" else 0)
            facts["backend.artifact_bytes"] = size
        return facts


def _count_quantized_convs(model: Any) -> int:
    """Convolutions that run in int8: their weights come from an 8-bit constant (NNCF compresses
    quantized weights to i8/u8 followed by Convert and a scale) or pass through a FakeQuantize."""

    def int8_source(node: Any, depth: int = 0) -> bool:
        kind = node.get_type_name()
        if kind == "FakeQuantize":
            return True
        if kind == "Constant":
            kind_of = node.get_element_type()
            return kind_of.is_integral() and kind_of.bitwidth == 8
        if kind in ("Convert", "Multiply", "Subtract", "Reshape") and depth < 6:
            return any(int8_source(node.input_value(i).get_node(), depth + 1) for i in range(node.get_input_size()))
        return False

    return sum(
        1 for op in model.get_ordered_ops() if op.get_type_name() == "Convolution" and int8_source(op.input_value(1).get_node())
    )


def _with_fused_activations(model: Any) -> Any:
    """``model`` after OpenVINO's own front-end fusions (the ones its converter applies), above all
    Sigmoid × x -> Swish: ONNX has no SiLU, so the export writes SiLU as two ops, and NNCF would put
    a quantizer between them. Fused first, SiLU stays one op that the CPU plugin folds into the int8
    convolution before it; unfused, the 57 activations of yolov5s and their quantizers run as
    separate kernels and cost more than int8 saves (measured here: 76 ms against 39 ms a forward)."""
    from openvino._offline_transformations import apply_moc_transformations

    apply_moc_transformations(model, cf=False)
    return model


def _ignored_nodes(model: nn.Module | None, mixed_layer: Sequence[str], onnx_path: Path, ov_model: Any) -> tuple[str, ...]:
    """The OpenVINO node names of the convolutions ``mixed_layer`` keeps in float, selected as the MLU
    emulation selects them (names, fnmatch patterns, ``detect``). OpenVINO keeps the ONNX node's name,
    with ``/WithoutBiases`` added to a convolution whose bias it split into an Add."""
    if not mixed_layer:
        return ()
    from yolomlu.quant.emulate import resolve_layers

    try:
        names = resolve_layers(model, mixed_layer)
    except ValueError as exc:
        raise BackendError(f"quant.mixed_layer: {exc}") from None
    mapping = conv_node_names(onnx_path)
    convs = [op.get_friendly_name() for op in ov_model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    chosen = []
    for name in names:
        onnx_name = mapping.get(name)
        hits = [c for c in convs if onnx_name is not None and (c == onnx_name or c.startswith(onnx_name + "/"))]
        if len(hits) != 1:
            raise BackendError(f"quant.mixed_layer selects {name}, which has no single Convolution in the OpenVINO model of {onnx_path.name}")
        chosen += hits
    return tuple(chosen)
