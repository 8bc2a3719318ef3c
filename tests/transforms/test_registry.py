"""The transform registry: every name works and is idempotent; unknown names fail before anything changes."""

from __future__ import annotations

import pytest
import torch

import yolomlu.transforms as transforms
from yolomlu.model import fuse_conv_bn
from yolomlu.transforms import TRANSFORMS, apply_transforms, get_transform


def test_registered_names():
    assert sorted(TRANSFORMS) == ["focus_to_conv", "fuse", "spp_to_sppf"]
    for name, fn in TRANSFORMS.items():
        assert get_transform(name) is fn


def test_public_names_resolve():
    assert all(hasattr(transforms, name) for name in transforms.__all__)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_each_transform_rewrites_once_then_finds_nothing(yolov5n, name):
    model = yolov5n("v5")
    first = get_transform(name)(model)
    assert isinstance(first, int) and first > 0
    assert get_transform(name)(model) == 0


def test_fuse_is_the_model_packages_fusion(yolov5n):
    ours, theirs = yolov5n("v5"), fuse_conv_bn(yolov5n("v5"))
    get_transform("fuse")(ours)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_name_lists_the_known_ones_and_changes_nothing(yolov5n):
    model = yolov5n("v5")
    keys = list(model.state_dict())
    known = r"\['focus_to_conv', 'fuse', 'spp_to_sppf'\]"
    with pytest.raises(ValueError, match=rf"unknown transform 'fuse_bn'; known: {known}"):
        apply_transforms(model, ["focus_to_conv", "fuse_bn"], None)
    assert list(model.state_dict()) == keys  # the valid name before it was not applied either
    with pytest.raises(ValueError, match="unknown transform"):
        get_transform("Focus")


def test_a_single_string_is_not_a_list_of_names(yolov5n):
    with pytest.raises(TypeError, match="single string 'fuse'"):
        apply_transforms(yolov5n("v5"), "fuse", None)
