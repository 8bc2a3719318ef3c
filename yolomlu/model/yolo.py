"""YOLOv5 built from an architecture file: rows of ``[from, number, module, args]``.

The yaml names modules; `REGISTRY` maps each name to a class (no `eval`). The parser follows the
official rules so that layer indices, channel counts and state-dict keys (``model.<i>.…``) match the
published checkpoints:

- output channels (first arg of the width blocks) are scaled by `width_multiple` and rounded up to a
  multiple of 8; `number` is scaled by `depth_multiple` as ``max(round(n * gd), 1)`` when above 1;
- C3 takes the scaled `number` as its own Bottleneck count; other modules are stacked `number` times.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from yolomlu.model.blocks import C3, SPP, SPPF, Bottleneck, Concat, Conv, Focus
from yolomlu.model.detect import Detect

__all__ = [
    "ARCHS",
    "REGISTRY",
    "SIZES",
    "ArchInfo",
    "YOLOv5",
    "build_yolov5",
    "get_module",
    "load_arch",
    "make_divisible",
    "scale_depth",
]

ARCH_DIR = Path(__file__).parent / "archs"
ARCHS: dict[str, Path] = {"v5": ARCH_DIR / "yolov5_v5.yaml", "v6": ARCH_DIR / "yolov5_v6.yaml"}

# (depth_multiple, width_multiple) of the published sizes.
SIZES: dict[str, tuple[float, float]] = {
    "n": (0.33, 0.25),
    "s": (0.33, 0.50),
    "m": (0.67, 0.75),
    "l": (1.0, 1.0),
    "x": (1.33, 1.25),
}

REGISTRY: dict[str, type[nn.Module]] = {
    "Conv": Conv,
    "Focus": Focus,
    "Bottleneck": Bottleneck,
    "C3": C3,
    "SPP": SPP,
    "SPPF": SPPF,
    "Concat": Concat,
    "nn.Upsample": nn.Upsample,
    "Detect": Detect,
}

# How the parser fills in constructor arguments, per class (the official parser's rules as data).
_WIDTH_BLOCKS = (Conv, Focus, Bottleneck, C3, SPP, SPPF)  # args[0] is c2 (scaled); c1 is prepended
_REPEAT_INSIDE = (C3,)  # the scaled `number` becomes the block's own repeat count (3rd arg)

IN_CHANNELS = 3
# Side of the square zeros image pushed through the layers once at build time to measure the stride
# of each Detect input. 64 keeps it cheap and still leaves a stride-32 level 2x2 cells wide.
_PROBE_SIZE = 64


@dataclass(frozen=True)
class ArchInfo:
    """What a `YOLOv5` was built from.

    name: 'v5', 'v6', a yaml path, or 'custom' for a spec given as a mapping.
    anchors: pixel anchors, one row of 2*na numbers per level (the yaml form).
    """

    name: str
    depth_multiple: float
    width_multiple: float
    nc: int
    anchors: tuple[tuple[float, ...], ...]


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of `divisor` that is >= x (how YOLOv5 rounds scaled channel counts)."""
    return math.ceil(x / divisor) * divisor


def scale_depth(n: int, depth_multiple: float) -> int:
    """Repeat count after depth scaling: rows with number 1 stay 1, others never drop below 1."""
    return max(round(n * depth_multiple), 1) if n > 1 else n


def get_module(name: str) -> type[nn.Module]:
    """The class registered under a yaml module name; ValueError listing the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown module {name!r} in architecture; known: {sorted(REGISTRY)}") from None


def load_arch(arch: str | Path | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Resolve `arch` ('v5', 'v6', a yaml path, or an already-loaded mapping) to (name, spec dict)."""
    if isinstance(arch, Mapping):
        return "custom", dict(arch)
    key = str(arch)
    path = ARCHS.get(key)
    if path is None:
        path = Path(key)
        if not (path.suffix in (".yaml", ".yml") and path.is_file()):
            raise ValueError(
                f"unknown arch {key!r}: choose one of {sorted(ARCHS)} or give the path of a yaml file"
            )
    with open(path, encoding="utf-8") as fh:
        spec = yaml.safe_load(fh)
    if not isinstance(spec, dict):
        raise ValueError(f"architecture file {path} does not hold a mapping")
    return key, spec


class YOLOv5(nn.Module):
    """A YOLOv5 detector: `model` is an nn.Sequential of layers whose last one is the `Detect` head.

    Each layer carries `.i` (its index) and `.f` (where its input comes from: -1 for the previous
    layer, an absolute index, or a list of those).

    forward: float [B, 3, H, W], H and W multiples of the largest stride (32) ->
        list of nl raw head maps, float [B, na * (nc + 5), H / stride_i, W / stride_i].
    """

    def __init__(self, layers: Sequence[nn.Module], arch: ArchInfo, names: Sequence[str] | None = None):
        super().__init__()
        if not layers or not isinstance(layers[-1], Detect):
            raise ValueError("the last layer of a YOLOv5 must be a Detect head")
        self.model = nn.Sequential(*layers)
        # Outputs later layers read again (besides their direct successor) are kept during forward.
        reread = {j for layer in layers for j in _sources(layer.f) if j != -1}
        self.save: tuple[int, ...] = tuple(sorted(reread))
        self._arch = arch
        self._names: list[str] | None = None
        self.names = names

    def forward(self, x: Tensor) -> list[Tensor]:
        return _route(self.model, self.save, x)[0]

    @property
    def detect(self) -> Detect:
        return self.model[-1]

    @property
    def nc(self) -> int:
        return self.detect.nc

    @property
    def stride(self) -> Tensor:
        """float [nl]: input pixels per cell of each output level."""
        return self.detect.stride

    @property
    def arch(self) -> ArchInfo:
        return self._arch

    @property
    def names(self) -> list[str] | None:
        """Class names (nc strings), or None when unset (the caller's default, e.g. COCO's 80)."""
        return self._names

    @names.setter
    def names(self, value: Sequence[str] | None) -> None:
        if value is not None:
            value = [str(v) for v in value]
            if len(value) != self.nc:
                raise ValueError(f"names has {len(value)} entries but the model has nc={self.nc}")
        self._names = value


def _sources(f: int | Sequence[int]) -> list[int]:
    return [f] if isinstance(f, int) else list(f)


def _absolute(f: int | Sequence[int], i: int) -> int | list[int]:
    # Sources below -1 count back from layer i; store them as absolute indices (-1 stays "previous").
    def fix(j: int) -> int:
        return j if j >= -1 else i + j

    return fix(f) if isinstance(f, int) else [fix(j) for j in f]


def _route(layers: Iterable[nn.Module], save: Container[int], x: Any) -> tuple[Any, dict[int, Tensor]]:
    """Run `layers` in order, feeding each from its `.f`; returns (last output, kept outputs)."""
    kept: dict[int, Tensor] = {}
    for layer in layers:
        f = layer.f
        if f != -1:
            x = kept[f] if isinstance(f, int) else [x if j == -1 else kept[j] for j in f]
        x = layer(x)
        if layer.i in save:
            kept[layer.i] = x
    return x, kept


def _resolve(arg: Any, symbols: Mapping[str, Any]) -> Any:
    # A bare string naming a builder symbol ('nc', 'anchors'; 'None' for official yamls, whose loader
    # evaluates it) is replaced by its value; any other string ('nearest') is a literal.
    if isinstance(arg, str) and arg in symbols:
        return symbols[arg]
    return arg


def _check_spec_agrees(spec: Mapping[str, Any], **given: float) -> None:
    # An architecture file may state its own multiples or nc (official yamls do). The builder's
    # arguments decide; a file that says otherwise is an error, not something to override quietly.
    for key, value in given.items():
        if key in spec and spec[key] != value:
            raise ValueError(f"architecture says {key}={spec[key]!r} but the builder was asked for {value!r}")


def _check_anchors(anchors: Any) -> tuple[tuple[float, ...], ...]:
    rows = tuple(tuple(float(v) for v in _flatten(row)) for row in anchors)
    if not rows or any(len(r) == 0 or len(r) % 2 or len(r) != len(rows[0]) for r in rows):
        raise ValueError(f"anchors must be nl rows of 2*na pixel sizes (same na per row), got {anchors!r}")
    return rows


def _flatten(row: Any) -> list[Any]:
    return [v for item in row for v in (_flatten(item) if isinstance(item, (list, tuple)) else [item])]


def _probe_strides(layers: list[nn.Module], sources: list[int], save: set[int]) -> list[float]:
    """Stride of each Detect input, measured by one small forward (eval mode, no grad)."""
    x = torch.zeros(1, IN_CHANNELS, _PROBE_SIZE, _PROBE_SIZE)
    for layer in layers:
        layer.eval()  # BN must not learn statistics from the probe image
    try:
        with torch.no_grad():
            _, kept = _route(layers, save, x)
    finally:
        for layer in layers:
            layer.train()
    strides = []
    for j in sources:
        h, w = kept[j].shape[-2:]
        if _PROBE_SIZE % h or _PROBE_SIZE // h != _PROBE_SIZE // w:
            raise ValueError(f"layer {j} output {h}x{w} is not an integer stride of a {_PROBE_SIZE}px input")
        strides.append(float(_PROBE_SIZE // h))
    return strides


def build_yolov5(
    arch: str | Path | Mapping[str, Any],
    depth_multiple: float,
    width_multiple: float,
    nc: int = 80,
    anchors: Sequence[Sequence[float]] | None = None,
) -> YOLOv5:
    """Build a randomly initialised YOLOv5 (in training mode).

    Args:
        arch: 'v5' (v5.0: Focus stem, SPP) or 'v6' (v6.0+: 6x6 conv stem, SPPF), a path to a yaml file
            with `anchors`, `backbone` and `head`, or such a spec as a mapping.
        depth_multiple, width_multiple: size multiples, e.g. `SIZES['s']` = (0.33, 0.50).
        nc: number of classes.
        anchors: pixel anchors (nl rows of 2*na numbers) replacing the architecture's.
    """
    name, spec = load_arch(arch)
    missing = [k for k in ("anchors", "backbone", "head") if k not in spec]
    if missing:
        raise ValueError(f"architecture {name!r} lacks {missing}")
    _check_spec_agrees(spec, nc=nc, depth_multiple=depth_multiple, width_multiple=width_multiple)
    anchor_rows = _check_anchors(spec["anchors"] if anchors is None else anchors)
    symbols = {"nc": nc, "anchors": [list(r) for r in anchor_rows], "None": None}

    rows = list(spec["backbone"]) + list(spec["head"])
    layers: list[nn.Module] = []
    out_ch: list[int] = []  # output channels of each layer so far

    def channels(j: int, i: int) -> int:
        if j == -1:
            return out_ch[-1] if i > 0 else IN_CHANNELS
        return out_ch[j]

    for i, row in enumerate(rows):
        if not (isinstance(row, (list, tuple)) and len(row) == 4):
            raise ValueError(f"layer {i}: expected [from, number, module, args], got {row!r}")
        f, n, type_name, args = row
        cls = get_module(type_name)
        args = [_resolve(a, symbols) for a in args]
        f = _absolute(f, i)
        for j in _sources(f):
            if j != -1 and not 0 <= j < i:
                raise ValueError(f"layer {i} ({type_name}) reads layer {j}, which does not come before it")
        n = scale_depth(n, depth_multiple)

        if cls is Detect:
            if i != len(rows) - 1:
                raise ValueError(f"Detect must be the last layer; found at {i} of {len(rows)}")
            sources = _sources(f)
            keep = {j for layer in layers for j in _sources(layer.f)} | set(sources)
            strides = _probe_strides(layers, sources, keep)
            module: nn.Module = Detect(*args, ch=[channels(j, i) for j in sources], strides=strides)
            c2 = 0  # nothing reads the head's channels
        else:
            if cls in _WIDTH_BLOCKS:
                if not isinstance(f, int):
                    raise ValueError(f"layer {i} ({type_name}) takes one input, got from={f}")
                c2 = make_divisible(args[0] * width_multiple, 8)
                args = [channels(f, i), c2, *args[1:]]
                if cls in _REPEAT_INSIDE:
                    args.insert(2, n)
                    n = 1
            elif cls is Concat:
                c2 = sum(channels(j, i) for j in _sources(f))
            else:  # shape-only layers such as nn.Upsample keep the channel count
                c2 = channels(f, i)
            module = cls(*args) if n == 1 else nn.Sequential(*(cls(*args) for _ in range(n)))

        module.i, module.f = i, f
        layers.append(module)
        out_ch.append(c2)

    if not isinstance(layers[-1], Detect):
        raise ValueError(f"architecture {name!r} must end with a Detect layer")
    info = ArchInfo(name, depth_multiple, width_multiple, layers[-1].nc, anchor_rows)
    return YOLOv5(layers, info)
