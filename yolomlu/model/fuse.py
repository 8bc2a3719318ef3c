"""Fold each Conv block's BatchNorm into its convolution (inference-time rewrite)."""

from __future__ import annotations

import torch
from torch import nn

from yolomlu.model.blocks import Conv

__all__ = ["fuse_conv_bn", "fused_conv"]


@torch.no_grad()
def fused_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A Conv2d with bias computing bn(conv(x)) as BN computes it in eval mode (running statistics).

    With s = gamma / sqrt(running_var + eps): weight' = weight * s (per output channel) and
    bias' = beta + (bias - running_mean) * s.
    """
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
    return fused


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every `Conv` block's BN into its conv, in place; returns `model`.

    Afterwards each such block has `conv` with a bias and `bn = None` (so the BN keys leave the state
    dict and the module count drops by one per block, as in YOLOv5's fused models). Outputs equal the
    unfused model's in eval mode up to float rounding; a fused model no longer trains BN statistics.
    """
    for block in [m for m in model.modules() if isinstance(m, Conv) and m.bn is not None]:
        block.conv = fused_conv(block.conv, block.bn)
        block.bn = None
    return model
