import numpy as np
import pytest
from PIL import Image

from yolomlu.data.coco import DataError
from yolomlu.data.sources import iter_images


def _save(path, value):
    Image.fromarray(np.full((4, 5, 3), value, np.uint8)).save(path)


def test_folder_sorted_and_filtered(tmp_path):
    _save(tmp_path / "b.png", 2)
    _save(tmp_path / "a.JPG", 1)  # upper-case extensions count
    _save(tmp_path / "c.bmp", 3)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    _save(tmp_path / "sub" / "d.png", 4)  # not recursive
    got = list(iter_images(tmp_path))
    assert [p.name for p, _ in got] == ["a.JPG", "b.png", "c.bmp"]
    assert all(img.shape == (4, 5, 3) and img.dtype == np.uint8 for _, img in got)


def test_single_file(tmp_path):
    _save(tmp_path / "x.png", 5)
    [(p, img)] = list(iter_images(str(tmp_path / "x.png")))
    assert p == tmp_path / "x.png" and int(img[0, 0, 0]) == 5


def test_nothing_found_names_path(tmp_path):
    (tmp_path / "readme.md").write_text("hi")
    with pytest.raises(DataError, match=f"no images in {tmp_path}"):
        iter_images(tmp_path)  # raised at the call, before iteration
    with pytest.raises(DataError, match="missing"):
        iter_images(tmp_path / "missing")


def test_unreadable_file_named(tmp_path):
    _save(tmp_path / "a.png", 1)
    (tmp_path / "b.jpg").write_bytes(b"garbage")
    it = iter_images(tmp_path)
    assert next(it)[0].name == "a.png"
    with pytest.raises(DataError, match=r"b\.jpg"):
        next(it)
