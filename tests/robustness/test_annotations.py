"""Bad COCO instances files and folders, through task=evaluate (``data=coco data.root=<folder>``).

Every case is the module's two-image set with one thing wrong. A bad instances file is refused when
the job loads its data (after the run opened: one FAILED run) naming the file, the entry and what it
should hold; a set with fewer categories than the model has classes evaluates.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest

from .battery import JOB, coco_folder, finished, instances, random_image, verdict

FILES = ["a.jpg", "b.jpg"]
IMAGES = {name: random_image(seed) for seed, name in enumerate(FILES)}
ANN = "annotations/instances.json"


_DROP = object()


def _edited(*path, value=_DROP) -> dict:
    """The module's instances dict with the entry at ``path`` set to ``value``, or removed."""
    data = copy.deepcopy(instances(FILES))
    node = data
    for part in path[:-1]:
        node = node[part]
    if value is _DROP:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


# case -> (instances: a dict, or the file's bytes; what the message must say besides the file)
BAD = {
    "not-json": (b'{"images": [{"id": 1, "file_name": "a.jpg"}', "is not valid JSON"),
    "top-level-list": (b"[1, 2, 3]", "top level must be a JSON object, got list"),
    "missing-annotations-key": (_edited("annotations"), "missing key(s) ['annotations']"),
    "images-not-a-list": (_edited("images", value={"1": "a.jpg"}), "'images' must be a list, got dict"),
    "no-images": (_edited("images", value=[]), "'images' is empty"),
    "image-without-file-name": (_edited("images", 1, "file_name"), "images[1] needs an integer 'id' and a string 'file_name'"),
    "duplicate-image-id": (_edited("images", 1, "id", value=1), "duplicate image id 1 (images[1])"),
    "dangling-image-id": (_edited("annotations", 1, "image_id", value=99), "annotations[1] (id 2) has image_id 99, which is not in 'images'"),
    "dangling-category-id": (_edited("annotations", 0, "category_id", value=7), "annotations[0] (id 1) has category_id 7, which is not in 'categories' (ids [1])"),
    "negative-box": (_edited("annotations", 0, "bbox", value=[4, 4, -10, 8]), "annotations[0] (id 1) has bbox [4, 4, -10, 8]; expected 4 numbers [x, y, w, h]"),
    "zero-size-box": (_edited("annotations", 1, "bbox", value=[4, 4, 0, 8]), "annotations[1] (id 2) has bbox [4, 4, 0, 8]; expected 4 numbers [x, y, w, h]"),
    "annotation-without-id": (_edited("annotations", 0, "id"), "annotations[0] needs an integer 'id'"),
    "duplicate-annotation-id": (_edited("annotations", 1, "id", value=1), "annotations[1] (id 1) has the id of annotations[0]"),
    "annotation-without-area": (_edited("annotations", 1, "area"), "annotations[1] (id 2) needs 'area'"),
    "annotation-without-iscrowd": (_edited("annotations", 0, "iscrowd"), "annotations[0] (id 1) needs 'iscrowd'"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_a_bad_instances_file_fails_the_job_naming_the_entry(case, run_job, tmp_path: Path) -> None:
    ann, says = BAD[case]
    root = coco_folder(tmp_path / "set", IMAGES, ann)
    verdict(run_job([*JOB, "data=coco", f"data.root={root}"]), status=1, names=[str(root / ANN)], valid=[says], run="FAILED")


def test_an_image_file_missing_from_the_folder_is_named(run_job, tmp_path: Path) -> None:
    root = coco_folder(tmp_path / "set", {"a.jpg": None, "b.jpg": IMAGES["b.jpg"]})
    outcome = run_job([*JOB, "data=coco", f"data.root={root}"])
    verdict(outcome, status=1, names=[str(root / "images" / "a.jpg")], valid=["image file not found"], run="FAILED")


def test_a_folder_without_an_instances_file_says_where_it_looked(run_job, tmp_path: Path) -> None:
    root = coco_folder(tmp_path / "set", IMAGES)
    (root / ANN).rename(root / "annotations" / "labels.json")
    outcome = run_job([*JOB, "data=coco", f"data.root={root}"])
    looked = [str(root / "annotations" / "instances_*.json"), str(root / ANN), str(root / "instances.json")]
    verdict(outcome, status=1, names=[str(root)], valid=[f"no COCO instances file in {root}: looked for {', '.join(looked)}"], run="FAILED")


def test_a_folder_with_several_instances_files_names_them(run_job, tmp_path: Path) -> None:
    root = coco_folder(tmp_path / "set", IMAGES)
    (root / "annotations" / "instances_train.json").write_text(json.dumps(instances(FILES)))
    outcome = run_job([*JOB, "data=coco", f"data.root={root}"])
    names = [str(root / "annotations" / "instances_train.json"), str(root / ANN)]
    verdict(outcome, status=1, names=names, valid=["keep only the one to evaluate"], run="FAILED")


def test_more_categories_than_the_model_has_classes_is_refused(run_job, tmp_path: Path) -> None:
    categories = [{"id": i, "name": f"c{i}"} for i in range(1, 8)]
    root = coco_folder(tmp_path / "set", IMAGES, instances(FILES, categories))
    outcome = run_job([*JOB, "model=demo", "data=coco", f"data.root={root}"])
    verdict(outcome, status=1, names=["7 categories (c1, c2, c3, c4, c5, c6, c7)"], valid=["a model of at least 7 classes"], run="FAILED")


def test_a_missing_dataset_folder_is_named(run_job, tmp_path: Path) -> None:
    outcome = run_job([*JOB, "data=coco", f"data.root={tmp_path / 'nowhere'}"])
    verdict(outcome, status=1, names=[str(tmp_path / "nowhere")], valid=["dataset root not found"], run="FAILED")


@pytest.mark.parametrize("model", ["yolov5n_v5-80-classes", "demo-6-classes"])
def test_fewer_categories_than_classes_evaluates(model, run_job, weights_80: Path, tmp_path: Path) -> None:
    """One category, an 80-class (or the 6-class demo) model: the classes without a category score
    nothing and are left out; the one category is scored."""
    root = coco_folder(tmp_path / "set", IMAGES)
    chosen = [f"model.weights={weights_80}"] if model.startswith("yolov5n_v5") else ["model=demo"]
    run = finished(run_job([*JOB, *chosen, "data=coco", f"data.root={root}"]))
    assert run["tags"]["accuracy"] == "measured" and 0.0 <= run["metrics"]["map50_95"] <= 1.0
    per_class = pd.read_csv(run["artifacts"] / "per_class_ap.csv")
    assert list(per_class["name"]) == ["thing"] and list(per_class["n_gt"]) == [2]


def test_an_instances_file_with_a_utf8_bom_evaluates(run_job, weights_80: Path, tmp_path: Path) -> None:
    """Weights from a file, so that pycocotools reads the file too (it used to open it as text)."""
    root = coco_folder(tmp_path / "set", IMAGES, b"\xef\xbb\xbf" + json.dumps(instances(FILES)).encode())
    run = finished(run_job([*JOB, f"model.weights={weights_80}", "data=coco", f"data.root={root}"]))
    assert run["tags"]["accuracy"] == "measured" and "map50_95" in run["metrics"]


def test_a_bad_instances_file_on_the_command_line(run_command, tmp_path: Path) -> None:
    ann, says = BAD["dangling-category-id"]
    root = coco_folder(tmp_path / "set", IMAGES, ann)
    outcome = run_command(*JOB, "data=coco", f"data.root={root}")
    verdict(outcome, status=1, names=[str(root / ANN)], valid=[says], run="FAILED")
    assert outcome.stderr.strip().splitlines()[-1] == outcome.message
