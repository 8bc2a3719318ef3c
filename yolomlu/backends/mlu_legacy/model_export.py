"""Our (possibly transformed) YOLOv5 -> architecture rows (JSON) + weights (.npz), and back.

The legacy Cambricon SDK runs torch 1.3 under Python 3.6/3.7: it cannot read a torch 2.x pickle or
TorchScript archive. So the model crosses over as data only:

- ``rows``: one row per top-level layer, ``[from, number, module, args]`` like the architecture yaml,
  but with every constructor choice *resolved* from the module instances as they are now: exact channel
  counts (no width/depth multiples), kernel/stride/padding pairs, whether each conv has a bias and a
  BatchNorm (after Conv+BN fusion it has a bias and no BN), the activation, the Detect head's pixel
  anchors and strides. Transformed models (Focus->Conv, SPP->SPPF, fused) are described as they are.
- ``weights``: the state_dict as numpy arrays, keys unchanged (``model.2.cv1.conv.weight`` ...).

The device worker (``worker.py``) rebuilds the network from these rows with its own compact block
definitions whose attribute names mirror ours, so the same keys load with ``strict=True``;
:func:`model_from_export` rebuilds it here with our own blocks, which the tests use to prove the
round trip is exact.

Row args, per module (``conv`` = a Conv spec as below):

- ``Conv``:  {c1, c2, k: [kh, kw], s: [sh, sw], p: [ph, pw], g, bias, bn, bn_eps, act}
- ``Focus``: {conv}                           (conv over the 4*c1 stacked pixel phases)
- ``Bottleneck``: {cv1, cv2, add}
- ``C3``:    {cv1, cv2, cv3, m: [Bottleneck args, ...]}
- ``SPP``:   {cv1, cv2, k: [5, 9, 13]}        ``SPPF``: {cv1, cv2, k: 5}
- ``Concat``: {d}                             ``nn.Upsample``: {size, scale_factor, mode}
- ``Detect``: {nc, anchors_px: nl rows of 2*na pixels, ch: [...], strides: [...]}
- ``act``:   {"name": "silu" | "identity" | "relu" | "leaky_relu", "negative_slope"?}

``number`` > 1 means ``number`` such modules in an ``nn.Sequential`` (keys ``model.i.0.*`` ...).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from yolomlu.model.blocks import C3, SPP, SPPF, Bottleneck, Concat, Conv, Focus
from yolomlu.model.detect import Detect
from yolomlu.model.yolo import ArchInfo, YOLOv5

__all__ = ["EXPORT_FORMAT", "SUPPORTED_MODULES", "export_model", "load_export", "model_from_export", "save_export"]

EXPORT_FORMAT = "yolomlu-rows/1"
SUPPORTED_MODULES = ("Conv", "Focus", "Bottleneck", "C3", "SPP", "SPPF", "Concat", "nn.Upsample", "Detect")


# -- our model -> rows ---------------------------------------------------------------------------
def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


def _act_spec(act: nn.Module, where: str) -> dict[str, Any]:
    if isinstance(act, nn.SiLU):
        return {"name": "silu"}
    if isinstance(act, nn.Identity):
        return {"name": "identity"}
    if isinstance(act, nn.ReLU):
        return {"name": "relu"}
    if isinstance(act, nn.LeakyReLU):
        return {"name": "leaky_relu", "negative_slope": float(act.negative_slope)}
    raise ValueError(f"{where}: activation {type(act).__name__} cannot be exported; supported: SiLU, Identity, ReLU, LeakyReLU")


def _plain_conv(conv: nn.Module, where: str) -> None:
    # A subclass (an emulated quantized conv, a folded first conv) computes something the rows cannot say.
    if type(conv) is not nn.Conv2d:
        raise ValueError(
            f"{where} is a {type(conv).__name__}, not a plain Conv2d: hand over the float model (the SDK quantizes it)"
        )


def _conv_spec(block: Conv, where: str) -> dict[str, Any]:
    conv = block.conv
    _plain_conv(conv, f"{where}.conv")
    if conv.dilation != (1, 1) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(f"{where}: only zero-padded, undilated convolutions can be exported, got {conv}")
    spec: dict[str, Any] = {
        "c1": conv.in_channels,
        "c2": conv.out_channels,
        "k": _pair(conv.kernel_size),
        "s": _pair(conv.stride),
        "p": _pair(conv.padding),
        "g": conv.groups,
        "bias": conv.bias is not None,
        "bn": block.bn is not None,
        "act": _act_spec(block.act, where),
    }
    if block.bn is not None:
        spec["bn_eps"] = float(block.bn.eps)
    return spec


def _bottleneck_spec(b: Bottleneck, where: str) -> dict[str, Any]:
    return {"cv1": _conv_spec(b.cv1, f"{where}.cv1"), "cv2": _conv_spec(b.cv2, f"{where}.cv2"), "add": bool(b.add)}


def _pools(pools: Any, where: str) -> list[int]:
    ks = []
    for pool in pools:
        k, s, p = pool.kernel_size, pool.stride, pool.padding
        if not (isinstance(k, int) and s == 1 and p == k // 2 and pool.dilation == 1 and not pool.ceil_mode):
            raise ValueError(f"{where}: expected stride-1 'same' max pools, got {pool}")
        ks.append(k)
    return ks


def _module_spec(m: nn.Module, where: str) -> tuple[str, dict[str, Any]]:
    # Exact types: a subclass may compute something else under the same attribute names.
    t = type(m)
    if t is Conv:
        return "Conv", _conv_spec(m, where)
    if t is Focus:
        return "Focus", {"conv": _conv_spec(m.conv, f"{where}.conv")}
    if t is Bottleneck:
        return "Bottleneck", _bottleneck_spec(m, where)
    if t is C3:
        return "C3", {
            "cv1": _conv_spec(m.cv1, f"{where}.cv1"),
            "cv2": _conv_spec(m.cv2, f"{where}.cv2"),
            "cv3": _conv_spec(m.cv3, f"{where}.cv3"),
            "m": [_bottleneck_spec(b, f"{where}.m.{j}") for j, b in enumerate(m.m)],
        }
    if t is SPP:
        return "SPP", {"cv1": _conv_spec(m.cv1, f"{where}.cv1"), "cv2": _conv_spec(m.cv2, f"{where}.cv2"), "k": _pools(m.m, where)}
    if t is SPPF:
        return "SPPF", {"cv1": _conv_spec(m.cv1, f"{where}.cv1"), "cv2": _conv_spec(m.cv2, f"{where}.cv2"), "k": _pools([m.m], where)[0]}
    if t is Concat:
        return "Concat", {"d": int(m.d)}
    if t is nn.Upsample:
        if m.mode != "nearest" or m.size is not None:
            raise ValueError(f"{where}: only nearest upsampling by a scale factor can be exported, got {m}")
        return "nn.Upsample", {"size": None, "scale_factor": float(m.scale_factor), "mode": "nearest"}
    if t is Detect:
        for j, conv in enumerate(m.m):
            _plain_conv(conv, f"{where}.m.{j}")
        return "Detect", {
            "nc": int(m.nc),
            "anchors_px": [[float(v) for v in level.flatten()] for level in m.anchors_px.detach().cpu()],
            "ch": [conv.in_channels for conv in m.m],
            "strides": [float(s) for s in m.stride.detach().cpu()],
        }
    raise ValueError(f"{where}: module {t.__name__} cannot be exported for the MLU worker; supported: {list(SUPPORTED_MODULES)}")


def export_model(model: YOLOv5) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(rows document, weights) describing ``model`` exactly as it is now.

    Returns ``{"format", "arch": {name, depth_multiple, width_multiple, nc, anchors}, "in_channels",
    "rows": [[from, number, module, args], ...]}`` and ``{state_dict key: numpy array}`` (float32 for
    float tensors; integer buffers keep their type). Raises ValueError naming a layer that cannot be
    described (an unsupported module type, activation or padding mode).
    """
    if not isinstance(model, YOLOv5):
        raise ValueError(f"expected a yolomlu YOLOv5 model, got {type(model).__name__}")
    rows = []
    for layer in model.model:
        where = f"model.{layer.i}"
        if type(layer) is nn.Sequential:
            specs = [_module_spec(m, f"{where}.{j}") for j, m in enumerate(layer)]
            names = {name for name, _ in specs}
            if len(names) != 1:
                raise ValueError(f"{where}: a repeated layer must repeat one module type, got {sorted(names)}")
            rows.append([layer.f, len(specs), specs[0][0], [args for _, args in specs]])
        else:
            name, args = _module_spec(layer, where)
            rows.append([layer.f, 1, name, [args]])
    info = model.arch
    doc = {
        "format": EXPORT_FORMAT,
        "arch": {
            "name": info.name,
            "depth_multiple": info.depth_multiple,
            "width_multiple": info.width_multiple,
            "nc": info.nc,
            "anchors": [list(r) for r in info.anchors],
        },
        "in_channels": 3,
        "rows": rows,
    }
    weights = {}
    for key, tensor in model.state_dict().items():
        t = tensor.detach().cpu()
        weights[key] = (t.float() if t.is_floating_point() else t).numpy().copy()
    return doc, weights


def save_export(model: YOLOv5, folder: str | Path) -> tuple[Path, Path]:
    """Write ``model_rows.json`` and ``model_weights.npz`` into ``folder``; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    doc, weights = export_model(model)
    rows_path, weights_path = folder / "model_rows.json", folder / "model_weights.npz"
    rows_path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    np.savez(weights_path, **weights)
    return rows_path, weights_path


def load_export(folder: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read back what :func:`save_export` wrote (no pickles: ``allow_pickle=False``)."""
    folder = Path(folder)
    doc = json.loads((folder / "model_rows.json").read_text(encoding="utf-8"))
    with np.load(folder / "model_weights.npz", allow_pickle=False) as npz:
        weights = {k: npz[k] for k in npz.files}
    return doc, weights


# -- rows -> our model ---------------------------------------------------------------------------
def _act(spec: Mapping[str, Any]) -> nn.Module:
    name = spec["name"]
    if name == "silu":
        return nn.SiLU()
    if name == "identity":
        return nn.Identity()
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(spec["negative_slope"])
    raise ValueError(f"unknown activation {name!r}")


def _conv(spec: Mapping[str, Any]) -> Conv:
    block = Conv(spec["c1"], spec["c2"], 1, act=_act(spec["act"]))
    block.conv = nn.Conv2d(
        spec["c1"], spec["c2"], tuple(spec["k"]), tuple(spec["s"]), tuple(spec["p"]), groups=spec["g"], bias=spec["bias"]
    )
    if spec["bn"]:
        block.bn = nn.BatchNorm2d(spec["c2"], eps=spec["bn_eps"])
    else:
        block.bn = None
    return block


def _bottleneck(spec: Mapping[str, Any]) -> Bottleneck:
    b = Bottleneck(2, 2)
    b.cv1, b.cv2, b.add = _conv(spec["cv1"]), _conv(spec["cv2"]), spec["add"]
    return b


def _build(name: str, a: Mapping[str, Any]) -> nn.Module:
    if name == "Conv":
        return _conv(a)
    if name == "Focus":
        focus = Focus(1, 1)
        focus.conv = _conv(a["conv"])
        return focus
    if name == "Bottleneck":
        return _bottleneck(a)
    if name == "C3":
        c3 = C3(1, 2, n=0)
        c3.cv1, c3.cv2, c3.cv3 = _conv(a["cv1"]), _conv(a["cv2"]), _conv(a["cv3"])
        c3.m = nn.Sequential(*(_bottleneck(b) for b in a["m"]))
        return c3
    if name in ("SPP", "SPPF"):
        c1 = a["cv1"]["c1"]
        block = SPP(c1, 1, tuple(a["k"])) if name == "SPP" else SPPF(c1, 1, a["k"])
        block.cv1, block.cv2 = _conv(a["cv1"]), _conv(a["cv2"])
        return block
    if name == "Concat":
        return Concat(a["d"])
    if name == "nn.Upsample":
        return nn.Upsample(size=a["size"], scale_factor=a["scale_factor"], mode=a["mode"])
    if name == "Detect":
        return Detect(a["nc"], a["anchors_px"], a["ch"], a["strides"])
    raise ValueError(f"unknown module {name!r} in exported rows; supported: {list(SUPPORTED_MODULES)}")


def model_from_export(doc: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> YOLOv5:
    """Rebuild a :class:`YOLOv5` (eval mode) from :func:`export_model` output, weights loaded strictly."""
    if doc.get("format") != EXPORT_FORMAT:
        raise ValueError(f"not a {EXPORT_FORMAT} document (format={doc.get('format')!r})")
    layers = []
    for i, (f, n, name, args) in enumerate(doc["rows"]):
        modules = [_build(name, a) for a in args]
        if len(modules) != n:
            raise ValueError(f"row {i}: number={n} but {len(modules)} module specs")
        layer = modules[0] if n == 1 else nn.Sequential(*modules)
        layer.i, layer.f = i, f
        layers.append(layer)
    a = doc["arch"]
    info = ArchInfo(a["name"], a["depth_multiple"], a["width_multiple"], a["nc"], tuple(tuple(r) for r in a["anchors"]))
    model = YOLOv5(layers, info)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()}, strict=True)
    return model.eval()
