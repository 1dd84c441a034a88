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


@njit(cache=True, parallel=True)
def difference_correlation_sums(values: Any, frames: Any, region: int, top: float,
                                out: Any) -> None:  # pragma: no cover - compiled
    """Sums for the lag-1 correlation of consecutive frame differences, per region.

    For the frames ``values[frames]`` (a (T, H, W) array, `frames` the
    indices of one segment in order) and each square region of side
    `region` (row-major; remainder rows and columns dropped): with ``a =
    y2 - y1`` and ``b = y1 - y0`` over consecutive triples of the listed
    frames, each less its mean over the region's pixels that are unclipped
    (above 0 and below `top`) in all three frames, ``out[q]`` receives
    ``(sum a b, sum a^2, sum b^2, pixel count)`` over the segment.
    `ceuskit.dynamic_range.frame_persistence` without NumPy's (k, H, W)
    float temporaries.
    """
    h = values.shape[1] // region
    w = values.shape[2] // region
    for q in prange(h * w):
        y0 = (q // w) * region
        x0 = (q % w) * region
        sab = 0.0
        saa = 0.0
        sbb = 0.0
        n = 0
        for t in range(frames.shape[0] - 2):
            f0, f1, f2 = frames[t], frames[t + 1], frames[t + 2]
            # One pass: the products about the region's means follow from the
            # raw sums (sum (a - ma)(b - mb) = sum a b - sum a sum b / count).
            suma = 0.0
            sumb = 0.0
            pab = 0.0
            paa = 0.0
            pbb = 0.0
            cnt = 0
            for i in range(y0, y0 + region):
                for j in range(x0, x0 + region):
                    v0 = float(values[f0, i, j])
                    v1 = float(values[f1, i, j])
                    v2 = float(values[f2, i, j])
                    if v0 <= 0.0 or v1 <= 0.0 or v2 <= 0.0 or v0 >= top or v1 >= top or v2 >= top:
                        continue
                    a = v2 - v1
                    b = v1 - v0
                    suma += a
                    sumb += b
                    pab += a * b
                    paa += a * a
                    pbb += b * b
                    cnt += 1
            if cnt == 0:
                continue
            sab += pab - suma * sumb / cnt
            saa += paa - suma * suma / cnt
            sbb += pbb - sumb * sumb / cnt
            n += cnt
        out[q, 0] = sab
        out[q, 1] = saa
        out[q, 2] = sbb
        out[q, 3] = n
