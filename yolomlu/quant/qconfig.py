"""The quantization config, with Cambricon's keys and defaults, and the settings of a quant job stage.

`QConfig` mirrors the ``qconfig`` dict of the legacy Cambricon SDK
(``torch_mlu.core.mlu_quantize.quantize_dynamic_mlu(model, qconfig, dtype, gen_quant, mixed_layer)``;
defaults from ``torch_mlu/core/quantized/qscheme.py`` of Cambricon/catch), plus what that call takes as
separate arguments (`dtype`, `mixed_layer`) and the numeric `scheme` of the target chip.

`QuantSettings` is the whole ``quant`` config group of a job: a `QConfig` plus which images calibrate it,
the sensitivity analysis, the float fallback and an optional quant-params file to load instead of
calibrating. Both are built from plain mappings and refuse bad values naming the key, the value and the
choices; unknown keys are refused by name (a misspelt key would otherwise be silently ignored).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["DTYPES", "QMAX", "SCHEMES", "QConfig", "QuantSettings", "qrange"]

DTYPES = ("int8", "int16")
# mlu270: step = absmax / qmax (Cambricon's scale = qmax / absmax, any real number).
# mlu370: the step rounded up to a power of two (position-only quantization, see `effective_scale`).
# mlu270/mlu370: the MLU's steps, emulated here; onnxruntime: ORT's own int8 (backend=onnxruntime only).
SCHEMES = ("mlu270", "mlu370", "onnxruntime", "openvino")
MLU_SCHEMES = ("mlu270", "mlu370")
# How activations are quantized: symmetric around 0 (signed codes) or asymmetric (a zero point, unsigned).
ACTIVATIONS = ("symmetric", "asymmetric")
CALIB_METHODS = ("minmax", "entropy", "percentile")
# Where calibration images come from: images the evaluation never sees, or (as earlier versions did)
# the first images of the evaluated set.
CALIB_DATA = ("disjoint", "eval")
# Precisions of the layers a quantized model keeps in floating point (see QuantSettings.float_dtype).
FLOAT_DTYPES = ("float16", "float32")
# The largest code of each dtype. Cambricon's scale maps the calibrated absmax onto +qmax (symmetric).
QMAX = {"int8": 127, "int16": 32767}

# Channel counts the MLU's first-conv operator accepts (gray, RGB, RGBA).
FIRSTCONV_CHANNELS = (1, 3, 4)


def qrange(dtype: str) -> tuple[int, int]:
    """(qmin, qmax) of a dtype's codes: the full two's-complement range, e.g. (-128, 127) for int8.

    Calibrated values land in [-qmax, qmax]; only values below the calibrated range reach qmin.
    """
    qmax = QMAX[_choose(dtype, DTYPES, "dtype")]
    return -qmax - 1, qmax


def _choose(value: Any, choices: Sequence[str], key: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{key}={value!r} is not valid; choose one of {list(choices)}")
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key}={value!r} must be true or false")
    return value


def _int(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key}={value!r} must be an integer >= {minimum}")
    return value


def _positive_real(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{key}={value!r} must be a positive finite number")
    return float(value)


def _non_negative_real(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{key}={value!r} must be a finite number >= 0")
    return float(value)


def _unit_vector(value: Any, key: str, positive: bool) -> tuple[float, ...]:
    # Cambricon asserts mean and std lie in [0, 1] ("we will multiply 255 inside"); std also divides.
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) in FIRSTCONV_CHANNELS
    ok = ok and all(not isinstance(v, bool) and isinstance(v, (int, float)) for v in value)
    ok = ok and all(0 <= v <= 1 and (v > 0 or not positive) for v in value)
    if not ok:
        bound = "(0, 1]" if positive else "[0, 1]"
        raise ValueError(
            f"{key}={value!r} must be a list of {' or '.join(map(str, FIRSTCONV_CHANNELS))} numbers in {bound} "
            f"(fractions of 255, one per input channel)"
        )
    return tuple(float(v) for v in value)


def _names(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(
            f"{key}={value!r} must be a list of layer names or patterns (e.g. [detect] or ['model.24.m.*'])"
        )
    return tuple(value)


def _refuse_unknown(mapping: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    unknown = sorted(set(mapping) - set(known))
    if unknown:
        raise ValueError(f"unknown {where} key(s) {unknown}; known: {sorted(known)}")


@dataclass(frozen=True)
class QConfig:
    """How the MLU quantizes: Cambricon's qconfig keys with Cambricon's defaults.

    iteration: how many forward calls of each layer update its input observer (1: only the first
        calibration batch counts, so the calibration batch size decides how many images are seen).
    use_avg: average the per-batch min/max (Cambricon's running average, see `observers`) instead of
        keeping the global min/max.
    data_scale: multiplies each batch's min and max before they are accumulated (> 1 widens the range,
        < 1 clips). Also multiplies the per-channel weight ranges (as Cambricon's per-channel weight
        observer receives the same qconfig), not the per-tensor weight range.
    mean, std: firstconv normalisation, fractions of 255 per input channel: the device computes
        (x - mean*255) / (std*255) from 0..255 pixels.
    firstconv: the first conv takes raw pixels and normalises them itself; needs 1, 3 or 4 input channels.
    per_channel: one weight scale per output channel (activations are always per tensor).
    dtype: 'int8' or 'int16' codes for inputs and weights of every quantized layer.
    scheme: 'mlu270' (step absmax/qmax) or 'mlu370' (step rounded up to a power of two).
    mixed_layer: layers kept in float: module names (``model.24.m.0``), fnmatch patterns
        (``model.24.m.*``), or ``detect`` for every convolution of the Detect head.
    """

    iteration: int = 1
    use_avg: bool = False
    data_scale: float = 1.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    firstconv: bool = True
    per_channel: bool = False
    dtype: str = "int8"
    scheme: str = "mlu270"
    mixed_layer: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Validate direct construction too: a QConfig that exists is a valid one.
        _int(self.iteration, "iteration", 1)
        _bool(self.use_avg, "use_avg")
        object.__setattr__(self, "data_scale", _positive_real(self.data_scale, "data_scale"))
        object.__setattr__(self, "mean", _unit_vector(self.mean, "mean", positive=False))
        object.__setattr__(self, "std", _unit_vector(self.std, "std", positive=True))
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean={list(self.mean)} and std={list(self.std)} must have one value per channel each")
        _bool(self.firstconv, "firstconv")
        _bool(self.per_channel, "per_channel")
        _choose(self.dtype, DTYPES, "dtype")
        _choose(self.scheme, SCHEMES, "scheme")
        object.__setattr__(self, "mixed_layer", _names(self.mixed_layer, "mixed_layer"))

    @property
    def qmax(self) -> int:
        """127 for int8, 32767 for int16."""
        return QMAX[self.dtype]

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str = "") -> QConfig:
        """A QConfig from a plain mapping of its keys (missing keys take Cambricon's defaults).

        where: prefix for error messages (e.g. 'quant.'), so they name the key as the user wrote it.
        Raises ValueError naming the key, the value and the choices; unknown keys are refused.
        """
        if not isinstance(mapping, Mapping):
            raise ValueError(f"{where or 'qconfig'} must be a mapping of qconfig keys, got {type(mapping).__name__}")
        _refuse_unknown(mapping, cls.keys(), f"{where.rstrip('.') or 'qconfig'}")
        try:
            return cls(**dict(mapping))
        except ValueError as exc:
            raise ValueError(f"{where}{exc}") from None


# Keys of the quant group that are not qconfig keys.
_JOB_KEYS = ("name", "enabled", "calib", "sensitivity", "fallback_topk", "params_file", "fold_bn", "float_dtype", "activations", "max_drop")


@dataclass(frozen=True)
class QuantSettings:
    """The ``quant`` config group of a job.

    name: the preset ('none', 'int8', ...); enabled: whether the stage runs (False only for 'none').
    qconfig: how to quantize.
    calib_images: how many images of the job's dataset are offered to calibration, in batches of
        calib_batch_size; observers use only the first `qconfig.iteration` batches (`observed_images`).
    calib_method: minmax (the MLU's observers), or entropy / percentile (ONNX Runtime only).
    calib_data: "disjoint" (images the evaluation never sees; see ``tasks.quant_stage``) or "eval";
    calib_root: a folder of images to calibrate on instead (None: from the job's data).
    sensitivity_images: images for the per-layer sensitivity analysis (0 = off).
    fallback_topk: after the quantized evaluation, keep the k layers that cost most (by sensitivity)
        in float and evaluate again (0 = off; needs sensitivity_images > 0).
    params_file: a quant-params file (Cambricon state-dict layout) to load instead of calibrating.
    fold_bn: fold BatchNorm into the convolutions before quantizing (a deliberate variant:
        ``quantize_dynamic_mlu`` sees, calibrates and stores the convs with their BatchNorm unfolded).
    float_dtype: precision of what stays in floating point (BatchNorm, activations, add, concat, pooling,
        upsampling) and of every layer's output: "float16", "float32", or None for the target's own
        (:attr:`target_float_dtype`).
    activations: "symmetric", "asymmetric", or None for the target's own (:attr:`target_activations`).
    max_drop: an accuracy budget (map50_95 the quantized model may lose against the float one): the job
        first finds the fewest layers to keep in float that meet it (``tasks.budget``); None: off.
    """

    name: str = "none"
    enabled: bool = False
    qconfig: QConfig = QConfig()
    calib_images: int = 16
    calib_batch_size: int = 16
    calib_method: str = "minmax"
    calib_data: str = "disjoint"
    calib_root: str | None = None
    sensitivity_images: int = 2
    fallback_topk: int = 0
    params_file: str | None = None
    fold_bn: bool = False
    float_dtype: str | None = None
    activations: str | None = None
    max_drop: float | None = None

    def __post_init__(self) -> None:
        if self.max_drop is not None:
            object.__setattr__(self, "max_drop", _non_negative_real(self.max_drop, "quant.max_drop"))
        if self.activations is not None:
            _choose(self.activations, ACTIVATIONS, "quant.activations")
        _bool(self.fold_bn, "quant.fold_bn")
        if self.float_dtype is not None:
            _choose(self.float_dtype, FLOAT_DTYPES, "quant.float_dtype")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"quant.name={self.name!r} must be a non-empty string")
        _bool(self.enabled, "quant.enabled")
        if self.enabled == (self.name == "none"):
            raise ValueError(
                f"quant.enabled={self.enabled} contradicts quant.name={self.name!r}: choose the stage with the preset "
                f"(quant=none for float, quant=int8 / int8_per_channel / int16 / int8_mixed to quantize)"
            )
        _int(self.calib_images, "quant.calib.images", 1)
        _int(self.calib_batch_size, "quant.calib.batch_size", 1)
        _choose(self.calib_method, CALIB_METHODS, "quant.calib.method")
        _choose(self.calib_data, CALIB_DATA, "quant.calib.data")
        if self.calib_root is not None and (not isinstance(self.calib_root, str) or not self.calib_root):
            raise ValueError(f"quant.calib.root={self.calib_root!r} must be a folder of images or null")
        _int(self.sensitivity_images, "quant.sensitivity.images", 0)
        _int(self.fallback_topk, "quant.fallback_topk", 0)
        if self.fallback_topk and not self.sensitivity_images:
            raise ValueError(
                f"quant.fallback_topk={self.fallback_topk} picks the layers from the sensitivity analysis; "
                f"set quant.sensitivity.images > 0"
            )
        if self.params_file is not None and (not isinstance(self.params_file, str) or not self.params_file):
            raise ValueError(f"quant.params_file={self.params_file!r} must be a file path or null")

    @property
    def target_float_dtype(self) -> str:
        """``float_dtype``, or the target's own where it is None: float16 on the MLU (its schemes),
        float32 in ONNX Runtime and OpenVINO (whose float precision is the backend's own setting)."""
        if self.float_dtype is not None:
            return self.float_dtype
        return "float32" if self.qconfig.scheme in ("onnxruntime", "openvino") else "float16"

    @property
    def target_activations(self) -> str:
        """``activations``, or the target's own where it is None: symmetric on the MLU (its only
        mode), asymmetric (uint8 with a zero point) in ONNX Runtime and OpenVINO."""
        if self.activations is not None:
            return self.activations
        return "asymmetric" if self.qconfig.scheme in ("onnxruntime", "openvino") else "symmetric"

    @property
    def observed_images(self) -> int:
        """How many calibration images the observers actually see: min(images, iteration * batch_size)."""
        return min(self.calib_images, self.qconfig.iteration * self.calib_batch_size)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> QuantSettings:
        """Settings from the plain ``quant`` group (e.g. ``OmegaConf.to_container(cfg.quant)``).

        Expects the keys of `QConfig` plus name, enabled, calib.{images, batch_size},
        sensitivity.images, fallback_topk and params_file; refuses unknown keys by name.
        """
        if not isinstance(mapping, Mapping):
            raise ValueError(f"quant must be a mapping, got {type(mapping).__name__}")
        _refuse_unknown(mapping, (*_JOB_KEYS, *QConfig.keys()), "quant")
        calib = _section(mapping, "calib", ("images", "batch_size", "method", "data", "root"))
        sensitivity = _section(mapping, "sensitivity", ("images",))
        qconfig = QConfig.from_mapping({k: v for k, v in mapping.items() if k in QConfig.keys()}, where="quant.")
        defaults = cls()
        return cls(
            name=mapping.get("name", defaults.name),
            enabled=mapping.get("enabled", defaults.enabled),
            qconfig=qconfig,
            calib_images=calib.get("images", defaults.calib_images),
            calib_method=calib.get("method", defaults.calib_method),
            calib_batch_size=calib.get("batch_size", defaults.calib_batch_size),
            calib_data=calib.get("data", defaults.calib_data),
            calib_root=calib.get("root", defaults.calib_root),
            sensitivity_images=sensitivity.get("images", defaults.sensitivity_images),
            fallback_topk=mapping.get("fallback_topk", defaults.fallback_topk),
            params_file=mapping.get("params_file", defaults.params_file),
            fold_bn=mapping.get("fold_bn", defaults.fold_bn),
            float_dtype=mapping.get("float_dtype", defaults.float_dtype),
            activations=mapping.get("activations", defaults.activations),
            max_drop=mapping.get("max_drop", defaults.max_drop),
        )


def _section(mapping: Mapping[str, Any], key: str, known: Sequence[str]) -> Mapping[str, Any]:
    section = mapping.get(key) or {}
    if not isinstance(section, Mapping):
        raise ValueError(f"quant.{key}={section!r} must be a mapping with keys {list(known)}")
    _refuse_unknown(section, known, f"quant.{key}")
    return section
