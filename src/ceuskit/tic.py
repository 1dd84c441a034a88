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
        NaN pixels (outside the panel after motion alignment) are left out of
        the mean; a frame with no finite pixel in the ROI gives NaN.
    """
    t = power.shape[0]
    flat = power.reshape(t, -1)
    out = np.empty((len(masks), t), dtype=np.float64)
    for i, m in enumerate(masks):
        idx = np.flatnonzero(m.ravel())
        if idx.size == 0:
            raise ValueError("empty ROI mask")
        vals = flat[:, idx]
        out[i] = vals.mean(axis=1, dtype=np.float64)
        holed = np.flatnonzero(np.isnan(out[i]))
        if holed.size:
            sub = vals[holed].astype(np.float64)
            n = np.sum(np.isfinite(sub), axis=1)
            total = np.nansum(sub, axis=1)
            out[i, holed] = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    return out
