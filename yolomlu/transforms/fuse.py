"""Conv+BN fusion as a counted transform: a thin wrapper over `yolomlu.model.fuse.fuse_conv_bn`.

The folding itself lives once, in the model package; this only reports how many blocks it folded so
that it fits the transform interface (`model -> number of replaced layers`).
"""

from __future__ import annotations

from torch import nn

from yolomlu.model.blocks import Conv
from yolomlu.model.fuse import fuse_conv_bn

__all__ = ["fuse"]


def fuse(model: nn.Module) -> int:
    """Fold the BatchNorm of every `Conv` block into its conv, in place (see `fuse_conv_bn`).

    Returns how many blocks were folded; 0 when all are already fused (the caller decides whether
    that is an error). In eval mode outputs agree with the unfused model to float rounding.
    """
    unfused = sum(1 for m in model.modules() if isinstance(m, Conv) and m.bn is not None)
    fuse_conv_bn(model)
    return unfused
