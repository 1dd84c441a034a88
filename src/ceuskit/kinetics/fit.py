"""Batched least-squares fitting of bolus models to time-intensity curves.

`fit_curves` fits one model to any number of curves at once with a
Levenberg-Marquardt iteration written in vectorised NumPy: every curve has its
own damping, accept/reject decision and convergence test, the normal
equations of all curves still iterating are solved in one batched call, and
the parameter box is enforced by projection.  Curves are screened first
(`enhancement_test`, sample counts, non-finite samples) so that a curve that
cannot or should not be fitted gets a clear `FitStatus` and NaN parameters
instead of an exception or a meaningless number.

The code here is the reference.  By default the iteration runs compiled
(:mod:`ceuskit.kinetics.fit_numba`), and so do the screening, the starting
point and the quality-of-fit sums (:mod:`ceuskit.kinetics.prefit_numba`,
which reproduces the NumPy numbers exactly); the per-curve formulas
(decisions, ``exp``/``log`` of the guesses, boxes, errors, statuses) are this
module's and the models' own in both cases.

Descriptors of the fitted curves (TTP, PE, mTT, ...) come from
:mod:`ceuskit.kinetics.descriptors` via `FitResult.descriptors`.
"""

from __future__ import annotations

import enum
import importlib.util
import math
import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ceuskit.kinetics import descriptors as _desc
from ceuskit.kinetics.lm import DIAG_FLOOR, LAMBDA_MAX, LAMBDA_MIN
from ceuskit.kinetics.models import (
    GUESS_SMOOTH_S,
    BolusModel,
    FloatArray,
    _MomentStartModel,
    compiled_start_model,
    masked_median,
    moving_average,
    smoothing_window,
    typical_step,
)

# --- enhancement test constants ------------------------------------------
# Moving-average window (s) of the smoothed curve whose maximum is tested.
# One to two seconds averages ~10-30 frames at usual CEUS frame rates, which
# makes the window mean close to Gaussian even for speckle-like (skewed) noise,
# while a bolus peak (rise times of several seconds) is barely flattened.
ENHANCEMENT_SMOOTH_S = 1.5
# Baseline window: the first 10 % of the curve, but at least 2 s and at least
# 3 samples (cut short if the smoothed curve already rises inside it).
BASELINE_FRACTION = 0.10
BASELINE_MIN_S = 2.0
BASELINE_MIN_SAMPLES = 3
# z threshold.  The maximum of the smoothed curve is taken over up to ~1000
# roughly independent windows; for pure Gaussian noise a one-sided z > 5 has
# p ~ 3e-7 per window, so the family-wise false-positive rate stays below
# ~1e-3 even for long acquisitions (a Bonferroni bound), with room for mildly
# non-Gaussian or mildly correlated noise.
ENHANCEMENT_Z = 5.0
# Minimum peak-to-baseline ratio in decibels of power (1 dB = x1.26).  A ROI
# whose smoothed maximum is less than 1 dB above its baseline is not called
# enhancing even when the rise is statistically significant: such rises are
# within what gain drift, slight motion and speckle decorrelation produce.
ENHANCEMENT_MIN_DB = 1.0
# The smoothed maximum is the largest of many window means, so noise biases it
# upward (by ~2-3 standard errors of a window mean for a flat curve of a few
# hundred samples).  The decibel test uses the maximum minus this many
# standard errors (sigma / sqrt(k)), which keeps a 0.5 dB rise under 1 dB at
# 20 % frame-to-frame noise.
PEAK_SHRINK_SE = 2.0
# Normal-consistency factor of the median absolute deviation.
_MAD_TO_SIGMA = 1.4826

# --- Levenberg-Marquardt constants: `ceuskit.kinetics.lm` (shared by the engines).
# Covariances (pinv of J^T W J) are split over threads above this many
# matrices per thread (a thread costs ~0.1 ms, a 5 x 5 pinv ~3 us).
_PINV_PER_THREAD = 1024


class FitStatus(enum.IntEnum):
    """Outcome of fitting one curve."""

    OK = 0
    MAX_ITER = 1
    NO_ENHANCEMENT = 2
    TOO_FEW_SAMPLES = 3
    NON_FINITE = 4
    FAILED = 5
    PEAK_OUTSIDE = 6

    @property
    def label(self) -> str:
        """Short, stable, human-readable label (e.g. ``"no-enhancement"``)."""
        return _LABELS[self]


_LABELS = {
    FitStatus.OK: "ok",
    FitStatus.MAX_ITER: "max-iter",
    FitStatus.NO_ENHANCEMENT: "no-enhancement",
    FitStatus.TOO_FEW_SAMPLES: "too-few-samples",
    FitStatus.NON_FINITE: "non-finite",
    FitStatus.FAILED: "failed",
    FitStatus.PEAK_OUTSIDE: "peak-outside",
}

#: Statuses whose parameters describe a fitted curve (descriptors computed).
USABLE_STATUSES = (FitStatus.OK, FitStatus.MAX_ITER, FitStatus.PEAK_OUTSIDE)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def fill_nonfinite(y: ArrayLike, valid: ArrayLike | None = None) -> FloatArray:
    """Replace invalid samples by linear interpolation along the last axis.

    Samples before the first (after the last) valid one take its value; a
    curve with no valid sample becomes all zeros.  Interpolation is by sample
    index, which is exact for uniform sampling and only used for smoothing
    and starting points.

    Parameters
    ----------
    y : array, shape (..., N)
    valid : bool array, shape (..., N), optional
        Default: ``isfinite(y)``.
    """
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(y) if valid is None else np.asarray(valid, dtype=bool) & np.isfinite(y)
    if ok.all():
        return y.copy()
    n = y.shape[-1]
    idx = np.broadcast_to(np.arange(n), y.shape)
    prev = np.maximum.accumulate(np.where(ok, idx, -1), axis=-1)
    nxt = np.flip(np.minimum.accumulate(np.flip(np.where(ok, idx, n), axis=-1), axis=-1), axis=-1)
    has_prev = prev >= 0
    has_next = nxt < n
    yz = np.where(ok, y, 0.0)
    y_prev = np.take_along_axis(yz, np.clip(prev, 0, n - 1), axis=-1)
    y_next = np.take_along_axis(yz, np.clip(nxt, 0, n - 1), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(nxt > prev, (idx - prev) / (nxt - prev), 0.0)
    interp = y_prev + frac * (y_next - y_prev)
    out = np.where(has_prev & has_next, interp, np.where(has_prev, y_prev, y_next))
    out = np.where(ok, y, out)
    out = np.where(ok.any(axis=-1, keepdims=True), out, 0.0)
    return np.asarray(out, dtype=np.float64)


def enhancement_test(
    t: ArrayLike, y: ArrayLike, *, backend: str = "auto"
) -> tuple[NDArray[np.bool_], FloatArray, dict[str, Any]]:
    """Does each curve enhance at all?  A one-sided test on the smoothed peak.

    Procedure (constants are module-level names):

    1. Missing (non-finite) samples are filled by interpolation.
    2. Smooth with a centred moving average over ``k`` samples spanning
       `ENHANCEMENT_SMOOTH_S` seconds; ``peak`` = maximum of the smoothed
       curve.
    3. Baseline window: the first `BASELINE_FRACTION` of the samples, at least
       `BASELINE_MIN_S` seconds and `BASELINE_MIN_SAMPLES` samples; if the
       rise is significant (the z of step 5 computed with the window's median
       exceeds `ENHANCEMENT_Z`) and the smoothed curve already crosses
       half-way from that median to ``peak`` inside the window, the window
       stops ``k // 2`` samples before the crossing (never below
       `BASELINE_MIN_SAMPLES`): the bolus arrived early.  ``baseline`` = mean of
       the raw samples in the window (``n_b`` of them).
    4. Noise: ``sigma`` = the larger of two robust estimates, the MAD of the
       first differences of the whole curve divided by sqrt(2) (insensitive
       to slow trends such as the bolus itself) and, when the window holds at
       least 10 samples, the MAD of the baseline samples about their median
       (which also sees slow, correlated fluctuations).
    5. Statistic: ``z = (peak - baseline) / (sigma * sqrt(1/k + 1/n_b))``, the
       difference of a k-sample mean and an n_b-sample mean in units of its
       standard error under white noise.
    6. Enhancing when ``z > ENHANCEMENT_Z`` and
       ``10 log10(peak_lo / baseline) >= ENHANCEMENT_MIN_DB`` with
       ``peak_lo = peak - PEAK_SHRINK_SE * sigma / sqrt(k)`` (the maximum
       corrected for its upward noise bias).  With ``baseline <= 0`` (e.g.
       background-subtracted data) the ratio is +inf when ``peak_lo`` is above
       the baseline, so only the z test applies.

    Parameters
    ----------
    t : array, shape (N,) or (..., N)
        Times (s).
    y : array, shape (..., N)
        Linear echo power (a.u.).
    backend : {"auto", "numba", "numpy"}
        Where steps 2-4 run: ``"numpy"`` (vectorised over curves, the
        reference) or compiled per-curve loops
        (:mod:`ceuskit.kinetics.prefit_numba`, the same numbers, several
        times faster; ``"numba"`` raises ValueError without numba);
        ``"auto"``: compiled when numba is available.

    Returns
    -------
    enhancing : bool array, shape (...)
    statistic : float array, shape (...)
        The z statistic (NaN for curves with fewer than 4 finite samples,
        which are never enhancing).
    details : dict
        ``baseline`` (a.u.), ``noise_sigma`` (a.u.), ``smoothed_peak``
        (a.u.), ``peak_to_baseline_db`` (dB, of ``peak_lo``), ``n_baseline`` (samples), each
        shape (...); ``window_samples`` (int, k).
    """
    if backend not in ("auto", "numba", "numpy"):
        raise ValueError(f"backend must be 'auto', 'numba' or 'numpy', got {backend!r}")
    y = np.asarray(y, dtype=np.float64)
    tt = np.broadcast_to(np.asarray(t, dtype=np.float64), y.shape)
    n = y.shape[-1]
    valid = np.isfinite(y) & np.isfinite(tt)
    n_valid = np.sum(valid, axis=-1)
    yf = fill_nonfinite(y, valid)
    k = smoothing_window(tt, ENHANCEMENT_SMOOTH_S, n) if n > 1 else 1
    stats = None
    if backend != "numpy":
        # Imported here: the compiled module imports this one.
        from ceuskit.kinetics import prefit_numba

        stats = prefit_numba.screen_stats(tt, yf, k, required=backend == "numba")
    if stats is None:
        stats = _enhancement_stats(tt, yf, k)
    return _enhancement_decision(stats, n_valid, k)


class _EnhancementStats(NamedTuple):
    """What `enhancement_test` reads from the samples of each curve (batch shape each)."""

    peak: FloatArray  # maximum of the smoothed curve (a.u.)
    n_baseline: NDArray[np.intp]  # samples in the baseline window
    baseline_sum: FloatArray  # sum of the raw samples in it (a.u.)
    sigma_diff: FloatArray  # noise from the MAD of the first differences (a.u.)
    mad_baseline: FloatArray  # median absolute deviation of the baseline samples (a.u.)


def _enhancement_stats(tt: FloatArray, yf: FloatArray, k: int) -> _EnhancementStats:
    """Steps 2-4 of `enhancement_test` on filled curves ``yf`` (NumPy reference).

    :mod:`ceuskit.kinetics.prefit_numba` computes the same numbers in
    compiled per-curve loops; the per-curve formulas that follow are
    `_enhancement_decision`, shared by both.
    """
    n = yf.shape[-1]
    s = moving_average(yf, k)
    peak = np.max(s, axis=-1) if n else np.full(yf.shape[:-1], np.nan)
    idx = np.arange(n)

    # Baseline window.
    t_first = tt[..., :1]
    n_time = np.sum(tt <= t_first + BASELINE_MIN_S, axis=-1)
    n_win = np.maximum(np.maximum(math.ceil(BASELINE_FRACTION * n), BASELINE_MIN_SAMPLES), n_time)
    n_win = np.minimum(n_win, n)
    in_win = idx < n_win[..., None]
    med_win = masked_median(yf, in_win)
    with np.errstate(all="ignore"):
        # Noise from first differences (a slow trend cancels in them).
        d = np.diff(yf, axis=-1)
        d_med = np.median(d, axis=-1, keepdims=True) if n > 1 else d
        sig_diff = (
            _MAD_TO_SIGMA * np.median(np.abs(d - d_med), axis=-1) / math.sqrt(2.0)
            if n > 1
            else np.full(yf.shape[:-1], np.nan)
        )
    # Cut the window short only for a significant rise inside it: cutting a
    # flat curve's window at a noise excursion would leave a noisy baseline.
    half = 0.5 * (med_win + peak)
    crosses = (s >= half[..., None]) & in_win
    with np.errstate(all="ignore"):
        z_win = (peak - med_win) / (sig_diff * np.sqrt(1.0 / k + 1.0 / n_win))
    crosses &= (z_win > ENHANCEMENT_Z)[..., None]
    i_cross = np.where(crosses.any(axis=-1), np.argmax(crosses, axis=-1), n)
    n_b = np.clip(np.minimum(n_win, i_cross - k // 2), min(BASELINE_MIN_SAMPLES, n), None)
    in_b = idx < n_b[..., None]
    with np.errstate(all="ignore"):
        base_sum = np.sum(np.where(in_b, yf, 0.0), axis=-1)
        # Noise, second estimate: spread of the baseline samples.
        b_med = masked_median(yf, in_b)
        mad_b = masked_median(np.abs(yf - b_med[..., None]), in_b)
    return _EnhancementStats(
        peak=peak, n_baseline=n_b, baseline_sum=base_sum, sigma_diff=sig_diff, mad_baseline=mad_b
    )


def _enhancement_decision(
    stats: _EnhancementStats, n_valid: NDArray[np.intp], k: int
) -> tuple[NDArray[np.bool_], FloatArray, dict[str, Any]]:
    """Steps 4-6 of `enhancement_test` from the per-curve statistics; see there."""
    peak, n_b = stats.peak, stats.n_baseline
    with np.errstate(all="ignore"):
        base = stats.baseline_sum / n_b
        sig_base = _MAD_TO_SIGMA * stats.mad_baseline
    sig_base = np.where(n_b >= 10, sig_base, 0.0)
    sigma = np.maximum(stats.sigma_diff, sig_base)
    # A perfectly noise-free curve: any rise is significant.
    sigma = np.where(sigma > 0, sigma, np.finfo(np.float64).tiny)

    # Over the floor sigma of a noise-free curve, a rise gives z = +inf and a
    # huge peak an infinite ratio: the intended limits, not errors.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        z = (peak - base) / (sigma * np.sqrt(1.0 / k + 1.0 / n_b))
        peak_lo = peak - PEAK_SHRINK_SE * sigma / math.sqrt(k)
        ratio_db = np.where(
            base > 0, 10.0 * np.log10(peak_lo / base), np.where(peak_lo > base, np.inf, -np.inf)
        )
    z = np.where(n_valid >= 4, z, np.nan)
    enhancing = (z > ENHANCEMENT_Z) & (ratio_db >= ENHANCEMENT_MIN_DB) & (n_valid >= 4)
    details: dict[str, Any] = {
        "baseline": base,
        "noise_sigma": sigma,
        "smoothed_peak": peak,
        "peak_to_baseline_db": ratio_db,
        "n_baseline": n_b,
        "window_samples": k,
    }
    return np.asarray(enhancing, dtype=bool), np.asarray(z, dtype=np.float64), details


# ---------------------------------------------------------------------------
# result
# ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class FitResult:
    """Parameters and quality of a batch of fits.

    Attributes
    ----------
    model : BolusModel
    params : array, shape (..., P)
        Best-fit parameters (units in ``model.param_units``); NaN for curves
        that were not fitted.
    stderr : array, shape (..., P)
        Asymptotic standard errors, ``sqrt(diag((J^T W J)^-1) * SSE / (n - P))``
        with J the Jacobian at the optimum and n the number of valid samples.
    qof : array, shape (...)
        Quality of fit in [0, 1]: coefficient of determination of the fit
        against the (weighted) mean of the data, clipped.
    sse : array, shape (...)
        Weighted sum of squared residuals (a.u.^2 times weight units).
    status : int array, shape (...)
        `FitStatus` codes.
    n_iter : int array, shape (...)
        Levenberg-Marquardt iterations (accepted and rejected steps).
    """

    model: BolusModel
    params: FloatArray
    stderr: FloatArray
    qof: FloatArray
    sse: FloatArray
    status: NDArray[np.int8]
    n_iter: NDArray[np.int32]

    @property
    def shape(self) -> tuple[int, ...]:
        """Batch shape of the fitted curves."""
        return tuple(self.status.shape)

    @property
    def usable(self) -> NDArray[np.bool_]:
        """Curves whose parameters describe a fitted curve (OK, MAX_ITER, PEAK_OUTSIDE)."""
        return np.isin(self.status, [int(s) for s in USABLE_STATUSES])

    def param(self, name: str) -> FloatArray:
        """Values of parameter ``name``, shape (...)."""
        out: FloatArray = self.params[..., self.model.index(name)]
        return out

    def labels(self) -> NDArray[np.str_]:
        """Status labels (e.g. ``"ok"``), shape (...)."""
        table = np.array([_LABELS[s] for s in FitStatus])
        return np.asarray(table[self.status.astype(np.intp)])

    def select(self, index: int | tuple[int, ...]) -> FitResult:
        """The fit of one curve of the batch (a result of batch shape ())."""
        return FitResult(
            model=self.model,
            params=self.params[index],
            stderr=self.stderr[index],
            qof=np.asarray(self.qof[index]),
            sse=np.asarray(self.sse[index]),
            status=np.asarray(self.status[index]),
            n_iter=np.asarray(self.n_iter[index]),
        )

    def predict(self, t: ArrayLike) -> FloatArray:
        """Fitted curves (a.u.) at times ``t`` (s), shape (..., N)."""
        return self.model.predict(self.params, t)

    def descriptors(
        self,
        t_end_s: float,
        dt_s: float = 0.05,
        extend_to_s: float | None = None,
        *,
        max_elements: int = 20_000_000,
    ) -> dict[str, FloatArray]:
        """Perfusion descriptors of the fitted curves.

        The fitted curves are evaluated on
        ``descriptors.dense_grid(t_end_s, dt_s, extend_to_s=...)`` and passed
        to `descriptors.curve_descriptors` with their fitted baseline.

        A model without a bolus (``model.is_bolus`` False: replenishment)
        has no peak and no wash-out, so the descriptors that need them
        (`descriptors.PEAK_DESCRIPTORS`) are NaN; the others come from the
        model's closed forms when it has them (`fast.fast_descriptors` gives
        the same), else from the grid.  (On the grid such a curve would
        report where it saturates in floating point as its "peak".)

        Parameters
        ----------
        t_end_s : float
            End of the acquisition (s, cine clock); ``auc`` stops there.
        dt_s : float
            Grid step (s).
        extend_to_s : float, optional
            Grid end (s); default ``max(4 * t_end_s, 300)`` so that the first
            moment (mTT) sees the curve's tail.
        max_elements : int
            Curves are evaluated in chunks of at most this many grid values.

        Returns
        -------
        dict of str to array, shape (...)
            Keys of `descriptors.DESCRIPTOR_UNITS` plus
            ``peak_in_acquisition``; NaN where the status is not usable.
        """
        ext = max(4.0 * t_end_s, 300.0) if extend_to_s is None else extend_to_s
        flat = self.params.reshape(-1, self.params.shape[-1])
        use = np.flatnonzero(self.usable.reshape(-1))
        m = flat.shape[0]
        keys = [*_desc.DESCRIPTOR_UNITS, "peak_in_acquisition"]
        out = {key: np.full(m, np.nan) for key in keys}
        closed = None
        if not self.model.is_bolus:
            closed = self.model.closed_form_descriptors(flat[use], t_end_s, extend_to_s=ext, dt_s=dt_s)
        if closed is not None:
            for key in keys:
                out[key][use] = closed[key]
        else:
            grid = _desc.dense_grid(t_end_s, dt_s, extend_to_s=ext)
            chunk = max(1, max_elements // grid.size)
            for start in range(0, use.size, chunk):
                sel = use[start : start + chunk]
                p = flat[sel]
                curves = self.model.predict(p, grid)
                d = _desc.curve_descriptors(grid, curves, self.model.baseline(p), t_end_s=t_end_s)
                for key in keys:
                    out[key][sel] = d[key]
        if not self.model.is_bolus:
            for key in _desc.PEAK_DESCRIPTORS:
                out[key][:] = np.nan
        return {key: v.reshape(self.shape) for key, v in out.items()}


# ---------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------
def _normal_equations(jac: FloatArray, w: FloatArray, r: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``J^T W J`` (M, P, P) and ``J^T W r`` (M, P)."""
    jw = jac * w[..., None]
    jt = np.swapaxes(jw, -1, -2)
    return jt @ jac, (jt @ r[..., None])[..., 0]


def _solve(h: FloatArray, g: FloatArray) -> FloatArray:
    """Batched solve of ``h x = g``; pseudo-inverse where singular, NaN where not finite."""
    try:
        x = np.linalg.solve(h, g[..., None])[..., 0]
    except np.linalg.LinAlgError:
        try:
            x = (np.linalg.pinv(h) @ g[..., None])[..., 0]
        except np.linalg.LinAlgError:
            # A NaN entry fails the SVD of the whole batch: solve the finite
            # systems alone (the caller drops non-finite steps).
            finite = np.all(np.isfinite(h), axis=(-1, -2))
            x = np.full(g.shape, np.nan)
            x[finite] = _solve(h[finite], g[finite])
    return np.asarray(x, dtype=np.float64)


def _levenberg_marquardt(
    model: BolusModel,
    t: FloatArray,
    y: FloatArray,
    w: FloatArray,
    p: FloatArray,
    lo: FloatArray,
    hi: FloatArray,
    *,
    max_iter: int,
    tol: float,
    xtol: float,
    lambda0: float,
) -> tuple[FloatArray, FloatArray, FloatArray, NDArray[np.bool_], NDArray[np.int32]]:
    """Projected Levenberg-Marquardt on M curves; returns p, cost, J^T W J, converged, n_iter.

    Damping follows Marquardt's scaling (``lambda * diag(J^T W J)``) with
    Nielsen's update of lambda from the gain ratio.  Parameters sitting on a
    bound whose gradient points outward are frozen for the step (an active
    set), the rest of the step is clipped to the box.
    """
    m, n_p = p.shape
    shared_t = t.ndim == 1

    def tsel(idx: NDArray[np.intp]) -> FloatArray:
        return t if shared_t else t[idx]

    all_idx = np.arange(m)
    r = y - model.predict(p, t)
    cost = np.sum(w * r * r, axis=-1)
    jtj, grad = _normal_equations(model.jacobian(p, t), w, r)
    lam = np.full(m, lambda0)
    nu = np.full(m, 2.0)
    converged = np.zeros(m, dtype=bool)
    n_iter = np.zeros(m, dtype=np.int32)
    cost_scale = np.sum(w * y * y, axis=-1)
    eye = np.eye(n_p, dtype=bool)

    active = all_idx[np.isfinite(cost) & np.all(np.isfinite(jtj), axis=(-1, -2))]
    for _ in range(max_iter):
        if active.size == 0:
            break
        a = active
        pa, ga, ha = p[a], grad[a], jtj[a]
        pinned = ((pa <= lo[a]) & (ga < 0)) | ((pa >= hi[a]) & (ga > 0))
        diag = np.diagonal(ha, axis1=-2, axis2=-1)
        dmax = np.max(diag, axis=-1, keepdims=True)
        scale = np.maximum(diag, DIAG_FLOOR * dmax)
        scale = np.where(dmax > 0, scale, 1.0)
        h = ha + eye * (lam[a, None] * scale)[..., None]
        free = ~pinned
        h = np.where(free[..., :, None] & free[..., None, :], h, 0.0)
        h = np.where(eye & pinned[..., None], 1.0, h)
        g_eff = np.where(free, ga, 0.0)
        delta = _solve(h, g_eff)
        delta = np.where(np.isfinite(delta), delta, 0.0)
        p_new = np.clip(pa + delta, lo[a], hi[a])
        step = p_new - pa

        r_new = y[a] - model.predict(p_new, tsel(a))
        cost_new = np.sum(w[a] * r_new * r_new, axis=-1)
        actual = cost[a] - cost_new
        predicted = np.sum(step * (2.0 * ga - (ha @ step[..., None])[..., 0]), axis=-1)
        accept = np.isfinite(cost_new) & (actual > 0)
        n_iter[a] += 1

        with np.errstate(divide="ignore", invalid="ignore"):
            rho = np.where(predicted > 0, actual / predicted, 1.0)
        shrink = np.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
        lam_a = np.where(accept, lam[a] * shrink, lam[a] * nu[a])
        lam[a] = np.clip(lam_a, LAMBDA_MIN, None)
        nu[a] = np.where(accept, 2.0, nu[a] * 2.0)

        acc = a[accept]
        if acc.size:
            p[acc] = p_new[accept]
            cost[acc] = cost_new[accept]
            jtj[acc], grad[acc] = _normal_equations(model.jacobian(p[acc], tsel(acc)), w[acc], r_new[accept])

        small_step = np.all(np.abs(step) <= xtol * (np.abs(pa) + xtol), axis=-1)
        small_cost = actual <= tol * cost[a]
        tiny_cost = cost[a] <= 1e-28 * cost_scale[a]
        done = (
            (accept & (small_cost | small_step)) | (~accept & small_step) | tiny_cost | (lam[a] > LAMBDA_MAX)
        )
        converged[a[done]] = True
        active = a[~done]
    return p, cost, jtj, converged, n_iter


def _pinv_threads(a: FloatArray) -> FloatArray:
    """``np.linalg.pinv`` of a stack of matrices, split over threads when large.

    NumPy's linear-algebra loops release the GIL, and each matrix's result
    does not depend on the others in the stack, so the parts give the same
    numbers as one call.
    """
    workers = min(os.cpu_count() or 1, a.shape[0] // _PINV_PER_THREAD)
    if workers < 2:
        return np.asarray(np.linalg.pinv(a), dtype=np.float64)
    with ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(np.linalg.pinv, np.array_split(a, workers)))
    return np.asarray(np.concatenate(parts), dtype=np.float64)


def _pinv(jtj: FloatArray, finite: NDArray[np.bool_]) -> FloatArray:
    """``pinv`` of each ``J^T W J`` (M, P, P); NaN where not finite or where the SVD fails.

    ``np.linalg.pinv`` raises on a NaN entry (and on a rare non-converging
    SVD) for the whole batch; here such matrices just get no covariance.
    """
    sel = np.flatnonzero(finite)
    out: FloatArray = np.full_like(jtj, np.nan)
    try:
        if sel.size == finite.size:
            out = _pinv_threads(jtj)
        elif sel.size:
            out[sel] = _pinv_threads(jtj[sel])
    except np.linalg.LinAlgError:
        out = np.full_like(jtj, np.nan)
        for i in sel:
            try:
                out[i] = np.linalg.pinv(jtj[i])
            except np.linalg.LinAlgError:
                pass
    return out


class _Fits:
    """The result arrays of `fit_curves` (flat batch) and how one fit is stored in them."""

    def __init__(self, m: int, n_p: int) -> None:
        self.params = np.full((m, n_p), np.nan)
        self.stderr = np.full((m, n_p), np.nan)
        self.qof = np.full(m, np.nan)
        self.sse = np.full(m, np.nan)
        self.status = np.full(m, int(FitStatus.FAILED), dtype=np.int8)
        self.n_iter = np.zeros(m, dtype=np.int32)

    def store(
        self,
        rows: NDArray[np.intp],
        p_fit: FloatArray,
        cost: FloatArray,
        jtj: FloatArray,
        conv: NDArray[np.bool_],
        its: NDArray[np.int32],
        n_valid: NDArray[np.intp],
        sst: FloatArray,
        t_last: FloatArray,
        ttp: FloatArray,
    ) -> None:
        """Errors, quality of fit and status of the fits of ``rows``; see `fit_curves`."""
        n_p = p_fit.shape[-1]
        with np.errstate(all="ignore"):
            dof = np.maximum(n_valid - n_p, 1)
            finite_jtj = np.all(np.isfinite(jtj), axis=(-1, -2))
            var = np.diagonal(_pinv(jtj, finite_jtj), axis1=-2, axis2=-1) * (cost / dof)[:, None]
            se = np.where(var >= 0, np.sqrt(np.abs(var)), np.nan)
            r2 = np.where(sst > 0, 1.0 - cost / sst, np.where(cost <= 0, 1.0, 0.0))
            q = np.clip(r2, 0.0, 1.0)
        # A non-finite J^T W J (e.g. samples beyond ~1e154 a.u., whose squares
        # overflow) leaves no usable fit or error: FAILED, like a non-finite
        # result.
        finite = np.all(np.isfinite(p_fit), axis=-1) & np.isfinite(cost) & finite_jtj
        st = np.where(conv, int(FitStatus.OK), int(FitStatus.MAX_ITER))
        st = np.where(finite & ~(ttp <= t_last), int(FitStatus.PEAK_OUTSIDE), st)
        st = np.where(finite, st, int(FitStatus.FAILED))
        self.params[rows] = np.where(finite[:, None], p_fit, np.nan)
        self.stderr[rows] = np.where(finite[:, None], se, np.nan)
        self.qof[rows] = np.where(finite, q, np.nan)
        self.sse[rows] = np.where(finite, cost, np.nan)
        self.status[rows] = st
        self.n_iter[rows] = its


def _gpu_driver_possible() -> bool:
    """False when this is certainly a machine without a CUDA driver (no torch import needed).

    On Linux the NVIDIA driver exposes /dev/nvidiactl (/dev/dxg under WSL);
    without either, torch cannot see a GPU, so a CPU-only torch install does
    not cost every command a torch import.  Elsewhere: not known, True.
    """
    if not sys.platform.startswith("linux"):
        return True
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/dxg")


def _torch_gpu_kernel(model: BolusModel) -> bool:
    """Whether ``backend="auto"`` takes the torch core: torch importable, a CUDA GPU, a kernel.

    Never raises: torch is optional, and a broken installation (e.g. a CUDA
    library mismatch) just leaves the other cores in charge.  Without torch
    installed, or on Linux without a GPU driver, this is a module lookup and
    a file check; otherwise the first call imports torch (about a second,
    once per process) to ask for a GPU.
    """
    if "torch" not in sys.modules and importlib.util.find_spec("torch") is None:
        return False
    if not _gpu_driver_possible():
        return False
    try:
        from ceuskit.kinetics import fit_torch

        return fit_torch.has_kernel(model) and fit_torch.gpu_available()
    except Exception:  # any import or driver failure: no GPU path
        return False


def _time_rows(t_fill: FloatArray) -> FloatArray:
    """Times for the compiled kernels: one C-ordered row (shared axis) or one row per curve."""
    return np.ascontiguousarray(t_fill[None, :] if t_fill.ndim == 1 else t_fill)


def _fit_compiled(
    model: BolusModel,
    start_model: _MomentStartModel,
    t_fill: FloatArray,
    y_fill: FloatArray,
    valid: NDArray[np.bool_],
    n_valid: NDArray[np.intp],
    wf: FloatArray | None,
    cand: NDArray[np.bool_],
    out: _Fits,
    *,
    screen: bool,
    chunk: int,
    settings: dict[str, Any],
    lm_rows: Callable[..., Any],
) -> None:
    """`fit_curves` for the candidates ``cand`` with compiled screening, start and iteration.

    ``lm_rows`` is the iteration: ``fit_numba.levenberg_marquardt_rows`` or
    its torch twin ``fit_torch.levenberg_marquardt_rows``.

    The same numbers as the chunked NumPy path, with few parallel regions
    whatever the batch size (a parallel region costs a scheduler time
    slice, ~8 ms, when another process holds a core): one pass screens the
    candidates and, for a shared time axis, also computes their start; one
    finishes the start; one fits.  Per-batch quantities of the reference
    (smoothing windows, median steps, summation orders) are taken per
    reference chunk of ``chunk`` enhancing curves.
    """
    from ceuskit.kinetics import prefit_numba

    n = y_fill.shape[1]
    shared = t_fill.ndim == 1
    t_rows = _time_rows(t_fill)
    ci = np.flatnonzero(cand)
    k_screen = 0
    if screen:
        k_screen = smoothing_window(t_fill if shared else t_fill[ci], ENHANCEMENT_SMOOTH_S, n)
    stats = starts = None
    if shared:
        # One pass: screening and start of every candidate.  NumPy sums the
        # area of a batch of two or more curves sequentially (see
        # prefit_numba); single-curve batches are redone below.
        k_guess = smoothing_window(t_fill, GUESS_SMOOTH_S, n)
        stats, starts = prefit_numba.prefit_rows(
            t_rows, y_fill, ci, k_screen=k_screen,
            k_start=np.full(ci.size, k_guess), sequential=np.ones(ci.size, dtype=bool),
        )
    elif screen:
        stats, _ = prefit_numba.prefit_rows(t_rows, y_fill, ci, k_screen=k_screen)
    keep = np.arange(ci.size)
    if screen:
        assert stats is not None
        enh, _, _ = _enhancement_decision(stats, np.full(ci.size, n), k_screen)
        out.status[ci[~enh]] = FitStatus.NO_ENHANCEMENT
        keep = np.flatnonzero(enh)
    idx = ci[keep]
    if idx.size == 0:
        return
    chunks = [slice(s, s + chunk) for s in range(0, idx.size, chunk)]
    step: float | FloatArray
    if starts is not None:
        starts = starts.take(keep)
        single = [c.start for c in chunks if idx[c].size == 1]
        if single:
            starts.set_pairwise(np.asarray(single))
        step = typical_step(t_fill)
        span: float | FloatArray = t_fill[-1] - t_fill[0]
    else:
        # Per-curve times: the window and the median step of each batch.
        k_rows = np.empty(idx.size, dtype=np.int64)
        step = np.empty(idx.size)
        for c in chunks:
            tc = t_fill[idx[c]]
            step[c] = typical_step(tc)
            k_rows[c] = smoothing_window(tc, GUESS_SMOOTH_S, n)
        _, starts = prefit_numba.prefit_rows(
            t_rows, y_fill, idx, k_start=k_rows, sequential=np.zeros(idx.size, dtype=bool)
        )
        assert starts is not None
        span = t_fill[idx, -1] - t_fill[idx, 0]
    st = starts.start(step, span)
    t_first, t_last, y_lo, y_hi = starts.box
    # The guess is clipped to the box of the filled curves (as in
    # initial_guess), the fit's box spans the valid samples only.
    start_p = np.clip(start_model._guess_from_start(st), *start_model._box(t_first, t_last, y_lo, y_hi, step))
    complete = n_valid[idx] == n
    if not complete.all():
        gaps = np.flatnonzero(~complete)
        kept = np.where(valid[idx[gaps]], y_fill[idx[gaps]], np.nan)
        y_lo, y_hi = y_lo.copy(), y_hi.copy()
        with np.errstate(all="ignore"):
            y_lo[gaps], y_hi[gaps] = np.nanmin(kept, axis=-1), np.nanmax(kept, axis=-1)
    lo, hi = start_model._box(t_first, t_last, y_lo, y_hi, step)
    start_p = np.clip(start_p, lo, hi)

    # The iteration's input: invalid samples 0 with weight 0.  Complete,
    # unweighted curves are read in place with one shared row of unit weights.
    fast = wf is None and bool(complete.all())
    if fast:
        t_lm, y_lm, w_lm, rows = t_rows, y_fill, np.ones((1, n)), idx
    else:
        y_lm = np.where(valid[idx], y_fill[idx], 0.0)
        w_lm = np.where(valid[idx], 1.0 if wf is None else wf[idx], 0.0)
        t_lm, rows = (t_rows if shared else t_fill[idx]), np.arange(idx.size)
    with np.errstate(all="ignore"):
        p_fit, cost, jtj, conv, its = lm_rows(model, t_lm, y_lm, w_lm, rows, start_p, lo, hi, **settings)
        if fast:
            _, sst = starts.unit_fit_stats
        else:
            _, _, sst, t_last = prefit_numba.fit_stats(t_lm, y_lm, w_lm, rows)
        ttp = np.concatenate(
            [model.time_to_peak(p_fit[c], t_fill if shared else t_fill[idx[c]]) for c in chunks]
        )
    out.store(idx, p_fit, cost, jtj, conv, its, n_valid[idx], sst, t_last, ttp)


def fit_curves(
    model: BolusModel,
    t: ArrayLike,
    y: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    max_iter: int = 200,
    tol: float = 1e-8,
    xtol: float = 1e-8,
    lambda0: float = 1e-3,
    screen: bool = True,
    p0: ArrayLike | None = None,
    chunk_size: int | None = None,
    backend: str = "auto",
) -> FitResult:
    """Fit ``model`` to a batch of time-intensity curves.

    Parameters
    ----------
    model : BolusModel
        E.g. ``get_model("lognormal")``.
    t : array, shape (N,) or (..., N)
        Sample times (s, cine clock), increasing; one axis shared by all
        curves or one per curve (broadcastable to ``y``).
    y : array, shape (..., N)
        Curves in linear echo power (a.u.); any batch shape.  Non-finite
        samples are dropped per curve.
    weights : array broadcastable to y, optional
        Per-sample weights (inverse variances, 1/a.u.^2); 0 drops a sample.
        Default: all 1.
    max_iter : int
        Iteration cap per curve (status MAX_ITER when reached).
    tol : float
        Converged when an accepted step lowers the cost by less than
        ``tol`` times the cost.
    xtol : float
        ... or when no parameter moves by more than
        ``xtol * (|p| + xtol)``.
    lambda0 : float
        Initial Marquardt damping.
    screen : bool
        Run `enhancement_test` and leave non-enhancing curves unfitted
        (status NO_ENHANCEMENT).  Sample-count screening always applies.
    p0 : array broadcastable to (..., P), optional
        Starting point; default ``model.initial_guess``.  Clipped to the box.
    chunk_size : int, optional
        Curves per internal batch (bounds memory: the Jacobian of a chunk is
        ``chunk * N * P`` floats); default keeps it near 4e6 floats.
    backend : {"auto", "numba", "numpy", "torch"}
        ``"numpy"``: everything in vectorised NumPy (the reference).
        ``"numba"``: the compiled Levenberg-Marquardt kernel of
        :mod:`ceuskit.kinetics.fit_numba` (same algorithm, same results up to
        rounding, much faster; ValueError if the model has no kernel or
        numba is missing).  ``"torch"``: the iteration in PyTorch, float64,
        on the first CUDA GPU when there is one, else on the CPU
        (:mod:`ceuskit.kinetics.fit_torch`: same algorithm, same results up
        to rounding; ValueError if torch is not installed or the model has
        no torch kernel).  ``"auto"``: torch when it is installed, sees a
        CUDA GPU and has a kernel for the model; else numba when available
        for the model; else NumPy (so without a GPU nothing changes; torch
        is never required and never imported at package import).  With
        numba installed (any backend but ``"numpy"``) the screening, the
        built-in bolus models' starting point and box, and the
        quality-of-fit sums run compiled as well
        (:mod:`ceuskit.kinetics.prefit_numba`: the same numbers as NumPy's,
        not just close ones), in a few parallel passes over the whole batch;
        errors and statuses are shared by all backends.

    Returns
    -------
    FitResult
        Batch shape ``y.shape[:-1]``.  Status per curve:
        TOO_FEW_SAMPLES (fewer than ``2 P + 1`` samples in all),
        NON_FINITE (fewer than ``2 P + 1`` finite samples left),
        NO_ENHANCEMENT (fails `enhancement_test`), FAILED (non-finite
        result or ``J^T W J``, e.g. samples beyond ~1e154 a.u. whose squares
        overflow), PEAK_OUTSIDE (fitted TTP after the last valid sample),
        MAX_ITER, OK.
    """
    y_arr = np.asarray(y, dtype=np.float64)
    if y_arr.ndim == 0:
        raise ValueError("y must have shape (..., N)")
    t_arr = np.asarray(t, dtype=np.float64)
    if t_arr.ndim == 1:
        if t_arr.shape[0] != y_arr.shape[-1]:
            raise ValueError(f"t has {t_arr.shape[0]} samples but y has {y_arr.shape[-1]}")
    else:
        try:
            t_arr = np.broadcast_to(t_arr, y_arr.shape)
        except ValueError:
            raise ValueError(f"t of shape {t_arr.shape} does not broadcast to y's {y_arr.shape}") from None
    if backend not in ("auto", "numba", "numpy", "torch"):
        raise ValueError(f"backend must be 'auto', 'numba', 'numpy' or 'torch', got {backend!r}")
    if backend == "auto" and _torch_gpu_kernel(model):
        backend = "torch"
    lm_core = _levenberg_marquardt
    lm_rows: Callable[..., Any] | None = None  # iteration of the fully compiled path; None: not available
    prefit = None  # compiled screening and start (prefit_numba); None: the NumPy reference
    if backend == "torch":
        try:
            # Imported here, never at package import: torch is optional.
            from ceuskit.kinetics import fit_torch
        except ImportError as exc:  # pragma: no cover - fit_torch itself guards the torch import
            raise ValueError(f"backend='torch' needs PyTorch, which failed to import: {exc}") from None
        if not fit_torch.HAVE_TORCH:
            raise ValueError("backend='torch' needs PyTorch, which is not installed (pip install torch)")
        if not fit_torch.has_kernel(model):
            raise ValueError(f"no torch kernel for model {model.name!r}")
        lm_core = fit_torch.levenberg_marquardt
        lm_rows = fit_torch.levenberg_marquardt_rows
    if backend != "numpy":
        # Imported here: the compiled modules import this one.
        from ceuskit.kinetics import fit_numba, prefit_numba

        if backend != "torch" and fit_numba.has_kernel(model):
            lm_core = fit_numba.levenberg_marquardt
            lm_rows = fit_numba.levenberg_marquardt_rows
        elif backend == "numba":
            raise ValueError(f"no compiled (numba) kernel for model {model.name!r}")
        if prefit_numba.HAVE_NUMBA:
            prefit = prefit_numba
    batch = y_arr.shape[:-1]
    n = y_arr.shape[-1]
    n_p = model.n_params
    yf = y_arr.reshape(-1, n)
    m = yf.shape[0]
    tf = t_arr if t_arr.ndim == 1 else t_arr.reshape(-1, n)
    wf = None
    if weights is not None:
        wf = np.broadcast_to(np.asarray(weights, dtype=np.float64), y_arr.shape).reshape(-1, n)
    valid = np.isfinite(yf)
    if wf is not None:
        valid &= np.isfinite(wf) & (wf > 0)
    if tf.ndim == 2:
        valid &= np.isfinite(tf)
    n_valid = np.sum(valid, axis=-1)
    min_n = 2 * n_p + 1

    out = _Fits(m, n_p)
    if n < min_n:
        out.status[:] = FitStatus.TOO_FEW_SAMPLES
        cand = np.zeros(m, dtype=bool)
    else:
        cand = n_valid >= min_n
        out.status[~cand] = FitStatus.NON_FINITE
    t_fill = tf if tf.ndim == 1 else fill_nonfinite(tf, np.isfinite(tf))
    p0_arr = None
    if p0 is not None:
        p0_arr = np.broadcast_to(np.asarray(p0, dtype=np.float64), (*batch, n_p)).reshape(m, n_p)
    chunk = chunk_size or max(16, 4_000_000 // max(1, n * n_p))
    settings: dict[str, Any] = {"max_iter": max_iter, "tol": tol, "xtol": xtol, "lambda0": lambda0}

    if prefit is None:
        y_fill = fill_nonfinite(yf, valid)
        if screen and cand.any():
            ci = np.flatnonzero(cand)
            enh, _, _ = enhancement_test(t_fill if tf.ndim == 1 else t_fill[ci], y_fill[ci], backend="numpy")
            out.status[ci[~enh]] = FitStatus.NO_ENHANCEMENT
            cand[ci[~enh]] = False
    else:
        # Only curves with missing samples need filling (row by row, as
        # fill_nonfinite does); the others are read in place.
        y_fill = np.ascontiguousarray(yf)
        gaps = np.flatnonzero(n_valid < n)
        if gaps.size or not y_fill.flags.writeable:  # (read-only: another numba type)
            y_fill = y_fill.copy()
            y_fill[gaps] = fill_nonfinite(yf[gaps], valid[gaps])
        start_model = compiled_start_model(model) if lm_rows is not None and p0_arr is None else None
        if start_model is not None and lm_rows is not None and cand.any():
            _fit_compiled(
                model, start_model, t_fill, y_fill, valid, n_valid, wf, cand, out,
                screen=screen, chunk=chunk, settings=settings, lm_rows=lm_rows,
            )
            cand[:] = False  # all fitted
        elif screen and cand.any():
            ci = np.flatnonzero(cand)
            t_scr = t_fill if tf.ndim == 1 else t_fill[ci]
            # enhancement_test(t_scr, y_fill[ci]) without copying the curves:
            # they are filled, so all their samples count as valid.
            k = smoothing_window(t_scr, ENHANCEMENT_SMOOTH_S, n)
            stats, _ = prefit.prefit_rows(_time_rows(t_fill), y_fill, ci, k_screen=k)
            assert stats is not None
            enh, _, _ = _enhancement_decision(stats, np.full(ci.size, n), k)
            out.status[ci[~enh]] = FitStatus.NO_ENHANCEMENT
            cand[ci[~enh]] = False

    # The chunked path: the NumPy reference, and models or options the fully
    # compiled path does not cover (no kernel, own starting point, p0).
    idx_all = np.flatnonzero(cand)
    for start in range(0, idx_all.size, chunk):
        ci = idx_all[start : start + chunk]
        tc = t_fill if tf.ndim == 1 else t_fill[ci]
        yc = y_fill[ci]
        wc = np.where(valid[ci], 1.0 if wf is None else wf[ci], 0.0)
        lo, hi = model.bounds(tc, np.where(valid[ci], yc, np.nan))
        start_p = model.initial_guess(tc, yc) if p0_arr is None else p0_arr[ci]
        start_p = np.clip(start_p, lo, hi)
        yz = np.where(valid[ci], yc, 0.0)
        with np.errstate(all="ignore"):
            p_fit, cost, jtj, conv, its = lm_core(model, tc, yz, wc, start_p.copy(), lo, hi, **settings)
            w_sum = np.sum(wc, axis=-1)
            y_mean = np.sum(wc * yz, axis=-1) / w_sum
            sst = np.sum(wc * (yz - y_mean[:, None]) ** 2, axis=-1)
            t_last = np.max(np.where(valid[ci], np.broadcast_to(tc, yc.shape), -np.inf), axis=-1)
            ttp = model.time_to_peak(p_fit, tc)
        out.store(ci, p_fit, cost, jtj, conv, its, n_valid[ci], sst, t_last, ttp)

    return FitResult(
        model=model,
        params=out.params.reshape(*batch, n_p),
        stderr=out.stderr.reshape(*batch, n_p),
        qof=out.qof.reshape(batch),
        sse=out.sse.reshape(batch),
        status=out.status.reshape(batch),
        n_iter=out.n_iter.reshape(batch),
    )
