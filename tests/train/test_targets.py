"""Target assignment, checked against matches worked out by hand."""

from __future__ import annotations

import pytest
import torch

from yolomlu.train.targets import build_targets

# The default anchors (pixels) and strides of YOLOv5, in grid cells as Detect stores them.
ANCHORS_PX = torch.tensor(
    [[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]], [[116, 90], [156, 198], [373, 326]]],
    dtype=torch.float32,
)
STRIDES = torch.tensor([8.0, 16.0, 32.0])
ANCHORS = ANCHORS_PX / STRIDES.view(-1, 1, 1)
GRIDS_64 = [(8, 8), (4, 4), (2, 2)]  # a 64 x 64 input


def _cells(level) -> set[tuple[int, int, int]]:
    return {(int(a), int(y), int(x)) for a, y, x in zip(level.anchor, level.gy, level.gx)}


def test_one_box_hand_computed():
    # A 16 x 16 px box centred at (19.2, 38.4) px of image 1 in a 64 px input, class 3.
    targets = torch.tensor([[1, 3, 0.3, 0.6, 0.25, 0.25]])
    p3, p4, p5 = build_targets(targets, ANCHORS, GRIDS_64)

    # P3 (stride 8): the box is 2 x 2 cells; anchors 1.25x1.625, 2x3.75, 4.125x2.875 cells: worst side
    # ratios 1.6, 1.875, 2.06, all < 4 -> all three match. Centre (2.4, 4.8): x in the low half of its
    # cell -> also the cell to the left (x=1); y in the high half -> also the cell below (y=5).
    assert _cells(p3) == {(a, y, x) for a in range(3) for y, x in [(4, 2), (4, 1), (5, 2)]}
    assert len(p3) == 9
    assert set(p3.image.tolist()) == {1} and set(p3.cls.tolist()) == {3}
    for a, y, x, box, wh in zip(p3.anchor, p3.gy, p3.gx, p3.box, p3.anchor_wh):
        assert box.tolist() == pytest.approx([2.4 - int(x), 4.8 - int(y), 2.0, 2.0], abs=1e-5)
        assert wh.tolist() == pytest.approx(ANCHORS[0, int(a)].tolist())

    # P4 (stride 16): 1 x 1 cells; anchors 1.875x3.81 (ratio 3.81 ok), 3.875x2.81 (ok),
    # 3.69x7.44 (7.44 > 4: no). Centre (1.2, 2.4): left neighbour (x=0), upper neighbour (y=1).
    assert _cells(p4) == {(a, y, x) for a in (0, 1) for y, x in [(2, 1), (2, 0), (1, 1)]}
    # Offsets within the neighbour cells reach beyond 0..1 (the decode covers -0.5..1.5).
    offsets = {(int(y), int(x)): b[:2].tolist() for y, x, b in zip(p4.gy, p4.gx, p4.box)}
    assert offsets[(2, 0)] == pytest.approx([1.2, 0.4], abs=1e-5)
    assert offsets[(1, 1)] == pytest.approx([0.2, 1.4], abs=1e-5)

    # P5 (stride 32): the box is 0.5 x 0.5 cells, every anchor is > 7x larger -> nothing.
    assert len(p5) == 0


def test_edges_use_no_outside_neighbour():
    # Centre in the first cell's low half: there is no cell to the left or above to add.
    targets = torch.tensor([[0, 0, 0.05, 0.05, 0.25, 0.25]])  # (0.4, 0.4) cells on P3
    p3 = build_targets(targets, ANCHORS, GRIDS_64)[0]
    assert {(int(y), int(x)) for y, x in zip(p3.gy, p3.gx)} == {(0, 0)}
    # A centre exactly on the far edge is clamped into the last cell.
    targets = torch.tensor([[0, 0, 1.0, 1.0, 0.25, 0.25]])
    p3 = build_targets(targets, ANCHORS, GRIDS_64)[0]
    assert int(p3.gx.max()) == 7 and int(p3.gy.max()) == 7


def test_no_targets_and_bad_input():
    levels = build_targets(torch.zeros((0, 6)), ANCHORS, GRIDS_64)
    assert [len(t) for t in levels] == [0, 0, 0]
    assert levels[0].box.shape == (0, 4)
    with pytest.raises(ValueError, match="targets must be"):
        build_targets(torch.zeros((3, 5)), ANCHORS, GRIDS_64)
    with pytest.raises(ValueError, match="one grid shape per level"):
        build_targets(torch.zeros((0, 6)), ANCHORS, GRIDS_64[:2])
