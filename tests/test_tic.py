import numpy as np
import pytest

from ceuskit.tic import roi_means


def test_means_per_roi_and_frame():
    rng = np.random.default_rng(0)
    power = rng.random((7, 10, 12)).astype(np.float32)
    a = np.zeros((10, 12), bool)
    a[2:5, 3:9] = True
    b = np.zeros((10, 12), bool)
    b[7, 1] = True
    out = roi_means(power, [a, b])
    assert out.shape == (2, 7)
    np.testing.assert_allclose(out[0], power[:, 2:5, 3:9].mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(out[1], power[:, 7, 1], rtol=1e-6)


def test_empty_mask_is_an_error():
    with pytest.raises(ValueError):
        roi_means(np.ones((3, 4, 4), np.float32), [np.zeros((4, 4), bool)])
