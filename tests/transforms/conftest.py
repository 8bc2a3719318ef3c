"""Shared inputs for the transform tests: YOLOv5n models with trained-like random BN, and real-ish images.

"Real-ish" images are the project's synthetic shapes (cluttered backgrounds, textured objects),
letterboxed and scaled to 0..1 exactly as a job feeds the network, so parity is measured on the kind of
input it will be measured on in a job rather than on uniform noise.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from yolomlu.data.coco import read_image
from yolomlu.data.letterbox import letterbox
from yolomlu.data.preprocess import to_tensor_batch
from yolomlu.data.synthetic import generate_shapes
from yolomlu.model import SIZES, YOLOv5, build_yolov5

from tests.trained_like import randomise_bn, randomise_convs


@pytest.fixture(name="randomise_bn")
def randomise_bn_fixture() -> Callable[..., None]:
    """randomise_bn(module, seed=0): trained-like BN parameters and running statistics, in place."""
    return randomise_bn


@lru_cache(maxsize=None)
def _base_model(arch: str) -> YOLOv5:
    torch.manual_seed(0)
    model = build_yolov5(arch, *SIZES["n"], nc=6)
    randomise_convs(model)
    randomise_bn(model)
    return model.eval()


@pytest.fixture
def yolov5n() -> Callable[[str], YOLOv5]:
    """yolov5n(arch) -> a fresh yolov5n ('v5': Focus + SPP, 'v6': 6x6 stem + SPPF), nc=6, seeded random
    conv weights (see tests/trained_like.py) and BN statistics, eval mode. Each call returns its own copy, since
    transforms work in place."""
    return lambda arch="v5": copy.deepcopy(_base_model(arch))


@pytest.fixture(scope="session")
def shapes_images(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """Two synthetic shapes images, uint8 [h, w, 3] RGB, about 128 px a side."""
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, n_images=2, img_size=128, seed=0)
    return [read_image(p) for p in sorted((root / "images").glob("*.jpg"))]


@pytest.fixture
def real_batch(shapes_images: list[np.ndarray]) -> Callable[[int, int], Tensor]:
    """real_batch(h, w) -> float32 [2, 3, h, w] in 0..1: the shapes images letterboxed to h x w."""

    def _batch(h: int, w: int) -> Tensor:
        return to_tensor_batch([letterbox(im, (h, w))[0] for im in shapes_images])

    return _batch
