"""SPP (parallel max pools) -> SPPF (one pool applied in series): the v6.0 rewrite, exact.

A stride-1 max pool of odd size k with padding k // 2 (padded with -inf, i.e. taking the max over the
window clipped to the image) applied twice is a pool of size 2k - 1, three times one of size 3k - 2:
the clipped windows of the clipped windows around a pixel cover exactly the clipped larger window. So
SPP(k=(5, 9, 13)) = SPPF(5) bit for bit: both take maxima of the same values, and the 1x1 convs see the
same concatenation [x, pool5 x, pool9 x, pool13 x] in the same channel order.
"""

from __future__ import annotations

import torch
from torch import nn

from yolomlu.model.blocks import SPP, SPPF

__all__ = ["spp_to_sppf", "spp_as_sppf", "sppf_kernel_for"]

_LAYER_ATTRS = ("i", "f")  # routing attributes the YOLOv5 builder sets on each top-level layer


def sppf_kernel_for(kernels: tuple[int, ...]) -> int:
    """The SPPF pool size k whose 1, 2, 3 serial applications equal SPP pools of sizes `kernels`.

    SPPF always pools three times, so `kernels` must be (k, 2k - 1, 3k - 2) with k odd and > 1, e.g.
    (5, 9, 13) -> 5 or (3, 5, 7) -> 3. Raises ValueError naming the chain that would be needed otherwise.
    """
    if len(kernels) != 3:
        raise ValueError(f"SPPF pools exactly 3 times in series; SPP has {len(kernels)} pools {kernels}")
    k = kernels[0]
    chain = (k, 2 * k - 1, 3 * k - 2)
    if k < 3 or k % 2 == 0 or tuple(kernels) != chain:
        raise ValueError(
            f"SPP pools {tuple(kernels)} do not chain: serial pools of size k give (k, 2k-1, 3k-2) for odd "
            f"k >= 3, e.g. (5, 9, 13); with k={k} that would be {chain}"
        )
    return k


def _pool_kernels(spp: SPP) -> tuple[int, ...]:
    # The chaining argument needs 'same' stride-1 pools without dilation or ceil_mode; check rather than
    # trust that nobody built an SPP by hand with other pools.
    kernels = []
    for pool in spp.m:
        k = pool.kernel_size
        settings = (pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)
        if not (
            isinstance(pool, nn.MaxPool2d)
            and isinstance(k, int)
            and pool.stride in (1, (1, 1))
            and pool.padding in (k // 2, (k // 2, k // 2))
            and pool.dilation in (1, (1, 1))
            and not pool.ceil_mode
        ):
            raise ValueError(
                "spp_to_sppf needs square stride-1 'same' max pools (padding k // 2, no dilation, no ceil_mode); "
                f"got {type(pool).__name__} (kernel, stride, padding, dilation, ceil_mode) = {settings}"
            )
        kernels.append(k)
    return tuple(kernels)


def spp_as_sppf(spp: SPP) -> SPPF:
    """An SPPF computing the same function as `spp`, reusing its cv1 and cv2 blocks (moved, not copied).

    [B, c1, H, W] -> [B, c2, H, W]. Raises ValueError when the SPP's pools do not chain
    (see `sppf_kernel_for`). The result has the training flag of `spp`.
    """
    k = sppf_kernel_for(_pool_kernels(spp))
    c1 = spp.cv1.conv.in_channels
    c2 = spp.cv2.conv.out_channels
    # Build the shell on the meta device: its own cv1/cv2 are replaced at once, so allocating and
    # randomly initialising them would be wasted work (tens of MB for the large sizes).
    with torch.device("meta"):
        sppf = SPPF(c1, c2, k)
    sppf.cv1 = spp.cv1
    sppf.cv2 = spp.cv2
    sppf.train(spp.training)
    return sppf


def spp_to_sppf(model: nn.Module) -> int:
    """Replace every `SPP` inside `model` by the equivalent `SPPF`, in place.

    Returns how many were replaced; 0 when there is none (a v6 model, or one already converted) and
    the caller decides whether that is an error. All SPPs are checked before any is replaced, so a
    refusal (pools that do not chain) leaves the model unchanged. State-dict keys stay the same
    (`model.8.cv1.conv.weight`, ...: the pools have no parameters); `.i` and `.f` are carried over.
    """
    if isinstance(model, SPP):
        raise ValueError("spp_to_sppf rewrites SPP layers inside a model; convert a lone SPP with spp_as_sppf")
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, SPP)
    ]
    for _, _, spp in targets:
        sppf_kernel_for(_pool_kernels(spp))
    for parent, name, spp in targets:
        sppf = spp_as_sppf(spp)
        for attr in _LAYER_ATTRS:
            if hasattr(spp, attr):
                setattr(sppf, attr, getattr(spp, attr))
        setattr(parent, name, sppf)
    return len(targets)
