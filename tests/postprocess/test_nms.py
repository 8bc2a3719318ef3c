
import pytest
import torch

from yolomlu.postprocess.nms import box_iou, nms, non_max_suppression


def _pred(rows, nc=3):
    """rows of (cx, cy, w, h, obj, class index, class prob) -> pred [1, N, 5 + nc]."""
    p = torch.zeros(1, len(rows), 5 + nc)
    for k, (cx, cy, w, h, obj, c, prob) in enumerate(rows):
        p[0, k, :5] = torch.tensor([cx, cy, w, h, obj])
        p[0, k, 5 + c] = prob
    return p


def test_box_iou_hand_computed():
    a = torch.tensor([[0.0, 0, 2, 2], [0, 0, 0, 0]])
    b = torch.tensor([[1.0, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]])
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    assert iou[0].tolist() == pytest.approx([1 / 7, 1.0, 0.0])
    assert iou[1].tolist() == [0.0, 0.0, 0.0]  # empty union -> 0, not nan


def test_nms_greedy_order_and_suppression():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # iou(3, 0) = 90/100 = 0.9, iou(3, 1) = 72/118 = 0.61, iou(0, 1) = 81/119 = 0.68, box 2 is apart.
    keep = nms(boxes, scores, 0.5)
    assert keep.tolist() == [3, 2] and keep.dtype == torch.long
    # At 0.7, 3 drops 0 but not 1; 0 is gone, so it cannot drop 1 either (greedy, not all-pairs).
    assert nms(boxes, scores, 0.7).tolist() == [3, 1, 2]


def test_nms_iou_exactly_at_threshold_is_kept():
    boxes = torch.tensor([[0.0, 0, 4, 1], [0, 0, 2, 1]])  # inter 2, union 4 -> iou exactly 0.5
    assert box_iou(boxes[:1], boxes[1:]).item() == 0.5
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.49).tolist() == [0]


def test_nms_max_keep_equals_truncation():
    torch.manual_seed(0)
    xy = torch.rand(500, 2) * 100
    boxes = torch.cat([xy, xy + torch.rand(500, 2) * 30 + 1], 1)
    scores = torch.rand(500)
    full = nms(boxes, scores, 0.5)
    assert len(full) > 20
    assert nms(boxes, scores, 0.5, max_keep=20).tolist() == full[:20].tolist()
    assert scores[full].diff().le(0).all()  # descending score order


def _reference_greedy(boxes, scores, thr, max_keep=None):
    """The textbook loop, one box at a time: the definition nms() must reproduce."""
    order = sorted(range(len(scores)), key=lambda k: (-float(scores[k]), k))
    keep = []
    for k in order:
        if all(box_iou(boxes[k : k + 1], boxes[j : j + 1]).item() <= thr for j in keep):
            keep.append(k)
            if max_keep and len(keep) >= max_keep:
                break
    return keep


@pytest.mark.parametrize("trial", range(12))
def test_nms_equals_reference_for_any_window(trial):
    g = torch.Generator().manual_seed(trial)
    n = int(torch.randint(1, 200, (1,), generator=g))
    centers = torch.rand(int(torch.randint(1, 6, (1,), generator=g)), 2, generator=g) * 100
    c = centers[torch.randint(0, len(centers), (n,), generator=g)] + torch.randn(n, 2, generator=g) * 3
    wh = torch.rand(n, 2, generator=g) * 20 + 5
    boxes = torch.cat([c - wh / 2, c + wh / 2], 1)  # clustered, so suppression chains occur
    scores = torch.rand(n, generator=g).round(decimals=1)  # many ties
    thr = float(torch.rand(1, generator=g))
    max_keep = None if trial % 2 else int(torch.randint(1, 20, (1,), generator=g))
    expected = _reference_greedy(boxes, scores, thr, max_keep)
    for block_size in (1, 3, 7, 128):
        assert nms(boxes, scores, thr, max_keep=max_keep, block_size=block_size).tolist() == expected


@pytest.mark.parametrize("steps", [2, 32])
def test_nms_long_suppression_chain(monkeypatch, steps):
    # Boxes sliding by 0.6 of their width: each overlaps only its neighbours (IoU 0.25), so at 0.2 every
    # box is suppressed by its predecessor unless that one was itself suppressed: greedy keeps 0, 2, 4, ...
    import sys

    monkeypatch.setattr(sys.modules["yolomlu.postprocess.nms"], "_MAX_FIXPOINT_STEPS", steps)
    n = 300
    x = torch.arange(n, dtype=torch.float32) * 6
    boxes = torch.stack([x, torch.zeros(n), x + 10, torch.ones(n)], 1)
    scores = torch.linspace(1, 0.1, n)
    assert nms(boxes, scores, 0.2).tolist() == list(range(0, n, 2))
    assert nms(boxes, scores, 0.2, max_keep=7, block_size=5).tolist() == list(range(0, 14, 2))
    for block_size in (steps - 1, steps, steps + 1):  # windows just around the step limit
        assert nms(boxes[:40], scores[:40], 0.2, block_size=block_size).tolist() == list(range(0, 40, 2))


def test_nms_empty():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).shape == (0,)


def test_overlapping_same_class_one_kept():
    p = _pred([(50, 50, 20, 20, 0.9, 1, 0.9), (52, 50, 20, 20, 0.8, 1, 0.9)])
    [d] = non_max_suppression(p, 0.25, 0.45)
    assert d.shape == (1, 6)
    assert d[0].tolist() == pytest.approx([40, 40, 60, 60, 0.81, 1])


def test_overlapping_different_classes_both_kept_unless_agnostic():
    p = _pred([(50, 50, 20, 20, 0.9, 1, 0.9), (52, 50, 20, 20, 0.8, 2, 0.9)])
    [d] = non_max_suppression(p, 0.25, 0.45)
    assert d[:, 5].tolist() == [1, 2] and d[:, 4].tolist() == pytest.approx([0.81, 0.72])
    [d] = non_max_suppression(p, 0.25, 0.45, agnostic=True)
    assert d[:, 5].tolist() == [1]


def test_iou_at_threshold_through_batched_nms():
    # xyxy [0,0,4,1] and [0,0,2,1]: iou exactly 0.5, same class -> kept at iou_thres=0.5 (only > suppresses)
    p = _pred([(2, 0.5, 4, 1, 0.9, 0, 1.0), (1, 0.5, 2, 1, 0.8, 0, 1.0)])
    assert len(non_max_suppression(p, 0.25, 0.5)[0]) == 2
    assert len(non_max_suppression(p, 0.25, 0.49)[0]) == 1


def test_conf_threshold_is_obj_times_cls_and_strict():
    p = _pred([(10, 10, 4, 4, 0.5, 0, 0.5), (30, 30, 4, 4, 0.5, 0, 0.6), (50, 50, 4, 4, 0.2, 0, 1.0)])
    [d] = non_max_suppression(p, conf_thres=0.25)
    assert d[:, 4].tolist() == pytest.approx([0.3])  # 0.25 is not > 0.25; obj 0.2 fails
    assert d[0, :4].tolist() == [28, 28, 32, 32]


def test_max_det_truncates_highest_first():
    rows = [(10 + 20 * k, 10, 8, 8, 0.3 + 0.05 * k, 0, 1.0) for k in range(10)]  # disjoint boxes
    [d] = non_max_suppression(_pred(rows), 0.1, 0.45, max_det=3)
    assert d[:, 4].tolist() == pytest.approx([0.75, 0.7, 0.65])


def test_max_candidates_caps_before_nms():
    rows = [(10 + 20 * k, 10, 8, 8, 0.3 + 0.05 * k, 0, 1.0) for k in range(10)]
    [d] = non_max_suppression(_pred(rows), 0.1, 0.45, max_candidates=4)
    assert len(d) == 4 and d[-1, 4].item() == pytest.approx(0.6)


def test_empty_and_batch():
    p = torch.cat([_pred([(10, 10, 4, 4, 0.9, 0, 0.9)]), _pred([(10, 10, 4, 4, 0.1, 0, 0.9)])])
    a, b = non_max_suppression(p, 0.25)
    assert a.shape == (1, 6) and b.shape == (0, 6)
    [e] = non_max_suppression(torch.zeros(1, 0, 8))
    assert e.shape == (0, 6)


def test_multi_label():
    p = _pred([(50, 50, 20, 20, 1.0, 0, 0.9)])
    p[0, 0, 5 + 2] = 0.6  # a second class above threshold on the same box
    [d] = non_max_suppression(p, 0.25, 0.45, multi_label=True)
    assert d[:, 5].tolist() == [0, 2] and d[:, 4].tolist() == pytest.approx([0.9, 0.6])
    assert d[0, :4].tolist() == d[1, :4].tolist()
    [d] = non_max_suppression(p, 0.25, 0.45, multi_label=False)
    assert d[:, 5].tolist() == [0]


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\[B, N, 5 \+ nc\].*\(1, 3, 5\)"):
        non_max_suppression(torch.zeros(1, 3, 5))
    with pytest.raises(ValueError, match="conf_thres"):
        non_max_suppression(torch.zeros(1, 3, 6), conf_thres=2)


def test_untrained_model_scale_keeps_max_det_in_score_order():
    # 25200 x 80 predictions with low objectness logits everywhere, conf 0.001, as an untrained model at 640.
    torch.manual_seed(0)
    p = torch.rand(1, 25200, 85)
    p[..., :2] *= 640
    p[..., 2:4] = p[..., 2:4] * 100 + 4
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # intra-op threads on a shared, loaded CPU crawl
    try:
        [d] = non_max_suppression(p, 0.001, 0.65, max_det=300, multi_label=True)
    finally:
        torch.set_num_threads(threads)
    # Speed is a benchmark's business (post_ms of every run), not a timed test's.
    assert d.shape == (300, 6) and d[:, 4].diff().le(0).all()


def test_half_precision_pred():
    p = _pred([(50, 50, 20, 20, 0.9, 1, 0.9), (52, 50, 20, 20, 0.8, 1, 0.9), (300, 300, 10, 10, 0.9, 2, 0.9)])
    [d] = non_max_suppression(p.half(), 0.25, 0.45)
    assert d.dtype == torch.float16 and d[:, 5].tolist() == [1, 2]
    assert d[0, :4].tolist() == [40, 40, 60, 60]
