"""Focus (space-to-depth + conv) -> one strided Conv: the v5.0 stem rewritten as v6.0's 6x6 stem.

Why it is exact
---------------
`Focus(c1, c2, k, s, p)` stacks the four pixel phases of x [B, c1, H, W] into [B, 4*c1, H/2, W/2] (phase
a_g, b_g = row and column offset of group g, in Focus's order (0,0), (1,0), (0,1), (1,1) for g = 0..3)
and runs a k x k conv with stride s and padding p on that half-resolution grid. Output cell (y, x) of
that conv reads phase cell (s*y + u - p, s*x + v - p) for u, v in 0..k-1, and phase cell (r, q) of group
g is input pixel (2r + a_g, 2q + b_g). So kernel tap (u, v) of group g reads input pixel

    (2*s*y + (2u + a_g) - 2p,  2*s*x + (2v + b_g) - 2p),

which is exactly what tap (m, n) = (2u + a_g, 2v + b_g) of a 2k x 2k conv with stride 2s and padding 2p
reads at output cell (y, x). Every (m, n) in 0..2k-1 arises from exactly one (u, a, v, b), so

    K[o, c, 2u + a, 2v + b] = W[o, g(a, b) * c1 + c, u, v],   g(a, b) = a + 2b.

For k=3 (the published stem) that is Conv(c1, c2, 6, 2, 2); for k=1 it is a 2x2 kernel, stride 2, no
padding. The zero padding also agrees: phase row -1 is input rows -2 (a=0) and -1 (a=1), phase row
H/2 is input rows H and H+1, all of which the 2p-padded conv pads with zeros. The sums are the same
products in a different order, so outputs agree to float rounding (~1e-6 relative).

The BatchNorm (or the bias of an already fused conv) and the activation act per output channel after
the conv, so they move over unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from yolomlu.model.blocks import Conv, Focus

__all__ = ["focus_to_conv", "focus_as_conv", "focus_kernel_to_conv_kernel"]

# Attributes the YOLOv5 builder sets on each top-level layer; routing (`YOLOv5.forward`) reads them.
_LAYER_ATTRS = ("i", "f")


def focus_kernel_to_conv_kernel(weight: Tensor) -> Tensor:
    """Interleave a Focus conv kernel into the equivalent strided kernel.

    weight: [c2, 4 * c1, kh, kw], input channels grouped by pixel phase in Focus's order
        (row, col) = (0,0), (1,0), (0,1), (1,1).
    Returns [c2, c1, 2 * kh, 2 * kw] (same dtype and device) with K[o, c, 2u + a, 2v + b] =
    weight[o, (a + 2b) * c1 + c, u, v] (derivation in the module docstring).
    """
    c2, c4, kh, kw = weight.shape
    if c4 % 4:
        raise ValueError(f"a Focus kernel has 4 * c1 input channels; got weight of shape {tuple(weight.shape)}")
    c1 = c4 // 4
    # Input-channel index = g * c1 + c with g = a + 2b, i.e. b is the slower of the two phase digits:
    # view as [o, b, a, c, u, v], then order the axes as [o, c, u, a, v, b] so that merging (u, a) gives
    # row 2u + a and merging (v, b) gives column 2v + b.
    w = weight.reshape(c2, 2, 2, c1, kh, kw)
    return w.permute(0, 3, 4, 2, 5, 1).reshape(c2, c1, 2 * kh, 2 * kw).contiguous()


@torch.no_grad()
def focus_as_conv(focus: Focus) -> Conv:
    """A `Conv` block computing the same function as `focus` (same BN or bias, same activation module).

    focus: a Focus whose inner Conv is unfused (conv without bias + bn) or fused (conv with bias,
        bn None). Its inner conv must have groups=1 and dilation 1: a grouped conv over the
        phase-stacked channels mixes phases group-wise, which no single grouped strided conv reproduces.
    Returns Conv(c1, c2, k=2k, s=2s, p=2p): [B, c1, H, W] -> [B, c2, H/2/s, W/2/s] for even H, W.
    The returned block shares the BN and activation modules with `focus` (they are moved, not copied)
    and has its training flag.
    """
    inner = focus.conv
    conv = inner.conv
    if conv.groups != 1:
        raise ValueError(f"focus_to_conv supports only groups=1 in the Focus conv, got groups={conv.groups}")
    if conv.dilation != (1, 1):
        raise ValueError(f"focus_to_conv supports only dilation 1 in the Focus conv, got {conv.dilation}")
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError(
            f"focus_to_conv needs numeric zero padding in the Focus conv, got padding={conv.padding!r}, "
            f"padding_mode={conv.padding_mode!r}"
        )
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    ph, pw = conv.padding
    weight = focus_kernel_to_conv_kernel(conv.weight)
    c2, c1 = weight.shape[:2]

    block = Conv(c1, c2, k=1, act=inner.act)  # conv and bn are replaced below
    block.conv = nn.Conv2d(
        c1,
        c2,
        (2 * kh, 2 * kw),
        stride=(2 * sh, 2 * sw),
        padding=(2 * ph, 2 * pw),
        bias=conv.bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    block.conv.weight.copy_(weight)
    if conv.bias is not None:
        block.conv.bias.copy_(conv.bias)
    block.bn = inner.bn
    block.train(focus.training)
    return block


def focus_to_conv(model: nn.Module) -> int:
    """Replace every `Focus` inside `model` by its equivalent strided `Conv`, in place.

    Returns how many Focus modules were replaced; 0 when the model has none (e.g. a v6 model, or one
    already converted). Whether 0 is an error is the caller's decision: a job that asked for this
    variant should refuse to log it as a variant when nothing changed.

    The new block takes the Focus's place under the same name, so in a YOLOv5 the stem's keys become
    `model.0.conv.weight`, `model.0.bn.*` (as in v6.0+ checkpoints) instead of `model.0.conv.conv.weight`,
    `model.0.conv.bn.*`; the layer's `.i` and `.f` routing attributes are carried over.

    Unlike Focus, the result also accepts odd H or W (Focus cannot concatenate unequal phases);
    on even sizes the two agree to float rounding (see the module docstring).
    """
    if isinstance(model, Focus):
        # A module cannot replace itself in its caller's hands; the caller holds the reference.
        raise ValueError("focus_to_conv rewrites Focus layers inside a model; convert a lone Focus with focus_as_conv")
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, Focus)
    ]
    # Build every replacement before swapping any, so a refusal (grouped conv) leaves the model as it was.
    blocks = [focus_as_conv(focus) for _, _, focus in targets]
    for (parent, name, focus), block in zip(targets, blocks):
        for attr in _LAYER_ATTRS:
            if hasattr(focus, attr):
                setattr(block, attr, getattr(focus, attr))
        setattr(parent, name, block)  # works for nn.Sequential / ModuleList children too (names are '0', ...)
    return len(targets)
