"""COCO-format detection dataset: a validated annotation file plus a folder of images.

The annotation file is checked once, on load, and every problem is reported with the file and the
offending entry, so a bad dataset fails before any model runs. Images are read lazily, one at a time.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["MAX_IMAGE_PIXELS", "DataError", "CocoDataset", "read_image"]


class DataError(ValueError):
    """A dataset, annotation file or image is missing or malformed. The message names the file."""


# Larger images are refused before decoding: an 8000 x 8000 RGB image already takes 192 MB, and the
# network sees it letterboxed to 640 px anyway. (PIL's own guard only warns below 179 megapixels.)
MAX_IMAGE_PIXELS = 64_000_000


def read_image(path: Path) -> np.ndarray:
    """Read one image file as uint8 [H, W, 3] RGB.

    Grey, palette, CMYK and alpha images are converted to RGB; 16- and 32-bit grey images are scaled
    to 8 bits (their full range onto 0..255), not clipped (PIL's plain conversion would turn every
    value above 255 white). EXIF orientation is deliberately not applied (the COCO convention:
    annotations refer to the stored pixel grid). Raises DataError naming the file when it is
    missing, empty, not an image, corrupt, truncated, or larger than :data:`MAX_IMAGE_PIXELS`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"image file {path} is empty (0 bytes); expected {_FORMATS}")
    try:
        # PIL opens lazily: decoding errors (truncated or corrupt data) only surface in load()/convert(),
        # so both stay inside the try. The size is known before decoding. PIL's own size guard warns
        # (on stderr) from 89 megapixels: ours refuses sooner, in one line.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise DataError(_too_large(path, f"{im.width}x{im.height} ({im.width * im.height / 1e6:.0f} megapixels)"))
                im.load()
                arr = _to_rgb8(im)
    except DataError:
        raise
    except Image.DecompressionBombError as e:  # so large that PIL refuses to open it at all
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        raise DataError(_too_large(path, f"{int(pixels[1]) / 1e6:.0f} megapixels" if pixels else "too large for PIL")) from e
    except UnidentifiedImageError as e:
        raise DataError(f"cannot read image {path}: not an image file PIL can decode (corrupt, or another kind of file); expected {_FORMATS}") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot read image {path} (truncated or corrupt): {e}") from e
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.size == 0:
        raise DataError(f"image {path} decoded to an unusable array of shape {arr.shape}")
    return arr


_FORMATS = "a JPEG, PNG, BMP, WebP or TIFF image"


def _too_large(path: Path, size: str) -> str:
    return (
        f"image {path} is {size}: larger than the {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels yolomlu decodes; "
        "downscale it first"
    )


def _to_rgb8(im: Image.Image) -> np.ndarray:
    """uint8 [H, W, 3] RGB of any PIL image; high-bit-depth grey scaled down, not clipped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") else max(float(values.max()), 1.0)
        grey = np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.array(im.convert("RGB"))


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return (isinstance(x, (int, float)) and not isinstance(x, bool)) and math.isfinite(x)


def _parse(ann_file: Path) -> tuple[bytes, dict[int, dict], dict[int, list[dict]], list[dict]]:
    """Read and validate a COCO instances file. Returns (raw bytes, images by id, annotations by image id,
    categories sorted by id)."""
    try:
        raw = ann_file.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read annotation file {ann_file}: {e}") from e
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"annotation file {ann_file} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise DataError(f"annotation file {ann_file}: top level must be a JSON object, got {type(data).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise DataError(
            f"annotation file {ann_file}: missing key(s) {missing} (found keys: {sorted(data)})"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise DataError(f"annotation file {ann_file}: {key!r} must be a list, got {type(data[key]).__name__}")

    if not data["images"]:
        raise DataError(f"annotation file {ann_file}: 'images' is empty; nothing to evaluate")
    images: dict[int, dict] = {}
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not _is_int(img.get("id")) or not isinstance(img.get("file_name"), str):
            raise DataError(
                f"annotation file {ann_file}: images[{k}] needs an integer 'id' and a string 'file_name', got {img!r}"
            )
        if img["id"] in images:
            raise DataError(f"annotation file {ann_file}: duplicate image id {img['id']} (images[{k}])")
        images[img["id"]] = img

    categories: dict[int, dict] = {}
    for k, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
            raise DataError(
                f"annotation file {ann_file}: categories[{k}] needs an integer 'id' and a string 'name', got {cat!r}"
            )
        if cat["id"] in categories:
            raise DataError(f"annotation file {ann_file}: duplicate category id {cat['id']} (categories[{k}])")
        categories[cat["id"]] = cat

    by_image: dict[int, list[dict]] = {i: [] for i in images}
    ann_ids: dict[int, int] = {}  # annotation id -> its index
    for k, ann in enumerate(data["annotations"]):
        where = f"annotations[{k}]" + (f" (id {ann.get('id')})" if isinstance(ann, dict) and "id" in ann else "")
        if not isinstance(ann, dict):
            raise DataError(f"annotation file {ann_file}: {where} must be an object, got {ann!r}")
        # pycocotools indexes annotations by id and reads 'area' and 'iscrowd' of every one: without
        # them it fails after the whole model has run, with a bare KeyError.
        if not _is_int(ann.get("id")):
            raise DataError(f"annotation file {ann_file}: {where} needs an integer 'id', got {ann.get('id')!r}")
        if ann["id"] in ann_ids:
            raise DataError(f"annotation file {ann_file}: {where} has the id of annotations[{ann_ids[ann['id']]}]; ids must be unique")
        ann_ids[ann["id"]] = k
        image_id = ann.get("image_id")
        if image_id not in by_image:
            raise DataError(f"annotation file {ann_file}: {where} has image_id {image_id!r}, which is not in 'images'")
        if ann.get("category_id") not in categories:
            raise DataError(
                f"annotation file {ann_file}: {where} has category_id {ann.get('category_id')!r}, "
                f"which is not in 'categories' (ids {sorted(categories)})"
            )
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)) or not (
            bbox[0] >= 0 and bbox[1] >= 0 and bbox[2] > 0 and bbox[3] > 0
        ):
            raise DataError(
                f"annotation file {ann_file}: {where} has bbox {bbox!r}; expected 4 numbers [x, y, w, h] "
                "with x, y >= 0 and a positive width and height"
            )
        if not (_is_number(ann.get("area")) and ann["area"] >= 0):
            raise DataError(
                f"annotation file {ann_file}: {where} needs 'area', the object's area in pixels (w * h for a box), "
                f"a non-negative number; got {ann.get('area')!r}"
            )
        if ann.get("iscrowd") not in (0, 1):
            raise DataError(f"annotation file {ann_file}: {where} needs 'iscrowd', 0 or 1; got {ann.get('iscrowd')!r}")
        by_image[image_id].append(ann)

    cats_sorted = [dict(categories[i]) for i in sorted(categories)]
    return raw, images, by_image, cats_sorted


class CocoDataset:
    """A COCO instances file and the folder its ``file_name`` entries are relative to.

    image_ids:  sorted list of image ids (int)
    categories: list of {'id', 'name', ...} dicts sorted by id
    ann_file:   the annotation file this was loaded from
    images_dir: the folder the images are read from
    """

    def __init__(self, images_dir: Path, ann_file: Path) -> None:
        images_dir, ann_file = Path(images_dir), Path(ann_file)
        if not ann_file.is_file():
            raise DataError(f"annotation file not found: {ann_file}")
        if not images_dir.is_dir():
            raise DataError(f"images folder not found: {images_dir}")
        raw, images, by_image, categories = _parse(ann_file)
        self.images_dir = images_dir
        self.ann_file = ann_file
        self.categories = categories
        self._ann_sha = hashlib.sha256(raw).hexdigest()
        self._images = images
        self._by_image = by_image
        self.image_ids: list[int] = sorted(images)
        self._id_set = set(self.image_ids)

    @classmethod
    def from_root(cls, root: Path, split: str | None = None) -> "CocoDataset":
        """Open ``root`` holding ``images/`` and one instances file.

        The instances file is ``root/annotations/instances_<split>.json`` (``split`` given, or the only such
        file), ``root/annotations/instances.json`` or ``root/instances.json``. If ``root/images/<split>/`` exists (the official COCO layout,
        e.g. ``images/val2017``), images are read from there, otherwise from ``root/images/``.
        """
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"dataset root not found: {root}")
        pattern = f"instances_{split}.json" if split else "instances_*.json"
        found = sorted((root / "annotations").glob(pattern))
        plain = [] if split else [root / "annotations" / "instances.json", root / "instances.json"]
        found += [p for p in plain if p.is_file()]
        if not found:
            looked = [str(root / "annotations" / pattern)] + [str(p) for p in plain]
            raise DataError(f"no COCO instances file in {root}: looked for {', '.join(looked)}")
        if len(found) > 1:
            raise DataError(
                f"several instances files in {root}: {[str(p) for p in found]}; keep only the one to evaluate "
                "(in Python: CocoDataset.from_root(root, split=...) or CocoDataset(images_dir, ann_file))"
            )
        ann_file = found[0]
        images_dir = root / "images"
        if not images_dir.is_dir():
            raise DataError(f"no images folder in {root}: looked for {images_dir}")
        stem = ann_file.stem
        if stem.startswith("instances_") and (images_dir / stem[len("instances_") :]).is_dir():
            images_dir = images_dir / stem[len("instances_") :]
        return cls(images_dir, ann_file)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __repr__(self) -> str:
        return (
            f"CocoDataset({len(self)} images, {len(self.categories)} categories, "
            f"ann_file={str(self.ann_file)!r}, images_dir={str(self.images_dir)!r})"
        )

    def _check_id(self, image_id: int) -> None:
        if image_id not in self._id_set:
            span = f"ids {self.image_ids[0]}..{self.image_ids[-1]}" if self.image_ids else "no ids"
            raise KeyError(f"image id {image_id!r} is not in this dataset ({self.ann_file}, {len(self)} images, {span})")

    def image_info(self, image_id: int) -> dict:
        """The image entry (id, file_name, width, height, ...) as a copy."""
        self._check_id(image_id)
        return dict(self._images[image_id])

    def annotations(self, image_id: int) -> list[dict]:
        """The image's annotations (copies), bbox = [x, y, w, h] in original pixels."""
        self._check_id(image_id)
        return [dict(a) for a in self._by_image[image_id]]

    def image_path(self, image_id: int) -> Path:
        self._check_id(image_id)
        return self.images_dir / self._images[image_id]["file_name"]

    def load_image(self, image_id: int) -> np.ndarray:
        """The image as uint8 [H, W, 3] RGB. Raises DataError naming the file if missing or unreadable."""
        return read_image(self.image_path(image_id))

    def subset(self, n: int) -> "CocoDataset":
        """A view on the first ``n`` image ids (sorted order). Shares the parsed data; writes nothing."""
        if not _is_int(n) or n < 1 or n > len(self):
            raise DataError(f"subset size must be between 1 and {len(self)} (images in {self.ann_file}), got {n!r}")
        sub = object.__new__(CocoDataset)
        sub.__dict__.update(self.__dict__)
        sub.image_ids = self.image_ids[:n]
        sub._id_set = set(sub.image_ids)
        return sub

    def fingerprint(self) -> str:
        """Short sha256 hex over the annotation file bytes and, per image id in this dataset, its file name
        and size in bytes (-1 when missing). Cheap (no image decoding) and deterministic."""
        h = hashlib.sha256(self._ann_sha.encode())
        for image_id in self.image_ids:
            name = self._images[image_id]["file_name"]
            try:
                size = (self.images_dir / name).stat().st_size
            except OSError:
                size = -1
            h.update(f"{image_id}\t{name}\t{size}\n".encode())
        return h.hexdigest()[:16]
