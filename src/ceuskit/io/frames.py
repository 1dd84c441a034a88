"""Helpers shared by the readers: colour to grey, timing from a frame rate."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

# ITU-R BT.601 luma weights: ultrasound scanners render grey as R = G = B, so
# any weights give the same grey; these keep colour overlays at a sensible level.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def rgb_to_grey(rgb: NDArray[Any]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Split an RGB image into luma and colour saturation.

    Parameters
    ----------
    rgb : array, shape (..., 3)
        Display values.

    Returns
    -------
    grey : float32 array, shape (...)
        Luma in the same display units.
    chroma : float32 array, shape (...)
        max - min over the three channels (0 where the pixel is grey).
    """
    x = np.asarray(rgb, dtype=np.float32)
    grey = x @ _LUMA
    chroma = x.max(axis=-1) - x.min(axis=-1)
    return grey.astype(np.float32, copy=False), chroma.astype(np.float32, copy=False)


def times_from_fps(n_frames: int, fps: float) -> NDArray[np.float64]:
    """Frame times in seconds for a constant frame rate (first frame at 0)."""
    return np.arange(n_frames, dtype=np.float64) / float(fps)
