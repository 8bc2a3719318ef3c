import json
import shutil

import numpy as np
import pytest

from yolomlu.data.coco import CocoDataset, DataError, read_image

from .conftest import write_coco


def test_loads_and_exposes_sorted_views(coco_root):
    ds = CocoDataset.from_root(coco_root)
    assert ds.image_ids == [3, 7] and len(ds) == 2
    assert [c["id"] for c in ds.categories] == [1, 2]
    assert ds.ann_file == coco_root / "annotations" / "instances_val.json"
    assert ds.image_info(7)["file_name"] == "b.png"
    assert [a["id"] for a in ds.annotations(7)] == [1, 2]
    img = ds.load_image(7)
    assert img.shape == (6, 8, 3) and img.dtype == np.uint8 and img[0, 0].tolist() == [7, 1, 2]


def test_views_are_copies(coco_root):
    ds = CocoDataset.from_root(coco_root)
    ds.annotations(7)[0]["bbox"] = None
    ds.image_info(7)["file_name"] = "x"
    assert ds.annotations(7)[0]["bbox"] == [1, 1, 3, 2] and ds.image_info(7)["file_name"] == "b.png"


def test_unknown_image_id_names_dataset(coco_root):
    ds = CocoDataset.from_root(coco_root)
    with pytest.raises(KeyError, match="image id 99"):
        ds.annotations(99)


def test_subset_first_n_writes_nothing(coco_root):
    before = sorted(p.name for p in coco_root.rglob("*"))
    ds = CocoDataset.from_root(coco_root)
    sub = ds.subset(1)
    assert sub.image_ids == [3] and len(sub) == 1 and len(ds) == 2
    with pytest.raises(KeyError):
        sub.annotations(7)
    assert sub.fingerprint() != ds.fingerprint()
    assert sorted(p.name for p in coco_root.rglob("*")) == before
    with pytest.raises(DataError, match="between 1 and 2"):
        ds.subset(3)


def test_fingerprint_is_deterministic_and_sensitive(coco_root):
    fp = CocoDataset.from_root(coco_root).fingerprint()
    assert len(fp) == 16 and fp == CocoDataset.from_root(coco_root).fingerprint()
    with open(coco_root / "images" / "a.png", "ab") as f:
        f.write(b"\0")  # image size changes -> fingerprint changes
    assert CocoDataset.from_root(coco_root).fingerprint() != fp


def test_from_root_accepts_plain_instances_json(tmp_path):
    write_coco(tmp_path)
    shutil.move(tmp_path / "annotations" / "instances_val.json", tmp_path / "instances.json")
    assert len(CocoDataset.from_root(tmp_path)) == 2


def test_from_root_uses_split_subfolder(tmp_path):
    write_coco(tmp_path, ann_name="instances_val2017.json")
    (tmp_path / "images" / "val2017").mkdir()
    for p in (tmp_path / "images").glob("*.png"):
        shutil.move(p, tmp_path / "images" / "val2017" / p.name)
    ds = CocoDataset.from_root(tmp_path)
    assert ds.images_dir == tmp_path / "images" / "val2017" and ds.load_image(3).shape == (5, 4, 3)


def test_from_root_names_what_it_looked_for(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match=r"instances_\*\.json.*instances\.json"):
        CocoDataset.from_root(tmp_path)
    write_coco(tmp_path)
    write_coco(tmp_path, ann_name="instances_train.json")
    with pytest.raises(DataError, match="several instances files"):
        CocoDataset.from_root(tmp_path)
    assert len(CocoDataset.from_root(tmp_path, split="train")) == 2
    shutil.rmtree(tmp_path / "images")
    with pytest.raises(DataError, match="images"):
        CocoDataset.from_root(tmp_path, split="val")


def test_from_root_finds_annotations_instances_json(tmp_path):
    write_coco(tmp_path, ann_name="instances.json")
    assert CocoDataset.from_root(tmp_path).ann_file == tmp_path / "annotations" / "instances.json"


def _bad(tmp_path, text):
    ann = write_coco(tmp_path)
    ann.write_text(text)
    return ann


def test_not_json_names_file(tmp_path):
    ann = _bad(tmp_path, '{"images": [')
    with pytest.raises(DataError, match="instances_val.json is not valid JSON"):
        CocoDataset(tmp_path / "images", ann)


def test_missing_keys_named(tmp_path):
    ann = _bad(tmp_path, json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DataError, match=r"instances_val\.json.*missing key\(s\) \['categories'\]"):
        CocoDataset(tmp_path / "images", ann)


def test_unknown_image_id_in_annotations(tmp_path):
    ann = write_coco(tmp_path, annotations=[{"id": 5, "image_id": 42, "category_id": 1, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(DataError, match=r"instances_val\.json: annotations\[0\] \(id 5\) has image_id 42"):
        CocoDataset(tmp_path / "images", ann)


def test_unknown_category_in_annotations(tmp_path):
    ann = write_coco(tmp_path, annotations=[{"id": 5, "image_id": 3, "category_id": 9, "bbox": [0, 0, 1, 1]}])
    with pytest.raises(DataError, match="category_id 9"):
        CocoDataset(tmp_path / "images", ann)


@pytest.mark.parametrize("bbox", [[0, 0, 1], [0, -1, 2, 2], ["0", 0, 1, 1], None, [0, 0, float("nan"), 1], [0, 0, 0, 1]])
def test_bad_bbox(tmp_path, bbox):
    ann = write_coco(tmp_path, annotations=[{"id": 1, "image_id": 3, "category_id": 1, "bbox": bbox}])
    with pytest.raises(DataError, match=r"instances_val\.json: annotations\[0\] \(id 1\) has bbox .*positive width and height"):
        CocoDataset(tmp_path / "images", ann)


@pytest.mark.parametrize(
    ("key", "message"),
    [("id", r"annotations\[0\] needs an integer 'id'"), ("area", r"\(id 1\) needs 'area'"), ("iscrowd", r"\(id 1\) needs 'iscrowd', 0 or 1")],
)
def test_what_pycocotools_reads_of_an_annotation_is_required(tmp_path, key, message):
    ann = {"id": 1, "image_id": 3, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0}
    del ann[key]
    with pytest.raises(DataError, match=r"instances_val\.json: .*" + message):
        CocoDataset(tmp_path / "images", write_coco(tmp_path, annotations=[ann]))


def test_duplicate_annotation_ids(tmp_path):
    anns = [{"id": 4, "image_id": 3, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1, "iscrowd": 0}] * 2
    with pytest.raises(DataError, match=r"annotations\[1\] \(id 4\) has the id of annotations\[0\]"):
        CocoDataset(tmp_path / "images", write_coco(tmp_path, annotations=anns))


def test_no_images(tmp_path):
    ann = _bad(tmp_path, json.dumps({"images": [], "annotations": [], "categories": []}))
    with pytest.raises(DataError, match="'images' is empty"):
        CocoDataset(tmp_path / "images", ann)


def test_duplicate_image_ids(tmp_path):
    imgs = [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}]
    ann = write_coco(tmp_path, images=imgs, annotations=[])
    with pytest.raises(DataError, match=r"duplicate image id 1 \(images\[1\]\)"):
        CocoDataset(tmp_path / "images", ann)


def test_missing_image_file_named(coco_root):
    (coco_root / "images" / "b.png").unlink()
    ds = CocoDataset.from_root(coco_root)
    with pytest.raises(DataError, match=r"not found: .*b\.png"):
        ds.load_image(7)


def test_corrupt_jpg_named(tmp_path):
    p = tmp_path / "bad.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(DataError, match=r"cannot read image .*bad\.jpg"):
        read_image(p)


def test_truncated_png_named(tmp_path):
    from PIL import Image

    p = tmp_path / "t.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # header intact, pixel data cut: fails only on load()
    with pytest.raises(DataError, match=r"cannot read image .*t\.png"):
        read_image(p)


def test_truncated_jpg_named(tmp_path):
    from PIL import Image

    p = tmp_path / "t.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(p, quality=95)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t\.jpg"):
        read_image(p)


def test_an_empty_or_foreign_file_says_what_an_image_is(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("not a picture")
    with pytest.raises(DataError, match=r"empty\.jpg is empty \(0 bytes\); expected a JPEG, PNG"):
        read_image(tmp_path / "empty.jpg")
    with pytest.raises(DataError, match=r"notes\.jpg: not an image file PIL can decode .*expected a JPEG, PNG"):
        read_image(tmp_path / "notes.jpg")


def test_grayscale_and_rgba_become_rgb(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((3, 4), 9, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.full((3, 4, 4), 9, np.uint8)).save(tmp_path / "r.png")
    for name in ("g.png", "r.png"):
        img = read_image(tmp_path / name)
        assert img.shape == (3, 4, 3) and img.dtype == np.uint8 and (img == 9).all()


def test_sixteen_bit_grey_is_scaled_not_clipped_and_huge_images_are_refused(tmp_path) -> None:
    import numpy as np
    from PIL import Image

    from yolomlu.data.coco import MAX_IMAGE_PIXELS, DataError, read_image

    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1024).astype(np.uint16)  # 0 .. 64512
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    image = read_image(tmp_path / "deep.png")
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8
    assert image[..., 0].max() == round(64512 * 255 / 65535) and image[0, 0, 0] == 0  # scaled, not all white
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    Image.new("L", (side, side)).save(tmp_path / "huge.png")
    with pytest.raises(DataError, match=rf"huge.png is {side}x{side}.*megapixels"):
        read_image(tmp_path / "huge.png")
