"""The training loader and a whole (tiny) training run."""

from __future__ import annotations

import math

import pytest
import torch

from yolomlu.data.coco import CocoDataset
from yolomlu.data.letterbox import letterbox
from yolomlu.data.synthetic import ensure_shapes
from yolomlu.model import SIZES, build_yolov5
from yolomlu.train import Augment, TrainSet, TrainSettings, collate, param_groups, train


@pytest.fixture(scope="module")
def shapes8(tmp_path_factory) -> CocoDataset:
    root = ensure_shapes(tmp_path_factory.mktemp("cache"), n_images=8, img_size=128, seed=3, split="train")
    return CocoDataset.from_root(root)


def test_plain_sample_is_the_letterbox(shapes8):
    samples = TrainSet(shapes8, 64, nc=6, augment=Augment.off())
    image, labels = samples[0]
    image_id = shapes8.image_ids[0]
    expected, info = letterbox(shapes8.load_image(image_id), 64)
    assert image.dtype == torch.uint8 and image.shape == (3, 64, 64)
    assert torch.equal(image.permute(1, 2, 0), torch.from_numpy(expected))
    anns = shapes8.annotations(image_id)
    kept = [a for a in anns if min(a["bbox"][2], a["bbox"][3]) * info.ratio > 2]
    assert labels.shape == (len(kept), 5)
    x, y, w, h = kept[0]["bbox"]
    cx = ((x + w / 2) * info.ratio + info.pad[0]) / 64
    cy = ((y + h / 2) * info.ratio + info.pad[1]) / 64
    assert labels[0].tolist() == pytest.approx([kept[0]["category_id"] - 1, cx, cy, w * info.ratio / 64, h * info.ratio / 64], abs=1e-5)


def test_augmented_samples_are_valid_and_reproducible(shapes8):
    samples = TrainSet(shapes8, 64, nc=6, augment=Augment(mosaic=0.5), seed=1)
    for i in range(len(samples)):
        image, labels = samples[i]
        assert image.shape == (3, 64, 64)
        assert ((labels[:, 1:] >= 0) & (labels[:, 1:] <= 1)).all()
        assert (labels[:, 3:] > 0).all() and set(labels[:, 0].tolist()) <= set(range(6))
    again = TrainSet(shapes8, 64, nc=6, augment=Augment(mosaic=0.5), seed=1, cache=False)
    assert torch.equal(samples[5][0], again[5][0]) and torch.equal(samples[5][1], again[5][1])
    samples.set_epoch(1)
    assert not torch.equal(samples[5][0], again[5][0])  # a new epoch draws new augmentations

    images, targets = collate([samples[0], samples[1]])
    assert images.dtype == torch.float32 and images.shape == (2, 3, 64, 64) and images.max() <= 1
    assert targets.shape[1] == 6 and set(targets[:, 0].tolist()) <= {0.0, 1.0}


def test_param_groups_split_decay():
    model = build_yolov5("v5", *SIZES["n"], nc=6)
    bn, weights, biases = param_groups(model)
    assert len(bn) + len(weights) + len(biases) == len(list(model.parameters()))
    assert all(p.ndim == 1 for p in bn + biases) and all(p.ndim == 4 for p in weights)
    assert len(biases) == len(bn) + 3  # every BN has a bias, plus the three head convolutions


def test_one_epoch_run(shapes8):
    torch.manual_seed(0)
    model = build_yolov5("v5", *SIZES["n"], nc=6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[dict] = []
    settings = TrainSettings(epochs=1, batch_size=4, img_size=64, warmup_epochs=0.5, nominal_batch_size=None, threads=2)
    result = train(model, shapes8, settings, val_data=shapes8.subset(4), on_epoch=seen.append, progress=False)

    assert len(result.history) == 1 and seen == result.history
    record = result.history[0]
    for key in ("loss", "loss_box", "loss_obj", "loss_cls", "lr", "images_per_s", "map50_95", "map50"):
        assert math.isfinite(record[key]), key
    assert 0 <= record["map50_95"] <= 1
    assert result.best_epoch == 1 and result.best_map50_95 == record["map50_95"]
    assert not result.model.training and next(result.model.parameters()).dtype == torch.float32
    changed = [k for k, v in model.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert changed  # the optimiser stepped


def test_settings_refuse_bad_values():
    with pytest.raises(ValueError, match="epochs=0"):
        TrainSettings(epochs=0)
    with pytest.raises(ValueError, match="img_size=100"):
        TrainSettings(epochs=1, img_size=100)
    with pytest.raises(ValueError, match="augment.scale"):
        Augment(scale=1.5)


