import numpy as np
import pytest

from yolomlu.data.letterbox import LetterboxInfo, boxes_to_letterboxed, boxes_to_original, letterbox


def _img(h, w, value=200):
    return np.full((h, w, 3), value, dtype=np.uint8)


def test_landscape_to_square_pads_top_and_bottom():
    out, info = letterbox(_img(480, 640), 640)
    assert out.shape == (640, 640, 3) and out.dtype == np.uint8
    assert info == LetterboxInfo(orig_shape=(480, 640), new_shape=(640, 640), ratio=1.0, pad=(0.0, 80.0))
    assert (out[:80] == 114).all() and (out[560:] == 114).all()
    assert (out[80:560] == 200).all()


def test_downscale_with_odd_padding_puts_extra_pixel_right():
    # 100x51 -> 64: ratio 0.64, resized 33 wide (round(32.64)), 64 - 33 = 31 -> left 15, right 16
    out, info = letterbox(_img(100, 51), 64)
    assert info.ratio == pytest.approx(0.64)
    assert info.pad == (15.0, 0.0) and info.new_shape == (64, 64)
    assert (out[:, :15] == 114).all() and (out[:, 48:] == 114).all()
    assert (out[:, 15:48] == 200).all()


def test_even_split_when_padding_is_even():
    # 100x50 -> 64: ratio 0.64, 32 wide, 16 px each side
    _, info = letterbox(_img(100, 50), 64)
    assert info.pad == (16.0, 0.0)


def test_auto_pads_only_to_multiple_of_stride():
    out, info = letterbox(_img(480, 640), 640, auto=True)
    assert out.shape == (480, 640, 3) and info.pad == (0.0, 0.0)
    out, info = letterbox(_img(479, 640), 640, auto=True)  # 161 mod 32 = 1 px of padding
    assert out.shape == (480, 640, 3) and info.pad == (0.0, 0.0)
    out, info = letterbox(_img(300, 200), 640, stride=32, auto=True)  # ratio 640/300 -> 427x640, pad to 448
    assert info.new_shape == (640, 448) and info.pad == (10.0, 0.0)


def test_no_scaleup_keeps_small_images_small():
    out, info = letterbox(_img(100, 200), 640, scaleup=False)
    assert info.ratio == 1.0 and info.pad == (220.0, 270.0) and out.shape == (640, 640, 3)


def test_rectangular_target_and_pad_value():
    out, info = letterbox(_img(100, 100), (64, 128), pad_value=0)
    assert out.shape == (64, 128, 3) and info.ratio == pytest.approx(0.64) and info.pad == (32.0, 0.0)
    assert (out[:, :32] == 0).all()


def test_content_is_resized_not_cropped():
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 40:] = 255  # right half white
    out, info = letterbox(img, 160)
    assert info.ratio == 2.0 and info.pad == (0.0, 40.0)
    assert (out[40:120, :78] == 0).all() and (out[40:120, 82:] == 255).all()


def test_boxes_round_trip_exact():
    _, info = letterbox(_img(480, 640), 640)
    boxes = np.array([[0, 0, 640, 480], [10.5, 20.25, 30, 40]], np.float32)
    lb = boxes_to_letterboxed(boxes, info)
    np.testing.assert_array_equal(lb, [[0, 80, 640, 560], [10.5, 100.25, 30, 120]])
    np.testing.assert_array_equal(boxes_to_original(lb, info), boxes)

    _, info = letterbox(_img(100, 50), 64)  # ratio 0.64, pad (16, 0)
    boxes = np.array([[5, 10, 25, 50]], np.float64)
    lb = boxes_to_letterboxed(boxes, info)
    np.testing.assert_allclose(lb, [[16 + 3.2, 6.4, 16 + 16, 32]])
    np.testing.assert_allclose(boxes_to_original(lb, info), boxes, rtol=0, atol=1e-12)


def test_boxes_to_original_clips_to_image():
    _, info = letterbox(_img(480, 640), 640)
    out = boxes_to_original(np.array([[-5, 0, 700, 640]], np.float32), info)
    np.testing.assert_array_equal(out, [[0, 0, 640, 480]])
    assert out.dtype == np.float32
    assert boxes_to_original(np.zeros((0, 4)), info).shape == (0, 4)


@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((10, 10), np.uint8), "uint8 HxWx3"),
        (np.zeros((10, 10, 3), np.float32), "float32"),
        (np.zeros((10, 10, 4), np.uint8), r"\(10, 10, 4\)"),
    ],
)
def test_bad_image_is_named(image, match):
    with pytest.raises(ValueError, match=match):
        letterbox(image, 64)


def test_bad_shapes_rejected():
    with pytest.raises(ValueError, match="new_shape"):
        letterbox(_img(10, 10), (64,))
    _, info = letterbox(_img(10, 10), 64)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        boxes_to_original(np.zeros((3, 5)), info)
