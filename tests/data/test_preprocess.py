import numpy as np
import pytest
import torch

from yolomlu.data.preprocess import to_tensor_batch


def test_hwc_uint8_to_nchw_float():
    a = np.zeros((2, 3, 3), np.uint8)
    a[0, 1] = [255, 51, 0]
    b = np.full((2, 3, 3), 255, np.uint8)
    t = to_tensor_batch([a, b])
    assert t.shape == (2, 3, 2, 3) and t.dtype == torch.float32 and t.is_contiguous()
    assert t[0, :, 0, 1].tolist() == pytest.approx([1.0, 0.2, 0.0])
    assert t[1].min() == 1.0 and t[0, :, 1].abs().sum() == 0


def test_rejects_mixed_shapes_and_dtypes():
    with pytest.raises(ValueError, match=r"image 1 is \(4, 4, 3\)"):
        to_tensor_batch([np.zeros((2, 2, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)])
    with pytest.raises(ValueError, match="image 0 .*float64"):
        to_tensor_batch([np.zeros((2, 2, 3))])
    with pytest.raises(ValueError, match="empty"):
        to_tensor_batch([])
