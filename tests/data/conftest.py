import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_coco(root: Path, images=None, annotations=None, categories=None, ann_name="instances_val.json"):
    """A tiny COCO dataset: root/images/*.png and root/annotations/<ann_name>. Returns the ann path."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    if images is None:
        images = [
            {"id": 7, "file_name": "b.png", "width": 8, "height": 6},
            {"id": 3, "file_name": "a.png", "width": 4, "height": 5},
        ]
    for img in images:
        arr = np.zeros((img.get("height", 4), img.get("width", 4), 3), np.uint8)
        arr[0, 0] = [img["id"], 1, 2]
        Image.fromarray(arr).save(root / "images" / img["file_name"])
    if annotations is None:
        annotations = [
            {"id": 1, "image_id": 7, "category_id": 2, "bbox": [1, 1, 3, 2], "area": 6, "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0},
            {"id": 3, "image_id": 3, "category_id": 1, "bbox": [0.5, 0, 2, 2.5], "area": 5, "iscrowd": 0},
        ]
    if categories is None:
        categories = [{"id": 2, "name": "dog"}, {"id": 1, "name": "cat"}]
    ann = root / "annotations" / ann_name
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return ann


@pytest.fixture
def coco_root(tmp_path):
    write_coco(tmp_path)
    return tmp_path
