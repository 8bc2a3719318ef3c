"""Static int8 quantization of an exported ONNX model with ONNX Runtime, driven by the job's quant config.

This is the real int8 path on a CPU: ``onnxruntime.quantization.quantize_static`` in QDQ format with
uint8 activations and int8 weights (``activation_type=QUInt8, weight_type=QInt8``; int8 activations
run slower than fp32 on x86, REFERENCE §4), calibrated on real preprocessed images. ONNX Runtime fuses
each DequantizeLinear→Conv→QuantizeLinear group into a QLinearConv when the session optimises the
graph (level ``extended`` or above).

How the job's ``quant`` group (the Cambricon qconfig keys, issue 4) maps onto ORT:

| key | here |
|---|---|
| ``name``, ``enabled`` | ``enabled: false`` (``name: none``) -> no quantization; otherwise int8 |
| ``dtype`` | ``int8`` only; ``int16`` refused |
| ``scheme`` | must be ``onnxruntime`` (ORT's own asymmetric uint8 / symmetric int8 steps); the MLU schemes ``mlu270`` / ``mlu370`` are refused, ORT cannot reproduce them |
| ``per_channel`` | weight scales per output channel (``per_channel=True``) |
| ``mixed_layer`` | layers kept in float, as the MLU stage reads them (names, fnmatch patterns, ``detect``): ``nodes_to_exclude`` |
| ``calib.images``, ``calib.batch_size`` | decide the calibration batches the job builds (see :class:`OrtQuantSettings`) |
| ``calib.method`` | ``minmax`` (default), ``entropy`` or ``percentile``: ORT's ``CalibrationMethod`` |
| ``iteration`` | only the first ``iteration`` calibration batches are fed, as on the MLU (null = all) |
| ``use_avg`` | MinMax only: running mean of per-batch min/max (ORT's ``CalibMovingAverage``) |
| ``data_scale`` | must be 1.0 (ORT has no such knob) |
| ``firstconv`` | must be false: the ONNX model takes the shared 0..1 input; ``mean``/``std`` apply only with it |
| ``fallback_topk`` | must be 0: the emulation stage picks those layers; pass them as ``mixed_layer`` |
| ``params_file`` | must be null: a Cambricon quant-params file cannot be loaded into an ONNX graph |
| ``sensitivity`` | not read here: the torch-side sensitivity analysis is the job's business |

Any other key is refused by name: a setting that would silently do nothing is an error.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yolomlu.backends.base import BackendError
from yolomlu.backends.onnx_export import OnnxModelInfo, check_onnx, conv_node_names, import_onnx

__all__ = ["CALIBRATE_METHODS", "ORT_SCHEME", "OrtQuantSettings", "QuantResult", "quantize_int8", "resolve_float_layers"]

ORT_SCHEME = "onnxruntime"
CALIBRATE_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
# Keys that must hold these values, because ORT has nothing that would honour another value.
_NEUTRAL = {"data_scale": 1.0, "firstconv": False, "fallback_topk": 0, "params_file": None, "float_dtype": "float32"}
# Keys read or checked here; anything else in the quant config is refused.
# fold_bn: the ONNX export folds BatchNorm into the convs in any case (torch.onnx in eval mode).
_KNOWN = {"name", "enabled", "dtype", "scheme", "per_channel", "mixed_layer", "calib", "iteration", "use_avg", "mean", "std",
          "sensitivity", "fold_bn", *_NEUTRAL}  # fmt: skip
_CALIB_KNOWN = {"images", "batch_size", "method"}


@dataclass(frozen=True)
class OrtQuantSettings:
    """The quant config, checked, as ONNX Runtime uses it.

    calib_images, calib_batch_size: how many preprocessed images the job should hand the runner, in
    batches of how many (the runner takes the batches as given and feeds the first ``iteration``).
    """

    per_channel: bool = False
    calibrate_method: str = "MinMax"
    mixed_layer: tuple[str, ...] = ()  # entries as written; resolve_float_layers() expands them
    iteration: int | None = None
    use_avg: bool = False
    calib_images: int | None = None
    calib_batch_size: int | None = None

    @classmethod
    def from_config(cls, quant: Mapping[str, Any] | None) -> "OrtQuantSettings | None":
        """``quant`` (the plain quant config) -> settings, or None when it asks for no quantization.
        Raises BackendError naming any key whose value ORT cannot honour."""
        if not quant or not quant.get("enabled", quant.get("name", "none") != "none"):
            return None
        unknown = sorted(set(quant) - _KNOWN)
        if unknown:
            raise BackendError(f"quant keys {unknown} are not known to the onnxruntime backend; it reads {sorted(_KNOWN)}")
        dtype = quant.get("dtype", "int8")
        if dtype != "int8":
            raise BackendError(
                f"quant.dtype={dtype!r} is not supported by the onnxruntime backend: its static quantization runs "
                "uint8 activations with int8 weights only (int16 runs in the MLU emulation: backend=torch)"
            )
        scheme = quant.get("scheme", ORT_SCHEME)
        if scheme not in (ORT_SCHEME, None):
            raise BackendError(
                f"quant.scheme={scheme!r} is a Cambricon MLU quantization scheme, which ONNX Runtime does not implement; "
                f"set quant.scheme={ORT_SCHEME} to quantize with ORT's own steps (asymmetric uint8 activations, "
                "symmetric int8 weights), or run the MLU emulation on backend=torch"
            )
        for key, neutral in _NEUTRAL.items():
            value = quant.get(key)
            if value is not None and value != neutral:
                raise BackendError(f"quant.{key}={value!r} cannot be honoured by the onnxruntime backend (needs {neutral!r})")
        calib = dict(quant.get("calib") or {})
        unknown = sorted(set(calib) - _CALIB_KNOWN)
        if unknown:
            raise BackendError(f"quant.calib keys {unknown} are not known to the onnxruntime backend; it reads {sorted(_CALIB_KNOWN)}")
        method = str(calib.get("method") or "minmax")
        if method.lower() not in CALIBRATE_METHODS:
            raise BackendError(f"quant.calib.method={method!r} is not supported; choose one of {sorted(CALIBRATE_METHODS)}")
        method = CALIBRATE_METHODS[method.lower()]
        use_avg = bool(quant.get("use_avg") or False)
        if use_avg and method != "MinMax":
            raise BackendError(f"quant.use_avg=true needs quant.calib.method=minmax, got {method}")
        iteration = quant.get("iteration")
        if iteration is not None and (not isinstance(iteration, int) or iteration < 1):
            raise BackendError(f"quant.iteration={iteration!r} must be a positive integer or null")
        for key in ("images", "batch_size"):
            value = calib.get(key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise BackendError(f"quant.calib.{key}={value!r} must be a positive integer")
        mixed = quant.get("mixed_layer") or ()
        names = tuple(mixed) if isinstance(mixed, Sequence) and not isinstance(mixed, str) else None
        if names is None or not all(isinstance(n, str) and n for n in names):
            raise BackendError(f"quant.mixed_layer={mixed!r} must be a list of layer names or patterns (e.g. [detect])")
        return cls(
            per_channel=bool(quant.get("per_channel") or False),
            calibrate_method=method,
            mixed_layer=names,
            iteration=iteration,
            use_avg=use_avg,
            calib_images=calib.get("images"),
            calib_batch_size=calib.get("batch_size"),
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
                quant_format=QuantFormat.QDQ,
                per_channel=settings.per_channel,
                activation_type=QuantType.QUInt8,
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
    if info.qdq_convs == 0:
        raise BackendError(f"static quantization of {fp32.path.name} quantized no convolution (excluded: {list(excluded)})")
    return QuantResult(
        info=info,
        quantized_nodes=info.qdq_convs,
        conv_nodes=info.conv_nodes,
        excluded_nodes=excluded,
        calib_batches=len(used),
        calib_images=sum(int(b.shape[0]) for b in used),
        quantize_s=seconds,
        settings=settings,
    )
