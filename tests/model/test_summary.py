import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from yolomlu.model import SIZES, ModelSummary, build_yolov5, count_flops, format_summary, summarize

# Published (params in millions, GFLOPs at 640) of the fused models. REFERENCE §2.
PUBLISHED = {
    ("v5", "s"): (7.3, 17.0),
    ("v5", "m"): (21.4, 51.3),
    ("v5", "l"): (47.0, 115.4),
    ("v5", "x"): (87.7, 218.8),
    ("v6", "n"): (1.9, 4.5),
    ("v6", "s"): (7.2, 16.5),
    ("v6", "m"): (21.2, 49.0),
    ("v6", "l"): (46.5, 109.1),
    ("v6", "x"): (86.7, 205.7),
}


def close_to_published(ours: float, published: float) -> bool:
    # published figures are rounded to 0.1: allow 1 % or the rounding, whichever is larger
    return abs(ours - published) <= max(0.01 * published, 0.05)


@pytest.mark.parametrize("arch, size", list(PUBLISHED))
def test_params_and_gflops_agree_with_published(summary_of, arch, size):
    s = summary_of(arch, size)
    params_m, gflops = PUBLISHED[(arch, size)]
    assert close_to_published(s.params / 1e6, params_m), s
    assert close_to_published(s.gflops, gflops), s


@pytest.fixture(scope="module", params=["v5", "v6"])
def nano(request):
    return build_yolov5(request.param, *SIZES["n"])


def test_counting_at_640_equals_yolov5s_stride_input_scaled_up(nano):
    # YOLOv5 counts at a 32x32 input and multiplies by (640 / 32)^2; for these conv nets that is exact
    assert count_flops(nano, 640) == (640 // 32) ** 2 * count_flops(nano, 32)
    assert count_flops(nano, 320) == 4 * count_flops(nano, 160)


def test_meta_count_equals_a_real_forward_and_twice_the_conv_macs(nano):
    macs = 0

    def hook(conv, inputs, output):
        nonlocal macs
        k = conv.kernel_size[0] * conv.kernel_size[1]
        macs += output.numel() * conv.in_channels // conv.groups * k

    handles = [m.register_forward_hook(hook) for m in nano.modules() if isinstance(m, nn.Conv2d)]
    nano.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            nano(torch.zeros(1, 3, 64, 64))
    finally:
        for h in handles:
            h.remove()
        nano.train()
    assert counter.get_total_flops() == 2 * macs == count_flops(nano, 64)


def test_summarize_counts_modules_and_parameters_and_leaves_the_model_alone():
    model = build_yolov5("v6", *SIZES["n"])
    model.model[3].eval()  # a mixed train/eval state must come back as it was
    modes = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    s = summarize(model, img_size=320)
    assert s.layers == len(list(model.modules()))
    assert s.params == sum(p.numel() for p in model.parameters())
    assert s.gflops == count_flops(model, 320) / 1e9
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_format_summary():
    line = format_summary(ModelSummary(476, 87730285, 218.64))
    assert line == "476 layers, 87730285 parameters, 218.6 GFLOPs"
