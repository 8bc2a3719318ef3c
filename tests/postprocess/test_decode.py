import pytest
import torch

from yolomlu.postprocess.decode import decode_outputs

ANCHORS = torch.tensor(
    [[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]], [[116, 90], [156, 198], [373, 326]]],
    dtype=torch.float32,
)


def test_zero_logits_hand_computed():
    # t = 0 -> sigmoid 0.5 -> xy = (0.5 + grid) * stride, wh = anchor, obj = cls = 0.5
    nc, na = 2, 3
    no = 5 + nc
    outs = [torch.zeros(1, na * no, 4, 4), torch.zeros(1, na * no, 2, 2), torch.zeros(1, na * no, 1, 1)]
    y = decode_outputs(outs, ANCHORS, (8, 16, 32))
    assert y.shape == (1, 3 * 16 + 3 * 4 + 3 * 1, no) and y.dtype == torch.float32
    # level 0, anchor 0, row 0, col 0 / col 1 / row 1 col 0
    assert y[0, 0].tolist() == pytest.approx([4, 4, 10, 13, 0.5, 0.5, 0.5])
    assert y[0, 1, :2].tolist() == [12, 4]
    assert y[0, 4, :2].tolist() == [4, 12]
    # level 0, anchor 1 starts after 16 cells
    assert y[0, 16, :4].tolist() == [4, 4, 16, 30]
    # level 1 (stride 16) starts at 48; its anchor 2, row 1, col 1 is 48 + 2*4 + 1*2 + 1
    assert y[0, 48 + 11, :4].tolist() == [24, 24, 59, 119]
    # level 2: one cell per anchor
    assert y[0, 60 + 2, :4].tolist() == [16, 16, 373, 326]


def test_channel_layout_and_extremes():
    # Channel a*no + k is anchor a's field k. Large logits saturate: xy -> (1.5 + grid)*s, wh -> 4*anchor.
    na, no = 3, 6
    x = torch.zeros(2, na * no, 1, 2)
    x[1, 1 * no + 0, 0, 1] = 50.0  # image 1, anchor 1, col 1: tx -> sigmoid 1
    x[1, 1 * no + 3, 0, 1] = 50.0  # th -> h = 4 * anchor h
    x[1, 1 * no + 5, 0, 1] = -50.0  # class prob -> 0
    y = decode_outputs([x], ANCHORS[:1], (8,))
    assert y.shape == (2, 6, 6)
    row = y[1, 1 * 2 + 1]
    assert row.tolist() == pytest.approx([(1.5 + 1) * 8, 4, 16, 4 * 30, 0.5, 0.0])
    assert y[0, 3].tolist() == pytest.approx([12, 4, 16, 30, 0.5, 0.5])


def test_matches_reference_formula_on_random_input():
    torch.manual_seed(0)
    na, no, ny, nx, s = 3, 8, 3, 5, 16.0
    x = torch.randn(2, na * no, ny, nx)
    y = decode_outputs([x], ANCHORS[1:2], (s,))
    t = x.view(2, na, no, ny, nx).sigmoid()
    a, r, c = 2, 1, 4
    ref_x = (2 * t[1, a, 0, r, c] - 0.5 + c) * s
    ref_h = (2 * t[1, a, 3, r, c]) ** 2 * ANCHORS[1, a, 1]
    got = y[1, a * ny * nx + r * nx + c]
    assert got[0].item() == pytest.approx(ref_x.item(), rel=1e-6)
    assert got[3].item() == pytest.approx(ref_h.item(), rel=1e-6)
    assert got[4:].tolist() == pytest.approx(t[1, a, 4:, r, c].tolist())


def test_half_and_channels_last_inputs():
    x = torch.randn(1, 18, 4, 4)
    ref = decode_outputs([x], ANCHORS[:1], (8,))
    cl = decode_outputs([x.to(memory_format=torch.channels_last)], ANCHORS[:1], (8,))
    torch.testing.assert_close(cl, ref)
    half = decode_outputs([x.half()], ANCHORS[:1], (8,))
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, ref, atol=0.05, rtol=1e-2)


def test_bad_inputs_named():
    with pytest.raises(ValueError, match=r"anchors_px must be \[nl=2"):
        decode_outputs([torch.zeros(1, 18, 2, 2)] * 2, ANCHORS[:1], (8, 16))
    with pytest.raises(ValueError, match="one stride per level"):
        decode_outputs([torch.zeros(1, 18, 2, 2)], ANCHORS[:1], (8, 16))
    with pytest.raises(ValueError, match=r"na\*no.*\(1, 17, 2, 2\)"):
        decode_outputs([torch.zeros(1, 17, 2, 2)], ANCHORS[:1], (8,))
    with pytest.raises(ValueError, match="fields per anchor"):
        decode_outputs([torch.zeros(1, 18, 2, 2), torch.zeros(1, 21, 1, 1)], ANCHORS[:2], (8, 16))
