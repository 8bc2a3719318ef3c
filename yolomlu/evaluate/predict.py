"""Run a runner over a COCO-format dataset and collect detections per image."""

from __future__ import annotations

from yolomlu.backends.base import Runner
from yolomlu.data.coco import CocoDataset
from yolomlu.evaluate.pipeline import DetectHead, NmsSettings, postprocess, preprocess
from yolomlu.types import Detections


def predict_dataset(
    runner: Runner,
    dataset: CocoDataset,
    img_size: int,
    batch_size: int,
    head: DetectHead,
    nms: NmsSettings,
    progress: bool = True,
) -> dict[int, Detections]:
    """image_id -> detections in original-image pixels, for every image of ``dataset``.

    A missing or unreadable image raises the dataset's error, which names the file.
    """
    from tqdm import tqdm

    ids = dataset.image_ids
    predictions: dict[int, Detections] = {}
    with tqdm(total=len(ids), desc="evaluate", unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            x, infos = preprocess([dataset.load_image(i) for i in chunk], img_size)
            outputs = runner.infer(x)
            for image_id, det in zip(chunk, postprocess(outputs, head, nms, infos, runner.detection_buffer)):
                predictions[image_id] = det
            bar.update(len(chunk))
    return predictions
