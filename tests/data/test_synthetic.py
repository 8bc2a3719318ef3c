import contextlib
import io
import json

import numpy as np
import pytest

from yolomlu.data import synthetic
from yolomlu.data.coco import CocoDataset, DataError
from yolomlu.data.synthetic import SHAPE_CLASSES, dataset_stats, ensure_shapes, generate_shapes

from .conftest import write_coco


@pytest.fixture(scope="module")
def shapes64(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes64")
    return root, generate_shapes(root, 64, img_size=320, seed=0)


def test_layout_and_loads_as_coco_dataset(shapes64):
    root, ann = shapes64
    assert ann == root / "annotations" / "instances_val.json"
    ds = CocoDataset.from_root(root)
    assert len(ds) == 64 and [c["name"] for c in ds.categories] == list(SHAPE_CLASSES)
    img = ds.load_image(ds.image_ids[0])
    info = ds.image_info(ds.image_ids[0])
    assert img.shape == (info["height"], info["width"], 3)


def test_difficulty_mix_and_counts(shapes64):
    _, ann = shapes64
    s = dataset_stats(ann)
    assert s["n_images"] == 64
    assert s["objects_per_image_min"] >= 2 and s["objects_per_image_max"] <= 10
    assert s["frac_small"] >= 0.2 and s["frac_large"] >= 0.2
    assert s["frac_small"] + s["frac_medium"] + s["frac_large"] == pytest.approx(1.0)
    assert all(s[f"count_{n}"] > 0 for n in SHAPE_CLASSES)
    assert sum(s[f"count_{n}"] for n in SHAPE_CLASSES) == s["n_objects"]


def test_annotations_are_well_formed(shapes64):
    _, ann = shapes64
    data = json.loads(ann.read_text())
    sizes = {(im["width"], im["height"]) for im in data["images"]}
    assert len(sizes) > 10  # sizes vary, so letterbox matters
    assert all(288 <= w <= 352 and 288 <= h <= 352 for w, h in sizes)
    dims = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        W, H = dims[a["image_id"]]
        assert w >= 1 and h >= 1 and x >= 0 and y >= 0 and x + w <= W and y + h <= H
        assert a["area"] == w * h and a["iscrowd"] == 0 and 1 <= a["category_id"] <= 6
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])


def test_pycocotools_scores_ground_truth_as_perfect(shapes64):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _, ann = shapes64
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints
        gt = COCO(str(ann))
        dets = [
            {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt.dataset["annotations"]
        ]
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ap, ap50, ap_s, ap_m, ap_l = ev.stats[0], ev.stats[1], ev.stats[3], ev.stats[4], ev.stats[5]
    assert ap == pytest.approx(1.0) and ap50 == pytest.approx(1.0)
    assert ap_s == pytest.approx(1.0) and ap_m == pytest.approx(1.0) and ap_l == pytest.approx(1.0)


def test_deterministic_and_prefix_stable(tmp_path):
    a = generate_shapes(tmp_path / "a", 3, img_size=160, seed=5)
    b = generate_shapes(tmp_path / "b", 3, img_size=160, seed=5)
    c = generate_shapes(tmp_path / "c", 2, img_size=160, seed=5)
    d = generate_shapes(tmp_path / "d", 2, img_size=160, seed=6)
    assert a.read_bytes() == b.read_bytes()
    for name in ("val_000001.jpg", "val_000002.jpg", "val_000003.jpg"):
        assert (tmp_path / "a/images" / name).read_bytes() == (tmp_path / "b/images" / name).read_bytes()
    ja, jc, jd = (json.loads(p.read_text()) for p in (a, c, d))
    assert ja["images"][:2] == jc["images"]
    assert [x for x in ja["annotations"] if x["image_id"] <= 2] == jc["annotations"]
    assert (tmp_path / "a/images/val_000001.jpg").read_bytes() != (tmp_path / "d/images/val_000001.jpg").read_bytes()
    assert jd["annotations"] != jc["annotations"]


def test_split_changes_content_and_names(tmp_path):
    generate_shapes(tmp_path, 1, img_size=160, split="val")
    generate_shapes(tmp_path, 1, img_size=160, split="train")
    v, t = (tmp_path / "images" / f"{s}_000001.jpg" for s in ("val", "train"))
    assert v.read_bytes() != t.read_bytes()


def test_refuses_to_overwrite_and_bad_args(tmp_path):
    generate_shapes(tmp_path, 1, img_size=160)
    with pytest.raises(DataError, match="instances_val.json already exists"):
        generate_shapes(tmp_path, 1, img_size=160)
    with pytest.raises(ValueError, match="img_size"):
        generate_shapes(tmp_path / "x", 1, img_size=64)
    with pytest.raises(ValueError, match="split"):
        generate_shapes(tmp_path / "x", 1, split="../evil")


def test_ensure_shapes_caches_by_arguments(tmp_path, monkeypatch):
    root = ensure_shapes(tmp_path, 2, img_size=160, seed=1)
    assert (root / ".complete").is_file() and len(list((root / "images").glob("*.jpg"))) == 2
    assert root.parent == tmp_path and root.name.startswith("shapes_val_2x160_seed1_")

    def boom(*a, **k):
        raise AssertionError("must reuse the cache")

    monkeypatch.setattr(synthetic, "generate_shapes", boom)
    assert ensure_shapes(tmp_path, 2, img_size=160, seed=1) == root
    monkeypatch.undo()
    other = ensure_shapes(tmp_path, 2, img_size=160, seed=2)
    assert other != root
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left
    assert len(CocoDataset.from_root(other)) == 2


def test_ensure_shapes_crash_leaves_nothing(tmp_path, monkeypatch):
    real = synthetic.generate_shapes

    def crash(root, *a, **k):
        real(root, 1, img_size=160)  # half the work done...
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(synthetic, "generate_shapes", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_shapes(tmp_path, 2, img_size=160)
    assert list(tmp_path.iterdir()) == []


def test_ensure_shapes_refuses_foreign_incomplete_folder(tmp_path):
    root = ensure_shapes(tmp_path, 1, img_size=160)
    (root / ".complete").unlink()
    with pytest.raises(DataError, match="incomplete"):
        ensure_shapes(tmp_path, 1, img_size=160)


def test_dataset_stats_hand_computed(tmp_path):
    ann = write_coco(
        tmp_path,
        annotations=[
            {"id": 1, "image_id": 7, "category_id": 2, "bbox": [0, 0, 10, 10], "area": 100},  # small
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 32, 32], "area": 1024},  # medium
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [0, 0, 97, 96], "area": 9312},  # large
            {"id": 4, "image_id": 7, "category_id": 1, "bbox": [0, 0, 96, 96], "area": 9216},  # medium
        ],
    )
    s = dataset_stats(ann)
    assert s["n_images"] == 2 and s["n_objects"] == 4
    assert (s["objects_per_image_min"], s["objects_per_image_mean"], s["objects_per_image_max"]) == (0, 2.0, 4)
    assert (s["frac_small"], s["frac_medium"], s["frac_large"]) == (0.25, 0.5, 0.25)
    assert s["count_cat"] == 3 and s["count_dog"] == 1


def test_boxes_tight_and_objects_visible():
    # Render directly and check what the annotations rely on: each box is exactly the extent of the
    # object's visible pixels, and every object keeps >= 40 % of its pixels visible.
    seen = 0
    for i in range(6):
        rng = np.random.default_rng([0, 1, i])
        image, objects, owner = synthetic._render_image(rng, 320)
        assert image.dtype == np.uint8 and image.shape[:2] == owner.shape and 2 <= len(objects) <= 10
        for j, obj in enumerate(objects):
            ys, xs = np.nonzero(owner == j)
            x, y, w, h = obj["bbox"]
            assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
            assert obj["visible"] >= synthetic.MIN_VISIBLE
            seen += 1
    assert seen >= 12


def test_stats_of_a_subset_count_only_its_images(tmp_path) -> None:
    from yolomlu.data.coco import CocoDataset
    from yolomlu.data.synthetic import dataset_stats, ensure_shapes

    dataset = CocoDataset.from_root(ensure_shapes(tmp_path, n_images=6, img_size=128, seed=3))
    part = dataset.subset(2)
    stats = dataset_stats(part.ann_file, image_ids=part.image_ids)
    assert stats["n_images"] == 2
    assert stats["n_objects"] == sum(len(part.annotations(i)) for i in part.image_ids)
