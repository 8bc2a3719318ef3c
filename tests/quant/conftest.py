"""Shared inputs for the quantization tests: a tiny YOLOv5 (v5.0 blocks, n size, 6 classes) at 64 px.

BatchNorms get trained-like random statistics before fusion, so activations have the spread of a real
network rather than the near-constant outputs of fresh BN layers.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from yolomlu.model import YOLOv5, build_yolov5
from yolomlu.transforms import focus_to_conv, fuse

IMG = 64


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread for these tiny 64 px models, restored after each module: with busy cores,
    two spinning threads made the sensitivity table ~25x slower. Results do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _randomise_bn(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))


def _tiny(seed: int = 0, focus_as_conv: bool = False) -> YOLOv5:
    torch.manual_seed(seed)
    model = build_yolov5("v5", 0.33, 0.25, nc=6).eval()
    _randomise_bn(model, seed)
    if focus_as_conv:
        focus_to_conv(model)
    fuse(model)
    return model


@pytest.fixture(scope="session")
def tiny_model_base() -> YOLOv5:
    return _tiny()


@pytest.fixture
def tiny_model(tiny_model_base: YOLOv5) -> YOLOv5:
    """A fused float v5 model (Focus stem), fresh copy per test."""
    return copy.deepcopy(tiny_model_base)


@pytest.fixture(scope="session")
def tiny_conv_model_base() -> YOLOv5:
    return _tiny(focus_as_conv=True)


@pytest.fixture
def tiny_conv_model(tiny_conv_model_base: YOLOv5) -> YOLOv5:
    """The same with Focus rewritten as a 6x6 stride-2 conv (3 input channels), fresh copy per test."""
    return copy.deepcopy(tiny_conv_model_base)


@pytest.fixture(scope="session")
def images() -> Tensor:
    """float [4, 3, 64, 64] in 0..1 (smooth random images: what a job feeds, value-wise)."""
    g = torch.Generator().manual_seed(1)
    coarse = torch.rand(4, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(IMG, IMG), mode="bilinear", align_corners=False).clamp(0, 1)
