from types import SimpleNamespace

import torch

from yolomlu.backends.taxonomy import build_profile, layer_type
from yolomlu.backends.torch_runner import TorchRunner, layer_events
from yolomlu.model import build_yolov5


def _event(name, parent=None, device_us=0.0, kernels=(), cpu_us=0.0):
    return SimpleNamespace(
        name=name, cpu_parent=parent, device_time_total=device_us, cpu_time_total=cpu_us,
        kernels=[SimpleNamespace(duration=d) for d in kernels],
    )  # fmt: skip


def test_cpu_profile_counts_each_layer_once() -> None:
    model = build_yolov5("v5", 0.33, 0.25, nc=3).eval()
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    with TorchRunner(model) as runner:
        profile = runner.profile(torch.rand(1, 3, 64, 64), passes=2)
    rows = {r.layer_type: r for r in profile.rows}
    assert rows["CONV"].count == n_convs
    assert {"ACTIVE", "CONCAT", "MAXPOOL", "INTERP"} <= set(rows)
    assert abs(sum(r.ratio for r in profile.rows) - 1.0) < 1e-9


def test_compiled_kernels_outside_aten_ops_are_counted_once() -> None:
    # What torch.compile leaves in a CUDA profile: the compiled graph's region, inside it an extern
    # convolution (an aten op whose cuDNN kernel hangs under its child) and Triton kernels named
    # after their fusion, launched outside any aten op; and the runner's own output copy.
    region = _event("## Call CompiledFxGraph fabc ##", device_us=0.0)
    conv = _event("aten::convolution", region, device_us=30.0)
    cudnn = _event("aten::cudnn_convolution", conv, device_us=30.0, kernels=[30.0])
    fused = _event("triton_poi_fused_add_cat_silu_3", region, kernels=[4.0, 1.0])
    copy = _event("aten::copy_", None, device_us=9.0, kernels=[9.0])
    events = [region, conv, cudnn, fused, copy]

    layers = layer_events(events, device_time=True)
    assert layers == [("aten::convolution", 30.0), ("triton_poi_fused_add_cat_silu_3", 5.0)]
    profile = {r.layer_type: r.time_us for r in build_profile(layers).rows}
    assert profile == {"CONV": 30.0, "FUSED": 5.0}
    # On the CPU (no device time) launchers outside aten ops are not layers.
    assert layer_events(events, device_time=False) == [("aten::convolution", 0.0)]


def test_layer_types_of_compiler_kernels_and_unknown_ops() -> None:
    assert layer_type("triton_poi_fused_add_cat_silu_3") == "FUSED"
    assert layer_type("cpp_fused_silu_0") == "FUSED"
    assert layer_type("aten::conv2d") == layer_type("QLinearConv") == "CONV"
    assert layer_type("aten::frobnicate") == "OTHER"
