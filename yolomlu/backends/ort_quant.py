"""Static int8 quantization of an exported ONNX model with ONNX Runtime, driven by the job's typed quant
settings (``yolomlu.quant.QuantSettings``, handed over through ``Runner.set_quantization``).

This is the real int8 path on a CPU: ``onnxruntime.quantization.quantize_static``, calibrated on real
preprocessed images, in QDQ format (default) or as QOperator nodes, with uint8 activations and int8
weights by default (``activation_type=QUInt8, weight_type=QInt8``; REFERENCE §4). ONNX Runtime fuses
each DequantizeLinear→Conv→QuantizeLinear group into a QLinearConv when the session optimises the
graph (level ``extended`` or above).

How the quant settings map onto ORT:

| setting | here |
|---|---|
| ``dtype`` | ``int8`` only; ``int16`` refused |
| ``scheme`` | must be ``onnxruntime`` (ORT's own steps); the MLU schemes are refused, ORT cannot reproduce them |
| ``per_channel`` | weight scales per output channel |
| ``activations`` | ``asymmetric`` (default: uint8 with a zero point) or ``symmetric`` (int8) |
| ``mixed_layer`` | layers kept in float, as the MLU stage reads them (names, fnmatch patterns, ``detect``): ``nodes_to_exclude`` |
| ``calib.images``, ``calib.batch_size`` | decide the calibration batches the job builds |
| ``calib.method`` | ``minmax`` (default), ``entropy`` or ``percentile``: ORT's ``CalibrationMethod`` |
| ``iteration`` | only the first ``iteration`` calibration batches are fed, as on the MLU |
| ``use_avg`` | MinMax only: running mean of per-batch min/max (ORT's ``CalibMovingAverage``) |
| ``data_scale``, ``firstconv``, ``fallback_topk``, ``params_file`` | must keep their neutral values (ORT has no such knob) |
| ``float_dtype`` | float32 (what ORT computes the rest in) |
| ``fold_bn`` | any: the export folds BatchNorm in any case |
| ``backend.quant_format`` | ``qdq`` (default) or ``qoperator`` (a backend setting: only ORT has it) |

``mixed_layer`` entries select torch layers exactly as the MLU emulation does
(:func:`yolomlu.quant.emulate.resolve_layers`: a module name ``model.24.m.0``, an fnmatch pattern
``model.24.m.*``, or ``detect`` for the Detect head's convs; an entry that selects nothing is an
error); the selected module names are mapped to ONNX Conv node names with
:func:`yolomlu.backends.onnx_export.conv_node_names` and passed as ``nodes_to_exclude``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yolomlu.backends.base import BackendError
from yolomlu.backends.onnx_export import OnnxModelInfo, check_onnx, conv_node_names, import_onnx

__all__ = ["CALIBRATE_METHODS", "FORMATS", "ORT_SCHEME", "OrtQuantSettings", "QuantResult", "quantize_int8", "resolve_float_layers"]

ORT_SCHEME = "onnxruntime"
CALIBRATE_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
FORMATS = {"qdq": "QDQ", "qoperator": "QOperator"}
# Settings ORT has no counterpart for, and the value they must keep (nothing would honour another).
_NEUTRAL = {"data_scale": 1.0, "firstconv": False, "fallback_topk": 0, "params_file": None}


@dataclass(frozen=True)
class OrtQuantSettings:
    """The job's typed quant settings (``yolomlu.quant.QuantSettings``), checked, as ONNX Runtime
    uses them.

    calib_images, calib_batch_size: how many preprocessed images the job hands the runner, in
    batches of how many (the runner feeds the first ``iteration`` batches). activations:
    "asymmetric" (uint8 with a zero point, ORT's recommended form on x86) or "symmetric" (int8).
    quant_format: "qdq" (Quantize/DequantizeLinear pairs around float ops, fused into QLinear kernels
    when the session optimises) or "qoperator" (QLinearConv & co written into the graph).
    """

    per_channel: bool = False
    calibrate_method: str = "MinMax"
    mixed_layer: tuple[str, ...] = ()  # entries as written; resolve_float_layers() expands them
    iteration: int | None = None
    use_avg: bool = False
    calib_images: int | None = None
    calib_batch_size: int | None = None
    activations: str = "asymmetric"
    quant_format: str = "qdq"

    @classmethod
    def from_settings(cls, settings, quant_format: str = "qdq") -> "OrtQuantSettings":
        """Typed quant settings -> ORT's. Raises BackendError naming any setting ORT cannot honour."""
        qc = settings.qconfig
        if qc.scheme != ORT_SCHEME:
            raise BackendError(
                f"quant.scheme={qc.scheme!r} is a Cambricon MLU quantization scheme, which ONNX Runtime does not implement; "
                f"set quant.scheme={ORT_SCHEME} to quantize with ORT's own steps, or run the MLU emulation on backend=torch"
            )
        if qc.dtype != "int8":
            raise BackendError(
                f"quant.dtype={qc.dtype!r} is not supported by the onnxruntime backend: its static quantization runs "
                "8-bit activations and int8 weights only (int16 runs in the MLU emulation: backend=torch)"
            )
        for key, neutral in _NEUTRAL.items():
            value = getattr(qc, key) if hasattr(qc, key) else getattr(settings, key)
            if value != neutral:
                raise BackendError(f"quant.{key}={value!r} cannot be honoured by the onnxruntime backend (needs {neutral!r})")
        if settings.target_float_dtype != "float32":
            raise BackendError(f"quant.float_dtype={settings.float_dtype!r}: ONNX Runtime computes what is not int8 in float32")
        if quant_format not in FORMATS:
            raise BackendError(f"backend.quant_format={quant_format!r} is not valid; choose one of {list(FORMATS)}")
        method = CALIBRATE_METHODS[settings.calib_method]
        if qc.use_avg and method != "MinMax":
            raise BackendError(f"quant.use_avg=true needs quant.calib.method=minmax, got {settings.calib_method}")
        return cls(
            per_channel=qc.per_channel,
            calibrate_method=method,
            mixed_layer=tuple(qc.mixed_layer),
            iteration=qc.iteration,
            use_avg=qc.use_avg,
            calib_images=settings.calib_images,
            calib_batch_size=settings.calib_batch_size,
            activations=settings.target_activations,
            quant_format=quant_format,
        )


@dataclass(frozen=True)
class QuantResult:
    """The int8 file and what is in it.

    quantized_nodes: convolutions that run in int8, i.e. Conv nodes whose data *and* weight inputs
    both come from DequantizeLinear nodes (the pattern ORT executes as QLinearConv). Activations of
    other ops (Sigmoid, Mul, Concat, ...) are quantized too but not counted; ``conv_nodes`` is the
    number of convolutions in the model, so ``conv_nodes - quantized_nodes`` stayed in float.
    """

    info: OnnxModelInfo
    quantized_nodes: int
    conv_nodes: int
    excluded_nodes: tuple[str, ...]
    calib_batches: int
    calib_images: int
    quantize_s: float | None = None  # None: reused from the cache
    settings: OrtQuantSettings = field(default_factory=OrtQuantSettings)


def resolve_float_layers(model: torch.nn.Module, mixed_layer: Sequence[str]) -> tuple[str, ...]:
    """The torch module names that ``quant.mixed_layer`` keeps in float, selected exactly as the MLU
    emulation selects them (names, fnmatch patterns, ``detect``)."""
    if not mixed_layer:
        return ()
    from yolomlu.quant.emulate import resolve_layers

    try:
        return tuple(resolve_layers(model, mixed_layer))
    except ValueError as exc:
        raise BackendError(f"quant.{exc}") from None


def _excluded_nodes(fp32_path: Path, float_layers: Sequence[str]) -> tuple[str, ...]:
    mapping = conv_node_names(fp32_path)
    missing = [name for name in float_layers if name not in mapping]
    if missing:
        raise BackendError(
            f"quant.mixed_layer selects {missing}, which the exported model has no Conv node for; "
            f"its convolutions: {sorted(mapping)}"
        )
    return tuple(mapping[name] for name in float_layers)


def _calibration_digest(batches: Sequence[torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for batch in batches:
        digest.update(str(tuple(batch.shape)).encode())
        digest.update(batch.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def quantize_int8(
    fp32: OnnxModelInfo,
    calibration: Sequence[torch.Tensor],
    settings: OrtQuantSettings,
    work_dir: str | Path,
    float_layers: Sequence[str] = (),
) -> QuantResult:
    """Quantize the exported fp32 file ``fp32`` statically, calibrating on ``calibration`` (float32
    [B, 3, H, W] batches in 0..1, as the runner infers), into one self-contained file in ``work_dir``.
    ``float_layers``: torch module names of convolutions kept in float (:func:`resolve_float_layers`).

    The file is cached under a key of the fp32 file's name, the settings, the calibration data and
    the onnxruntime version.
    """
    import_onnx()
    try:
        import onnxruntime
        from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError as exc:
        raise BackendError(
            f"int8 on the onnxruntime backend needs the onnxruntime package (with onnxruntime.quantization): {exc}"
        ) from exc
    if not calibration:
        raise BackendError("int8 on the onnxruntime backend needs calibration batches (quant.calib.images > 0); none were given")
    used = list(calibration[: settings.iteration] if settings.iteration is not None else calibration)
    excluded = _excluded_nodes(fp32.path, float_layers)
    key = hashlib.sha256(
        repr((fp32.path.name, settings, excluded, _calibration_digest(used), onnxruntime.__version__)).encode()
    ).hexdigest()[:12]
    path = Path(work_dir) / f"{fp32.path.stem}-int8-{key}.onnx"
    seconds: float | None = None
    if not path.is_file():
        feeds = [{fp32.input_name: b.detach().cpu().float().contiguous().numpy()} for b in used]
        from tqdm import tqdm

        class _Reader(CalibrationDataReader):
            """Hands quantize_static the preprocessed batches, one per call, then None."""

            def __init__(self) -> None:
                self._feeds = iter(feeds)
                # ORT's calibration, then its quantization pass: minutes at 640 px, so show where it is.
                self._bar = tqdm(total=len(feeds), desc="ONNX Runtime int8 calibration", unit="batch", leave=False)

            def get_next(self) -> dict[str, np.ndarray] | None:
                feed = next(self._feeds, None)
                if feed is None:
                    self._bar.set_description_str("ONNX Runtime int8 quantization (no progress to show)")
                else:
                    self._bar.update()
                return feed

        reader = _Reader()
        # quantize_static wants an .onnx name; the pid keeps parallel jobs of a sweep apart
        partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.onnx")
        start = time.perf_counter()
        # quantize_static logs on the root logger: advice to run quant_pre_process first (skipped on
        # purpose: the export is already constant-folded with BN fused, and pre-processing renames
        # nodes, which would break the mixed_layer -> node name mapping) and a line per conv (bias
        # layout notes, scale adjustments). They would bury the job's own output; errors still show.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_static(
                str(fp32.path),
                str(partial),
                reader,
                quant_format=getattr(QuantFormat, FORMATS[settings.quant_format]),
                per_channel=settings.per_channel,
                activation_type=QuantType.QInt8 if settings.activations == "symmetric" else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, settings.calibrate_method),
                nodes_to_exclude=list(excluded),
                use_external_data_format=False,
                calibration_providers=["CPUExecutionProvider"],
                extra_options={"CalibMovingAverage": settings.use_avg},
            )
            seconds = time.perf_counter() - start
            check_onnx(partial)
            partial.replace(path)  # atomic, as the fp32 export
        finally:
            reader._bar.close()
            root.setLevel(level)
            partial.unlink(missing_ok=True)
    info = check_onnx(path)
    if info.qdq_convs + info.qlinear_convs == 0:
        raise BackendError(f"static quantization of {fp32.path.name} quantized no convolution (excluded: {list(excluded)})")
    return QuantResult(
        info=info,
        quantized_nodes=info.qdq_convs + info.qlinear_convs,
        conv_nodes=info.conv_nodes + info.qlinear_convs,
        excluded_nodes=excluded,
        calib_batches=len(used),
        calib_images=sum(int(b.shape[0]) for b in used),
        quantize_s=seconds,
        settings=settings,
    )
