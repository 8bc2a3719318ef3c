"""firstconv: the first convolution takes raw 0..255 pixels and normalises them itself.

What the MLU does
-----------------
With ``firstconv=True`` Cambricon's quantizer marks the first ``nn.Conv2d`` it swaps (module order) as the
first conv, refuses it unless it has 1, 3 or 4 input channels, and stores ``input_mean = mean*255`` and
``input_std = std*255`` with it. On the device that layer computes
``conv((x - input_mean) / input_std)`` on raw pixels x in 0..255: normalise first, then the ordinary
convolution with its *zero padding applied to the normalised input* (``modules/conv.py`` of
Cambricon/catch). Calibration happens on the CPU with normalised images, so the first conv's input
scale is the scale of the normalised input.

Folding it into the weights
---------------------------
`fold_first_conv` rewrites the float model the same way: with n = (x - 255*m) / (255*s) per channel c,

    conv(n)[o] = sum_c,i,j W[o,c,i,j] * (x[c] - 255*m_c) / (255*s_c) + b[o]
               = sum_c,i,j W'[o,c,i,j] * x[c] + b'[o],   W' = W / (255*s_c),
                                                          b' = b - sum_c,i,j W[o,c,i,j] * m_c / s_c.

That identity holds where the kernel reads real pixels. Where it reads padding it does not: the device
pads n with 0, which is the raw value 255*m_c, while a folded conv with zero padding would pad x with 0
(n = -m_c/s_c). So the folded layer pads the raw input with 255*m_c per channel instead (and the conv
itself then pads nothing): exact everywhere, borders included. With mean 0 (YOLOv5's) the two paddings
coincide.

This module also holds the check shared with calibration and emulation (`check_first_conv`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yolomlu.quant.qconfig import FIRSTCONV_CHANNELS

__all__ = ["FoldedFirstConv", "check_first_conv", "first_conv", "fold_first_conv", "normalize"]


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """(name, module) of the first nn.Conv2d in `named_modules` order: the layer Cambricon treats as
    the first conv (it swaps modules in that order). ValueError if the model has no Conv2d."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ValueError(f"{type(model).__name__} has no nn.Conv2d: firstconv needs a first convolution")


def check_first_conv(model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> tuple[str, nn.Conv2d]:
    """The first conv, if firstconv can apply to it with this mean/std; ValueError saying why not.

    Its input channels must be 1, 3 or 4 (the MLU's first-conv operator: gray, RGB, RGBA), and mean and
    std must have one value per input channel.
    """
    name, conv = first_conv(model)
    if conv.in_channels not in FIRSTCONV_CHANNELS:
        raise ValueError(
            f"firstconv needs the first conv ({name}) to take 1, 3 or 4 input channels (gray, RGB, RGBA); it takes "
            f"{conv.in_channels}. A v5.0 Focus stem stacks the 4 pixel phases of RGB into 12 channels: set "
            f"transforms.focus_to_conv=true (Focus -> the equivalent 6x6 stride-2 conv on 3 channels), or "
            f"quant.firstconv=false"
        )
    if len(mean) != conv.in_channels or len(std) != conv.in_channels:
        raise ValueError(
            f"firstconv: mean={list(mean)} and std={list(std)} need one value per input channel of the first conv "
            f"({name}), which takes {conv.in_channels}"
        )
    return name, conv


def _per_channel(values: Sequence[float], like: Tensor) -> Tensor:
    return torch.tensor(list(values), dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(x - mean) / std per channel: float [B, C, H, W] -> same shape and dtype.

    mean, std: C values in the units of x. For x = raw/255 (the job's 0..1 input) and Cambricon's
    fractions-of-255 mean/std this equals the device's (raw - mean*255) / (std*255).
    """
    return (x - _per_channel(mean, x)) / _per_channel(std, x)


class FoldedFirstConv(nn.Conv2d):
    """A first conv with the input normalisation folded in: takes raw 0..255 pixels.

    forward: float [B, C, H, W] raw pixels -> the output of the original conv on
    (x - 255*mean) / (255*std), borders included. The raw input is padded with `pad_value`
    (255*mean per channel, i.e. normalised 0) and the convolution itself pads nothing.

    Buffers: pad_value float [C] (persistent: part of the layer's function). `raw_padding` keeps the
    original (ph, pw).
    """

    def __init__(self, conv: nn.Conv2d, mean: Sequence[float], std: Sequence[float]) -> None:
        if conv.groups != 1:
            raise ValueError(f"fold_first_conv supports groups=1 only, got groups={conv.groups}")
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(
                f"fold_first_conv needs numeric zero padding, got padding={conv.padding!r}, "
                f"padding_mode={conv.padding_mode!r}"
            )
        w = conv.weight.detach()
        super().__init__(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation, 1,
            bias=True, device=w.device, dtype=w.dtype,
        )  # fmt: skip
        self.raw_padding: tuple[int, int] = tuple(conv.padding)  # type: ignore[assignment]
        m = torch.tensor(list(mean), dtype=torch.float64, device=w.device)
        s = torch.tensor(list(std), dtype=torch.float64, device=w.device)
        w64 = w.double()
        b64 = torch.zeros(conv.out_channels, dtype=torch.float64, device=w.device)
        if conv.bias is not None:
            b64 = conv.bias.detach().double()
        with torch.no_grad():
            self.weight.copy_(w64 / (255.0 * s).view(1, -1, 1, 1))
            self.bias.copy_(b64 - (w64 * (m / s).view(1, -1, 1, 1)).sum(dim=(1, 2, 3)))
        self.register_buffer("pad_value", (255.0 * m).to(w.dtype))
        self.weight.requires_grad_(conv.weight.requires_grad)
        self.train(conv.training)

    def forward(self, x: Tensor) -> Tensor:
        ph, pw = self.raw_padding
        if ph or pw:
            b, c, h, w = x.shape
            padded = self.pad_value.to(x.dtype).view(1, c, 1, 1).expand(b, c, h + 2 * ph, w + 2 * pw).clone()
            padded[..., ph : ph + h, pw : pw + w] = x
            x = padded
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, raw_padding={self.raw_padding}, pad_value={self.pad_value.tolist()}"


@torch.no_grad()
def fold_first_conv(model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
    """Fold (x - mean*255) / (std*255) into the first conv of `model`, in place: the model then takes
    raw 0..255 pixels [B, C, H, W] where it took normalised input (for YOLOv5, mean 0 and std 1: where
    it took x / 255).

    mean, std: fractions of 255, one per input channel (Cambricon's qconfig units), std > 0.
    Refuses (ValueError) a first conv without 1, 3 or 4 input channels (the v5.0 Focus stem has 12:
    apply the Focus->Conv transform first), a grouped one, or one with non-zero padding modes. The
    layer keeps its name; its state dict gains `pad_value`. This is a float rewrite for a device that
    takes raw pixels; calibrate and quantize the unfolded model (with firstconv=true) instead.
    """
    if any(not (0 < v <= 1) for v in std) or any(not (0 <= v <= 1) for v in mean):
        raise ValueError(f"fold_first_conv: mean={list(mean)} must lie in [0, 1] and std={list(std)} in (0, 1]")
    name, conv = check_first_conv(model, mean, std)
    if not name:
        raise ValueError("fold_first_conv rewrites the first conv inside a model; the model itself is the conv")
    if isinstance(conv, FoldedFirstConv):
        raise ValueError(f"the first conv ({name}) is already folded")
    if type(conv) is not nn.Conv2d:
        raise ValueError(
            f"the first conv ({name}) is a {type(conv).__name__}; fold the float model before quantizing it"
        )
    folded = FoldedFirstConv(conv, mean, std)
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, folded)
