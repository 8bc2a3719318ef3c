"""Calibration: observe the input of every Conv2d / Linear and turn ranges into Cambricon scales.

What the MLU does (Cambricon/catch, ``torch_mlu/core/quantized/observer.py``, ``modules/conv.py``), and
what this module reproduces:

- each swapped layer (every ``nn.Conv2d`` and ``nn.Linear``) gets an input observer, fed by a forward
  hook with the layer's *input*;
- a per-layer counter lets only the first ``iteration`` calls of that layer update its observer (later
  calls are ignored), so with iteration=1 only the first calibration batch counts;
- per call: ``bmin = min(x) * data_scale``, ``bmax = max(x) * data_scale`` (Python floats); the first
  call sets (min, max); later calls either keep the global ``min(min, bmin)`` / ``max(max, bmax)`` or,
  with use_avg, update ``m = (m * k + b) / (k + 1)`` where k is the call's 1-based number. Because the
  counter is incremented before the update reads it, this is *not* the plain mean: after n calls
  ``m = (2*b1 + b2 + ... + bn) / (n + 1)`` (the first batch counts twice). Reproduced as is;
- ``absmax = max(max, -min)``; ``scale = qmax / absmax`` (127 or 32767), or 1.0 when absmax is 0 or the
  layer was never called;
- weights: per tensor, ``absmax = max(max(w), -min(w))`` with data_scale NOT applied (Cambricon's
  per-tensor weight observer is built with the default qscheme); per output channel
  (``per_channel=True``), min/max over each channel, multiplied by data_scale in float32 (the
  per-channel weight observer is built with the user's qconfig);
- the scales are stored as float32 (the state dict's ``scale`` tensor), so `LayerScales` holds the
  float32 values and a quant-params file round-trips them exactly.

One deliberate difference: Cambricon returns scale 1.0 (with a warning) when an observed range is NaN;
here that raises, naming the layer, since a NaN input means the model is broken, not calibrated.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from yolomlu.quant.firstconv import FoldedFirstConv, check_first_conv, normalize
from yolomlu.quant.qconfig import QMAX, QConfig

__all__ = [
    "InputRange",
    "LayerScales",
    "RangeObserver",
    "calibrate",
    "observe_inputs",
    "quantizable_layers",
    "scale_from_range",
    "scales_from_ranges",
    "weight_scales",
]

# Exactly these types are swapped, as Cambricon swaps nn.Conv2d / nn.Linear. Subclasses are not:
# the emulated QuantConv2d / QuantLinear and the folded first conv are nn.Conv2d subclasses too.
QUANTIZABLE = (nn.Conv2d, nn.Linear)


def _f32(value: float) -> float:
    """The float32 nearest to `value`, as a Python float (what the state dict's tensors hold)."""
    return torch.tensor(value, dtype=torch.float32).item()


@dataclass(frozen=True)
class LayerScales:
    """Cambricon quantization scales of one layer (multipliers: code = round(x * scale)).

    input_scale: s_in = qmax / absmax of the layer's input (float32 value).
    weight_scale: (s_w,) per tensor, or one float32 value per output channel when per_channel.
    dtype: 'int8' or 'int16'.
    per_channel: whether weight_scale is per output channel.
    """

    input_scale: float
    weight_scale: tuple[float, ...]
    dtype: str = "int8"
    per_channel: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in QMAX:
            raise ValueError(f"dtype={self.dtype!r} is not valid; choose one of {list(QMAX)}")
        if not self.weight_scale or (not self.per_channel and len(self.weight_scale) != 1):
            raise ValueError(
                f"weight_scale must hold one value per tensor or one per output channel, got {self.weight_scale!r} "
                f"(per_channel={self.per_channel})"
            )
        values = (self.input_scale, *self.weight_scale)
        if not all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in values):
            raise ValueError(
                f"scales must be positive finite floats, got input {self.input_scale!r}, weight {self.weight_scale!r}"
            )

    @property
    def quantized_mode(self) -> int:
        """Cambricon's code: 1 int8, 2 int16, 3 int8 per-channel, 4 int16 per-channel."""
        return (1 if self.dtype == "int8" else 2) + (2 if self.per_channel else 0)


@dataclass(frozen=True)
class InputRange:
    """What an input observer kept: min and max (after data_scale and averaging), and how many calls
    updated it (0: the layer never ran; min and max are then None)."""

    min: float | None
    max: float | None
    calls: int


class RangeObserver:
    """Cambricon's MLUMinMaxObserver for one layer input (semantics in the module docstring)."""

    def __init__(self, iteration: int, use_avg: bool, data_scale: float) -> None:
        self.iteration = iteration
        self.use_avg = use_avg
        self.data_scale = data_scale
        self.calls = 0
        self.min: float | None = None
        self.max: float | None = None

    @property
    def full(self) -> bool:
        """True once `iteration` calls have updated it: later calls change nothing."""
        return self.calls >= self.iteration

    def update(self, x: Tensor) -> None:
        """Fold one call's input (any shape, any float dtype) into the range, if calls remain."""
        if self.full or x.numel() == 0:
            return
        self.calls += 1
        k = self.calls  # Cambricon increments its counter before the update reads it
        lo, hi = torch.aminmax(x.detach())
        bmin, bmax = lo.item() * self.data_scale, hi.item() * self.data_scale
        if self.min is None or self.max is None:
            self.min, self.max = bmin, bmax
        elif self.use_avg:
            self.min = (self.min * k + bmin) / (k + 1)
            self.max = (self.max * k + bmax) / (k + 1)
        else:
            self.min, self.max = min(self.min, bmin), max(self.max, bmax)

    def range(self) -> InputRange:
        return InputRange(self.min, self.max, self.calls)


def scale_from_range(lo: float | None, hi: float | None, dtype: str, where: str = "") -> float:
    """Cambricon's scale = qmax / max(hi, -lo) as float32; 1.0 if absmax is 0 or nothing was observed."""
    if lo is None or hi is None:
        return 1.0
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(
            f"{where or 'range'}: observed NaN (min={lo}, max={hi}); the model produces NaN, nothing to calibrate"
        )
    if lo > hi:
        raise ValueError(f"{where or 'range'}: min {lo} > max {hi}")
    absmax = max(hi, -lo)
    return 1.0 if absmax == 0 else _f32(QMAX[dtype] / absmax)


def weight_scales(weight: Tensor, dtype: str, per_channel: bool, data_scale: float = 1.0) -> tuple[float, ...]:
    """Weight scales of a conv [C_out, C_in/g, kh, kw] or linear [C_out, C_in] weight.

    Per tensor: (qmax / absmax(weight),); data_scale is not applied (Cambricon's per-tensor weight
    observer uses the default qscheme). Per channel: one scale per output channel from the channel's
    min/max multiplied by data_scale in float32 (Cambricon's per-channel observer gets the user's qconfig).
    """
    w = weight.detach()
    if not per_channel:
        lo, hi = torch.aminmax(w)
        return (scale_from_range(lo.item(), hi.item(), dtype, "weight"),)
    flat = w.flatten(start_dim=1).float()
    lows = (flat.min(dim=1).values * data_scale).tolist()
    highs = (flat.max(dim=1).values * data_scale).tolist()
    return tuple(scale_from_range(lo, hi, dtype, f"weight channel {c}") for c, (lo, hi) in enumerate(zip(lows, highs)))


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every nn.Conv2d / nn.Linear in `model`, in `named_modules` order (Cambricon's
    swap order, which is forward order for a YOLOv5). Exact types only: an already quantized layer is
    not listed again.
    """
    folded = [name for name, m in model.named_modules() if isinstance(m, FoldedFirstConv)]
    if folded:
        raise ValueError(
            f"layer {folded[0]} has the input normalisation folded in (fold_first_conv), so its input is raw "
            f"0..255 pixels; quantize the unfolded model with firstconv=true instead"
        )
    return [(name, m) for name, m in model.named_modules() if type(m) in QUANTIZABLE]


def _normalizer(model: nn.Module, qconfig: QConfig):
    """The function applied to the first conv's input before observing it (firstconv), else None."""
    if not qconfig.firstconv:
        return None, None
    name, _ = check_first_conv(model, qconfig.mean, qconfig.std)
    return name, lambda x: normalize(x, qconfig.mean, qconfig.std)


@torch.no_grad()
def observe_inputs(model: nn.Module, batches: Iterable[Tensor], qconfig: QConfig, progress: bool = True) -> dict[str, InputRange]:
    """Run `model` (eval mode, no grad) on `batches` and record each Conv2d/Linear input range.

    batches: float [B, C, H, W] tensors as the model takes them (for a YOLOv5, the job's 0..1 images),
        on the model's device. Batches are consumed lazily and no longer once every observer has its
        `qconfig.iteration` calls, so later images are not even loaded.
    With qconfig.firstconv the first conv's input is observed after the firstconv normalisation
        (x - mean) / std, as the MLU quantizes the normalised input (Cambricon calibrates on the CPU
        with normalised images); the first conv must then have 1, 3 or 4 input channels.
    Returns {layer name: InputRange} for every quantizable layer; training flags are restored.
    """
    first, normalize = _normalizer(model, qconfig)
    observers = {
        name: RangeObserver(qconfig.iteration, qconfig.use_avg, qconfig.data_scale)
        for name, _ in quantizable_layers(model)
    }
    if not observers:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d or nn.Linear layer to calibrate")

    def hook(name: str):
        def observe(module: nn.Module, args: tuple) -> None:
            x = args[0]
            observers[name].update(normalize(x) if name == first else x)

        return observe

    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_pre_hook(hook(name)) for name in observers]
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    from tqdm import tqdm

    bar = tqdm(total=qconfig.iteration, desc="quant calibration", unit="batch", disable=not progress, leave=False)
    try:
        remaining = iter(batches)
        while not all(o.full for o in observers.values()):
            batch = next(remaining, None)
            if batch is None:
                break
            model(batch)
            bar.update()
    finally:
        bar.close()
        for handle in handles:
            handle.remove()
        for m, flag in flags:
            m.training = flag
    return {name: o.range() for name, o in observers.items()}


def scales_from_ranges(model: nn.Module, ranges: dict[str, InputRange], qconfig: QConfig) -> dict[str, LayerScales]:
    """LayerScales for every layer in `ranges`: input scale from its range, weight scales from its weight."""
    modules = dict(model.named_modules())
    missing = sorted(set(ranges) - set(modules))
    if missing:
        raise ValueError(f"ranges name layers the model lacks: {missing[:5]}")
    return {
        name: LayerScales(
            input_scale=scale_from_range(r.min, r.max, qconfig.dtype, name),
            weight_scale=weight_scales(modules[name].weight, qconfig.dtype, qconfig.per_channel, qconfig.data_scale),
            dtype=qconfig.dtype,
            per_channel=qconfig.per_channel,
        )
        for name, r in ranges.items()
    }


def calibrate(model: nn.Module, batches: Iterable[Tensor], qconfig: QConfig) -> dict[str, LayerScales]:
    """Cambricon calibration of every nn.Conv2d / nn.Linear of `model` (after its transforms).

    batches: float [B, C, H, W] on the model's device; only the first `qconfig.iteration` calls of each
        layer count (so iteration * batch size images with one call per layer and forward).
    Returns {layer name: LayerScales}, in module order, for every quantizable layer, mixed_layer ones
    included (the float fallback and the sensitivity analysis can then choose without recalibrating).
    The model is not modified.
    """
    return scales_from_ranges(model, observe_inputs(model, batches, qconfig), qconfig)
