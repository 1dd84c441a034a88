"""Time-intensity curves: mean linear power inside each ROI, frame by frame."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray


def roi_means(power: NDArray[np.float32], masks: Sequence[NDArray[np.bool_]]) -> NDArray[np.float64]:
    """Mean of each frame inside each mask.

    Parameters
    ----------
    power : array, shape (T, H, W)
        Linear echo power (a.u.) of the contrast panel.
    masks : sequence of bool arrays, shape (H, W)
        One mask per ROI; each must select at least one pixel.

    Returns
    -------
    ndarray, shape (len(masks), T)
        Mean linear power per ROI and frame (a.u.), accumulated in float64.
    """
    t = power.shape[0]
    flat = power.reshape(t, -1)
    out = np.empty((len(masks), t), dtype=np.float64)
    for i, m in enumerate(masks):
        idx = np.flatnonzero(m.ravel())
        if idx.size == 0:
            raise ValueError("empty ROI mask")
        out[i] = flat[:, idx].mean(axis=1, dtype=np.float64)
    return out
