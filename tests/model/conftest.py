"""Shared, cached model measurements: building the large sizes is the slow part of these tests."""

from __future__ import annotations

from functools import lru_cache

import pytest

from yolomlu.model import SIZES, build_yolov5, fuse_conv_bn, summarize
from yolomlu.model.summary import ModelSummary


@lru_cache(maxsize=None)
def fused_summary(arch: str, size: str) -> ModelSummary:
    """Summary (640 px) of the fused model; the model itself is dropped to keep memory low."""
    model = fuse_conv_bn(build_yolov5(arch, *SIZES[size]))
    return summarize(model, img_size=640)


@pytest.fixture
def summary_of():
    return fused_summary
