import numpy as np
import pytest
from PIL import Image

from yolomlu.data.coco import DataError, read_image
from yolomlu.data.sources import list_images


def _save(path, value):
    Image.fromarray(np.full((4, 5, 3), value, np.uint8)).save(path)


def test_folder_sorted_and_filtered(tmp_path):
    _save(tmp_path / "b.png", 2)
    _save(tmp_path / "a.JPG", 1)  # upper-case extensions count
    _save(tmp_path / "c.bmp", 3)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    _save(tmp_path / "sub" / "d.png", 4)  # not recursive
    got = list_images(tmp_path)
    assert [p.name for p in got] == ["a.JPG", "b.png", "c.bmp"]
    assert all(read_image(p).shape == (4, 5, 3) for p in got)


def test_single_file(tmp_path):
    _save(tmp_path / "x.png", 5)
    [p] = list_images(str(tmp_path / "x.png"))
    assert p == tmp_path / "x.png" and int(read_image(p)[0, 0, 0]) == 5


def test_nothing_found_names_path(tmp_path):
    (tmp_path / "readme.md").write_text("hi")
    with pytest.raises(DataError, match=f"no images in {tmp_path}"):
        list_images(tmp_path)
    with pytest.raises(DataError, match="missing"):
        list_images(tmp_path / "missing")


def test_unreadable_file_named(tmp_path):
    (tmp_path / "b.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"b\.jpg"):
        read_image(tmp_path / "b.jpg")
