"""Seeded "trained-like" random weights for tests that compare numerics.

PyTorch's default init shrinks the signal layer by layer: a default-initialised yolov5n's outputs
move by only ~2e-5 between a real image and uniform noise, so a parity below 1e-4 would prove
nothing (a wrongly interleaved Focus kernel gave 5e-6). Random BN statistics make every fused bias
distinct, as in a trained model; conv weights at 0.9x He init keep the signal alive through the 24
layers (a wrong interleave then moves the outputs by ~3e-2) while float rounding stays near 2e-6.
"""

from __future__ import annotations

import math

import torch
from torch import nn

WEIGHT_GAIN = 0.9


def randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial affine parameters and running statistics, in place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            c = bn.num_features
            bn.weight.copy_(0.5 + torch.rand(c, generator=g))
            bn.bias.copy_(0.1 * torch.randn(c, generator=g))
            bn.running_mean.copy_(0.1 * torch.randn(c, generator=g))
            bn.running_var.copy_(0.5 + torch.rand(c, generator=g))


def randomise_convs(model: nn.Module, gain: float = WEIGHT_GAIN) -> None:
    """Re-draw every Conv2d weight from N(0, (gain * sqrt(2 / fan_in))^2), in place (biases kept)."""
    with torch.no_grad():
        for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
            conv.weight.normal_(0.0, gain * math.sqrt(2.0 / conv.weight[0].numel()))


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with trained-like BN statistics and conv weights, in eval mode."""
    torch.manual_seed(seed)
    randomise_bn(model, seed)
    randomise_convs(model)
    return model.eval()


def trained_like_yolov5n(seed: int = 0) -> nn.Module:
    """yolov5n v5.0 (nc=6), fused, with seeded trained-like weights (realistic activation ranges for
    calibration; outputs that depend on the input)."""
    from yolomlu.model import build_yolov5, fuse_conv_bn

    torch.manual_seed(seed)  # the Detect biases keep their (random) default init
    return fuse_conv_bn(trained_like(build_yolov5("v5", 0.33, 0.25, nc=6), seed))
