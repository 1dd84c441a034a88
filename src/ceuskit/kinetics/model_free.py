"""Model-free descriptors: the same definitions applied to the smoothed measured curve.

When no model fits (or none should be assumed), the perfusion parameters
still exist: `model_free_descriptors` smooths each measured curve, estimates
its baseline from the samples before arrival and applies
`descriptors.curve_descriptors` -- the one definition of every parameter --
to the smoothed curve on a fine grid spanning the acquisition only.

Smoothing: local quadratic regression with Gaussian weights (a
Savitzky-Golay filter whose box window is replaced by a Gaussian, evaluated
directly on the fine grid; it works on non-uniform time axes), whose width
grows with the time since arrival (`MODEL_FREE_WIDEN`).  The local quadratic
keeps peak heights (bias of order h^4, where a moving average is biased at
order h^2); the smooth weights keep the slope of the smoothed curve free of
the jitter a box window adds when samples enter and leave it, which matters
because WiR, WoR, TI and TO are read from slopes; the widening window keeps
the slow tail from contributing noise-made "steepest wash-outs".

Limits of any model-free analysis, stated with numbers in
tests/kinetics/test_model_free.py: the area and first moment (AUC, mTT)
stop at the end of the acquisition, so a curve that has not returned to
baseline by then gives a short mTT; noise in the baseline estimate enters
AUC and mTT in proportion to the acquisition's length; at 20 dB SNR per
frame the wash-out end (TO) is still off by ~0.6 s (median).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ceuskit.kinetics import descriptors as _desc
from ceuskit.kinetics.fit import fill_nonfinite
from ceuskit.kinetics.models import DESCRIPTOR_DT_S, FloatArray, _bolus_start, typical_step

#: Default smoothing: full width at half maximum (s) of the Gaussian weights
#: around arrival.  About 2.5 s (sd ~1.06 s) leaves the rise of a 3 s bolus
#: nearly intact and averages ~25 frames at 10 frames/s.
MODEL_FREE_SMOOTH_S = 2.5
#: The weights' standard deviation grows by this fraction of the time since
#: arrival (s per s): ``sd(t) = max(smooth_s / 2.355, MODEL_FREE_WIDEN * (t -
#: t0))``.  Bolus features scale with the time since arrival (the wash-out
#: is slower than the wash-in, the tail slower still), so a fixed window
#: either blurs the rise or leaves the tail noisy; a window proportional to
#: ``t - t0`` is constant in log time, the natural scale of lognormal and
#: gamma-like curves.  Measured on 20 dB lognormal curves, 0.2 cuts the
#: median wash-out-rate error from 64 % to 6 % and the wash-out-end error
#: from 4.9 s to 0.6 s, for a bias of ~0.2 s on TO and mTT of clean curves.
MODEL_FREE_WIDEN = 0.2
# Samples farther than this many Gaussian standard deviations get no weight.
_TRUNCATE_SD = 4.0
_FWHM_PER_SD = 2.0 * math.sqrt(2.0 * math.log(2.0))
# Curves processed at once (bounds the (curves, fine grid) temporaries).
_CHUNK = 2048


def local_quadratic_operator(t: ArrayLike, x: ArrayLike, sd_s: ArrayLike) -> FloatArray:
    """Matrix of Gaussian-weighted local quadratic regression, shape ``(J, N)``.

    Row ``j`` gives the smoothed value at ``x[j]`` as a weighted sum of the
    samples: the constant term of the quadratic in ``(t - x[j])`` fitted by
    least squares with weights ``exp(-(t - x[j])^2 / (2 h_j^2))``,
    ``h_j = sd_s[j]``, samples beyond ``4 h_j`` ignored.  Where the
    quadratic is not determined (fewer than three samples with weight: gaps,
    edges), the weighted mean instead.

    Parameters
    ----------
    t : array, shape (N,)
        Sample times (s), increasing.
    x : array, shape (J,)
        Evaluation times (s).
    sd_s : float or array, shape (J,)
        Standard deviation (s) of the Gaussian weights, > 0 (FWHM / 2.355).

    Returns
    -------
    array, shape (J, N)
        Dimensionless weights; each row sums to 1 (smoothed = ``S @ y``).
    """
    t = np.asarray(t, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    h = np.broadcast_to(np.asarray(sd_s, dtype=np.float64), x.shape)
    if not np.all(h > 0):
        raise ValueError("the smoothing width must be > 0")
    out = np.zeros((x.size, t.size))
    lo = np.searchsorted(t, x - _TRUNCATE_SD * h, side="left")
    hi = np.searchsorted(t, x + _TRUNCATE_SD * h, side="right")
    # Rows in blocks: the (rows, window) temporaries stay small.
    for start in range(0, x.size, 256):
        b = slice(start, start + 256)
        lo_b, hi_b = lo[b], hi[b]
        width = max(int(np.max(hi_b - lo_b)), 1)
        idx = lo_b[:, None] + np.arange(width)
        inside = idx < hi_b[:, None]
        idx = np.where(inside, idx, 0)
        # Offsets in units of h: the moments below stay of order 1.
        u = np.where(inside, (t[idx] - x[b, None]) / h[b, None], 0.0)
        w = np.where(inside, np.exp(-0.5 * u * u), 0.0)
        u2 = u * u
        m0, m1, m2 = np.sum(w, axis=1), np.sum(w * u, axis=1), np.sum(w * u2, axis=1)
        m3, m4 = np.sum(w * u2 * u, axis=1), np.sum(w * u2 * u2, axis=1)
        # First row of the inverse of the normal matrix [[m0 m1 m2] [m1 m2
        # m3] [m2 m3 m4]] (cofactors): the weights of the fitted value at 0.
        c0 = m2 * m4 - m3 * m3
        c1 = m2 * m3 - m1 * m4
        c2 = m1 * m3 - m2 * m2
        det = m0 * c0 + m1 * c1 + m2 * c2
        # Fewer than three samples with weight (gaps, edges): the local
        # constant (weighted mean) instead of an ill-posed quadratic.
        ok = np.abs(det) > 1e-9 * np.maximum(m0, 1e-300) ** 3
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.where(
                ok[:, None],
                np.stack([c0, c1, c2], axis=-1) / det[:, None],
                np.stack([1.0 / m0, 0.0 * m0, 0.0 * m0], axis=-1),
            )
        vals = w * (c[:, 0, None] + c[:, 1, None] * u + c[:, 2, None] * u2)
        rows = np.broadcast_to(np.arange(start, start + idx.shape[0])[:, None], idx.shape)
        out[rows[inside], idx[inside]] = vals[inside]
    return out


def fine_grid(t_first: float, t_last: float, dt_s: float) -> FloatArray:
    """Grid from ``t_first`` with step ``dt_s`` up to ``t_last`` (inclusive within 1e-9 s)."""
    n = math.floor((t_last - t_first) / dt_s + 1e-9) + 1
    return t_first + dt_s * np.arange(max(n, 1), dtype=np.float64)


def model_free_smooth(
    t: ArrayLike,
    y: ArrayLike,
    smooth_s: float = MODEL_FREE_SMOOTH_S,
    *,
    widen: float = MODEL_FREE_WIDEN,
    dt_s: float = DESCRIPTOR_DT_S,
    baseline: ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Smoothed curves on a fine grid over the acquisition, and their baselines.

    1. Non-finite samples are filled by linear interpolation (by index).
    2. Arrival ``t0``: the extrapolated foot of the rise that
       `LognormalModel.initial_guess` estimates (rounded down to multiples
       of ``0.25 h0 / widen``, ``h0 = smooth_s / 2.355``, so that curves
       arriving together share one operator).
    3. The smoothed curve is evaluated on ``fine_grid(t[0], t[-1], dt_s)``
       with `local_quadratic_operator`, weights' standard deviation
       ``max(smooth_s / 2.355, widen * (x - t0))`` at grid time ``x``.
    4. Baseline (unless given): the mean of the raw samples before ``t0``;
       the mean, not the median, because the smoothed curve is a local mean
       and speckle-like noise is skewed.  With fewer than 3 such samples, the
       starting-point baseline (median of the pre-arrival samples).

    Parameters
    ----------
    t : array, shape (N,)
        Sample times (s, cine clock), strictly increasing, shared by all
        curves.
    y : array, shape (..., N)
        Curves in linear echo power (a.u.).
    smooth_s : float
        FWHM (s) of the smoothing weights up to ``smooth_s / (2.355
        widen)`` seconds after arrival.
    widen : float
        Growth of the weights' standard deviation per second after arrival
        (`MODEL_FREE_WIDEN`); 0 for a fixed window.
    dt_s : float
        Fine-grid step (s).
    baseline : array broadcastable to y.shape[:-1], optional
        Known baselines (a.u.) instead of the estimate.

    Returns
    -------
    grid : array, shape (J,)
        Fine grid (s).
    smoothed : array, shape (..., J)
        Smoothed curves (a.u.).
    baseline : array, shape (...)
        Baselines (a.u.).
    """
    t_arr, yf, batch = _prepare(t, y, smooth_s, widen)
    t0, base = _arrivals_and_baselines(t_arr, yf, baseline, batch)
    grid = fine_grid(float(t_arr[0]), float(t_arr[-1]), dt_s)
    smoothed = np.empty((yf.shape[0], grid.size))
    for rows, sm in _smoothed_chunks(t_arr, yf, t0, grid, smooth_s, widen):
        smoothed[rows] = sm
    return grid, smoothed.reshape(*batch, grid.size), base.reshape(batch)


def _prepare(
    t: ArrayLike, y: ArrayLike, smooth_s: float, widen: float
) -> tuple[FloatArray, FloatArray, tuple[int, ...]]:
    """Validated time axis, curves as (M, N) with non-finite samples filled, batch shape."""
    t_arr = np.asarray(t, dtype=np.float64)
    y_arr = np.asarray(y, dtype=np.float64)
    if t_arr.ndim != 1 or y_arr.ndim == 0 or y_arr.shape[-1] != t_arr.size:
        raise ValueError("t must be (N,) and y (..., N)")
    if t_arr.size < 3 or not np.all(np.isfinite(t_arr)) or not np.all(np.diff(t_arr) > 0):
        raise ValueError("t must hold at least 3 finite, strictly increasing times")
    if smooth_s <= 0 or widen < 0:
        raise ValueError(f"need smooth_s > 0 and widen >= 0, got {smooth_s}, {widen}")
    n = y_arr.shape[-1]
    return t_arr, fill_nonfinite(y_arr.reshape(-1, n)), y_arr.shape[:-1]


def _arrivals_and_baselines(
    t: FloatArray, yf: FloatArray, baseline: ArrayLike | None, batch: tuple[int, ...]
) -> tuple[FloatArray, FloatArray]:
    """Arrival (s) and baseline (a.u.) of each curve of ``yf (M, N)``; see `model_free_smooth`."""
    m = yf.shape[0]
    t0 = np.empty(m)
    base = np.empty(m)
    for start in range(0, m, _CHUNK):
        sl = slice(start, start + _CHUNK)
        st = _bolus_start(t, yf[sl])
        t0[sl] = st.t0
        pre = t < st.t0[:, None]
        n_pre = np.sum(pre, axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_pre = np.sum(np.where(pre, yf[sl], 0.0), axis=-1) / n_pre
        base[sl] = np.where(n_pre >= 3, mean_pre, st.base)
    if baseline is not None:
        base = np.broadcast_to(np.asarray(baseline, dtype=np.float64), batch).reshape(-1).copy()
    return t0, base


def _smoothed_chunks(
    t: FloatArray, yf: FloatArray, t0: FloatArray, grid: FloatArray, smooth_s: float, widen: float
) -> Iterator[tuple[NDArray[np.intp], FloatArray]]:
    """Yield ``(rows, smoothed rows on grid)`` for all curves, at most `_CHUNK` at a time."""
    h0 = smooth_s / _FWHM_PER_SD
    # Arrivals are rounded down to multiples of a quantum q (one operator per
    # distinct value): the width then errs by at most widen * q = 25 % of
    # its floor h0, and only where it starts to grow (no measurable effect
    # on the descriptors of test curves, against q = 0.1 h0 / widen).
    if widen > 0:
        q = max(typical_step(t), 0.25 * h0 / widen)
        t0_q = np.floor((t0 - t[0]) / q) * q + t[0]
    else:
        t0_q = np.full(t0.shape, t[0])
    for a in np.unique(t0_q):
        rows_all = np.flatnonzero(t0_q == a)
        op = local_quadratic_operator(t, grid, np.maximum(h0, widen * (grid - a))).T
        for start in range(0, rows_all.size, _CHUNK):
            rows = rows_all[start : start + _CHUNK]
            yield rows, yf[rows] @ op


def model_free_descriptors(
    t: ArrayLike,
    y: ArrayLike,
    smooth_s: float = MODEL_FREE_SMOOTH_S,
    *,
    widen: float = MODEL_FREE_WIDEN,
    dt_s: float = DESCRIPTOR_DT_S,
    baseline: ArrayLike | None = None,
) -> dict[str, FloatArray]:
    """Perfusion descriptors of measured curves without a model.

    `model_free_smooth` (smoothing, fine grid over the acquisition,
    baseline), then `descriptors.curve_descriptors` with ``t_end_s =
    t[-1]``: the same definitions as for a fitted model, with areas and the
    first moment taken over the acquisition only.

    Parameters
    ----------
    t : array, shape (N,)
        Sample times (s, cine clock), strictly increasing.
    y : array, shape (..., N)
        Curves in linear echo power (a.u.); non-finite samples are filled.
    smooth_s : float
        FWHM (s) of the smoothing weights near arrival (default
        `MODEL_FREE_SMOOTH_S`).  Larger: less noise in the wash-in, more bias
        on fast rises.
    widen : float
        Growth of the smoothing width with the time since arrival
        (`MODEL_FREE_WIDEN`); 0 for a fixed window.
    dt_s : float
        Fine-grid step (s).
    baseline : array broadcastable to y.shape[:-1], optional
        Known baselines (a.u.).

    Returns
    -------
    dict of str to array, shape y.shape[:-1]
        Keys of `descriptors.DESCRIPTOR_UNITS` plus ``peak_in_acquisition``
        (always 1: the grid ends with the acquisition).
    """
    t_arr, yf, batch = _prepare(t, y, smooth_s, widen)
    t0, base = _arrivals_and_baselines(t_arr, yf, baseline, batch)
    grid = fine_grid(float(t_arr[0]), float(t_arr[-1]), dt_s)
    keys = [*_desc.DESCRIPTOR_UNITS, "peak_in_acquisition"]
    out = {key: np.full(yf.shape[0], np.nan) for key in keys}
    # Chunk by chunk: the smoothed curves of a whole parametric map would
    # not fit in memory at once.
    for rows, sm in _smoothed_chunks(t_arr, yf, t0, grid, smooth_s, widen):
        d = _desc.curve_descriptors(grid, sm, base[rows], t_end_s=float(grid[-1]))
        for key in keys:
            out[key][rows] = d[key]
    return {key: v.reshape(batch) for key, v in out.items()}
