import json
from pathlib import Path

import numpy as np
import pytest

from yolomlu.evaluate.coco_eval import METRIC_NAMES, evaluate_coco, to_coco_results
from yolomlu.types import Detections


@pytest.fixture
def ann_file(tmp_path: Path) -> Path:
    """Two images, three objects of two categories (ids 3 and 7, so the mapping matters)."""
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 100}, {"id": 2, "file_name": "b.jpg", "width": 200, "height": 100}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 50, 40], "area": 2000, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [100, 20, 60, 60], "area": 3600, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 7, "bbox": [0, 0, 120, 90], "area": 10800, "iscrowd": 0},
        ],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def det(boxes, scores, labels) -> Detections:
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), np.array(labels, np.int64))


def test_results_are_xywh_with_mapped_category_ids() -> None:
    results = to_coco_results({5: det([[10, 20, 40, 60]], [0.9], [1])}, category_ids=[3, 7])
    assert results == [{"image_id": 5, "category_id": 7, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.9}]


def test_perfect_predictions_score_one(ann_file: Path) -> None:
    preds = {
        1: det([[10, 10, 60, 50], [100, 20, 160, 80]], [0.9, 0.8], [0, 1]),
        2: det([[0, 0, 120, 90]], [0.7], [1]),
    }
    result = evaluate_coco(ann_file, preds, category_ids=[3, 7])
    assert set(result.metrics) == set(METRIC_NAMES)
    assert result.metrics["map50_95"] == pytest.approx(1.0)
    assert result.metrics["map50"] == pytest.approx(1.0)
    assert list(result.per_class["name"]) == ["cat", "dog"]
    assert list(result.per_class["n_gt"]) == [1, 2]
    assert result.n_detections == 3


def test_an_instances_file_with_a_utf8_bom_scores_as_without(ann_file: Path) -> None:
    # Editors on Windows write one; pycocotools' own COCO(path) would fail on it after the model ran.
    ann_file.write_bytes(b"\xef\xbb\xbf" + ann_file.read_bytes())
    preds = {1: det([[10, 10, 60, 50], [100, 20, 160, 80]], [0.9, 0.8], [0, 1]), 2: det([[0, 0, 120, 90]], [0.7], [1])}
    assert evaluate_coco(ann_file, preds, category_ids=[3, 7]).metrics["map50_95"] == pytest.approx(1.0)


def test_wrong_class_halves_the_mean(ann_file: Path) -> None:
    preds = {
        # the cat called a dog, with the lowest score: a false positive ranked after every true dog
        1: det([[10, 10, 60, 50], [100, 20, 160, 80]], [0.1, 0.8], [1, 1]),
        2: det([[0, 0, 120, 90]], [0.7], [1]),
    }
    result = evaluate_coco(ann_file, preds, category_ids=[3, 7])
    per_class = dict(zip(result.per_class["name"], result.per_class["ap50_95"]))
    assert per_class["cat"] == 0.0
    assert per_class["dog"] == pytest.approx(1.0)
    assert result.metrics["map50_95"] == pytest.approx(0.5)


def test_no_detections_scores_zero(ann_file: Path) -> None:
    result = evaluate_coco(ann_file, {1: Detections.empty(), 2: Detections.empty()}, category_ids=[3, 7])
    assert result.metrics["map50_95"] == 0.0 and result.n_detections == 0


def test_classes_without_a_category_score_nothing(ann_file: Path) -> None:
    # An 80-class model on a 2-category set: its classes 2..79 have no category and are left out.
    predictions = {1: det([[10, 10, 60, 50], [100, 20, 160, 80], [0, 0, 5, 5]], [0.9, 0.8, 0.99], [0, 1, 57])}
    results = to_coco_results(predictions, [3, 7])
    assert [r["category_id"] for r in results] == [3, 7]
    scored = evaluate_coco(ann_file, predictions, [3, 7])
    assert scored.n_detections == 2 and scored.metrics["map50"] > 0
