"""The CPU reference of yolov5_detection_output, rule by rule, on hand-built sigmoid maps.

64 x 64 input: levels of 8 x 8 (stride 8), 4 x 4 (16) and 2 x 2 (32) cells, 3 anchors, 2 classes,
YOLOv5's anchors. Every map is 0 (probability 0) except the cells a test sets, so each expected box is
computed by hand from the rules the module docstring cites. Values are chosen to be exact in float16
unless a test is about float16.
"""

from __future__ import annotations

import pytest
import torch

from yolomlu.postprocess import decode_outputs, non_max_suppression
from yolomlu.postprocess.detection_output import (
    DetectionOutputSettings,
    detection_output_boxes,
    pack_detection_buffer,
    yolov5_detection_output,
)

ANCHORS = [10, 13, 16, 30, 33, 23, 30, 61, 62, 45, 59, 119, 116, 90, 156, 198, 373, 326]
IMG, NC, NA, NO = 64, 2, 3, 7


def maps(batch: int = 1) -> list[torch.Tensor]:
    return [torch.zeros(batch, NA * NO, IMG // s, IMG // s) for s in (8, 16, 32)]


def put(levels, level, anchor, gy, gx, txy=(0.5, 0.5), twh=(0.5, 0.5), obj=0.75, cls=(0.5, 0.25), image=0) -> None:
    """Set one anchor's sigmoid outputs at grid cell (gy, gx)."""
    values = [*txy, *twh, obj, *cls]
    for k, v in enumerate(values):
        levels[level][image, anchor * NO + k, gy, gx] = v


def run(levels, conf=0.3, iou=0.45, max_box=16, **settings):
    return detection_output_boxes(levels, ANCHORS, NC, 18, IMG, IMG, conf, iou, max_box, DetectionOutputSettings(**settings))


def test_decode_score_and_layout_of_one_box() -> None:
    levels = maps()
    put(levels, 0, 1, gy=2, gx=3)  # stride 8, anchor (16, 30): cx = (2*.5 - .5 + 3) * 8 = 28, cy = 20, w = 16, h = 30
    (boxes,) = run(levels)
    assert boxes.tolist() == [[20.0, 5.0, 36.0, 35.0, 0.375, 0.0]]  # score 0.75 * 0.5; class 1 (0.1875) is below 0.3
    buffer = yolov5_detection_output(*levels, ANCHORS, NC, 18, IMG, IMG, 0.3, 0.45, 4)
    assert buffer.dtype == torch.float16 and buffer.shape == (1, 64 + 7 * 4)
    assert buffer[0, 0] == 1 and not buffer[0, 1:64].any()  # count, then 63 unused values
    assert buffer[0, 64:71].tolist() == [0.0, 0.0, 0.375, 20.0, 5.0, 36.0, 35.0]  # batch, class, score, x1 y1 x2 y2
    assert not buffer[0, 71:].any()
    # The larger levels use their own stride and anchors: stride 32, anchor (373, 326), cell (1, 0).
    levels = maps()
    put(levels, 2, 2, gy=1, gx=0, twh=(0.25, 0.25))
    (boxes,) = run(levels)
    # cx = (2*.5 - .5 + 0) * 32 = 16, cy = 48, w = (2*.25)**2 * 373 = 93.25, h = 81.5; not clipped to the image
    assert boxes[:, :4].tolist() == [[16 - 46.625, 48 - 40.75, 16 + 46.625, 48 + 40.75]]


def test_one_box_under_every_class_that_passes_or_under_its_best() -> None:
    levels = maps()
    put(levels, 0, 0, gy=4, gx=4)
    each = run(levels, conf=0.1)[0]
    assert each[:, 4:].tolist() == [[0.375, 0.0], [0.1875, 1.0]] and torch.equal(each[0, :4], each[1, :4])
    best = run(levels, conf=0.1, classes="best")[0]
    assert best[:, 4:].tolist() == [[0.375, 0.0]]


def test_the_threshold_applies_to_obj_times_cls_or_to_obj() -> None:
    levels = maps()
    put(levels, 0, 0, gy=4, gx=4)  # obj 0.75, obj * cls = 0.375 and 0.1875
    assert len(run(levels, conf=0.5)[0]) == 0
    on_obj = run(levels, conf=0.5, score_on="obj")[0]
    assert on_obj[:, 4:].tolist() == [[0.375, 0.0], [0.1875, 1.0]]  # scored obj * cls all the same
    assert run(levels, conf=0.5, score_on="obj", classes="best")[0][:, 4:].tolist() == [[0.375, 0.0]]
    assert len(run(levels, conf=0.375)[0]) == 0  # strict: score > conf_thres


def test_nms_suppresses_within_a_class_only() -> None:
    levels = maps()
    put(levels, 0, 1, gy=2, gx=3)  # box A (20, 5, 36, 35), class 0 score 0.375
    put(levels, 0, 1, gy=2, gx=4, obj=0.5)  # box B = A moved 8 px right: IoU 8*30 / (2*16*30 - 8*30) = 1/3
    assert run(levels, conf=0.2, iou=0.3)[0][:, 4].tolist() == [0.375]  # 1/3 > 0.3: B suppressed
    assert run(levels, conf=0.2, iou=1 / 3)[0][:, 4].tolist() == [0.375, 0.25]  # not > 1/3: kept
    levels[0][0, 1 * NO + 5, 2, 4], levels[0][0, 1 * NO + 6, 2, 4] = 0.25, 0.75  # B now class 1
    kept = run(levels, conf=0.2, iou=0.3)[0]
    assert kept[:, 4:].tolist() == [[0.375, 0.0], [0.375, 1.0]]  # classes never suppress each other


def test_more_survivors_than_max_box_num_keep_the_best_and_count_max() -> None:
    levels = maps()
    cells = [(1, 0), (1, 3), (1, 6), (5, 0), (5, 3)]  # anchor (10, 13): 10 x 13 px boxes, far apart
    for (gy, gx), obj in zip(cells, [0.25, 0.75, 0.5, 0.625, 0.375]):
        put(levels, 0, 0, gy=gy, gx=gx, obj=obj, cls=(1.0, 0.0))
    (boxes,) = run(levels, conf=0.1, max_box=3)
    # best first: cells (1, 3), (5, 0), (1, 6); x1 = (gx + 0.5) * 8 - 5
    assert boxes[:, 4].tolist() == [0.75, 0.625, 0.5] and boxes[:, 0].tolist() == [23.0, -1.0, 47.0]
    buffer = yolov5_detection_output(*levels, ANCHORS, NC, 18, IMG, IMG, 0.1, 0.45, 3)
    assert buffer[0, 0] == 3 and buffer[0, 64 + 2 :: 7].tolist() == [0.75, 0.625, 0.5]


def test_blocks_per_image_batch_ids_and_empty_images() -> None:
    levels = maps(batch=3)
    put(levels, 0, 0, gy=1, gx=1, image=0)
    put(levels, 1, 2, gy=2, gx=2, image=2, cls=(0.0, 1.0))
    buffer = yolov5_detection_output(*levels, ANCHORS, NC, 18, IMG, IMG, 0.3, 0.45, 2)
    block = 64 + 7 * 2
    assert buffer.shape == (3, block) and buffer[:, 0].tolist() == [1, 0, 1]
    assert buffer[0, 64:66].tolist() == [0.0, 0.0] and buffer[2, 64:66].tolist() == [2.0, 1.0]  # batch id, class
    assert not buffer[1].any()  # an image without boxes: count 0, nothing else


def test_normalized_coordinates_divide_by_the_input_size() -> None:
    levels = maps()
    put(levels, 0, 1, gy=2, gx=3)
    buffer = yolov5_detection_output(*levels, ANCHORS, NC, 18, IMG, IMG, 0.3, 0.45, 1, DetectionOutputSettings(coords="normalized"))
    assert buffer[0, 64 + 3 : 64 + 7].tolist() == [20 / 64, 5 / 64, 36 / 64, 35 / 64]


def test_float16_in_and_out() -> None:
    levels = maps()
    put(levels, 0, 0, gy=3, gx=3, txy=(0.3, 0.5))
    (boxes,) = run(levels)
    tx = torch.tensor(0.3, dtype=torch.float16).item()  # read as float16: 0.300048828125
    assert boxes[0, 0].item() == pytest.approx((2 * tx - 0.5 + 3) * 8 - 5, abs=1e-5)  # float32 inside
    buffer = yolov5_detection_output(*levels, ANCHORS, NC, 18, IMG, IMG, 0.3, 0.45, 1, dtype=torch.float32)
    written = buffer[0, 64 + 3].item()
    assert written == torch.tensor((2 * tx - 0.5 + 3) * 8 - 5).half().item() and written != boxes[0, 0].item()


def test_model_made_maps_give_the_host_decode_and_nms_boxes() -> None:
    # The same rules as the host's decode_outputs + multi-label NMS, up to the float16 the op reads.
    torch.manual_seed(0)
    logits = [torch.randn(2, NA * NO, IMG // s, IMG // s) * 2 for s in (8, 16, 32)]
    logits = [x.half().float() for x in logits]
    for x in logits:
        x.view(2, NA, NO, *x.shape[2:])[:, :, 4] -= 1.0  # fewer, better-separated candidates
    ours = detection_output_boxes([x.sigmoid() for x in logits], ANCHORS, NC, 18, IMG, IMG, 0.4, 0.45, 1024)
    anchors = torch.tensor(ANCHORS, dtype=torch.float32).view(3, 3, 2)
    host = non_max_suppression(decode_outputs(logits, anchors, (8, 16, 32)), 0.4, 0.45, max_det=1024, multi_label=True)
    for a, b in zip(ours, host):
        assert len(a) == len(b) > 5
        for cls in range(NC):  # per class, box by box in the order of their left edges
            a_c, b_c = a[a[:, 5] == cls], b[b[:, 5] == cls]
            a_c, b_c = a_c[a_c[:, 0].argsort()], b_c[b_c[:, 0].argsort()]
            assert len(a_c) == len(b_c) and torch.allclose(a_c[:, :5], b_c[:, :5], atol=0.05, rtol=1e-3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"anchors": ANCHORS[:12], "num_anchors": 12}, r"anchors: 12 values with num_anchors=12; expected 18"),
        ({"num_anchors": 6}, r"anchors: 18 values with num_anchors=6"),
        ({"img_h": 96}, r"level 0 \(stride 8\) must be \[B, na\*\(5\+nc\), img_h/8, img_w/8\] = \[1, 21, 12, 8\]"),
        ({"num_classes": 3}, r"= \[1, 24, 8, 8\] for img 64x64, 3 anchors and 3 classes; got \[1, 21, 8, 8\]"),
    ],
)
def test_arguments_that_do_not_fit_are_named(change, message) -> None:
    args = {"anchors": ANCHORS, "num_classes": NC, "num_anchors": 18, "img_h": IMG, "img_w": IMG}
    args.update(change)
    with pytest.raises(ValueError, match=message):
        yolov5_detection_output(*maps(), args["anchors"], args["num_classes"], args["num_anchors"], args["img_h"],
                                args["img_w"], 0.3, 0.45, 4)  # fmt: skip
    with pytest.raises(ValueError, match=r"classes='all' is not valid; choose one of \['each', 'best'\]"):
        DetectionOutputSettings(classes="all")
    with pytest.raises(ValueError, match=r"image 0: boxes must be \[n, 6\]"):
        pack_detection_buffer([torch.zeros(2, 5)], 4, IMG, IMG)
