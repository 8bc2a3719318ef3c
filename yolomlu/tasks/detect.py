"""task=detect: the study's CPU reference step — boxes for every image of a file or folder.

Prints ``x1 y1 x2 y2 conf class_name`` per box (original-image pixels) and writes annotated
copies of the images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from PIL import Image, ImageDraw

from yolomlu.data.sources import iter_images
from yolomlu.evaluate.pipeline import NmsSettings, postprocess, preprocess
from yolomlu.tasks import common
from yolomlu.types import Detections


def detect(cfg: DictConfig) -> dict[str, int]:
    if cfg.source is None:
        raise ValueError("task=detect needs source=<image file or folder>")
    loaded = common.build_transformed(cfg)
    if not loaded.trained:
        print("[yolomlu] warning: model.weights is not set; boxes come from random weights", file=common.log_stream())
    head = common.detect_head(loaded.model)
    d = cfg.detect
    nms = NmsSettings(d.conf_thres, d.iou_thres, d.max_det)
    out_dir = Path(cfg.paths.output_dir) / "detect"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = common.log_stream()
    n_images = n_boxes = 0
    with common.make_runner(cfg, loaded.model) as runner:
        for path, image in iter_images(cfg.source):
            x, infos = preprocess([image], cfg.img_size)
            det = postprocess(runner.infer(x), head, nms, infos)[0]
            print(f"image {path} ({image.shape[1]}x{image.shape[0]}): {len(det)} boxes", file=out)
            for line in format_boxes(det, loaded.names):
                print(f"  {line}", file=out)
            annotate(image, det, loaded.names).save(out_dir / f"{path.stem}.jpg", quality=95)
            n_images += 1
            n_boxes += len(det)
    print(f"[yolomlu] {n_images} images, {n_boxes} boxes; annotated images in {out_dir.resolve()}", file=out)
    return {"images": n_images, "boxes": n_boxes}


def format_boxes(det: Detections, names: list[str]) -> list[str]:
    """One ``x1 y1 x2 y2 conf class_name`` line per box, highest confidence first."""
    return [
        f"{x1:.1f} {y1:.1f} {x2:.1f} {y2:.1f} {score:.4f} {names[int(label)]}"
        for (x1, y1, x2, y2), score, label in zip(det.boxes, det.scores, det.labels)
    ]


def annotate(image: np.ndarray, det: Detections, names: list[str]) -> Image.Image:
    """The image with each box drawn and labelled ``name conf``."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for (x1, y1, x2, y2), score, label in zip(det.boxes, det.scores, det.labels):
        colour = _PALETTE[int(label) % len(_PALETTE)]
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=2)
        text = f"{names[int(label)]} {score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        draw.rectangle((x1, y1 - (bottom - top) - 2, x1 + (right - left) + 4, y1), fill=colour)
        draw.text((x1 + 2, y1 - (bottom - top) - 2), text, fill=(255, 255, 255))
    return canvas


_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230), (128, 128, 0)]
