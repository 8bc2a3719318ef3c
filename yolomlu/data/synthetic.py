"""A seeded generator of a small COCO-format detection dataset of coloured shapes ("shapes").

It lets every job run end to end (and a model be trained and scored) without downloading COCO.
Design, fixed by ``GENERATOR_VERSION`` (bump it whenever the output for a given seed changes):

- 6 classes (``SHAPE_CLASSES``), category ids 1..6; each object is a filled polygon, randomly rotated
  (except the circle) and with a random aspect where the shape allows one, textured solid, striped or
  noisy, in a colour chosen to stand out from what lies under it.
- Backgrounds are cluttered: a random linear gradient, low-frequency blotches, pixel noise, and
  distractors that are *not* objects: straight lines, open arcs and soft blurred blobs.
- 2..10 objects per image, larger ones drawn first. Overlaps are allowed, but a placement that would
  leave an earlier object less than ``MIN_VISIBLE`` (40 %) visible is rejected and retried elsewhere
  (dropped after a few tries), so every drawn object is annotated and none is hidden beyond ~60 %.
- ``bbox`` = [x, y, w, h], the tight box around the object's *visible* pixels (COCO's convention:
  pixel column c spans [c, c+1)); ``area`` = w*h, the same measure pycocotools' ``loadRes`` gives
  detections, so COCO's small/medium/large ranges classify ground truth and detections alike.
- Object sizes come from a mixture on sqrt(bbox area): ~35 % small (< 32^2), ~30 % medium, ~35 % large
  (> 96^2), so at least 20 % are small and 20 % large even after occlusion and dropped placements.
- Image sizes vary by +-10 % per side around ``img_size`` (288..352 for 320), so letterboxing matters.
- Image i depends only on (seed, split, i): a 64-image set is a prefix of a 128-image set.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .coco import DataError

__all__ = [
    "SHAPE_CLASSES",
    "GENERATOR_VERSION",
    "MIN_VISIBLE",
    "generate_shapes",
    "ensure_shapes",
    "dataset_stats",
]

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ellipse", "cross")
GENERATOR_VERSION = 1
MIN_VISIBLE = 0.4  # an object keeps at least this share of its pixels visible

SMALL_AREA = 32**2  # COCO's area ranges
LARGE_AREA = 96**2

# Mixture on s = sqrt(bbox area): (weight, s_min, s_max). The large component's upper end scales with the
# image (None -> 0.6 * shorter side); the gaps (28..36, 88..104) keep each component clear of COCO's
# range boundaries after rasterisation and occlusion trimming.
_SIZE_MIXTURE: tuple[tuple[float, float, float | None], ...] = (
    (0.35, 9.0, 28.0),  # small: area 81 .. 784 px
    (0.30, 36.0, 88.0),  # medium: 1296 .. 7744 px
    (0.35, 104.0, None),  # large: from 10816 px
)
_PLACEMENT_TRIES = 25
_TEXTURES = ("solid", "striped", "noise")
_MIN_IMG_SIZE = 128


# ---------------------------------------------------------------------------------------------- shapes


def _shape_polygon(name: str, rng: np.random.Generator) -> np.ndarray:
    """Vertices [K, 2] (x, y) of one shape around the origin, rotated, in arbitrary units."""
    if name == "circle":
        t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)  # rotation is meaningless for a circle
    if name == "ellipse":
        t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        aspect = rng.uniform(1.6, 2.6)  # clearly not a circle
        pts = np.stack([aspect * np.cos(t), np.sin(t)], 1)
    elif name == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    elif name == "triangle":
        half_base = rng.uniform(0.7, 1.3)
        apex_shift = rng.uniform(-0.3, 0.3)
        pts = np.array([[apex_shift, -1.0], [half_base, 1.0], [-half_base, 1.0]])
    elif name == "star":
        inner = rng.uniform(0.38, 0.5)
        t = np.arange(10) * np.pi / 5 - np.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    elif name == "cross":
        a = rng.uniform(0.22, 0.36)  # half-width of the arms
        pts = np.array(
            [[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a],
             [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a]],
            dtype=np.float64,
        )
    else:
        raise AssertionError(name)
    theta = rng.uniform(0, 2 * np.pi)
    c, s = math.cos(theta), math.sin(theta)
    return pts @ np.array([[c, s], [-s, c]])


def _sample_size(rng: np.random.Generator, short_side: int, component: int | None = None) -> float:
    """sqrt of the target bbox area, from the size mixture (or from one given component)."""
    if component is None:
        component = int(rng.choice(len(_SIZE_MIXTURE), p=[w for w, _, _ in _SIZE_MIXTURE]))
    _, lo, hi = _SIZE_MIXTURE[component]
    if hi is None:
        hi = max(lo + 8.0, 0.6 * short_side)
    return float(rng.uniform(lo, hi))


def _rasterise(pts: np.ndarray) -> np.ndarray:
    """Bool mask [h, w] of the polygon whose vertices are already in local pixel coordinates."""
    w = int(math.ceil(pts[:, 0].max())) + 2
    h = int(math.ceil(pts[:, 1].max())) + 2
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).polygon([(float(x), float(y)) for x, y in pts], fill=255)
    mask = np.asarray(im) > 0
    ys, xs = np.nonzero(mask)
    return mask[: ys.max() + 1, : xs.max() + 1] if len(ys) else mask


# ------------------------------------------------------------------------------------------ rendering


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float64)


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A colour far (in RGB) from the mean of the pixels an object will cover: best of a few draws."""
    ref = under.reshape(-1, 3).mean(0)
    best, best_d = None, -1.0
    for _ in range(12):
        c = _random_colour(rng)
        d = float(np.linalg.norm(c - ref))
        if d > best_d:
            best, best_d = c, d
        if d >= 110:
            break
    return best


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """float64 [h, w, 3]: gradient + blotches + noise."""
    c1, c2 = _random_colour(rng), _random_colour(rng)
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    t = xx * math.cos(theta) + yy * math.sin(theta)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    img = c1 * (1 - t)[..., None] + c2 * t[..., None]
    # Low-frequency blotches: a coarse random field upsampled smoothly.
    coarse = np.clip(128 + rng.normal(0, 28, (h // 40 + 2, w // 40 + 2, 3)), 0, 255).astype(np.uint8)
    blotch = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.float64) - 128
    img += blotch
    img += rng.normal(0, rng.uniform(2, 10), (h, w, 3))
    return np.clip(img, 0, 255)


def _distractors(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Draw clutter that is not an object: lines, open arcs, blurred blobs. Returns float64 [h, w, 3]."""
    h, w = canvas.shape[:2]
    im = Image.fromarray(canvas.astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(rng.integers(3, 11)):
        x0, x1 = rng.uniform(-20, w + 20, 2)
        y0, y1 = rng.uniform(-20, h + 20, 2)
        draw.line([(x0, y0), (x1, y1)], fill=tuple(int(v) for v in _random_colour(rng)), width=int(rng.integers(1, 5)))
    for _ in range(rng.integers(1, 5)):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(10, 0.4 * min(w, h))
        start = rng.uniform(0, 360)
        draw.arc(
            [cx - r, cy - r, cx + r, cy + r],
            start,
            start + rng.uniform(40, 220),  # open: never a full circle
            fill=tuple(int(v) for v in _random_colour(rng)),
            width=int(rng.integers(1, 4)),
        )
    out = np.asarray(im, dtype=np.float64).copy()
    for _ in range(rng.integers(1, 5)):
        # Irregular polygon, blurred so its edge is soft (objects have hard edges), half transparent.
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(8, 0.25 * min(w, h))
        k = int(rng.integers(5, 10))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = r * rng.uniform(0.5, 1.0, k)
        m = Image.new("L", (w, h), 0)
        ImageDraw.Draw(m).polygon([(cx + a * math.cos(b), cy + a * math.sin(b)) for a, b in zip(rad, ang)], fill=255)
        alpha = np.asarray(m.filter(ImageFilter.GaussianBlur(rng.uniform(4, 10))), dtype=np.float64)[..., None] / 255
        alpha *= rng.uniform(0.3, 0.6)
        out = out * (1 - alpha) + _random_colour(rng) * alpha
    return out


def _texture(rng: np.random.Generator, kind: str, colour: np.ndarray, h: int, w: int) -> np.ndarray:
    """float64 [h, w, 3] fill for one object's bounding region."""
    if kind == "solid":
        return np.broadcast_to(colour, (h, w, 3))
    if kind == "striped":
        # A second colour clearly different from the first, stripes at a random angle and period.
        other = np.clip(colour + rng.choice([-1, 1], 3) * rng.uniform(70, 140, 3), 0, 255)
        phi = rng.uniform(0, np.pi)
        period = rng.uniform(3, 9)
        yy, xx = np.mgrid[0:h, 0:w]
        band = ((xx * math.cos(phi) + yy * math.sin(phi)) / period) % 2 < 1
        return np.where(band[..., None], colour, other)
    if kind == "noise":
        return np.clip(colour + rng.normal(0, 30, (h, w, 3)), 0, 255)
    raise AssertionError(kind)


# ---------------------------------------------------------------------------------------------- images


def _render_image(rng: np.random.Generator, img_size: int) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """One image: uint8 [h, w, 3]; its objects as {'cls': class index, 'bbox': [x, y, w, h] tight around
    the visible pixels, 'visible': visible share of the object's pixels}; and int32 [h, w] owner map
    (object index per pixel, -1 for background) from which the boxes were taken."""
    lo, hi = round(0.9 * img_size), round(1.1 * img_size)
    w, h = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    canvas = _distractors(rng, _background(rng, w, h))

    n_obj = int(rng.integers(2, 11))
    sizes = sorted((_sample_size(rng, min(w, h)) for _ in range(n_obj)), reverse=True)  # large first
    owner = np.full((h, w), -1, dtype=np.int32)  # which object owns each pixel (-1: background)
    placed: list[dict] = []  # per object: class, x0, y0, mask, area (pixels), visible (pixels)

    def try_place(size: float) -> bool:
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        pts = _shape_polygon(SHAPE_CLASSES[cls], rng)
        span = pts.max(0) - pts.min(0)
        k = size / math.sqrt(span[0] * span[1])
        k = min(k, 0.9 * w / span[0], 0.9 * h / span[1])  # must fit inside the image
        mask = _rasterise((pts - pts.min(0)) * k)
        mh, mw = mask.shape
        area = int(mask.sum())
        if area == 0:
            return False
        for _ in range(_PLACEMENT_TRIES):
            x0, y0 = int(rng.integers(0, w - mw + 1)), int(rng.integers(0, h - mh + 1))
            region = owner[y0 : y0 + mh, x0 : x0 + mw]
            covered = region[mask]
            lost = np.bincount(covered[covered >= 0], minlength=len(placed))
            if any(p["visible"] - lost[j] < MIN_VISIBLE * p["area"] for j, p in enumerate(placed) if lost[j]):
                continue
            for j in np.nonzero(lost)[0]:
                placed[j]["visible"] -= int(lost[j])
            region[mask] = len(placed)
            sub = canvas[y0 : y0 + mh, x0 : x0 + mw]
            colour = _contrasting_colour(rng, sub[mask])
            tex = _texture(rng, _TEXTURES[int(rng.integers(len(_TEXTURES)))], colour, mh, mw)
            sub[mask] = tex[mask]
            placed.append({"cls": cls, "x0": x0, "y0": y0, "h": mh, "w": mw, "area": area, "visible": area})
            return True
        return False

    for size in sizes:
        try_place(size)
    for _ in range(200):  # the minimum of 2 objects: a small one finds room within a few tries
        if len(placed) >= 2:
            break
        try_place(_sample_size(rng, min(w, h), component=0))
    assert len(placed) >= 2, "could not place two objects"

    canvas += rng.normal(0, rng.uniform(0, 4), canvas.shape)  # sensor-like noise over everything
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)

    objects = []
    for j, p in enumerate(placed):
        vis = owner[p["y0"] : p["y0"] + p["h"], p["x0"] : p["x0"] + p["w"]] == j
        ys, xs = np.nonzero(vis)
        x, y = p["x0"] + int(xs.min()), p["y0"] + int(ys.min())
        bbox = [x, y, int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        objects.append({"cls": p["cls"], "bbox": bbox, "visible": p["visible"] / p["area"]})
    return image, objects, owner


def _check_args(n_images: int, img_size: int, split: str) -> None:
    if not isinstance(n_images, int) or n_images < 1:
        raise ValueError(f"n_images must be a positive int, got {n_images!r}")
    if not isinstance(img_size, int) or img_size < _MIN_IMG_SIZE:
        raise ValueError(f"img_size must be an int >= {_MIN_IMG_SIZE} (large objects must fit), got {img_size!r}")
    if not isinstance(split, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", split):
        raise ValueError(f"split must be a non-empty name of letters, digits, '_' or '-', got {split!r}")


def generate_shapes(root: Path, n_images: int, img_size: int = 320, seed: int = 0, split: str = "val") -> Path:
    """Write a shapes dataset: ``root/images/<split>_<id>.jpg`` (JPEG quality 95) and
    ``root/annotations/instances_<split>.json``. Returns the annotation file's path.

    Deterministic in (n_images, img_size, seed, split). Refuses (DataError) to write over an existing
    annotation file. The annotation file is written last, via a temporary file, so an interrupted run
    leaves no annotation file (and so no dataset that looks complete).
    """
    _check_args(n_images, img_size, split)
    root = Path(root)
    ann_file = root / "annotations" / f"instances_{split}.json"
    if ann_file.exists():
        raise DataError(f"{ann_file} already exists; generate_shapes does not overwrite or mix datasets")
    (root / "images").mkdir(parents=True, exist_ok=True)
    ann_file.parent.mkdir(parents=True, exist_ok=True)

    split_key = zlib.crc32(split.encode())  # stable across runs, unlike hash()
    images, annotations = [], []
    for i in range(n_images):
        rng = np.random.default_rng([seed, split_key, i])
        image, objects, _ = _render_image(rng, img_size)
        image_id = i + 1
        file_name = f"{split}_{image_id:06d}.jpg"
        Image.fromarray(image).save(root / "images" / file_name, quality=95)
        images.append({"id": image_id, "file_name": file_name, "height": image.shape[0], "width": image.shape[1]})
        for obj in objects:
            cls, bbox = obj["cls"], obj["bbox"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cls + 1,
                    "bbox": bbox,
                    "area": float(bbox[2] * bbox[3]),
                    "iscrowd": 0,
                }
            )
    data = {
        "info": {
            "description": "yolomlu synthetic shapes",
            "version": str(GENERATOR_VERSION),
            "n_images": n_images,
            "img_size": img_size,
            "seed": seed,
            "split": split,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(SHAPE_CLASSES)],
    }
    tmp = ann_file.with_name(ann_file.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, ann_file)
    return ann_file


def ensure_shapes(cache_dir: Path, n_images: int, img_size: int = 320, seed: int = 0, split: str = "val") -> Path:
    """Return the root of a cached shapes dataset, generating it first if needed.

    The folder ``cache_dir/shapes_<split>_<n>x<size>_seed<seed>_<hash>`` is keyed by every argument and
    ``GENERATOR_VERSION``. It is generated in a temporary sibling folder and renamed into place only when
    complete (with a ``.complete`` marker), so a crash never leaves a half-written dataset; concurrent
    callers may both generate, the first rename wins and the other's copy is discarded.
    """
    _check_args(n_images, img_size, split)
    key = json.dumps(
        {"generator": GENERATOR_VERSION, "n_images": n_images, "img_size": img_size, "seed": seed, "split": split},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    cache_dir = Path(cache_dir)
    final = cache_dir / f"shapes_{split}_{n_images}x{img_size}_seed{seed}_{digest}"
    marker = final / ".complete"
    if marker.is_file():
        return final
    if final.exists():
        # Not something this function writes (the rename is atomic and carries the marker): don't guess.
        raise DataError(f"{final} exists but is incomplete (no .complete marker); delete it to regenerate")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=cache_dir))
    try:
        generate_shapes(tmp, n_images, img_size, seed, split)
        (tmp / ".complete").write_text(key + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if marker.is_file():  # another process finished first: use its copy
                return final
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def dataset_stats(ann_file: Path, image_ids: Iterable[int] | None = None) -> dict[str, float]:
    """Flat numeric summary of a COCO instances file (or of the images ``image_ids`` in it, the
    part a job evaluates), ready to log as metrics/params.

    Keys: n_images, n_objects, objects_per_image_min/_mean/_max, frac_small, frac_medium, frac_large
    (by the ``area`` field and COCO's ranges: < 32^2, 32^2..96^2, > 96^2), and count_<category name>
    for every category (spaces in names become '_').
    """
    ann_file = Path(ann_file)
    try:
        data = json.loads(ann_file.read_bytes())  # bytes: a UTF-8 BOM is fine, as in the dataset's validator
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read annotation file {ann_file}: {e}") from e
    keep = None if image_ids is None else set(image_ids)
    per_image = {img["id"]: 0 for img in data["images"] if keep is None or img["id"] in keep}
    areas = []
    per_cat = {c["id"]: 0 for c in data["categories"]}
    for a in data["annotations"]:
        if a["image_id"] not in per_image:
            continue
        per_image[a["image_id"]] += 1
        per_cat[a["category_id"]] += 1
        areas.append(float(a.get("area", a["bbox"][2] * a["bbox"][3])))
    counts = list(per_image.values()) or [0]
    areas_np = np.asarray(areas, dtype=np.float64)
    n = len(areas)
    stats: dict[str, float] = {
        "n_images": len(per_image),
        "n_objects": n,
        "objects_per_image_min": int(min(counts)),
        "objects_per_image_mean": float(np.mean(counts)),
        "objects_per_image_max": int(max(counts)),
        "frac_small": float((areas_np < SMALL_AREA).sum() / n) if n else 0.0,
        "frac_medium": float(((areas_np >= SMALL_AREA) & (areas_np <= LARGE_AREA)).sum() / n) if n else 0.0,
        "frac_large": float((areas_np > LARGE_AREA).sum() / n) if n else 0.0,
    }
    names = {c["id"]: c["name"] for c in data["categories"]}
    for cid in sorted(per_cat):
        stats[f"count_{names[cid].replace(' ', '_')}"] = per_cat[cid]
    return stats
