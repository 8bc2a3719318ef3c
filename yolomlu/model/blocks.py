"""YOLOv5 building blocks.

Attribute names (`conv`, `bn`, `act`, `cv1`, `cv2`, `cv3`, `m`) follow the official YOLOv5 modules so
that state-dict keys match the published checkpoints (`model.2.cv1.conv.weight`, ...). Every tensor here
is float NCHW; `c1` is the input channel count and `c2` the output channel count of a block.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Conv", "Focus", "Bottleneck", "C3", "SPP", "SPPF", "Concat", "autopad"]

# YOLOv5 trains its BatchNorms with these settings (not PyTorch's 1e-5 / 0.1). eps matters beyond
# training: Conv+BN fusion folds it into the weights, so it must match the checkpoint's.
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def autopad(k: int, p: int | None = None) -> int:
    """Padding that keeps the spatial size at stride 1 ('same' for odd kernels): k // 2 unless given."""
    return k // 2 if p is None else p


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> SiLU.

    [B, c1, H, W] -> [B, c2, ceil(H / s), ceil(W / s)] for the default padding.

    `act`: True for a fresh SiLU, False for none, or a module to use as the activation. Each instance
    owns its activation module (no class-wide default to mutate).

    After `yolomlu.model.fuse.fuse_conv_bn`, `conv` carries a bias and `bn` is None; forward skips it.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 1,
        s: int = 1,
        p: int | None = None,
        g: int = 1,
        act: bool | nn.Module = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn: nn.BatchNorm2d | None = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)
        if isinstance(act, nn.Module):
            self.act = act
        else:
            self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)


class Focus(nn.Module):
    """Space-to-depth then a Conv (the v5.0 stem).

    [B, c1, H, W] -> [B, 4*c1, H/2, W/2] -> Conv -> [B, c2, H/2/s, W/2/s]. H and W must be even.
    The four pixel phases are stacked in the order (row, col) = (0,0), (1,0), (0,1), (1,1), which is
    what published checkpoints expect of the 12 input channels of `conv`.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 1,
        s: int = 1,
        p: int | None = None,
        g: int = 1,
        act: bool | nn.Module = True,
    ) -> None:
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act)

    def forward(self, x: Tensor) -> Tensor:
        phases = (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2])
        return self.conv(torch.cat(phases, dim=1))


class Bottleneck(nn.Module):
    """1x1 Conv -> 3x3 Conv, plus the input when `shortcut` and the channel counts agree.

    [B, c1, H, W] -> [B, c2, H, W]; hidden width int(c2 * e).
    """

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block with three convs: two 1x1 branches, `n` Bottlenecks on one, concat, 1x1 merge.

    [B, c1, H, W] -> [B, c2, H, W]; each branch is int(c2 * e) wide.
    """

    def __init__(
        self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5
    ) -> None:
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(c1, hidden, 1, 1)
        self.cv3 = Conv(2 * hidden, c2, 1, 1)
        # The inner Bottlenecks keep their full width (e=1.0), as in the published models.
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), dim=1))


class SPP(nn.Module):
    """Spatial pyramid pooling (v5.0): 1x1 Conv, parallel stride-1 max pools, concat, 1x1 Conv.

    [B, c1, H, W] -> [B, c2, H, W]; the concat is c1 // 2 * (len(k) + 1) channels wide.
    """

    def __init__(self, c1: int, c2: int, k: Sequence[int] = (5, 9, 13)) -> None:
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=size, stride=1, padding=size // 2) for size in k)

    def forward(self, x: Tensor) -> Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x, *(pool(x) for pool in self.m)], dim=1))


class SPPF(nn.Module):
    """SPP with one k x k pool applied three times in series (v6.0+).

    Pooling twice with k=5 equals one 9x9 pool and three times one 13x13 pool, so SPPF(5) computes the
    same function as SPP((5, 9, 13)) at lower cost. [B, c1, H, W] -> [B, c2, H, W].
    """

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(hidden * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), dim=1))


class Concat(nn.Module):
    """Concatenate a list of tensors along `dimension` (channels by default)."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, xs: list[Tensor]) -> Tensor:
        return torch.cat(xs, dim=self.d)
