"""int8 / int16 emulation: each Conv2d / Linear quantizes its input and weight, the rest stays float.

A quantized layer computes ``op(dq(q(x, s_in)), dq(q(W, s_w))) + bias`` where

    q(v, s)  = clamp(round(v * s), qmin, qmax)     codes of the dtype: int8 [-128, 127], int16 [-32768, 32767]
    dq(c, s) = c / s

with Cambricon's scales (s = qmax / absmax, a multiplier), per tensor for the input and per tensor or per
output channel for the weight; the bias, BatchNorm (folded or not), activations, concat, upsample and
pooling stay float, as on the MLU (``quantize_dynamic_mlu`` swaps Conv/Linear only). The arithmetic runs
in float32 on whatever device and dtype the model uses (the result is cast back to the input dtype),
so the emulated model predicts the device's accuracy, not its speed.

Choices where Cambricon's public sources are silent
---------------------------------------------------
- Rounding: half to even (``torch.round``, IEEE round-to-nearest, what float->int conversions do by
  default). The MLU270's tie rule is not public; ties (v * s exactly k + 0.5) have probability ~0 for
  real activations and weights, so the choice does not move accuracy.
- Clamping: to the dtype's full range [-qmax-1, qmax]. Values inside the calibrated range map to
  [-qmax, qmax] anyway (absmax * s = qmax); only values beyond it saturate, at the dtype's limits as
  the hardware's integer conversion does.
- scheme 'mlu370' (position-only quantization): the step 1/s is rounded *up* to a power of two,
  step' = 2**ceil(log2(1/s)), i.e. s' = 2**floor(log2(s)) of the stored float32 scale. The calibrated
  absmax still fits (no extra clipping) and the step grows by a factor in [1, 2): up to 2x coarser.
  The MLU370 stack's own formula was not in the sources read; the other common form,
  position = floor(log2(absmax)) - (bits - 2), differs from this only when absmax lies within 0.8 %
  below a power of two (it then clips that sliver instead of doubling the step).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from yolomlu.model.detect import Detect
from yolomlu.quant.firstconv import check_first_conv, normalize
from yolomlu.quant.observers import LayerScales, quantizable_layers
from yolomlu.quant.qconfig import SCHEMES, QConfig, qrange

__all__ = [
    "DETECT_PATTERN",
    "FLOAT_DTYPES",
    "emulate_float_precision",
    "QuantConv2d",
    "QuantLinear",
    "effective_scale",
    "fake_quantize",
    "layer_sqnr",
    "quantize_model",
    "quantized_layers",
    "resolve_layers",
    "restore_float",
    "sqnr_db",
    "sqnr_summary",
]

# The mixed_layer entry that means "every convolution of the Detect head".
DETECT_PATTERN = "detect"


def effective_scale(scale: float, scheme: str) -> float:
    """The multiplier a scheme really applies: `scale` for 'mlu270', 2**floor(log2(scale)) for 'mlu370'
    (the step 1/scale rounded up to a power of two). Exact: frexp reads the float's exponent."""
    if scheme == "mlu270":
        return scale
    if scheme == "mlu370":
        _, exponent = math.frexp(scale)  # scale = mantissa * 2**exponent, 0.5 <= mantissa < 1
        return math.ldexp(1.0, exponent - 1)
    raise ValueError(f"scheme={scheme!r} is not valid; choose one of {list(SCHEMES)}")


def fake_quantize(x: Tensor, scale: float | Tensor, dtype: str) -> Tensor:
    """Quantize then dequantize: clamp(round(x * scale), qmin, qmax) / scale, computed in float32.

    x: any shape and float dtype. scale: a float, or a float32 tensor broadcasting against x (per
    output channel: [C_out, 1, 1, 1] for a conv weight). Returns x's shape, dtype and device.
    """
    qmin, qmax = qrange(dtype)
    xf = x.float()
    codes = torch.clamp(torch.round(xf * scale), qmin, qmax)
    return (codes / scale).to(x.dtype)


class _Quantized:
    """What QuantConv2d and QuantLinear share: the scales, the optional firstconv normalisation, and
    the two fake-quantizations. Scales are non-persistent buffers / attributes, so a quantized model's
    state dict equals the float model's (same keys, same float weights)."""

    input_scale: float
    weight_scale: Tensor
    qdtype: str
    scheme: str
    per_channel: bool
    norm: tuple[tuple[float, ...], tuple[float, ...]] | None

    def _setup(self, scales: LayerScales, scheme: str, norm, weight_view: tuple[int, ...]) -> None:
        out_channels = self.weight.shape[0]
        if scales.per_channel and len(scales.weight_scale) != out_channels:
            raise ValueError(
                f"{len(scales.weight_scale)} per-channel weight scales for a layer with {out_channels} output channels"
            )
        self.scales = scales  # as calibrated / stored; the scheme's multipliers are derived below
        self.qdtype = scales.dtype  # not `dtype`: that reads like the module's float dtype
        self.scheme = scheme
        self.per_channel = scales.per_channel
        self.norm = None if norm is None else (tuple(norm[0]), tuple(norm[1]))
        self.input_scale = effective_scale(scales.input_scale, scheme)
        self._weight_multipliers = tuple(effective_scale(s, scheme) for s in scales.weight_scale)
        self._weight_scale_shape = weight_view if scales.per_channel else (1,)
        self.register_buffer("weight_scale", self._weight_scale_tensor(self.weight.device), persistent=False)

    def _quantized_input(self, x: Tensor) -> Tensor:
        if self.norm is not None:
            x = normalize(x, *self.norm)
        return fake_quantize(x, self.input_scale, self.qdtype)

    def _quantized_weight(self, like: Tensor) -> Tensor:
        # Recomputed every call (cheap next to the convolution): always the current weight, on any device,
        # and traceable / compilable without hidden caches.
        return fake_quantize(self.weight, self.weight_scale, self.qdtype).to(like.dtype)

    def _weight_scale_tensor(self, device: torch.device) -> Tensor:
        """float32 weight multipliers: [1] per tensor; per channel [C_out, 1, 1, 1] (conv) or [C_out, 1] (linear)."""
        scale = torch.tensor(self._weight_multipliers, dtype=torch.float32, device=device)
        return scale.view(self._weight_scale_shape)

    def _apply(self, fn, recurse=True):
        module = super()._apply(fn, recurse)
        # model.to(dtype=bfloat16) (backend.half) casts floating buffers too; the scales must stay the exact
        # float32 values, so rebuild them on the buffer's (possibly new) device.
        self.weight_scale = self._weight_scale_tensor(self.weight_scale.device)
        return module

    def _quant_repr(self) -> str:
        w = "per-channel" if self.per_channel else f"s_w={self.scales.weight_scale[0]:.6g}"
        first = ", firstconv" if self.norm is not None else ""
        return f"{self.qdtype}, {self.scheme}, s_in={self.scales.input_scale:.6g}, {w}{first}"


class QuantConv2d(_Quantized, nn.Conv2d):
    """An nn.Conv2d that fake-quantizes its input and weight: float [B, C_in, H, W] -> [B, C_out, H', W'].

    Shares its weight and bias Parameters with the float conv it was made from; same state-dict keys.
    With `norm` (firstconv) the input is first normalised per channel, (x - mean) / std, then quantized:
    Cambricon's first conv, whose input scale is that of the normalised input.
    """

    @classmethod
    def from_float(
        cls,
        conv: nn.Conv2d,
        scales: LayerScales,
        scheme: str = "mlu270",
        norm: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> QuantConv2d:
        q = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
            conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode, device="meta",
        )  # fmt: skip
        q.weight, q.bias = conv.weight, conv.bias
        q._setup(scales, scheme, norm, (-1, 1, 1, 1))
        q.train(conv.training)
        return q

    def forward(self, x: Tensor) -> Tensor:
        xq = self._quantized_input(x)
        return self._conv_forward(xq, self._quantized_weight(xq), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._quant_repr()}"


class QuantLinear(_Quantized, nn.Linear):
    """An nn.Linear that fake-quantizes its input and weight: float [..., C_in] -> [..., C_out]."""

    @classmethod
    def from_float(cls, linear: nn.Linear, scales: LayerScales, scheme: str = "mlu270", norm=None) -> QuantLinear:
        if norm is not None:
            raise ValueError("firstconv normalisation applies to a Conv2d, not to a Linear layer")
        q = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        q.weight, q.bias = linear.weight, linear.bias
        q._setup(scales, scheme, None, (-1, 1))
        q.train(linear.training)
        return q

    def forward(self, x: Tensor) -> Tensor:
        xq = self._quantized_input(x)
        return nn.functional.linear(xq, self._quantized_weight(xq), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._quant_repr()}"


def _layer_names(model: nn.Module) -> list[str]:
    # Float or already quantized Conv2d / Linear layers (quantized ones are subclasses).
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and name]


def resolve_layers(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """Names of the Conv2d / Linear layers that `patterns` select, in module order.

    Each pattern is a module name (``model.24.m.0``), an fnmatch pattern (``model.24.m.*``), or
    ``detect`` (every conv inside a Detect head). A pattern that selects nothing raises ValueError
    (a misspelt name would otherwise leave the layer quantized without a word).
    """
    names = _layer_names(model)
    heads = [name for name, m in model.named_modules() if isinstance(m, Detect)]
    chosen: set[str] = set()
    for pattern in patterns:
        if pattern == DETECT_PATTERN:
            hits = [n for n in names if any(n.startswith(f"{h}.") if h else True for h in heads)]
        else:
            hits = [n for n in names if fnmatchcase(n, pattern)]
        if not hits:
            sample = [*names[:3], "...", *names[-3:]] if len(names) > 6 else names
            raise ValueError(
                f"mixed_layer entry {pattern!r} selects no Conv2d/Linear layer; layers are named like {sample} "
                f"(or use {DETECT_PATTERN!r} for the Detect head's convs)"
            )
        chosen.update(hits)
    return [n for n in names if n in chosen]


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{name: module} of the emulated (QuantConv2d / QuantLinear) layers of `model`, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, _Quantized)}


def quantize_model(model: nn.Module, scales: Mapping[str, LayerScales], qconfig: QConfig) -> int:
    """Replace every nn.Conv2d / nn.Linear of `model` by its emulated quantized version, in place.

    scales: from `calibrate` or `load_quant_params`; one entry per layer that is quantized (entries for
        mixed_layer layers are allowed and ignored). Their dtype and per_channel must match `qconfig`.
    qconfig: dtype and per_channel (checked), scheme (applied to the stored scales), mixed_layer (kept
        float), firstconv with mean/std (the first conv normalises its input before quantizing it; it
        must then be quantized and have 1, 3 or 4 input channels).
    Returns how many layers were quantized. Names, parameters and state-dict keys are unchanged. All
    checks run before anything is swapped, so a refusal leaves the model as it was.
    """
    if quantized_layers(model):
        raise ValueError("the model is already quantized; quantize a float model (or restore_float first)")
    layers = quantizable_layers(model)
    names = [name for name, _ in layers]
    kept_float = set(resolve_layers(model, qconfig.mixed_layer))
    targets = [(name, m) for name, m in layers if name not in kept_float]
    first = None
    if qconfig.firstconv:
        first, _ = check_first_conv(model, qconfig.mean, qconfig.std)
        if first in kept_float:
            raise ValueError(
                f"firstconv=true but the first conv ({first}) is in mixed_layer: the first conv must be quantized"
            )
    missing = [name for name, _ in targets if name not in scales]
    if missing:
        raise ValueError(
            f"no scales for {len(missing)} layer(s) to quantize, e.g. {missing[:3]}; calibrate this model, or keep "
            f"them float with mixed_layer (a params file holds no scales for layers that were float when written)"
        )
    unknown = sorted(set(scales) - set(names))
    if unknown:
        raise ValueError(
            f"scales name {len(unknown)} layer(s) this model lacks, e.g. {unknown[:3]}: they belong to another model"
        )
    for name, _ in targets:
        s = scales[name]
        if (s.dtype, s.per_channel) != (qconfig.dtype, qconfig.per_channel):
            raise ValueError(
                f"{name}: scales are {s.dtype}{' per-channel' if s.per_channel else ''} but the qconfig asks for "
                f"{qconfig.dtype}{' per-channel' if qconfig.per_channel else ''}"
            )
    swaps = []
    for name, m in targets:
        cls = QuantConv2d if isinstance(m, nn.Conv2d) else QuantLinear
        norm = (qconfig.mean, qconfig.std) if name == first else None
        swaps.append((name, cls.from_float(m, scales[name], qconfig.scheme, norm)))
    for name, q in swaps:
        _set_submodule(model, name, q)
    return len(swaps)


def restore_float(model: nn.Module, names: Iterable[str] | None = None) -> int:
    """Put float nn.Conv2d / nn.Linear layers back in place of emulated ones (all, or those named).

    The float layers share the Parameters, so nothing is copied. Returns how many were restored;
    ValueError if a name is not an emulated layer. A restored firstconv layer no longer normalises its
    input (identical for YOLOv5's mean 0 / std 1); to keep layers float, prefer qconfig.mixed_layer.
    """
    current = quantized_layers(model)
    chosen = list(current) if names is None else list(names)
    unknown = [n for n in chosen if n not in current]
    if unknown:
        raise ValueError(f"not quantized layers of this model: {unknown[:5]}")
    for name in chosen:
        q = current[name]
        if isinstance(q, nn.Conv2d):
            f = nn.Conv2d(q.in_channels, q.out_channels, q.kernel_size, q.stride, q.padding, q.dilation, q.groups,
                          bias=q.bias is not None, padding_mode=q.padding_mode, device="meta")  # fmt: skip
        else:
            f = nn.Linear(q.in_features, q.out_features, bias=q.bias is not None, device="meta")
        f.weight, f.bias = q.weight, q.bias
        f.train(q.training)
        _set_submodule(model, name, f)
    return len(chosen)


FLOAT_DTYPES = ("float16", "float32")


def _round_outputs_to_half(module: nn.Module, args: tuple, output):
    """Forward hook: the module's output as float16 holds it (then back in the output's dtype).
    Module level, not a closure: an emulated model is pickled into the timing process."""
    if isinstance(output, Tensor) and output.is_floating_point():
        return output.to(torch.float16).to(output.dtype)
    if isinstance(output, (list, tuple)) and all(isinstance(y, Tensor) and y.is_floating_point() for y in output):
        return type(output)(y.to(torch.float16).to(y.dtype) for y in output)
    return None


def emulate_float_precision(model: nn.Module, dtype: str) -> int:
    """Make every module of ``model`` (the root aside) hand on its output in ``dtype``, in place.

    "float16": what the MLU270 stores between layers in an int8 model. ``quantize_dynamic_mlu`` swaps
    only the convolutions; BatchNorm, activations, add, concat, pooling and upsampling run in floating
    point, and the legacy stack's data type for them is float16 (CNML's int8 conv writes float16 or
    float32 outputs, its BatchNorm / Active / Add / Pool ops compute in float16 or float32; the public
    YOLOv5 offline model declares float32 input and a FLOAT16 output: Cambricon/caffe
    ``mlu/x86/include/cnml.h``, CambriconECO/Pytorch_Yolov5_Inference ``offline/.../yolov5s.cambricon_twins``).
    No public source states the default of the torch_mlu build itself: float16 is an inference, made
    a setting (``quant.float_dtype``). Each layer here computes in float32 and rounds its result to
    float16; a layer computed natively in float16 (elementwise ops round each result once) differs
    from that by at most an ulp of float16. Containers are hooked too, so the sum of a residual add
    is rounded as the device's add would round it. "float32": nothing to do. Returns the number of
    modules hooked.
    """
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"float_dtype={dtype!r} is not valid; choose one of {list(FLOAT_DTYPES)}")
    if dtype == "float32":
        return 0
    hooked = 0
    for name, module in model.named_modules():
        if name:  # the root returns the raw head maps, already rounded by the head's convs
            module.register_forward_hook(_round_outputs_to_half)
            hooked += 1
    return hooked


def sqnr_db(reference: Tensor, test: Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(sum(ref^2) / sum((ref - test)^2)), in float64.

    +inf when test equals reference (no noise), -inf when the reference is all zeros but test is not.
    """
    ref = reference.detach().double()
    noise = (ref - test.detach().double()).pow(2).sum().item()
    signal = ref.pow(2).sum().item()
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _restore_flags(model: nn.Module):
    flags = [(m, m.training) for m in model.modules()]

    def restore() -> None:
        for m, flag in flags:
            m.training = flag

    return restore


@torch.no_grad()
def layer_sqnr(float_model: nn.Module, quant_model: nn.Module, batch: Tensor) -> pd.DataFrame:
    """SQNR of each quantized layer's own output: the error that layer alone introduces.

    float_model: the float model; quant_model: the same model after `quantize_model` (same layer names,
        e.g. a deep copy quantized). Both in eval mode during the call (flags restored after), on
        `batch`'s device. batch: float [B, C, H, W] as the models take it.
    One forward of the float model; at each quantized layer the emulated layer is applied to the float
    layer's input, and its output is compared with the float layer's output, so a layer's SQNR does
    not include the noise of the layers before it.
    Returns DataFrame(name, sqnr_db), one row per quantized layer in module order (NaN for a layer the
    batch never reaches).
    """
    quantized = quantized_layers(quant_model)
    modules = dict(float_model.named_modules())
    missing = [n for n in quantized if n not in modules]
    if missing:
        raise ValueError(f"float_model lacks quantized layers of quant_model, e.g. {missing[:3]}")
    results: dict[str, float] = {}

    def hook(name: str):
        def compare(module: nn.Module, args: tuple, output: Tensor) -> None:
            results[name] = sqnr_db(output, quantized[name](args[0]))

        return compare

    handles = [modules[name].register_forward_hook(hook(name)) for name in quantized]
    restore = [_restore_flags(float_model), _restore_flags(quant_model)]
    float_model.eval()
    quant_model.eval()
    try:
        float_model(batch)
    finally:
        for handle in handles:
            handle.remove()
        for r in restore:
            r()
    return pd.DataFrame({"name": list(quantized), "sqnr_db": [results.get(n, math.nan) for n in quantized]})


def sqnr_summary(frame: pd.DataFrame) -> dict[str, float]:
    """The job's evidence metrics from a `layer_sqnr` frame: sqnr_mean_db (mean of the layers' dB values,
    over the finite ones; +inf if every layer is exact) and sqnr_min_db (the worst layer).
    The worst layer's name: ``frame.loc[frame.sqnr_db.idxmin(), 'name']``."""
    if frame.empty:
        raise ValueError("no quantized layers: nothing to summarise")
    values = frame["sqnr_db"].to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    return {
        "sqnr_mean_db": float(finite.mean()) if finite.size else math.inf,
        "sqnr_min_db": float(np.nanmin(values)),
    }
