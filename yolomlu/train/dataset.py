"""Training samples from a COCO-format dataset: letterboxed images with light, cheap augmentation.

Each sample is the image letterboxed to ``img_size`` (grey 114 padding, as at inference), optionally
randomly rescaled and shifted, flipped, and jittered in hue/saturation/value, or (``mosaic``) four
such images tiled around a random centre. Labels are (class, cx, cy, w, h) normalised to the network
input. Randomness is a function of (seed, epoch, index) only, so a run is reproducible whatever the
number of loader workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from yolomlu.data.categories import category_ids_for_model
from yolomlu.data.coco import CocoDataset

__all__ = ["Augment", "TrainSet", "collate"]

PAD_VALUE = 114
MIN_BOX_PX = 2.0  # a box narrower or lower than this after augmentation is dropped
MIN_AREA_KEPT = 0.2  # ... or one that keeps less than this share of its area inside the image


@dataclass(frozen=True)
class Augment:
    """Augmentation strengths (YOLOv5 ``hyp`` names); all zero = plain letterbox.

    hsv_h, hsv_s, hsv_v: maximum relative jitter of hue, saturation and value
    fliplr, flipud:      probability of a horizontal / vertical flip
    scale:               image scale factor drawn from 1 +- scale (relative to the letterbox fit)
    translate:           shift of the image centre, up to this fraction of img_size on each axis
    mosaic:              probability of a 4-image mosaic instead of a single image
    """

    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    fliplr: float = 0.5
    flipud: float = 0.0
    scale: float = 0.5
    translate: float = 0.1
    mosaic: float = 0.0

    def __post_init__(self) -> None:
        for name in ("fliplr", "flipud", "mosaic"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augment.{name} is a probability, got {getattr(self, name)}")
        if not 0.0 <= self.scale < 1.0:
            raise ValueError(f"augment.scale must lie in [0, 1), got {self.scale}")
        for name in ("hsv_h", "hsv_s", "hsv_v", "translate"):
            if getattr(self, name) < 0:
                raise ValueError(f"augment.{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def off(cls) -> "Augment":
        return cls(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, fliplr=0.0, flipud=0.0, scale=0.0, translate=0.0, mosaic=0.0)


class TrainSet(Dataset):
    """Letterboxed, augmented samples of ``dataset`` for training.

    Args:
        dataset: the COCO-format dataset; its categories map to class indices as at evaluation
            (``category_ids_for_model``).
        img_size: side of the square network input (a multiple of 32).
        nc: number of model classes.
        augment: augmentation strengths (None: none).
        seed: base of the per-sample random streams.
        cache: decode every image once, up front, and keep it in memory (~0.3 MB per 320 px image).

    ``sample[i]`` -> (image uint8 [3, S, S] RGB, labels float32 [n, 5] (class, cx, cy, w, h) in 0..1).
    Call :meth:`set_epoch` before each epoch so that augmentations differ between epochs.
    """

    def __init__(
        self,
        dataset: CocoDataset,
        img_size: int,
        nc: int,
        augment: Augment | None = None,
        seed: int = 0,
        cache: bool = True,
    ) -> None:
        if img_size < 32 or img_size % 32:
            raise ValueError(f"img_size must be a positive multiple of 32, got {img_size}")
        self.dataset = dataset
        self.img_size = img_size
        self.augment = augment or Augment.off()
        self.seed = seed
        self.epoch = 0
        self.ids = list(dataset.image_ids)
        class_of = {cid: k for k, cid in enumerate(category_ids_for_model(dataset.categories, nc))}
        self.labels: list[np.ndarray] = []  # per image: float64 [n, 5] (class, x1, y1, x2, y2) in pixels
        for image_id in self.ids:
            rows = [
                [class_of[a["category_id"]], a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                for a in dataset.annotations(image_id)
                if not a.get("iscrowd", 0) and a["category_id"] in class_of
            ]
            self.labels.append(np.asarray(rows, dtype=np.float64).reshape(-1, 5))
        self._images: list[np.ndarray] | None = None
        if cache:
            self._images = [dataset.load_image(i) for i in self.ids]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids)

    def _image(self, index: int) -> np.ndarray:
        if self._images is not None:
            return self._images[index]
        return self.dataset.load_image(self.ids[index])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        a = self.augment
        s = self.img_size
        if a.mosaic and rng.random() < a.mosaic:
            image, boxes = self._mosaic(index, rng)
        else:
            image, boxes = self._placed(index, rng)
        boxes = _keep_valid(boxes)
        if a.fliplr and rng.random() < a.fliplr:
            image = image[:, ::-1]
            boxes[:, [1, 3]] = s - boxes[:, [3, 1]]
        if a.flipud and rng.random() < a.flipud:
            image = image[::-1]
            boxes[:, [2, 4]] = s - boxes[:, [4, 2]]
        if a.hsv_h or a.hsv_s or a.hsv_v:
            image = _hsv_jitter(image, rng, a.hsv_h, a.hsv_s, a.hsv_v)
        labels = np.zeros((len(boxes), 5), dtype=np.float32)
        if len(boxes):
            labels[:, 0] = boxes[:, 0]
            labels[:, 1] = (boxes[:, 1] + boxes[:, 3]) / 2 / s
            labels[:, 2] = (boxes[:, 2] + boxes[:, 4]) / 2 / s
            labels[:, 3] = (boxes[:, 3] - boxes[:, 1]) / s
            labels[:, 4] = (boxes[:, 4] - boxes[:, 2]) / s
        # numpy transposes uint8 images ~10x faster than a torch permute + contiguous
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return tensor, torch.from_numpy(labels)

    def _resized(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Image ``index`` resized to its letterbox fit times a random 1 +- ``augment.scale`` factor, and
        its (class, x1, y1, x2, y2) boxes in the resized image's pixels."""
        image = self._image(index)
        h0, w0 = image.shape[:2]
        ratio = min(self.img_size / h0, self.img_size / w0)
        if self.augment.scale:
            ratio *= rng.uniform(1 - self.augment.scale, 1 + self.augment.scale)
        rw, rh = max(1, int(round(w0 * ratio))), max(1, int(round(h0 * ratio)))
        if (rw, rh) != (w0, h0):
            image = np.asarray(Image.fromarray(image).resize((rw, rh), Image.BILINEAR))
        boxes = self.labels[index].copy()
        boxes[:, 1:] *= ratio
        return image, boxes

    def _placed(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One image on an S x S grey canvas, centred and shifted by up to ``augment.translate`` x S.
        Returns the canvas and the clipped boxes (with their unclipped area, see ``_clip_boxes``)."""
        s, t = self.img_size, self.augment.translate
        image, boxes = self._resized(index, rng)
        rh, rw = image.shape[:2]
        cx, cy = (s / 2 + rng.uniform(-t, t) * s, s / 2 + rng.uniform(-t, t) * s) if t else (s / 2, s / 2)
        left, top = int(round(cx - rw / 2)), int(round(cy - rh / 2))
        canvas = np.full((s, s, 3), PAD_VALUE, dtype=np.uint8)
        _paste(canvas, image, left, top)
        boxes[:, 1:] += np.array([left, top, left, top])
        return canvas, _clip_boxes(boxes, s, s)

    def _mosaic(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Four images (this one and three random others) meeting at a random centre of a 2S x 2S canvas,
        one per quadrant; then the S x S window around that centre (YOLOv5's mosaic, without its
        affine step: the per-image scale jitter stands in for it)."""
        s = self.img_size
        big = 2 * s
        xc, yc = (int(round(v)) for v in rng.uniform(0.5 * s, 1.5 * s, size=2))
        canvas = np.full((big, big, 3), PAD_VALUE, dtype=np.uint8)
        all_boxes = []
        for k, idx in enumerate([index, *rng.integers(0, len(self), size=3).tolist()]):
            image, boxes = self._resized(int(idx), rng)
            rh, rw = image.shape[:2]
            left = xc - rw if k in (0, 2) else xc  # quadrants: top-left, top-right, bottom-left, bottom-right
            top = yc - rh if k in (0, 1) else yc
            _paste(canvas, image, left, top)
            boxes[:, 1:] += np.array([left, top, left, top])
            all_boxes.append(boxes)
        wx, wy = xc - s // 2, yc - s // 2
        window = np.ascontiguousarray(canvas[wy : wy + s, wx : wx + s])
        boxes = np.concatenate(all_boxes, 0)
        boxes[:, 1:] -= np.array([wx, wy, wx, wy])
        return window, _clip_boxes(boxes, s, s)


def _paste(canvas: np.ndarray, image: np.ndarray, left: int, top: int) -> None:
    """Copy ``image`` into ``canvas`` with its top-left corner at (left, top); parts outside are cut."""
    ch, cw = canvas.shape[:2]
    h, w = image.shape[:2]
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + w, cw), min(top + h, ch)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = image[y0 - top : y1 - top, x0 - left : x1 - left]


def _clip_boxes(boxes: np.ndarray, w: int, h: int) -> np.ndarray:
    """Clip (class, x1, y1, x2, y2) boxes to the canvas; keep the unclipped area in a 6th column."""
    area = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 4] - boxes[:, 2])
    out = np.concatenate((boxes, area[:, None]), 1)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, w)
    out[:, [2, 4]] = out[:, [2, 4]].clip(0, h)
    return out


def _keep_valid(boxes: np.ndarray) -> np.ndarray:
    """Drop boxes that became too thin or mostly left the image (YOLOv5's box_candidates, simplified)."""
    w = boxes[:, 3] - boxes[:, 1]
    h = boxes[:, 4] - boxes[:, 2]
    keep = (w > MIN_BOX_PX) & (h > MIN_BOX_PX) & (w * h > MIN_AREA_KEPT * boxes[:, 5])
    return boxes[keep, :5].copy()


def _hsv_jitter(image: np.ndarray, rng: np.random.Generator, h: float, s: float, v: float) -> np.ndarray:
    """Random hue, saturation and value changes, as one 3x3 colour matrix (cheaper than a round trip
    through HSV): hue rotates colours about the grey axis by up to +-h of the colour circle, saturation
    scales the distance from grey (luma) by 1 +- s, value scales all channels by 1 +- v (YOLOv5's
    augment_hsv gains, applied in RGB)."""
    gh, gs, gv = rng.uniform(-1, 1, 3) * np.array([h, s, v])
    theta = gh * 2 * np.pi
    k = np.full(3, 1 / np.sqrt(3))
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    hue = np.cos(theta) * np.eye(3) + np.sin(theta) * cross + (1 - np.cos(theta)) * np.outer(k, k)
    luma = np.array([0.299, 0.587, 0.114])
    sat = (1 + gs) * np.eye(3) + (1 - (1 + gs)) * np.outer(np.ones(3), luma)
    matrix = ((1 + gv) * sat @ hue).astype(np.float32)
    out = image.reshape(-1, 3).astype(np.float32) @ matrix.T
    return np.clip(out, 0, 255).round().astype(np.uint8).reshape(image.shape)


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples -> (images float32 [B, 3, S, S] in 0..1, targets float32 [n, 6] (image index, class,
    cx, cy, w, h) normalised)."""
    images = torch.stack([b[0] for b in batch]).to(torch.float32).div_(255.0)
    targets = [
        torch.cat((torch.full((len(labels), 1), float(i)), labels), 1) for i, (_, labels) in enumerate(batch)
    ]
    return images, torch.cat(targets, 0) if targets else torch.zeros((0, 6))
