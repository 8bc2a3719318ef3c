"""Box IoU, greedy NMS and YOLOv5-style batched non-maximum suppression, in plain torch.

Our own NMS (no torchvision) with no wall-clock limit: a slow backend must not lose detections (and mAP)
because post-processing gave up early, as YOLOv5's time-limited NMS does.
"""

from __future__ import annotations

import torch

__all__ = ["box_iou", "nms", "non_max_suppression", "xywh_to_xyxy"]

_MAX_WINDOW = 1024  # largest window of nms(): its [w, w] temporaries stay a few MB
_MAX_FIXPOINT_STEPS = 32  # per window; bounds the cost of pathological suppression chains


def xywh_to_xyxy(x: torch.Tensor) -> torch.Tensor:
    """[..., 4] (cx, cy, w, h) -> [..., 4] (x1, y1, x2, y2), same dtype."""
    xy, wh = x[..., :2], x[..., 2:4] / 2
    return torch.cat((xy - wh, xy + wh), -1)


def _area(b: torch.Tensor) -> torch.Tensor:
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes: a [N, 4], b [M, 4] -> [N, M] (a's dtype). 0 where the union is empty."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:4], b[None, :, 2:4])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))


def _overlaps(a: torch.Tensor, area_a: torch.Tensor, b: torch.Tensor, area_b: torch.Tensor, thr: float) -> torch.Tensor:
    """[N, M] bool: IoU(a_i, b_j) > thr, as inter > thr * union (no division; an empty union gives False,
    as IoU 0 > thr does for thr >= 0)."""
    wh = (torch.minimum(a[:, None, 2:4], b[None, :, 2:4]) - torch.maximum(a[:, None, :2], b[None, :, :2])).clamp_(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter > thr * (area_a[:, None] + area_b[None, :] - inter)


def nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float,
    max_keep: int | None = None,
    block_size: int = 128,
) -> torch.Tensor:
    """Greedy NMS: take the highest-scoring box, drop every remaining box whose IoU with it is greater
    than ``iou_threshold`` (equal is kept), repeat.

    boxes:  [N, 4] xyxy (float)
    scores: [N] (float); ties keep input order
    max_keep: stop once this many boxes are kept. Exact, not an approximation: the greedy pass keeps
              boxes in descending score order, so its first K keeps do not depend on what comes later.
    block_size: size of the first window (speed only; the result is identical for any value)
    Returns int64 [K] indices into ``boxes``, in descending score order.

    The greedy pass walks the score-sorted boxes in windows (``block_size``, doubling up to
    ``_MAX_WINDOW``) rather than one box at a time, so the work is a few large tensor operations
    instead of thousands of tiny ones (tiny ops are dominated by per-op and thread-sync overhead, badly
    so on a loaded CPU), and boxes beyond the last window needed are never touched. Per window: drop
    the boxes that overlap an already kept box, then resolve the rest among themselves exactly: the
    fixed point of "kept = not overlapped by an earlier kept box of the window" over the window's
    upper-triangular overlap matrix is unique and equals the greedy answer.
    """
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms needs boxes [N, 4] and scores [N], got {tuple(boxes.shape)} and {tuple(scores.shape)}")
    if max_keep is not None and max_keep < 1:
        raise ValueError(f"max_keep must be >= 1 or None, got {max_keep}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if not iou_threshold >= 0:
        raise ValueError(f"iou_threshold must be >= 0, got {iou_threshold}")
    n = boxes.shape[0]
    device = boxes.device
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order]
    areas = _area(b)
    kept = torch.zeros(0, dtype=torch.long, device=device)  # positions in score order
    pos, window = 0, block_size
    while pos < n and (max_keep is None or kept.numel() < max_keep):
        win = torch.arange(pos, min(pos + window, n), device=device)
        pos += window
        window = min(2 * window, max(block_size, _MAX_WINDOW))
        if kept.numel():
            win = win[~_overlaps(b[kept], areas[kept], b[win], areas[win], iou_threshold).any(0)]
            if win.numel() == 0:
                continue
        bw, aw = b[win], areas[win]
        overlap = torch.triu(_overlaps(bw, aw, bw, aw, iou_threshold), diagonal=1)  # [i, j]: i before j
        keep = torch.ones(win.numel(), dtype=torch.bool, device=device)
        for _ in range(_MAX_FIXPOINT_STEPS):  # converges in (longest suppression chain) steps, usually 2-3
            new = ~(overlap & keep[:, None]).any(0)
            if torch.equal(new, keep):
                break
            keep = new
        else:
            # A long chain (each box suppressed by the one before): entry j depends only on entries < j,
            # so after T steps the first T are final. Keep those and resume right after them (when the
            # window is no longer than T, every entry is final already).
            t = _MAX_FIXPOINT_STEPS
            if t < win.numel():
                kept = torch.cat((kept, win[:t][keep[:t]]))
                pos, window = int(win[t]), block_size
                continue
        kept = torch.cat((kept, win[keep]))
    if max_keep is not None:
        kept = kept[:max_keep]
    return order[kept]


def non_max_suppression(
    pred: torch.Tensor,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    max_det: int = 300,
    max_candidates: int = 30000,
    multi_label: bool = False,
    agnostic: bool = False,
) -> list[torch.Tensor]:
    """Per-image, per-class NMS over decoded predictions.

    pred: [B, N, 5 + nc] as from ``decode_outputs``: cx, cy, w, h (pixels), objectness, class probabilities.
    conf = objectness x class probability; a (box, class) is a candidate when conf > conf_thres (strict).
    multi_label: every class above the threshold makes a candidate (mAP setting); otherwise only the best class.
    max_candidates: candidates kept (highest conf first) before NMS, bounding its cost.
    agnostic: suppress across classes; otherwise boxes of different classes never suppress each other.
    Returns B tensors [n, 6] (x1, y1, x2, y2, conf, cls), n <= max_det, descending conf, pred's dtype.
    """
    if pred.ndim != 3 or pred.shape[2] < 6:
        raise ValueError(f"pred must be [B, N, 5 + nc] with nc >= 1, got {tuple(pred.shape)}")
    if not 0 <= conf_thres <= 1 or not 0 <= iou_thres <= 1:
        raise ValueError(f"conf_thres and iou_thres must lie in [0, 1], got {conf_thres} and {iou_thres}")
    if max_det < 1 or max_candidates < 1:
        raise ValueError(f"max_det and max_candidates must be >= 1, got {max_det} and {max_candidates}")
    # NMS runs in float32 (float64 if pred is): fp16 cannot hold class-offset coordinates (max 65504),
    # and float64 is several times slower on CPU for no decision that matters (see the offset note below).
    nms_dtype = torch.float64 if pred.dtype == torch.float64 else torch.float32
    out = []
    for x in pred:  # one image at a time: a Python loop over the batch, never over boxes
        x = x[x[:, 4] > conf_thres]  # conf <= objectness, so this only drops certain losers early
        if x.shape[0] == 0:
            out.append(pred.new_zeros((0, 6)))
            continue
        conf = x[:, 5:] * x[:, 4:5]  # [n, nc]
        if multi_label:
            i, j = (conf > conf_thres).nonzero(as_tuple=True)
            scores = conf[i, j]
        else:
            scores, j = conf.max(1)
            i = (scores > conf_thres).nonzero(as_tuple=True)[0]
            scores, j = scores[i], j[i]
        if scores.numel() == 0:
            out.append(pred.new_zeros((0, 6)))
            continue
        if scores.numel() > max_candidates:  # cap by confidence before building rows: bounds NMS and memory
            top = scores.topk(max_candidates).indices
            i, j, scores = i[top], j[top], scores[top]
        boxes = xywh_to_xyxy(x[i, :4].to(nms_dtype))
        det = torch.cat((boxes.to(x.dtype), scores[:, None], j[:, None].to(x.dtype)), 1)  # [n, 6]
        if not agnostic:
            # Coordinate-offset trick: shift each class into its own disjoint range, so one class-blind
            # NMS pass never lets boxes of different classes overlap. The span is the candidates' own
            # extent, not YOLOv5's fixed 7680: at 640 px and 80 classes coordinates stay below ~1.3e5, where
            # float32 resolves 1/128 px (YOLOv5's offsets reach 6e5, 1/16 px).
            lo = boxes.min()
            span = boxes.max() - lo + 1
            boxes = boxes - lo + j[:, None].to(nms_dtype) * span
        keep = nms(boxes, det[:, 4], iou_thres, max_keep=max_det)
        out.append(det[keep])
    return out
