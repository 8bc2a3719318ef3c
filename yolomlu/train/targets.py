"""YOLOv5 target assignment (v5.0+): which anchor of which grid cell learns each ground-truth box.

A box is matched to every anchor of a level whose width and height ratios to the box both lie within
``anchor_t`` (4.0: the anchor is at most 4x larger or smaller along either side). Each match is then
learnt by the cell that holds the box centre and by the two neighbouring cells whose shared edge lies
closest to the centre (left or right, up or down): the v5.0 decode ``xy = 2*sigmoid - 0.5 + grid``
reaches -0.5..1.5 cells, so a neighbour can still place the centre exactly. This triples the positives
and is why YOLOv5 converges quickly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["LevelTargets", "build_targets", "NEIGHBOUR_OFFSET"]

# A neighbour cell is used when the centre lies within this many cells of the shared edge.
NEIGHBOUR_OFFSET = 0.5


@dataclass(frozen=True)
class LevelTargets:
    """The positives of one pyramid level, n of them (one row per matched box x anchor x cell).

    image:     long [n]     batch index of the image
    anchor:    long [n]     anchor index within the level (0..na-1)
    gy, gx:    long [n]     grid cell (row, column) that predicts the box
    box:       float [n, 4] (x, y, w, h) in grid cells; x, y relative to the cell's top-left corner
               (so in -0.5..1.5), w, h the box size
    anchor_wh: float [n, 2] the matched anchor's (w, h) in grid cells
    cls:       long [n]     class index
    """

    image: Tensor
    anchor: Tensor
    gy: Tensor
    gx: Tensor
    box: Tensor
    anchor_wh: Tensor
    cls: Tensor

    def __len__(self) -> int:
        return int(self.image.shape[0])


def build_targets(
    targets: Tensor,
    anchors: Tensor,
    grid_shapes: Sequence[tuple[int, int]],
    anchor_t: float = 4.0,
) -> list[LevelTargets]:
    """Assign ground-truth boxes to anchors and cells, level by level.

    targets:     float [nt, 6] rows (image index in batch, class, cx, cy, w, h), box normalised to 0..1
                 of the network input (the letterboxed image)
    anchors:     float [nl, na, 2] anchor (w, h) in grid cells of their level (pixel anchor / stride),
                 as ``Detect.anchors`` holds them
    grid_shapes: nl pairs (ny, nx), the height and width of each level's output map
    anchor_t:    largest allowed ratio between a box side and an anchor side (either way)
    Returns one :class:`LevelTargets` per level (possibly empty).
    """
    if targets.ndim != 2 or targets.shape[1] != 6:
        raise ValueError(f"targets must be [nt, 6] (image, class, cx, cy, w, h), got {tuple(targets.shape)}")
    if anchors.ndim != 3 or anchors.shape[2] != 2:
        raise ValueError(f"anchors must be [nl, na, 2], got {tuple(anchors.shape)}")
    if len(grid_shapes) != anchors.shape[0]:
        raise ValueError(f"need one grid shape per level: {anchors.shape[0]} levels, {len(grid_shapes)} shapes")
    if anchor_t <= 1.0:
        raise ValueError(f"anchor_t must be > 1, got {anchor_t}")

    device = targets.device
    targets = targets.to(torch.float32)
    # Neighbour directions: centre, left, up, right, down (x, y); a cell index is floor(xy - offset).
    offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], dtype=torch.float32, device=device)
    offsets = offsets * NEIGHBOUR_OFFSET

    levels: list[LevelTargets] = []
    for i, (ny, nx) in enumerate(grid_shapes):
        anchor_wh = anchors[i].to(device=device, dtype=torch.float32)  # [na, 2]
        scale = torch.tensor([nx, ny, nx, ny], dtype=torch.float32, device=device)
        box = targets[:, 2:6] * scale  # [nt, 4] in grid cells
        # Every (anchor, box) pair; keep those within anchor_t along both sides.
        ratio = box[None, :, 2:4] / anchor_wh[:, None, :]  # [na, nt, 2]
        ok = torch.max(ratio, 1.0 / ratio).amax(2) < anchor_t  # [na, nt]
        a_idx, t_idx = ok.nonzero(as_tuple=True)
        t_box = box[t_idx]  # [m, 4]
        t_meta = targets[t_idx, :2]  # [m, 2] image, class
        if t_idx.numel():
            gxy = t_box[:, :2]
            gxy_inv = torch.tensor([nx, ny], dtype=torch.float32, device=device) - gxy
            # Low half of a cell (and not in the first cell): the previous cell also learns it;
            # high half (and not in the last cell): the next one does.
            low = (gxy % 1.0 < NEIGHBOUR_OFFSET) & (gxy > 1.0)  # [m, 2] -> left (x), up (y)
            high = (gxy_inv % 1.0 < NEIGHBOUR_OFFSET) & (gxy_inv > 1.0)  # [m, 2] -> right, down
            use = torch.stack((torch.ones_like(low[:, 0]), low[:, 0], low[:, 1], high[:, 0], high[:, 1]))  # [5, m]
            k_idx, m_idx = use.nonzero(as_tuple=True)
            a_idx, t_box, t_meta = a_idx[m_idx], t_box[m_idx], t_meta[m_idx]
            cell = (t_box[:, :2] - offsets[k_idx]).long()  # floor: the values are >= 0 here
        else:
            cell = torch.zeros((0, 2), dtype=torch.long, device=device)
        # A centre exactly on the far edge would index one cell past the map: clamp (as YOLOv5 does).
        gx = cell[:, 0].clamp(0, nx - 1)
        gy = cell[:, 1].clamp(0, ny - 1)
        rel = torch.cat((t_box[:, :2] - torch.stack((gx, gy), 1).to(torch.float32), t_box[:, 2:4]), 1)
        levels.append(
            LevelTargets(
                image=t_meta[:, 0].long(),
                anchor=a_idx.long(),
                gy=gy,
                gx=gx,
                box=rel,
                anchor_wh=anchor_wh[a_idx],
                cls=t_meta[:, 1].long(),
            )
        )
    return levels
