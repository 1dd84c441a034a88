"""Helpers shared by the readers: colour to grey, timing from a frame rate."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ceuskit.errors import InputError

# ITU-R BT.601 luma weights: ultrasound scanners render grey as R = G = B, so
# any weights give the same grey; these keep colour overlays at a sensible level.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def chroma(rgb: NDArray[Any]) -> NDArray[np.float32]:
    """Colour saturation of RGB pixels (..., 3): max - min over the three channels."""
    x = np.asarray(rgb)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    # Channel-wise max/min is an order of magnitude faster than a reduction
    # over the last (length-3) axis.
    c = np.maximum(np.maximum(r, g), b).astype(np.float32) - np.minimum(np.minimum(r, g), b)
    return c.astype(np.float32, copy=False)


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
    # float64 arithmetic keeps grey pixels (R = G = B) exact after the cast.
    x = np.asarray(rgb)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    grey = r * LUMA_WEIGHTS[0] + g * LUMA_WEIGHTS[1] + b * LUMA_WEIGHTS[2]
    return grey.astype(np.float32, copy=False), chroma(x)


def times_from_fps(n_frames: int, fps: float) -> NDArray[np.float64]:
    """Frame times in seconds for a constant frame rate (first frame at 0)."""
    return np.arange(n_frames, dtype=np.float64) / float(fps)


def valid_fps(fps: float | None) -> float | None:
    """Check a user-supplied frame rate (frames per second); None passes through."""
    if fps is None:
        return None
    try:
        rate = float(fps)
    except (TypeError, ValueError):
        rate = math.nan
    if not (math.isfinite(rate) and rate > 0):
        raise InputError("--fps", f"must be a positive number of frames per second, got {fps!r}",
                         "e.g. --fps 15")
    return rate
