"""Compiled inner loops of the motion estimate (`ceuskit.motion`).

NumPy spends most of the registration's time making temporaries: the
cross-power spectrum, its magnitude, the whitened and apodised spectrum
(four complex arrays per chunk), the masked second-peak search and the
float64 copies of each aligned frame for its match quality.  These kernels
do the same arithmetic in one pass each, over frames in parallel.  Imported
on first use (numba is slow to import); cached next to this file.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def whitened_cross(spec: Any, ref: Any, apod: Any, whiten: float, col_weights: Any,
                   size: float, out: Any, norm: Any) -> None:  # pragma: no cover - compiled
    """Whitened, apodised cross-power spectrum of every image against one template.

    ``out[i] = c / max(|c|, floor) ** whiten * apod`` with ``c = spec[i] * ref``
    and ``floor = 1e-12 * max |c| + 1e-30`` over the whole chunk (the floor
    only keeps empty bins from dividing by zero).  For partial whitening
    (``whiten != 1``), ``norm[i]`` receives the correlation peak of identical
    images: the weighted sum of ``|c| ** (1 - whiten) * apod`` over the
    rfft grid (``col_weights``: 1 for the first and a Nyquist column, 2 for
    the others), divided by `size` (the full spectrum's); `norm` is left alone
    for full whitening.
    """
    n, h, w2 = spec.shape
    peak = np.zeros(n, dtype=np.float32)
    for i in prange(n):
        top = np.float32(0.0)
        for y in range(h):
            for x in range(w2):
                s, r = spec[i, y, x], ref[y, x]
                re = s.real * r.real - s.imag * r.imag
                im = s.real * r.imag + s.imag * r.real
                a2 = re * re + im * im
                if a2 > top:
                    top = a2
        peak[i] = top
    floor = np.float32(1e-12) * np.float32(math.sqrt(peak.max())) + np.float32(1e-30)
    full = whiten == 1.0
    rest = np.float32(1.0 - whiten)
    p = np.float32(whiten)
    for i in prange(n):
        acc = 0.0
        for y in range(h):
            for x in range(w2):
                s, r = spec[i, y, x], ref[y, x]
                re = s.real * r.real - s.imag * r.imag
                im = s.real * r.imag + s.imag * r.real
                a = max(np.float32(math.sqrt(re * re + im * im)), floor)
                if full:
                    g = apod[y, x] / a
                else:
                    g = apod[y, x] / a ** p
                    acc += float(a ** rest * apod[y, x]) * col_weights[x]
                out[i, y, x] = complex(re * g, im * g)
        if not full:
            norm[i] = acc / size


@njit(cache=True, parallel=True)
def surface_peaks(block: Any, exclusion_px2: float, iy: Any, ix: Any, second: Any
                  ) -> None:  # pragma: no cover - compiled
    """Highest value of each correlation surface and the highest one away from it.

    `block` is (n, 2m + 3, 2m + 3): the searched surface with a one-sample
    rim for the sub-pixel fit.  ``iy[i], ix[i]`` receive the first maximum
    of the inner (2m + 1)^2 samples in C order (rim coordinates, so 1..2m+1);
    ``second[i]`` the maximum over inner samples farther than
    ``sqrt(exclusion_px2)`` from it (0 when there is none).
    """
    n, hh, ww = block.shape
    for i in prange(n):
        best = -np.inf
        by, bx = 1, 1
        for y in range(1, hh - 1):
            for x in range(1, ww - 1):
                v = block[i, y, x]
                if v > best:
                    best, by, bx = v, y, x
        iy[i], ix[i] = by, bx
        far = -np.inf
        for y in range(1, hh - 1):
            for x in range(1, ww - 1):
                if (y - by) ** 2 + (x - bx) ** 2 > exclusion_px2:
                    v = block[i, y, x]
                    if v > far:
                        far = v
        second[i] = far if np.isfinite(far) else 0.0


@njit(cache=True, inline="always")
def _bilinear(row0: Any, row1: Any, x0: int, x1: int, fx: float,
              fy: float) -> float:  # pragma: no cover - compiled
    """Bilinear interpolation between two rows at columns x0, x1 (weights fx, fy)."""
    return ((1.0 - fy) * ((1.0 - fx) * row0[x0] + fx * row0[x1])
            + fy * ((1.0 - fx) * row1[x0] + fx * row1[x1]))


@njit(cache=True, inline="always")
def _source_point(m00: float, m01: float, m02: float, m10: float, m11: float, m12: float,
                  x: int, y: int, h: int, w: int, tol: float
                  ) -> tuple[bool, int, int, int, int, float, float]:  # pragma: no cover - compiled
    """Where output pixel (x, y) samples the source under an affine matrix.

    Returns ``(inside, x0, y0, x1, y1, fx, fy)``: whether the point lies in
    the frame within `tol` px, and its bilinear neighbours (edges
    replicated) and weights.
    """
    sx = m00 * x + m01 * y + m02
    sy = m10 * x + m11 * y + m12
    if sx < -tol or sx > w - 1 + tol or sy < -tol or sy > h - 1 + tol:
        return False, 0, 0, 0, 0, 0.0, 0.0
    x0 = math.floor(sx)
    y0 = math.floor(sy)
    fx = sx - x0
    fy = sy - y0
    x0 = min(max(x0, 0), w - 1)
    y0 = min(max(y0, 0), h - 1)
    return True, x0, y0, min(x0 + 1, w - 1), min(y0 + 1, h - 1), fx, fy


@njit(cache=True, parallel=True, fastmath=True)
def warped_ncc(bands: Any, tmpl: Any, mats: Any, tol: float, ncc: Any, spread: Any
               ) -> None:  # pragma: no cover - compiled
    """Match quality of each band-passed frame, aligned, with the template's band.

    For frame i, the aligned value at pixel (x, y) is `bands[i]` sampled
    bilinearly at ``mats[i] @ (x, y, 1)`` (edges replicated); only pixels
    whose source point lies inside the frame (within `tol` px) count.
    ``ncc[i]`` receives the normalised cross-correlation over those pixels
    (0 with fewer than 16 of them, or no spread); ``spread[i]`` the standard
    deviation of the unaligned band over the whole frame (the B-mode
    structure measure).

    Sums are reassociated (``fastmath``) so that they vectorise: the values
    differ from a strict left-to-right sum by rounding alone (~1e-13 of the
    NCC).  A pure translation splits each row into the columns whose two
    source columns lie inside the frame (no clamping, the vectorised bulk)
    and the one or two edge columns that replicate the edge.
    """
    n, h, w = bands.shape
    for i in prange(n):
        m00, m01, m02 = mats[i, 0, 0], mats[i, 0, 1], mats[i, 0, 2]
        m10, m11, m12 = mats[i, 1, 0], mats[i, 1, 1], mats[i, 1, 2]
        s1 = 0.0
        s2 = 0.0
        for y in range(h):
            for x in range(w):
                v = np.float64(bands[i, y, x])
                s1 += v
                s2 += v * v
        size = h * w
        mean = s1 / size
        spread[i] = math.sqrt(max(s2 / size - mean * mean, 0.0))
        sa = 0.0
        sb = 0.0
        saa = 0.0
        sbb = 0.0
        sab = 0.0
        count = 0
        if m01 == 0.0 and m10 == 0.0 and m00 == 1.0 and m11 == 1.0:
            # A pure translation: one rectangle of valid pixels, fixed weights.
            xa = max(0, math.ceil(-m02 - tol))
            xb = min(w, math.floor(w - 1 - m02 + tol) + 1)
            ya = max(0, math.ceil(-m12 - tol))
            yb = min(h, math.floor(h - 1 - m12 + tol) + 1)
            ox = math.floor(m02)
            oy = math.floor(m12)
            fx = m02 - ox
            fy = m12 - oy
            # Columns whose source columns x + ox and x + ox + 1 both lie in
            # the frame: no clamping there.
            xi0 = min(max(xa, -ox), max(xa, xb))
            xi1 = max(min(xb, w - 1 - ox), xi0)
            for y in range(ya, yb):
                y0 = min(max(y + oy, 0), h - 1)
                y1 = min(y0 + 1, h - 1)
                row0 = bands[i, y0]
                row1 = bands[i, y1]
                trow = tmpl[y]
                for x in range(xi0, xi1):
                    a = _bilinear(row0, row1, x + ox, x + ox + 1, fx, fy)
                    b = np.float64(trow[x])
                    sa += a
                    sb += b
                    saa += a * a
                    sbb += b * b
                    sab += a * b
                for k in range(2):  # the edge columns, left then right
                    for x in range(xa, xi0) if k == 0 else range(xi1, xb):
                        x0 = min(max(x + ox, 0), w - 1)
                        x1 = min(x0 + 1, w - 1)
                        a = _bilinear(row0, row1, x0, x1, fx, fy)
                        b = np.float64(trow[x])
                        sa += a
                        sb += b
                        saa += a * a
                        sbb += b * b
                        sab += a * b
            count = max(0, yb - ya) * max(0, xb - xa)
        else:
            for y in range(h):
                for x in range(w):
                    inside, x0, y0, x1, y1, fx, fy = _source_point(m00, m01, m02, m10, m11, m12,
                                                                   x, y, h, w, tol)
                    if not inside:
                        continue
                    a = _bilinear(bands[i, y0], bands[i, y1], x0, x1, fx, fy)
                    b = np.float64(tmpl[y, x])
                    sa += a
                    sb += b
                    saa += a * a
                    sbb += b * b
                    sab += a * b
                    count += 1
        if count < 16:
            ncc[i] = 0.0
            continue
        caa = saa - sa * sa / count
        cbb = sbb - sb * sb / count
        cab = sab - sa * sb / count
        den = math.sqrt(max(caa, 0.0) * max(cbb, 0.0))
        ncc[i] = cab / den if den > 0 else 0.0


@njit(cache=True, inline="always")
def _align_frame(src: Any, m00: float, m01: float, m02: float, m10: float, m11: float,
                 m12: float, tol: float, out: Any) -> None:  # pragma: no cover - compiled
    """One frame of `aligned_power`: `src` (h, w) sampled bilinearly into `out` (h, w)."""
    h, w = src.shape
    if m01 == 0.0 and m10 == 0.0 and m00 == 1.0 and m11 == 1.0:
        # A pure translation: one rectangle of valid pixels, fixed weights.
        xa = max(0, math.ceil(-m02 - tol))
        xb = max(xa, min(w, math.floor(w - 1 - m02 + tol) + 1))
        ya = max(0, math.ceil(-m12 - tol))
        yb = max(ya, min(h, math.floor(h - 1 - m12 + tol) + 1))
        ox = math.floor(m02)
        oy = math.floor(m12)
        fx = m02 - ox
        fy = m12 - oy
        for y in range(h):
            if y < ya or y >= yb:
                for x in range(w):
                    out[y, x] = np.nan
                continue
            y0 = min(max(y + oy, 0), h - 1)
            y1 = min(y0 + 1, h - 1)
            for x in range(xa):
                out[y, x] = np.nan
            for x in range(xb, w):
                out[y, x] = np.nan
            row0 = src[y0]
            row1 = src[y1]
            for x in range(xa, xb):
                x0 = min(max(x + ox, 0), w - 1)
                out[y, x] = _bilinear(row0, row1, x0, min(x0 + 1, w - 1), fx, fy)
        return
    for y in range(h):
        for x in range(w):
            inside, x0, y0, x1, y1, fx, fy = _source_point(m00, m01, m02, m10, m11, m12,
                                                           x, y, h, w, tol)
            out[y, x] = _bilinear(src[y0], src[y1], x0, x1, fx, fy) if inside else np.nan


@njit(cache=True, inline="always")
def _is_identity(mats: Any, t: int) -> bool:  # pragma: no cover - compiled
    return (abs(mats[t, 0, 0] - 1.0) <= 1e-9 and abs(mats[t, 1, 1] - 1.0) <= 1e-9
            and abs(mats[t, 0, 1]) <= 1e-9 and abs(mats[t, 1, 0]) <= 1e-9
            and abs(mats[t, 0, 2]) <= 1e-9 and abs(mats[t, 1, 2]) <= 1e-9)


@njit(cache=True, parallel=True)
def aligned_power(power: Any, mats: Any, tol: float, out: Any) -> None:  # pragma: no cover - compiled
    """Frames aligned bilinearly to the reference, NaN where they hold no data.

    ``out[t](x, y)`` is the bilinear interpolation of ``power[t]`` at
    ``mats[t] @ (x, y, 1)`` (edges replicated) where that point lies inside
    the frame within `tol` px, NaN elsewhere; a frame whose matrix is the
    identity (within 1e-9) is copied.  `ceuskit.motion.apply_motion` for
    bilinear interpolation with NaN fill, in one pass over the frames in
    parallel and with exact (not 1/32-px) interpolation weights.
    """
    for t in prange(power.shape[0]):
        if _is_identity(mats, t):
            out[t] = power[t]
            continue
        _align_frame(power[t], mats[t, 0, 0], mats[t, 0, 1], mats[t, 0, 2],
                     mats[t, 1, 0], mats[t, 1, 1], mats[t, 1, 2], tol, out[t])


@njit(cache=True, parallel=True)
def aligned_table_power(display: Any, table: Any, mats: Any, tol: float,
                        out: Any) -> None:  # pragma: no cover - compiled
    """`aligned_power` of ``table[display]``: 8-bit display values looked up and aligned.

    Each frame is looked up into a frame-sized scratch image (which stays in
    the core's cache) and aligned from there: the same values as
    `ceuskit._lut.apply_table` then `aligned_power`, without writing and
    re-reading a float32 copy of the whole chunk.
    """
    n, h, w = display.shape
    for t in prange(n):
        if _is_identity(mats, t):
            for y in range(h):
                for x in range(w):
                    out[t, y, x] = table[display[t, y, x]]
            continue
        scratch = np.empty((h, w), dtype=np.float32)
        for y in range(h):
            for x in range(w):
                scratch[y, x] = table[display[t, y, x]]
        _align_frame(scratch, mats[t, 0, 0], mats[t, 0, 1], mats[t, 0, 2],
                     mats[t, 1, 0], mats[t, 1, 1], mats[t, 1, 2], tol, out[t])


@njit(cache=True, parallel=True)
def power_sums(power: Any, keep: Any, frame_sum: Any, frame_count: Any, pixel_sum: Any,
               pixel_count: Any) -> None:  # pragma: no cover - compiled
    """Per-row frame sums and per-pixel sums over kept frames of a power chunk, skipping NaN.

    For a chunk `power` (n, h, w): ``frame_sum[t, y]`` and ``frame_count[t, y]``
    receive the float64 sum and the count of the finite values of row y of
    frame t (their sums over y give each frame's NaN-mean); ``pixel_sum[y, x]``
    and ``pixel_count[y, x]`` are *increased* by the sum (float64, frames in
    order from 0, as NumPy's ``sum(axis=0)`` adds them) and the count of the
    finite values at (y, x) over the frames where ``keep[t]``.  Rows over
    threads.
    """
    n, h, w = power.shape
    for y in prange(h):
        acc = np.zeros(w, dtype=np.float64)
        cnt = np.zeros(w, dtype=np.int64)
        for t in range(n):
            row = power[t, y]
            s = 0.0
            c = 0
            for x in range(w):
                v = row[x]
                if np.isfinite(v):
                    s += v
                    c += 1
            frame_sum[t, y] = s
            frame_count[t, y] = c
            if keep[t]:
                for x in range(w):
                    v = row[x]
                    if np.isfinite(v):
                        acc[x] += v
                        cnt[x] += 1
        for x in range(w):
            pixel_sum[y, x] += acc[x]
            pixel_count[y, x] += cnt[x]


#: The integer offsets (dx, dy) px `cross_correlation` scores around each
#: frame's centre: the centre, then left, right, up and down.
CROSS_OFFSETS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


@njit(cache=True, parallel=True, fastmath=True)
def cross_correlation(images: Any, window: Any, tiled: Any, centre: Any, out: Any
                      ) -> None:  # pragma: no cover - compiled
    """Correlation of each windowed, mean-free image with a filtered template
    at five integer shifts: ``centre[i]`` and its four neighbours.

    ``out[i, k] = sum_x f_i(x) g(x - s)`` for ``s = centre[i] +
    CROSS_OFFSETS[k]``, where ``f_i = (images[i] - mean) * window`` and ``g``
    is the (h, w) filter, periodic, given as `tiled` (3 x 3 copies of it,
    shape (3h, 3w)): the circular correlation that an inverse FFT of
    ``F_i conj(G)`` gives at those five points, for ~1/10 of its cost.  The
    shifts must lie within (-h, h) x (-w, w).  Sums are reassociated
    (``fastmath``) for vector instructions.
    """
    n, h, w = images.shape
    for i in prange(n):
        total = 0.0
        for y in range(h):
            for x in range(w):
                total += np.float64(images[i, y, x])
        mean = total / (h * w)
        cx = centre[i, 0]
        cy = centre[i, 1]
        c0 = c1 = c2 = c3 = c4 = 0.0
        for y in range(h):
            r0 = tiled[y - cy + h]
            r_up = tiled[y - cy + 1 + h]
            r_down = tiled[y - cy - 1 + h]
            for x in range(w):
                f = (np.float64(images[i, y, x]) - mean) * window[y, x]
                b = x - cx + w
                c0 += f * r0[b]
                c1 += f * r0[b + 1]
                c2 += f * r0[b - 1]
                c3 += f * r_up[b]
                c4 += f * r_down[b]
        out[i, 0] = c0
        out[i, 1] = c1
        out[i, 2] = c2
        out[i, 3] = c3
        out[i, 4] = c4
