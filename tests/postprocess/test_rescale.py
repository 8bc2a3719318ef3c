import numpy as np
import pytest
import torch

from yolomlu.data.letterbox import letterbox
from yolomlu.postprocess.rescale import to_detections
from yolomlu.types import Detections


def test_maps_back_to_original_pixels():
    _, info = letterbox(np.zeros((480, 640, 3), np.uint8), 640)  # ratio 1, pad top 80
    det = torch.tensor([[10.0, 90, 110, 190, 0.9, 3], [-5, 70, 700, 600, 0.5, 0]])
    d = to_detections(det, info)
    assert isinstance(d, Detections) and len(d) == 2
    assert d.boxes.dtype == np.float32 and d.scores.dtype == np.float32 and d.labels.dtype == np.int64
    np.testing.assert_array_equal(d.boxes, [[10, 10, 110, 110], [0, 0, 640, 480]])  # second clipped
    np.testing.assert_allclose(d.scores, [0.9, 0.5])
    assert d.labels.tolist() == [3, 0]


def test_scaled_and_padded():
    _, info = letterbox(np.zeros((100, 50, 3), np.uint8), 64)  # ratio 0.64, pad (16, 0)
    d = to_detections(torch.tensor([[16 + 3.2, 6.4, 32, 32, 0.7, 1]]), info)
    np.testing.assert_allclose(d.boxes, [[5, 10, 25, 50]], atol=1e-5)


def test_empty():
    _, info = letterbox(np.zeros((10, 10, 3), np.uint8), 32)
    d = to_detections(torch.zeros(0, 6), info)
    assert len(d) == 0 and d.boxes.shape == (0, 4)


def test_bad_shape():
    _, info = letterbox(np.zeros((10, 10, 3), np.uint8), 32)
    with pytest.raises(ValueError, match=r"\[n, 6\].*\(2, 5\)"):
        to_detections(torch.zeros(2, 5), info)


def test_pipeline_recovers_ground_truth(tmp_path):
    # GT boxes -> letterboxed -> fake predictions (+ a duplicate) -> NMS -> back to original: the GT again.
    from yolomlu.data.coco import CocoDataset
    from yolomlu.data.letterbox import boxes_to_letterboxed
    from yolomlu.data.synthetic import generate_shapes
    from yolomlu.postprocess.nms import non_max_suppression

    generate_shapes(tmp_path, 1, img_size=160)
    ds = CocoDataset.from_root(tmp_path)
    img = ds.load_image(1)
    anns = ds.annotations(1)
    gt = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float64)
    _, info = letterbox(img, 224)
    lb = torch.from_numpy(boxes_to_letterboxed(gt, info)).float()
    n, nc = len(anns), 6
    pred = torch.zeros(1, 2 * n, 5 + nc)
    pred[0, :n, :2] = (lb[:, :2] + lb[:, 2:]) / 2
    pred[0, :n, 2:4] = lb[:, 2:] - lb[:, :2]
    pred[0, :n, 4] = torch.linspace(0.9, 0.5, n)
    pred[0, n:, :4] = pred[0, :n, :4] + 0.3  # near-duplicates with lower confidence
    pred[0, n:, 4] = 0.4
    for k, a in enumerate(anns):
        pred[0, [k, n + k], 5 + a["category_id"] - 1] = 1.0
    [det] = non_max_suppression(pred, 0.25, 0.65)
    d = to_detections(det, info)
    assert len(d) == n
    np.testing.assert_allclose(d.boxes, gt, atol=1e-3)
    assert d.labels.tolist() == [a["category_id"] - 1 for a in anns]
