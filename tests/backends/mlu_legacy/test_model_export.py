"""Our model -> rows JSON + npz weights -> the same model (the form the device worker rebuilds from)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from yolomlu.backends.mlu_legacy.model_export import export_model, load_export, model_from_export, save_export
from yolomlu.model import build_yolov5
from yolomlu.transforms import apply_transforms


@pytest.mark.parametrize(
    ("arch", "transforms", "stem"),
    [
        ("v5", [], "Focus"),
        ("v5", ["focus_to_conv", "spp_to_sppf", "fuse"], "Conv"),
        ("v6", ["fuse"], "Conv"),
    ],
)
def test_round_trip_rebuilds_the_same_function(tmp_path, arch, transforms, stem) -> None:
    torch.manual_seed(0)
    model = build_yolov5(arch, 0.33, 0.25, nc=3).eval()
    apply_transforms(model, transforms, None)
    save_export(model, tmp_path)
    doc, weights = load_export(tmp_path)
    assert json.loads((tmp_path / "model_rows.json").read_text()) == doc  # plain JSON, no pickles
    assert doc["rows"][0][2] == stem and doc["rows"][-1][2] == "Detect"
    assert set(weights) == set(model.state_dict())
    rebuilt = model_from_export(doc, weights)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), rebuilt(x)):
            assert torch.equal(a, b)


def test_rows_resolve_every_constructor_choice() -> None:
    torch.manual_seed(0)
    model = build_yolov5("v5", 0.33, 0.25, nc=3).eval()
    apply_transforms(model, ["focus_to_conv", "fuse"], None)
    doc, _ = export_model(model)
    stem = doc["rows"][0][3][0]
    assert stem == {"c1": 3, "c2": 16, "k": [6, 6], "s": [2, 2], "p": [2, 2], "g": 1, "bias": True, "bn": False, "act": {"name": "silu"}}
    f, n, name, args = doc["rows"][8]
    assert (f, n, name, args[0]["k"]) == (-1, 1, "SPP", [5, 9, 13])
    head = doc["rows"][-1][3][0]
    assert head["anchors_px"][0] == [10, 13, 16, 30, 33, 23] and head["strides"] == [8.0, 16.0, 32.0]
    assert doc["rows"][-1][0] == [17, 20, 23]


def test_a_module_the_worker_cannot_build_is_named() -> None:
    model = build_yolov5("v6", 0.33, 0.25, nc=3).eval()
    model.model[2].cv1.act = nn.GELU()
    with pytest.raises(ValueError, match=r"model.2.cv1: activation GELU cannot be exported"):
        export_model(model)


def test_an_emulated_quantized_conv_is_refused() -> None:
    class EmulatedConv(nn.Conv2d):
        pass

    model = build_yolov5("v6", 0.33, 0.25, nc=3).eval()
    old = model.model[1].conv
    model.model[1].conv = EmulatedConv(old.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
    with pytest.raises(ValueError, match=r"model.1.conv is a EmulatedConv, not a plain Conv2d: hand over the float model"):
        export_model(model)
