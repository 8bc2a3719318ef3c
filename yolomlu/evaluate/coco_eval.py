"""COCO mAP with pycocotools: the 12 standard numbers and a per-class AP table."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from yolomlu.types import Detections

# pycocotools' stats vector, in its order.
METRIC_NAMES = (
    "map50_95", "map50", "map75", "map_small", "map_medium", "map_large",
    "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large",
)  # fmt: skip


@dataclass(frozen=True)
class CocoMetrics:
    metrics: dict[str, float]  # the 12 numbers, named as METRIC_NAMES
    per_class: pd.DataFrame  # category_id, name, ap50_95, ap50, n_gt
    summary: str  # pycocotools' printed table
    n_detections: int


def to_coco_results(predictions: dict[int, Detections], category_ids: list[int]) -> list[dict]:
    """Detections -> COCO result dicts (bbox as x, y, w, h); class index i -> category_ids[i].

    A model may predict more classes than the dataset has categories (an 80-class checkpoint on a
    one-category set): boxes of a class without a category score nothing and are left out."""
    results = []
    for image_id, det in predictions.items():
        xywh = det.boxes.astype(np.float64).copy()
        xywh[:, 2:] -= xywh[:, :2]
        for box, score, label in zip(xywh.round(3), det.scores, det.labels):
            if int(label) >= len(category_ids):
                continue
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(category_ids[int(label)]),
                    "bbox": [float(v) for v in box],
                    "score": round(float(score), 5),
                }
            )
    return results


def evaluate_coco(ann_file: Path, predictions: dict[int, Detections], category_ids: list[int]) -> CocoMetrics:
    """Score ``predictions`` (image_id -> detections) against the ground truth in ``ann_file``.

    Only the predicted images are evaluated (so a subset of a dataset scores as that subset).
    An empty prediction set scores 0 everywhere: pycocotools cannot load empty results.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):  # pycocotools prints progress to stdout
        # Parsed as the dataset's validator parsed it (json.loads of the bytes: a UTF-8 BOM or a
        # locale that is not UTF-8 is fine), not by COCO(path), which opens it as locale text.
        gt = COCO()
        gt.dataset = json.loads(Path(ann_file).read_bytes())
        gt.createIndex()
    results = to_coco_results(predictions, category_ids)
    names = {c["id"]: c["name"] for c in gt.loadCats(gt.getCatIds())}
    n_gt = {cid: len(gt.getAnnIds(catIds=[cid], imgIds=list(predictions), iscrowd=None)) for cid in names}
    if not results:
        zeros = {name: 0.0 for name in METRIC_NAMES}
        table = pd.DataFrame(
            {"category_id": list(names), "name": list(names.values()), "ap50_95": 0.0, "ap50": 0.0, "n_gt": list(n_gt.values())}
        )
        return CocoMetrics(zeros, table, "no detections", 0)

    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = sorted(predictions)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    metrics = {name: float(value) for name, value in zip(METRIC_NAMES, ev.stats)}
    # precision: [iou thresholds T, recall points R, categories K, area ranges A, max dets M]
    precision = ev.eval["precision"]
    rows = []
    for k, cid in enumerate(ev.params.catIds):
        p_all = precision[:, :, k, 0, -1]
        p_50 = precision[0, :, k, 0, -1]
        rows.append(
            {
                "category_id": cid,
                "name": names[cid],
                "ap50_95": float(p_all[p_all > -1].mean()) if (p_all > -1).any() else float("nan"),
                "ap50": float(p_50[p_50 > -1].mean()) if (p_50 > -1).any() else float("nan"),
                "n_gt": n_gt[cid],
            }
        )
    return CocoMetrics(metrics, pd.DataFrame(rows), summary.getvalue(), len(results))
