"""Hand-built detection buffers of yolov5_detection_output, decoded exactly.

Layout per batch item (block): [count, 63 reserved, then max_box_num x (batch_id, class_id, score, x1, y1,
x2, y2)], as Cambricon's YOLOv5 samples parse it: CambriconECO/Pytorch_Yolov5_Inference
``offline/yolov5_offline_simple_demo/src/processor.cpp`` (block i at i * (64 + 7 * max), box k at 64 + 7k)
and ``quantize_online/detect.py`` (``get_boxes``: batch_id checked against [0, B), x2 > x1, y2 > y1).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from yolomlu.data.letterbox import LetterboxInfo
from yolomlu.postprocess.mlu_buffer import DetectionBufferFormat, decode_detection_buffer
from yolomlu.postprocess.rescale import to_detections


def block(max_box: int, count: float, rows: list[tuple]) -> torch.Tensor:
    b = torch.zeros(64 + 7 * max_box)
    b[0] = count
    b[1:64] = 7.0  # reserved values must not leak into boxes
    for k, row in enumerate(rows):
        b[64 + 7 * k : 64 + 7 * (k + 1)] = torch.tensor(row, dtype=torch.float32)
    return b


def test_every_box_of_every_batch_item_with_its_class() -> None:
    # The study's bus.jpg boxes (4 persons, 1 bus): its parser printed only the first and lost the classes.
    bus = [
        (0, 0, 0.93258, 476.48029, 231.27528, 560.08221, 521.95844),
        (0, 0, 0.92405, 108.84730, 234.92026, 226.93616, 535.01819),
        (0, 0, 0.88982, 212.26106, 242.01077, 283.89954, 509.86032),
        (0, 5, 0.83110, 87.81021, 135.12836, 557.62671, 436.73010),
        (0, 0, 0.76313, 80.77100, 324.56339, 125.81225, 518.01605),
    ]
    zidane = [
        (1, 0, 0.930001, 374.240, 160.377, 571.742, 495.508),
        (1, 27, 0.905732, 216.247, 358.464, 262.488, 498.221),
    ]
    buffer = torch.stack([block(8, 5, bus), block(8, 2, zidane)])
    out = decode_detection_buffer(buffer, batch_size=2, max_box_num=8, img_h=640, img_w=640)
    assert [len(d) for d in out] == [5, 2]
    expected0 = torch.tensor([[*r[3:], r[2], r[1]] for r in bus], dtype=torch.float32)
    expected1 = torch.tensor([[*r[3:], r[2], r[1]] for r in zidane], dtype=torch.float32)
    assert torch.equal(out[0], expected0) and torch.equal(out[1], expected1)
    assert out[0][:, 5].tolist() == [0, 0, 0, 5, 0] and out[1][:, 5].tolist() == [0, 27]
    # Class ids survive into Detections as integers (names are looked up from them).
    info = LetterboxInfo(orig_shape=(640, 640), new_shape=(640, 640), ratio=1.0, pad=(0.0, 0.0))
    assert to_detections(out[1], info).labels.tolist() == [0, 27]


def test_normalized_coordinates_scale_by_width_and_height() -> None:
    rows = [(0, 2, 0.5, 0.25, 0.5, 0.75, 1.0), (0, 1, 0.25, 0.0, 0.125, 0.5, 0.25)]
    fmt = DetectionBufferFormat(max_box_num=4, img_h=480, img_w=640, coords="normalized")
    (det,) = fmt.decode(block(4, 2, rows), batch_size=1)
    assert det.tolist() == [[160.0, 240.0, 480.0, 480.0, 0.5, 2.0], [0.0, 60.0, 320.0, 120.0, 0.25, 1.0]]
    (pixels,) = decode_detection_buffer(block(4, 2, rows), 1, 4, 480, 640, coords="pixels")
    assert pixels[:, :4].tolist() == [[0.25, 0.5, 0.75, 1.0], [0.0, 0.125, 0.5, 0.25]]


def test_full_buffer_count_above_max_box_num_reads_max_box_num_boxes() -> None:
    rows = [(0, k, 0.9 - 0.1 * k, 10.0 * k, 0.0, 10.0 * k + 5, 5.0) for k in range(3)]
    (det,) = decode_detection_buffer(block(3, 1000, rows), 1, 3, 640, 640)
    assert det[:, 5].tolist() == [0, 1, 2] and det[:, 0].tolist() == [0, 10, 20]


def test_invalid_rows_and_rows_past_the_count_are_dropped() -> None:
    good = (1, 3, 0.5, 1.0, 2.0, 3.0, 4.0)
    rows = [
        good,
        (-1, 3, 0.5, 1.0, 2.0, 3.0, 4.0),  # batch id below 0
        (2, 3, 0.5, 1.0, 2.0, 3.0, 4.0),  # batch id >= B
        (0.5, 3, 0.5, 1.0, 2.0, 3.0, 4.0),  # not an integer
        (1, 3, 0.5, 3.0, 2.0, 3.0, 4.0),  # x2 <= x1
        (1, 3, 0.5, 1.0, 4.0, 3.0, 4.0),  # y2 <= y1
        (1, 3, math.nan, 1.0, 2.0, 3.0, 4.0),  # NaN score
        (1, -1, 0.5, 1.0, 2.0, 3.0, 4.0),  # negative class
        (1, 3, 0.5, 1.0, 2.0, math.inf, 4.0),  # infinite coordinate
        good,  # index 9: past the count of 9, never read
    ]
    first = block(10, 0, [good])  # count 0: nothing, although a valid-looking row sits there
    second = block(10, 9, rows)
    out = decode_detection_buffer(torch.stack([first, second]).flatten(), 2, 10, 640, 640)  # flat works too
    assert len(out[0]) == 0
    assert out[1].tolist() == [[1.0, 2.0, 3.0, 4.0, 0.5, 3.0]]
    (none,) = decode_detection_buffer(block(2, math.nan, [good]), 1, 2, 640, 640)
    assert len(none) == 0 and none.shape == (0, 6)


def test_max_det_keeps_the_highest_scores() -> None:
    rows = [(0, 0, s, 0.0, 0.0, 1.0, 1.0) for s in (0.2, 0.9, 0.5, 0.7)]
    (det,) = decode_detection_buffer(block(4, 4, rows), 1, 4, 64, 64, max_det=2)
    assert det[:, 4].tolist() == pytest.approx([0.9, 0.7])


def test_half_precision_buffer_reads_exactly_below_2048() -> None:
    rows = [(0, 79, 0.5, 100.0, 2000.0, 2047.0, 2049.0)]
    (det,) = decode_detection_buffer(block(2, 1, rows).half(), 1, 2, 4096, 4096)
    # 2049 is not a float16 number: the device already rounded it to 2048 (the documented caveat).
    assert det.tolist() == [[100.0, 2000.0, 2047.0, 2048.0, 0.5, 79.0]]
    assert det.dtype == torch.float32


def test_a_buffer_of_the_wrong_size_is_refused_with_the_sizes() -> None:
    with pytest.raises(ValueError, match=r"shape \(1, 120\) \(120 values\) is not 1 block\(s\) of 64 \+ 7 \* max_box_num = 134"):
        decode_detection_buffer(torch.zeros(1, 120), 1, 10, 640, 640)
    with pytest.raises(ValueError, match="coords='xyxy'"):
        decode_detection_buffer(torch.zeros(1, 71), 1, 1, 640, 640, coords="xyxy")


def test_decoding_is_vectorised_over_a_large_buffer() -> None:
    # 16 images x 1024 boxes: the loop is over images only.
    max_box, batch = 1024, 16
    buf = np.zeros((batch, 64 + 7 * max_box), np.float32)
    buf[:, 0] = max_box
    boxes = buf[:, 64:].reshape(batch, max_box, 7)
    boxes[:, :, 0] = np.arange(batch)[:, None]
    boxes[:, :, 1] = np.arange(max_box) % 80
    boxes[:, :, 2] = 0.5
    boxes[:, :, 3:5] = 1.0
    boxes[:, :, 5:7] = 2.0
    out = decode_detection_buffer(torch.from_numpy(buf), batch, max_box, 640, 640)
    assert [len(d) for d in out] == [max_box] * batch
    assert out[7][:, 5].tolist() == [k % 80 for k in range(max_box)]


# -- the decoder against the CPU reference of the op ----------------------------------------------
# yolomlu.postprocess.detection_output writes buffers by the op's documented rules; the decoder must
# give back every box it wrote, as the buffer holds it (float16), box for box and in order.
IMG = 64


def as_written(boxes: torch.Tensor, coords: str) -> torch.Tensor:
    """What a decoder can read of reference boxes [n, 6]: float16 values (x/IMG in float16, times IMG,
    for normalized coordinates), without the boxes float16 made empty (x2 <= x1: the decoder drops
    those, as the online demo's get_boxes does)."""
    xyxy = boxes[:, :4]
    xyxy = (xyxy / IMG).half().float() * IMG if coords == "normalized" else xyxy.half().float()
    out = torch.cat((xyxy, boxes[:, 4:5].half().float(), boxes[:, 5:6]), 1)
    return out[(out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])]


def reference_round_trip(levels, max_box: int, coords: str, conf: float = 0.25):
    from yolomlu.postprocess.detection_output import DetectionOutputSettings, detection_output_boxes, pack_detection_buffer

    boxes = detection_output_boxes(levels, ANCHORS, 3, 18, IMG, IMG, conf, 0.45, max_box, DetectionOutputSettings(coords=coords))
    buffer = pack_detection_buffer(boxes, max_box, IMG, IMG, coords)
    return boxes, decode_detection_buffer(buffer, len(boxes), max_box, IMG, IMG, coords)


ANCHORS = [10, 13, 16, 30, 33, 23, 30, 61, 62, 45, 59, 119, 116, 90, 156, 198, 373, 326]


@pytest.mark.parametrize("coords", ["pixels", "normalized"])
def test_hand_built_maps_decode_box_for_box(coords) -> None:
    levels = [torch.zeros(2, 24, IMG // s, IMG // s) for s in (8, 16, 32)]
    # image 0: anchor 1 at cell (2, 3) of level 0, classes 0 and 2 pass; anchor 0 at cell (1, 1) of level 1
    levels[0][0, 8:16, 2, 3] = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.75, 0.5, 0.0, 0.5])
    levels[1][0, 0:8, 1, 1] = torch.tensor([0.25, 0.75, 0.5, 0.5, 1.0, 0.0, 1.0, 0.0])
    # image 1: nothing above the threshold
    boxes, decoded = reference_round_trip(levels, 8, coords)
    assert [len(b) for b in boxes] == [3, 0] and [len(d) for d in decoded] == [3, 0]
    assert boxes[0][:, 4:].tolist() == [[1.0, 1.0], [0.375, 0.0], [0.375, 2.0]]  # best first, class order on ties
    # stride 16, anchor (30, 61): cx = (2*.25 - .5 + 1) * 16 = 16, cy = (2*.75 - .5 + 1) * 16 = 32, w 30, h 61
    assert boxes[0][0, :4].tolist() == [1.0, 1.5, 31.0, 62.5]
    for want, got in zip(boxes, decoded):
        assert torch.equal(got, as_written(want, coords))


@pytest.mark.parametrize("coords", ["pixels", "normalized"])
@pytest.mark.parametrize("max_box", [8, 1024])
def test_model_made_maps_decode_box_for_box(boxy_model, coords, max_box) -> None:
    """Several images in several batches, one image empty, the buffer full (8) or not (1024)."""
    from tests.trained_like import trained_like

    model = trained_like(boxy_model)
    head = model.detect
    with torch.no_grad():  # trained_like re-drew the head's weights: put the confident biases back
        for conv in head.m:
            conv.bias.view(head.na, head.no)[:, 4] = 1.0
    torch.manual_seed(5)
    for batch in (3, 2):
        with torch.no_grad():
            levels = [y.sigmoid() for y in model(torch.rand(batch, 3, IMG, IMG))]
        for y in levels:
            y[1] = 0.0  # image 1 has nothing: its block must read empty
        boxes, decoded = reference_round_trip(levels, max_box, coords)
        counts = [len(b) for b in boxes]
        assert counts[1] == 0 and (counts[0] == 8 if max_box == 8 else counts[0] > 8)  # full, or more than 8 fit
        for want, got in zip(boxes, decoded):
            expected = as_written(want, coords)
            assert len(expected) >= len(want) - 2  # at most a sliver of boxes collapses in float16
            assert torch.equal(got, expected)
