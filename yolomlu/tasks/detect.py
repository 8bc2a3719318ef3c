"""task=detect: the study's CPU reference step — boxes for every image of a file or folder.

Prints ``x1 y1 x2 y2 conf class_name`` per box (original-image pixels) and writes annotated
copies of the images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from PIL import Image, ImageDraw

from yolomlu.data.coco import DataError, read_image
from yolomlu.data.sources import list_images
from yolomlu.evaluate.pipeline import NmsSettings, postprocess, preprocess
from yolomlu.tasks import common, quant_stage, registered
from yolomlu.types import Detections


def detect(cfg: DictConfig) -> dict[str, int]:
    """Boxes for every image of ``source``, on the configured backend, quantized as ``quant`` says
    (calibrated on the job's ``data`` set) and decoded where the backend decodes (a device's own
    decode + NMS, compiled with the detect thresholds). An unreadable image is reported and skipped;
    the task fails at the end naming every one of them."""
    if cfg.source is None:
        raise ValueError("task=detect needs source=<image file or folder>")
    cfg, _ = registered.adopt(cfg)  # model.weights=models:/...: the registered port
    files = list_images(cfg.source)  # a missing or empty source fails here, before any work
    loaded = common.build_transformed(cfg)
    out = common.log_stream()
    if not loaded.trained:
        print("[yolomlu] warning: model.weights is not set; boxes come from random weights", file=out)
    head = common.detect_head(loaded.model)
    d = cfg.detect
    nms = NmsSettings(d.conf_thres, d.iou_thres, d.max_det)
    quantized = _quantized(cfg, loaded.model)
    # A backend that compiles decode + NMS into the device takes the detect thresholds.
    thresholds = {k: v for k, v in (("conf_thres", d.conf_thres), ("iou_thres", d.iou_thres)) if k in cfg.backend}
    out_dir = Path(cfg.paths.output_dir) / "detect"
    out_dir.mkdir(parents=True, exist_ok=True)
    n_images = n_boxes = 0
    unreadable: list[str] = []
    runner = common.make_runner(cfg, quantized.model, **thresholds)
    if quantized.calibration is not None:
        runner.set_quantization(quantized.settings, quantized.calibration)
    with runner:
        for path in files:
            try:
                image = read_image(path)
            except DataError as exc:
                unreadable.append(str(exc))
                print(f"[yolomlu] skipped: {exc}", file=out)
                continue
            x, infos = preprocess([image], cfg.img_size)
            det = postprocess(runner.infer(x), head, nms, infos, runner.detection_buffer)[0]
            print(f"image {path} ({image.shape[1]}x{image.shape[0]}): {len(det)} boxes", file=out)
            for line in format_boxes(det, loaded.names):
                print(f"  {line}", file=out)
            annotate(image, det, loaded.names).save(out_dir / f"{path.stem}.jpg", quality=95)
            n_images += 1
            n_boxes += len(det)
    print(f"[yolomlu] {n_images} images, {n_boxes} boxes; annotated images in {out_dir.resolve()}", file=out)
    if unreadable:
        raise DataError(f"{len(unreadable)} of {len(files)} images could not be read: " + "; ".join(unreadable))
    return {"images": n_images, "boxes": n_boxes}


def _quantized(cfg: DictConfig, model):
    """The quant stage as a job runs it, calibrated on the first images of the job's ``data`` set."""
    if not quant_stage.settings_of(cfg).enabled:
        return quant_stage.Quantized(model)
    dataset = common.load_dataset(cfg)
    quantized, result = quant_stage.quantize(cfg, model, dataset, None, unfolded=common.bn_unfolded_for_quant(cfg))
    where = "by the backend" if quantized.calibration is not None else f"emulated, {int(result.metrics.get('quant_layers', 0))} layers"
    print(f"[yolomlu] quant={cfg.quant.name} ({where}), calibrated on {cfg.data.name}", file=common.log_stream())
    return quantized


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
