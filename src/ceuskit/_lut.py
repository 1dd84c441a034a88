"""Compiled table look-up for 8-bit cines (imported on first use: numba is slow to import)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def apply_table(values: Any, table: Any, out: Any) -> None:  # pragma: no cover - compiled
    """``out[...] = table[values[...]]`` for a (T, H, W) uint8 array, frames over threads.

    NumPy's fancy indexing does the same ~5x slower (it widens every index
    to intp first); a cine of 236 M pixels takes ~0.05 s here.
    """
    for f in prange(values.shape[0]):
        for i in range(values.shape[1]):
            for j in range(values.shape[2]):
                out[f, i, j] = table[values[f, i, j]]


@njit(cache=True, parallel=True)
def block_medians(values: Any, grid_rows: int, grid_cols: int, stride: int, pixels: Any,
                  out: Any) -> None:  # pragma: no cover - compiled
    """Median of each frame's blocks of a (T, H, W) uint8 array, from 256-bin histograms.

    The frame's pixels ``[::stride, ::stride]`` are cut into ``grid_rows x
    grid_cols`` equal blocks (the remainder rows and columns dropped, as a
    reshape would); with a (rows, cols) boolean `pixels` mask (of the
    strided frame; only for a 1 x 1 grid) only those pixels count.
    ``out[t, block]`` receives ``np.median``'s value: the middle value, or
    the mean of the two middle ones for an even count; NaN for no pixel.
    Sorting bytes through a histogram is ~10x faster than partitioning.
    """
    n = values.shape[0]
    rows = (values.shape[1] + stride - 1) // stride
    cols = (values.shape[2] + stride - 1) // stride
    bh = rows // grid_rows
    bw = cols // grid_cols
    use_mask = pixels.shape[0] == rows and pixels.shape[1] == cols
    for t in prange(n):
        hist = np.zeros(256, dtype=np.int64)
        for by in range(grid_rows):
            for bx in range(grid_cols):
                hist[:] = 0
                count = 0
                for r in range(by * bh, (by + 1) * bh):
                    for c in range(bx * bw, (bx + 1) * bw):
                        if use_mask and not pixels[r, c]:
                            continue
                        hist[values[t, r * stride, c * stride]] += 1
                        count += 1
                k = by * grid_cols + bx
                if count == 0:
                    out[t, k] = np.nan
                    continue
                lo_rank = (count - 1) // 2
                hi_rank = count // 2
                seen = 0
                lo = -1
                hi = -1
                for v in range(256):
                    seen += hist[v]
                    if lo < 0 and seen > lo_rank:
                        lo = v
                    if seen > hi_rank:
                        hi = v
                        break
                out[t, k] = 0.5 * (lo + hi)


@njit(cache=True, parallel=True)
def frame_differences(values: Any, dark: float, abs_diff: Any, live: Any
                      ) -> None:  # pragma: no cover - compiled
    """Per frame of a (T, H, W) uint8 array: the summed absolute difference to
    the frame before (``abs_diff[t]``, t >= 1; ``abs_diff[0]`` is 0) and the
    count of pixels above `dark` (``live[t]``), both exact integers.

    `ceuskit.qc.duplicate_frame_indices` in one pass over the frames, without
    NumPy's full-size temporaries (|a - b|, a > dark) per chunk.
    """
    n, h, w = values.shape
    for t in prange(n):
        total = 0
        above = 0
        for i in range(h):
            for j in range(w):
                v = values[t, i, j]
                if v > dark:
                    above += 1
                if t > 0:
                    p = values[t - 1, i, j]
                    total += (v - p) if v >= p else (p - v)
        abs_diff[t] = total
        live[t] = above
