"""The quant-params file (the study's ``yolov5x_int8.pth``), in Cambricon's state-dict layout.

Cambricon's quantized Conv/Linear modules (``torch_mlu/core/quantized/modules/{conv,linear,mlumodel}.py``
of Cambricon/catch) save, besides the float ``weight`` and ``bias``, per quantized layer ``<name>.``:

    scale                     float32 [2]: [s_in, s_w] per tensor; [s_in, 0.0] per channel
    quantized_mode            int32 [1]: 1 int8, 2 int16, 3 int8 per-channel, 4 int16 per-channel
    use_symmetry              int64 [1] = 1 (a Parameter of every swapped layer; symmetric quantization)
    quantized_by_channel      int64 [1] = 1, per channel only
    scale_weight_per_channel  float32 [C_out], per channel only
    input_mean, input_std     float32 [1, C, 1, 1] = mean*255, std*255, first conv with firstconv only

The file is the model's full float state dict plus these keys, loaded on the device with
``quantize_dynamic_mlu(model)`` then ``load_state_dict(state_dict, strict=False)``. Two details:

- catch itself writes quantized_mode 1/2 with quantized_by_channel=1 for per-channel layers and turns
  that into 3/4 when loading; this writer stores 3/4 (the documented codes) together with
  quantized_by_channel=1, which catch's loader also reads as 3/4. This reader accepts both.
- It is saved in torch's legacy (non-zip) serialization, which the torch 1.3 era SDK can read.

Layers kept in float (mixed_layer) get no quantization keys. The scheme (mlu270 / mlu370) is not in
the layout: the file holds Cambricon's scales, and mlu370 derives its power-of-two steps from them, so
the job's qconfig supplies it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from yolomlu.quant.emulate import resolve_layers
from yolomlu.quant.firstconv import check_first_conv
from yolomlu.quant.observers import LayerScales
from yolomlu.quant.qconfig import QConfig

__all__ = ["QuantParamsInfo", "check_quant_params", "load_quant_params", "quant_state_dict", "save_quant_params"]

# Per-layer keys this layout adds to a float state dict.
QUANT_KEYS = (
    "scale",
    "quantized_mode",
    "use_symmetry",
    "quantized_by_channel",
    "scale_weight_per_channel",
    "input_mean",
    "input_std",
)
_MODES = {1: ("int8", False), 2: ("int16", False), 3: ("int8", True), 4: ("int16", True)}


@dataclass(frozen=True, eq=False)
class QuantParamsInfo:
    """What a quant-params file says besides the scales.

    dtype, per_channel: from the layers' quantized_mode (one value for the whole file).
    firstconv_layer: the layer carrying input_mean / input_std, or None (firstconv off).
    mean, std: those values / 255 (fractions of 255, float32 precision), or None.
    float_state: the float state dict (every key that is not a quantization key), on the CPU.
    """

    dtype: str
    per_channel: bool
    firstconv_layer: str | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    float_state: dict[str, Tensor] = field(repr=False)


def quant_state_dict(model: nn.Module, scales: Mapping[str, LayerScales], qconfig: QConfig) -> OrderedDict[str, Tensor]:
    """The file's content: `model`'s float state dict (CPU copies) plus the quantization keys of every
    Conv2d / Linear not kept float by qconfig.mixed_layer, each group right after its layer's tensors.

    model: the float model the scales were calibrated on, or the same model after `quantize_model`
        (its state dict is the float one). scales: one entry per quantized layer.
    """
    kept_float = set(resolve_layers(model, qconfig.mixed_layer))
    layer_names = resolve_layers(model, ["*"])
    quantized = [n for n in layer_names if n not in kept_float]
    missing = [n for n in quantized if n not in scales]
    if missing:
        raise ValueError(f"no scales for {len(missing)} layer(s) to quantize, e.g. {missing[:3]}")
    for name in quantized:
        if (scales[name].dtype, scales[name].per_channel) != (qconfig.dtype, qconfig.per_channel):
            raise ValueError(
                f"{name}: scales are {_kind(scales[name].dtype, scales[name].per_channel)} but the qconfig asks for "
                f"{_kind(qconfig.dtype, qconfig.per_channel)}"
            )
    first = check_first_conv(model, qconfig.mean, qconfig.std)[0] if qconfig.firstconv else None

    extra: dict[str, dict[str, Tensor]] = {}
    for name in quantized:
        s = scales[name]
        keys: dict[str, Tensor] = {}
        w_scale = 0.0 if s.per_channel else s.weight_scale[0]
        keys["scale"] = torch.tensor([s.input_scale, w_scale], dtype=torch.float32)
        keys["quantized_mode"] = torch.tensor([s.quantized_mode], dtype=torch.int32)
        keys["use_symmetry"] = torch.tensor([1])
        if s.per_channel:
            keys["quantized_by_channel"] = torch.tensor([1])
            keys["scale_weight_per_channel"] = torch.tensor(s.weight_scale, dtype=torch.float32)
        if name == first:
            # Cambricon multiplies in float32: Tensor(mean).mul(255)
            keys["input_mean"] = torch.tensor(qconfig.mean, dtype=torch.float32).mul(255).view(1, -1, 1, 1)
            keys["input_std"] = torch.tensor(qconfig.std, dtype=torch.float32).mul(255).view(1, -1, 1, 1)
        extra[name] = keys

    base = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    last_key: dict[str, str] = {}
    for key in base:
        prefix = key.rpartition(".")[0]
        if prefix in extra:
            last_key[prefix] = key
    out: OrderedDict[str, Tensor] = OrderedDict()
    for key, value in base.items():
        out[key] = value
        prefix = key.rpartition(".")[0]
        if last_key.get(prefix) == key:
            for k, v in extra[prefix].items():
                out[f"{prefix}.{k}"] = v
    return out


def save_quant_params(path: str | Path, model: nn.Module, scales: Mapping[str, LayerScales], qconfig: QConfig) -> Path:
    """Write the quant-params file (see the module docstring) to `path`; returns the path.

    Legacy torch serialization, so the Cambricon SDK's torch 1.3 loads it
    (``model.load_state_dict(torch.load(path), strict=False)`` after ``quantize_dynamic_mlu(model)``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(quant_state_dict(model, scales, qconfig), path, _use_new_zipfile_serialization=False)
    return path


def load_quant_params(path: str | Path) -> tuple[dict[str, LayerScales], QuantParamsInfo]:
    """Read a quant-params file (ours or one written by Cambricon's SDK).

    Returns ({layer name: LayerScales} in file order, QuantParamsInfo). Reads tensors only
    (``weights_only=True``: no code from the file runs). Raises ValueError for a file that is not a
    state dict, has no quantized layer, or mixes dtypes / per-channel modes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"quant-params file {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    valid = isinstance(state, Mapping) and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items())
    if not valid:
        raise ValueError(f"{path} is not a state dict (a mapping of names to tensors)")
    prefixes = [k.rpartition(".")[0] for k in state if k.endswith(".scale")]
    layers = [p for p in prefixes if f"{p}.quantized_mode" in state]
    if not layers:
        raise ValueError(f"{path} holds no quantized layer (no '<layer>.scale' with '<layer>.quantized_mode')")

    scales: dict[str, LayerScales] = {}
    firstconv_layer, mean, std = None, None, None
    for name in layers:
        mode = int(state[f"{name}.quantized_mode"].flatten()[0])
        if mode not in _MODES:
            raise ValueError(f"{path}: {name}.quantized_mode={mode} is not one of {sorted(_MODES)}")
        dtype, per_channel = _MODES[mode]
        by_channel = state.get(f"{name}.quantized_by_channel")
        per_channel = per_channel or (by_channel is not None and int(by_channel.flatten()[0]) == 1)
        scale = state[f"{name}.scale"].flatten().tolist()
        if per_channel:
            if f"{name}.scale_weight_per_channel" not in state:
                raise ValueError(f"{path}: {name} is per-channel but has no scale_weight_per_channel")
            weight_scale = tuple(state[f"{name}.scale_weight_per_channel"].flatten().tolist())
        else:
            weight_scale = (scale[1],)
        scales[name] = LayerScales(float(scale[0]), tuple(float(v) for v in weight_scale), dtype, per_channel)
        if f"{name}.input_mean" in state and f"{name}.input_std" in state:
            if firstconv_layer is not None:
                raise ValueError(f"{path}: both {firstconv_layer} and {name} carry input_mean/input_std")
            firstconv_layer = name
            mean = tuple(v / 255.0 for v in state[f"{name}.input_mean"].double().flatten().tolist())
            std = tuple(v / 255.0 for v in state[f"{name}.input_std"].double().flatten().tolist())

    kinds = {(s.dtype, s.per_channel) for s in scales.values()}
    if len(kinds) != 1:
        raise ValueError(f"{path} mixes quantized modes {sorted(kinds)}; one dtype and one weight granularity per file")
    (dtype, per_channel), = kinds
    extra = {f"{name}.{k}" for name in layers for k in QUANT_KEYS}
    float_state = {k: v for k, v in state.items() if k not in extra}
    return scales, QuantParamsInfo(dtype, per_channel, firstconv_layer, mean, std, float_state)


def _kind(dtype: str, per_channel: bool) -> str:
    return f"{dtype} per-channel" if per_channel else dtype


def check_quant_params(model: nn.Module, info: QuantParamsInfo, qconfig: QConfig) -> None:
    """Refuse to evaluate `model` with a params file that does not fit it or the job's qconfig.

    Checks: dtype and per_channel equal the qconfig's; firstconv on/off and mean/std agree (to float32
    precision); the file's float state dict equals `model`'s (same keys, same tensors), i.e. it was
    written for these weights after these transforms. Raises ValueError saying what differs.
    """
    if (info.dtype, info.per_channel) != (qconfig.dtype, qconfig.per_channel):
        raise ValueError(
            f"the params file holds {_kind(info.dtype, info.per_channel)} scales but the qconfig asks for "
            f"{_kind(qconfig.dtype, qconfig.per_channel)} (quant.dtype / quant.per_channel)"
        )
    if (info.firstconv_layer is not None) != qconfig.firstconv:
        raise ValueError(
            f"the params file was written with firstconv={info.firstconv_layer is not None} but "
            f"quant.firstconv={qconfig.firstconv}"
        )
    if info.firstconv_layer is not None:
        for key, stored, asked in (("mean", info.mean, qconfig.mean), ("std", info.std, qconfig.std)):
            f32 = torch.tensor(asked, dtype=torch.float32).mul(255).double().div(255).tolist()
            if list(stored) != f32:
                raise ValueError(
                    f"the params file's firstconv {key}={list(stored)} differs from quant.{key}={list(asked)}"
                )
    state = model.state_dict()
    if set(state) != set(info.float_state):
        only_model = sorted(set(state) - set(info.float_state))[:3]
        only_file = sorted(set(info.float_state) - set(state))[:3]
        raise ValueError(
            f"the params file was written for another model or transform set: keys only in the model {only_model}, "
            f"only in the file {only_file}"
        )
    for key, value in state.items():
        stored = info.float_state[key]
        if stored.shape != value.shape or not torch.equal(stored, value.detach().cpu()):
            raise ValueError(f"the params file was written for other weights: {key} differs from the model's")
