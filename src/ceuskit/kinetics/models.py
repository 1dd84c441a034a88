"""Perfusion models: formula, analytic Jacobian, starting point, bounds, closed forms.

A model object is stateless: it knows its formula, its parameters (names and
units), its analytic Jacobian, how to guess a starting point from a measured
curve and which parameter box is physically sensible.  Fitting lives in
:mod:`ceuskit.kinetics.fit`.

Perfusion descriptors (TTP, PE, mTT, ...) have one definition each, in
:mod:`ceuskit.kinetics.descriptors`, applied to a curve sampled on a dense
grid (`FitResult.descriptors` evaluates the fitted curve there).  Models that
can also implement the same definitions in closed form
(`BolusModel.closed_form_descriptors`): the limit of the grid computation as
its step goes to 0, three orders of magnitude faster, and tested equal to it.
The other closed forms (``mode``, ``mean_time``, ``peak``) are cross-checks.

Registered models (`MODELS`): ``"lognormal"``, ``"gamma"`` (gamma variate),
``"ldrw"`` (local density random walk) -- bolus models -- and
``"replenishment"`` (destruction-replenishment under infusion), which has no
bolus peak and no wash-out (``is_bolus = False``).

Array conventions (all models)
------------------------------
- ``params``: shape ``(..., P)``, in the order of ``param_names``.
- ``t``: times in seconds, shape ``(N,)`` (shared by all curves) or
  ``(..., N)`` (per curve), broadcastable against ``params[..., :1]``.
- ``y``: linear echo power (a.u.), shape ``(..., N)``.
- ``predict`` returns ``(..., N)``; ``jacobian`` returns ``(..., N, P)``.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from ceuskit.kinetics.descriptors import DESCRIPTOR_UNITS, dense_grid, descriptor_dict

FloatArray = NDArray[np.float64]

# Moving-average window (s) used to smooth a curve before reading its moments
# for a starting point: long enough to tame speckle-like frame-to-frame noise,
# short enough (compared with bolus rise times of several seconds) not to
# flatten the peak much.
GUESS_SMOOTH_S = 1.5
# Arrival is read where the smoothed curve first crosses this fraction of its
# rise above baseline.
ARRIVAL_FRACTION = 0.10
# Lognormal sigma is clipped to this range in the starting point.
GUESS_SIGMA_RANGE = (0.1, 1.5)
# Physical box of the lognormal shape parameter sigma (dimensionless).
SIGMA_BOUNDS = (0.05, 3.0)
# Physical box of the gamma-variate shape alpha (dimensionless).  alpha >= 1
# keeps the wash-in slope finite at arrival: for alpha < 1 the curve leaves
# the baseline with infinite slope and d f / d t0 diverges as tau -> 0+.  The
# upper end (a nearly Gaussian bolus, relative width 1 / sqrt(alpha) = 5 %)
# matches the lower end of `SIGMA_BOUNDS`.
ALPHA_BOUNDS = (1.0, 400.0)
# Gamma-variate alpha is clipped to this range in the starting point.
GUESS_ALPHA_RANGE = (1.5, 50.0)
# Physical box of the LDRW skewness parameter lambda (dimensionless): from a
# very skewed bolus (mean transit time 21 mu) to a nearly Gaussian one
# (relative width ~ 1 / sqrt(lambda) = 3 %).
LAMBDA_BOUNDS = (0.05, 1000.0)
# LDRW lambda is clipped to this range in the starting point.
GUESS_LAMBDA_RANGE = (0.5, 100.0)
# The replenishment curve reaches this fraction of its plateau at
# `ReplenishmentModel.time_to_peak`, the time the fitter compares with the
# last sample (status PEAK_OUTSIDE: plateau not reached in the acquisition).
PLATEAU_FRACTION = 0.95
# Grid step (s) whose descriptors the closed forms reproduce by default; the
# default of `FitResult.descriptors`.
DESCRIPTOR_DT_S = 0.05
# Closed-form descriptors are returned only for curves whose features (rise
# from arrival to the steepest wash-in, steepest wash-in to peak, peak to
# steepest wash-out) each span at least this many grid steps and lie inside
# the grid.  Narrower features are not resolved by the dense grid, whose
# results then depend on the step; such curves (rare, extreme shapes) are left
# to the grid so that both implementations agree everywhere: for typical CEUS
# boluses to ~1e-3, at this limit (dt/w)^2-level: up to ~6 % on slopes, 0.6 %
# on PE, 0.16 dt on TI/TO (measured; tests/kinetics/test_fast.py).
CLOSED_FORM_MIN_STEPS = 4.0

_SQRT_2PI = math.sqrt(2.0 * math.pi)
# sqrt(2 ln(1 / ARRIVAL_FRACTION)): a lognormal bolus reaches a fraction q of
# its peak at tau = mode * exp(-sigma * sqrt(2 ln(1/q))) on its rising side.
_ARRIVAL_K = math.sqrt(2.0 * math.log(1.0 / ARRIVAL_FRACTION))


def moving_average(y: ArrayLike, k: int) -> FloatArray:
    """Centred moving average over ``k`` samples along the last axis.

    Near the ends the window is truncated and the mean is taken over the
    samples that exist, so the output has the input's shape and no edge dip.

    Parameters
    ----------
    y : array, shape (..., N)
        Finite samples (a.u.).
    k : int
        Window length in samples; ``k <= 1`` returns a copy.

    Returns
    -------
    array, shape (..., N)
    """
    y = np.asarray(y, dtype=np.float64)
    k = int(k)
    n = y.shape[-1]
    if k <= 1 or n == 0:
        return y.copy()
    pad = [(0, 0)] * (y.ndim - 1) + [(1, 0)]
    c = np.cumsum(np.pad(y, pad), axis=-1)  # c[..., i] = sum(y[..., :i])
    i = np.arange(n)
    lo = np.clip(i - k // 2, 0, n)
    hi = np.clip(i + (k - 1 - k // 2) + 1, 0, n)
    out: FloatArray = (c[..., hi] - c[..., lo]) / (hi - lo)
    return out


def masked_median(y: ArrayLike, mask: ArrayLike) -> FloatArray:
    """Median along the last axis of the samples where ``mask`` is true.

    Vectorised over curves (one sort of the whole array).  NaN where a curve
    has no selected sample.

    Parameters
    ----------
    y : array, shape (..., N)
    mask : bool array broadcastable to y
    """
    y = np.asarray(y, dtype=np.float64)
    sel = np.broadcast_to(np.asarray(mask, dtype=bool), y.shape) & ~np.isnan(y)
    srt = np.sort(np.where(sel, y, np.nan), axis=-1)  # NaN sort last
    c = np.sum(sel, axis=-1)
    lo = np.clip((c - 1) // 2, 0, None)[..., None]
    hi = np.clip(c // 2, 0, None)[..., None]
    if y.shape[-1] == 0:
        return np.full(y.shape[:-1], np.nan)
    lo = np.minimum(lo, y.shape[-1] - 1)
    hi = np.minimum(hi, y.shape[-1] - 1)
    med = 0.5 * (np.take_along_axis(srt, lo, axis=-1)[..., 0] + np.take_along_axis(srt, hi, axis=-1)[..., 0])
    out: FloatArray = np.where(c > 0, med, np.nan)
    return out


def typical_step(t: ArrayLike) -> float:
    """Median sampling interval (s) of a time axis ``(N,)`` or ``(..., N)``."""
    t = np.asarray(t, dtype=np.float64)
    if t.shape[-1] < 2:
        return 1.0
    if t.ndim > 1:
        # A time axis broadcast to (..., N) repeats rows along its stride-0
        # axes; the median of a multiset repeated r times is the multiset's
        # own median, so one copy of each row gives the same number at a
        # fraction of the cost (one row for an axis shared by all curves).
        t = t[tuple(0 if stride == 0 else slice(None) for stride in t.strides[:-1])]
    d = np.diff(t, axis=-1)
    d = d[np.isfinite(d) & (d > 0)]
    return float(np.median(d)) if d.size else 1.0


def smoothing_window(t: ArrayLike, seconds: float, n: int) -> int:
    """Number of samples (>= 1, <= n // 5) that spans ``seconds`` on axis ``t``."""
    k = round(seconds / typical_step(t))
    return max(1, min(k, max(1, n // 5)))


class BolusModel(ABC):
    """Interface of a perfusion model ``y = f(t; params)``.

    Subclasses set ``name``, ``param_names`` and ``param_units`` and implement
    `predict`, `jacobian`, `initial_guess` and `bounds`.  Every model has a
    parameter called ``"baseline"`` (a.u.), the curve's level before arrival.
    """

    name: str = ""
    param_names: tuple[str, ...] = ()
    param_units: tuple[str, ...] = ()
    #: False for models whose curve has no bolus peak and no wash-out (the
    #: replenishment model): their peak-based descriptors do not exist.
    is_bolus: bool = True

    @property
    def n_params(self) -> int:
        """Number of parameters P."""
        return len(self.param_names)

    def index(self, name: str) -> int:
        """Position of parameter ``name`` in ``param_names``."""
        try:
            return self.param_names.index(name)
        except ValueError:
            raise ValueError(
                f"model {self.name!r} has no parameter {name!r}; it has {', '.join(self.param_names)}"
            ) from None

    @abstractmethod
    def predict(self, params: ArrayLike, t: ArrayLike) -> FloatArray:
        """Model curve, shape ``(..., N)`` in a.u., at times ``t`` (s)."""

    @abstractmethod
    def jacobian(self, params: ArrayLike, t: ArrayLike) -> FloatArray:
        """Analytic derivatives d f / d params, shape ``(..., N, P)``."""

    @abstractmethod
    def initial_guess(self, t: ArrayLike, y: ArrayLike) -> FloatArray:
        """Starting point ``(..., P)`` from the moments of finite curves ``y``."""

    @abstractmethod
    def bounds(self, t: ArrayLike, y: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Physically sensible box ``(lower, upper)``, each ``(..., P)``."""

    def baseline(self, params: ArrayLike) -> FloatArray:
        """Baseline level (a.u.) of each curve, shape ``(...)``."""
        p = np.asarray(params, dtype=np.float64)
        out: FloatArray = p[..., self.index("baseline")]
        return out

    def time_to_peak(self, params: ArrayLike, t: ArrayLike) -> FloatArray:
        """Time (s) of the model curve's maximum, shape ``(...)``.

        The default evaluates the model on a fine grid from ``t[0]`` to three
        acquisition spans past ``t[-1]``; models with a closed form override
        it.  ``inf`` when the maximum lies at the end of that grid (still
        rising).
        """
        p = np.asarray(params, dtype=np.float64)
        t = np.asarray(t, dtype=np.float64)
        t_lo, t_hi = float(np.nanmin(t)), float(np.nanmax(t))
        grid = np.linspace(t_lo, t_hi + 3.0 * (t_hi - t_lo), 4001)
        y = self.predict(p, grid)
        i = np.argmax(y, axis=-1)
        ttp: FloatArray = np.where(i == grid.size - 1, np.inf, grid[i])
        return ttp

    def closed_form_descriptors(
        self,
        params: ArrayLike,
        t_end_s: float,
        *,
        extend_to_s: float | None = None,
        dt_s: float = DESCRIPTOR_DT_S,
    ) -> dict[str, FloatArray] | None:
        """The descriptors of `descriptors.curve_descriptors`, in closed form.

        Same quantities as `FitResult.descriptors` with the same arguments
        (the fitted curve on ``dense_grid(t_end_s, dt_s, extend_to_s=...)``,
        areas and moments over that grid's span), computed from the model's
        formulas instead of a grid: the limit of the grid computation as its
        step goes to 0.

        Parameters
        ----------
        params : array, shape (..., P)
        t_end_s : float
            End of the acquisition (s, cine clock).
        extend_to_s : float, optional
            End of the grid (s); default ``max(4 * t_end_s, 300)`` as in
            `FitResult.descriptors`.
        dt_s : float
            Step (s) of the grid being reproduced; only used to decide which
            curves the grid resolves (`CLOSED_FORM_MIN_STEPS`).

        Returns
        -------
        dict of str to array, shape (...), or None
            Keys of `descriptors.DESCRIPTOR_UNITS` plus
            ``peak_in_acquisition``.  None when the model has no closed forms
            (the default).  For a bolus model, curves outside the closed
            forms' domain (features before the grid's start, after its end,
            or narrower than `CLOSED_FORM_MIN_STEPS` steps) are NaN in every
            key: evaluate those on the grid (`ceuskit.kinetics.fast` does).
        """
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _as_params(params: ArrayLike, n: int) -> FloatArray:
    p = np.asarray(params, dtype=np.float64)
    if p.ndim == 0 or p.shape[-1] != n:
        raise ValueError(f"params must have shape (..., {n}), got {p.shape}")
    return p


class _BolusStart(NamedTuple):
    """Moments of a smoothed bolus curve shared by the bolus models' guesses."""

    area: FloatArray  # area above baseline (a.u. s)
    mode: FloatArray  # TTP - t0 (s), > 0
    mean: FloatArray  # first moment about t0 (s), > mode
    sigma: FloatArray  # lognormal sigma matching mean / mode, clipped
    t0: FloatArray  # arrival (s)
    base: FloatArray  # baseline (a.u.)
    t: FloatArray  # the time axis broadcast to y's shape
    t_peak: FloatArray  # time of the smoothed maximum (s)
    t_half_in: FloatArray  # half-maximum crossing before the peak (s)
    t_half_out: FloatArray  # half-maximum crossing after the peak (s); NaN if none


class _StartSamples(NamedTuple):
    """What `_bolus_start` reads from the samples of each curve, before its moment passes.

    Every field has the batch shape ``(...)``.  `_bolus_samples` computes them
    with NumPy; :mod:`ceuskit.kinetics.prefit_numba` computes the same numbers
    (operation for operation) in compiled per-curve loops.
    """

    s_pk: FloatArray  # maximum of the smoothed curve (a.u.)
    t_pk: FloatArray  # its time (s)
    t_arr: FloatArray  # first crossing of ARRIVAL_FRACTION of the rise (s)
    base: FloatArray  # baseline (a.u.)
    area: FloatArray  # area of the smoothed curve above the baseline (a.u. s)
    t_half_in: FloatArray  # half-maximum crossing before the peak (s)
    t_half_out: FloatArray  # half-maximum crossing after the peak (s); NaN if none


def _bolus_samples(tt: FloatArray, y: FloatArray, k: int) -> tuple[_StartSamples, FloatArray, FloatArray]:
    """The per-sample part of `_bolus_start` (NumPy reference).

    Parameters
    ----------
    tt : array, shape (..., N)
        Times (s), broadcast to y's shape.
    y : array, shape (..., N)
        Finite curves (a.u.).
    k : int
        Moving-average window (samples).

    Returns
    -------
    samples : _StartSamples
    above, dt : arrays, shape (..., N)
        The smoothed curve above its baseline (``max(s - base, 0)``) and the
        local time step (``np.gradient(tt)``), for `_bolus_moments`.

    Notes
    -----
    NumPy sums a C-ordered row pairwise but an F-ordered one sequentially,
    and ``above`` comes out of `moving_average` F-ordered: the products
    ``above * dt`` are formed exactly where and how they always were, so
    that every sum keeps its order (the compiled path reproduces these
    orders; see `prefit_numba`).
    """
    n = y.shape[-1]
    s = moving_average(y, k)
    idx = np.arange(n)

    i_pk = np.argmax(s, axis=-1)
    s_pk = np.take_along_axis(s, i_pk[..., None], axis=-1)[..., 0]
    t_pk = np.take_along_axis(tt, i_pk[..., None], axis=-1)[..., 0]
    before = idx <= i_pk[..., None]
    # Provisional baseline: median of the raw samples before the smoothed
    # curve first reaches half its rise above its pre-peak minimum (the
    # minimum alone is biased low by the noise).
    s_min = np.min(np.where(before, s, np.inf), axis=-1)
    i_half = np.argmax(before & (s >= (0.5 * (s_min + s_pk))[..., None]), axis=-1)
    early = idx < (i_half - k // 2)[..., None]
    n_early = np.sum(early, axis=-1)
    med0 = masked_median(y, early)
    b0 = np.where(n_early >= 2, med0, s_min)
    thr = b0 + ARRIVAL_FRACTION * (s_pk - b0)
    i_arr = np.argmax(before & (s >= thr[..., None]), axis=-1)
    # Sub-sample crossing time by linear interpolation on the rising flank.
    i_prev = np.maximum(i_arr - 1, 0)
    s0 = np.take_along_axis(s, i_prev[..., None], axis=-1)[..., 0]
    s1 = np.take_along_axis(s, i_arr[..., None], axis=-1)[..., 0]
    ta = np.take_along_axis(tt, i_prev[..., None], axis=-1)[..., 0]
    tb = np.take_along_axis(tt, i_arr[..., None], axis=-1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.clip(np.where(s1 > s0, (thr - s0) / (s1 - s0), 1.0), 0.0, 1.0)
    t_arr = ta + frac * (tb - ta)

    pre = idx < (i_arr - k // 2)[..., None]
    n_pre = np.sum(pre, axis=-1)
    base = np.where(n_pre >= 2, masked_median(y, pre), b0)
    base = np.minimum(base, s_pk)

    dt = np.gradient(tt, axis=-1) if n > 1 else np.ones_like(tt)
    above = np.clip(s - base[..., None], 0.0, None)
    area = np.sum(above * dt, axis=-1)

    # Half-maximum crossings next to the peak (the last sub-half sample
    # before it, the first after it): well above the noise, unlike the
    # curve's feet and tail, they pin down the bolus's width and skewness.
    half = (0.5 * (base + s_pk))[..., None]
    low = s < half
    i_lo_in = np.max(np.where(low & before, idx, 0), axis=-1)
    after_pk = low & ~before
    has_out = after_pk.any(axis=-1)
    i_lo_out = np.where(has_out, np.argmax(after_pk, axis=-1), n - 1)

    def cross(i0: NDArray[np.intp], i1: NDArray[np.intp]) -> FloatArray:
        s0 = np.take_along_axis(s, i0[..., None], axis=-1)[..., 0]
        s1 = np.take_along_axis(s, i1[..., None], axis=-1)[..., 0]
        ta = np.take_along_axis(tt, i0[..., None], axis=-1)[..., 0]
        tb = np.take_along_axis(tt, i1[..., None], axis=-1)[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.clip(np.where(s1 != s0, (half[..., 0] - s0) / (s1 - s0), 0.5), 0.0, 1.0)
        out: FloatArray = ta + w * (tb - ta)
        return out

    t_half_in = cross(i_lo_in, np.minimum(i_lo_in + 1, n - 1))
    t_half_out = np.where(has_out, cross(np.maximum(i_lo_out - 1, 0), i_lo_out), np.nan)
    samples = _StartSamples(
        s_pk=s_pk, t_pk=t_pk, t_arr=t_arr, base=base, area=area, t_half_in=t_half_in, t_half_out=t_half_out
    )
    return samples, above, dt


def _bolus_moments(
    tt: FloatArray, above: FloatArray, dt: FloatArray, t0: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Area above baseline after ``t0`` and its first moment about ``t0`` (NumPy reference)."""
    w = np.where(tt > t0[..., None], above * dt, 0.0)
    return np.sum(w, axis=-1), np.sum(w * (tt - t0[..., None]), axis=-1)


def _bolus_start_from(
    samples: _StartSamples,
    tt: FloatArray,
    span: float | FloatArray,
    step: float | FloatArray,
    moments: Callable[[FloatArray], tuple[FloatArray, FloatArray]],
) -> _BolusStart:
    """The per-curve part of `_bolus_start`: arrival, mode, mean and sigma from the samples.

    Shared by the NumPy and compiled paths, so that both evaluate the same
    per-curve formulas (including every ``exp`` and ``log``) in the same
    library.  ``moments(t0)`` returns `_bolus_moments` of the curves.
    """
    t_arr, t_pk, base = samples.t_arr, samples.t_pk, samples.base
    mode_floor = 0.5 * step
    sigma = np.full(samples.s_pk.shape, 0.5)
    t0 = t_arr
    mode = mean = sigma
    for _ in range(2):
        # Capped so that t0 is at most 1.5 (TTP - crossing) before the
        # crossing: small sigmas make the formula ill-conditioned.
        q = np.minimum(np.exp(-_ARRIVAL_K * sigma), 0.6)
        t0 = np.minimum((t_arr - q * t_pk) / (1.0 - q), t_arr)
        mode = np.maximum(t_pk - t0, mode_floor)
        area, first = moments(t0)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = first / area
        mean = np.where(np.isfinite(mean) & (mean > mode), mean, 1.5 * mode)
        sig2 = (2.0 / 3.0) * np.log(mean / mode)
        sigma = np.clip(np.sqrt(np.maximum(sig2, 0.0)), *GUESS_SIGMA_RANGE)

    # Fallback when the curve has no area above its baseline.
    fallback = np.maximum(samples.s_pk - base, 0.0) * np.maximum(span, 1.0)
    area = np.where(samples.area > 0, samples.area, fallback)
    return _BolusStart(
        area=area, mode=mode, mean=mean, sigma=sigma, t0=t0, base=base, t=tt,
        t_peak=t_pk, t_half_in=samples.t_half_in, t_half_out=samples.t_half_out,
    )


def _bolus_start(t: ArrayLike, y: ArrayLike) -> _BolusStart:
    """Moments of the smoothed curves ``y (..., N)``; see `LognormalModel.initial_guess`."""
    y = np.asarray(y, dtype=np.float64)
    tt = np.broadcast_to(np.asarray(t, dtype=np.float64), y.shape)
    n = y.shape[-1]
    k = smoothing_window(tt, GUESS_SMOOTH_S, n)
    samples, above, dt = _bolus_samples(tt, y, k)
    return _bolus_start_from(
        samples,
        tt,
        tt[..., -1] - tt[..., 0],
        typical_step(tt),
        lambda t0: _bolus_moments(tt, above, dt, t0),
    )


def _shape_from_half_widths(
    start: _BolusStart,
    table_shape: FloatArray,
    table_in: FloatArray,
    table_out: FloatArray,
    fallback_shape: FloatArray,
    shape_range: tuple[float, float],
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Shape parameter, mode (s after t0) and t0 (s) from the half-maximum crossings.

    ``table_in`` and ``table_out`` (increasing ``table_shape``) are the
    half-maximum points of the unit-mode shape, ``x_in < 1 < x_out``.  The
    asymmetry ``(TTP - t_in) / (t_out - TTP) = (1 - x_in) / (x_out - 1)``
    depends on the shape parameter only (not on t0 or the time scale), so it
    is inverted by interpolation and clipped to ``shape_range`` (a nearly
    symmetric measured curve would otherwise give an extreme shape and, with
    ``x_out - x_in`` near 0, an absurd time scale); then
    ``mode = (t_out - t_in) / (x_out - x_in)`` and ``t0 = TTP - mode``.
    Curves without a falling half-maximum crossing (or with a degenerate
    one) keep ``fallback_shape`` and the moment-based mode and t0.
    """
    asym_table = (1.0 - table_in) / (table_out - 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        asym = (start.t_peak - start.t_half_in) / (start.t_half_out - start.t_peak)
    ok = np.isfinite(asym) & (asym > 0) & (start.t_half_out > start.t_half_in)
    shape = np.clip(np.interp(np.where(ok, asym, 1.0), asym_table, table_shape), *shape_range)
    x_in = np.interp(shape, table_shape, table_in)
    x_out = np.interp(shape, table_shape, table_out)
    mode = (start.t_half_out - start.t_half_in) / (x_out - x_in)
    ok &= np.isfinite(mode) & (mode > 0)
    shape = np.where(ok, shape, fallback_shape)
    mode = np.where(ok, mode, start.mode)
    t0 = np.where(ok, start.t_peak - mode, start.t0)
    return shape, mode, t0


def _data_box(t: ArrayLike, y: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, float]:
    """First and last time (s), lowest and highest finite sample (a.u.), median step (s)."""
    y = np.asarray(y, dtype=np.float64)
    tt = np.broadcast_to(np.asarray(t, dtype=np.float64), y.shape)
    with np.errstate(all="ignore"):
        t_first = np.nanmin(tt, axis=-1)
        t_last = np.nanmax(tt, axis=-1)
        y_lo = np.nanmin(np.where(np.isfinite(y), y, np.nan), axis=-1)
        y_hi = np.nanmax(np.where(np.isfinite(y), y, np.nan), axis=-1)
    return t_first, t_last, y_lo, y_hi, typical_step(tt)


def _grid_end(t_end_s: float, extend_to_s: float | None, dt_s: float) -> float:
    """Last time (s) of the grid `FitResult.descriptors` uses with these arguments."""
    ext = max(4.0 * t_end_s, 300.0) if extend_to_s is None else extend_to_s
    stop = max(t_end_s, ext)
    # Same arithmetic as `descriptors.dense_grid`.
    return float(dense_grid(stop, dt_s)[-1])


def _descriptor_keys() -> list[str]:
    return [*DESCRIPTOR_UNITS, "peak_in_acquisition"]


def _closed_form_from_shape(
    area: FloatArray,
    t0: FloatArray,
    shape: Callable[[FloatArray], tuple[FloatArray, FloatArray]],
    cdf: Callable[[FloatArray], FloatArray],
    moment: Callable[[FloatArray], FloatArray],
    tau_mode: FloatArray,
    tau_in: FloatArray,
    tau_out: FloatArray,
    *,
    t_end_s: float,
    extend_to_s: float | None,
    dt_s: float,
) -> dict[str, FloatArray]:
    """Descriptors of ``A g(t - t0)`` above baseline from the shape's closed forms.

    Implements the definitions of `descriptors.curve_descriptors` for a
    unimodal unit-area shape ``g`` with one inflection on each flank, as
    evaluated on ``dense_grid(t_end_s, dt_s, extend_to_s)`` (which starts at
    t = 0): the steepest wash-in and wash-out are the slopes at the
    inflections ``tau_in`` and ``tau_out``, the peak is at ``tau_mode``, and
    areas and the first moment are integrals clipped to the grid's span.

    Parameters
    ----------
    area, t0 : arrays, shape (M,)
        ``A`` (a.u. s) and arrival (s).
    shape : callable
        ``tau (M,) -> (g, dg/dtau)`` for ``tau > 0``.
    cdf, moment : callables
        ``tau (M,) -> integral_0^tau g`` and ``integral_0^tau s g(s) ds``,
        for ``tau >= 0`` (0 at 0).
    tau_mode, tau_in, tau_out : arrays, shape (M,)
        Peak and inflections (s after t0).
    """
    end = _grid_end(t_end_s, extend_to_s, dt_s)
    res = CLOSED_FORM_MIN_STEPS * dt_s
    with np.errstate(all="ignore"):
        g_mode, _ = shape(tau_mode)
        g_in, dg_in = shape(tau_in)
        g_out, dg_out = shape(tau_out)
        ttp = t0 + tau_mode
        pe = area * g_mode
        wir = area * dg_in
        wor = area * dg_out
        # Tangent at the steepest point crosses the baseline at t - g / g'.
        ti = t0 + tau_in - g_in / dg_in
        to = t0 + tau_out - g_out / dg_out

        def span_area(lo: FloatArray, hi: FloatArray) -> FloatArray:
            # Like the grid's clipped trapezoid: integrate over [lo, hi]
            # intersected with the grid [0, end]; NaN for an empty or
            # undefined interval.
            ok = np.isfinite(lo) & np.isfinite(hi) & (hi >= lo)
            a = np.clip(lo, 0.0, end) - t0
            b = np.clip(hi, 0.0, end) - t0
            val = area * (cdf(np.maximum(b, 0.0)) - cdf(np.maximum(a, 0.0)))
            out: FloatArray = np.where(ok, val, np.nan)
            return out

        zero = np.zeros_like(t0)
        area_all = span_area(zero, zero + end)
        tau_lo = np.maximum(-t0, 0.0)
        tau_hi = np.maximum(end - t0, 0.0)
        mom = t0 * area_all + area * (moment(tau_hi) - moment(tau_lo))
        first = np.where(area_all > 0, mom / area_all, np.nan)
        auc = span_area(zero, zero + t_end_s)
        wi_auc = span_area(ti, ttp)
        wo_auc = span_area(ttp, to)
        covered = (
            (t0 + tau_in >= res)
            & (t0 + tau_out <= end - res)
            & (tau_in >= res)
            & (tau_mode - tau_in >= res)
            & (tau_out - tau_mode >= res)
            & (area > 0)
            & (dg_in > 0)
            & (dg_out < 0)
            & np.isfinite(pe)
        )
    out = descriptor_dict(ti=ti, ttp=ttp, to=to, first_moment=first, pe=pe, auc=auc,
                          wir=wir, wor=wor, wi_auc=wi_auc, wo_auc=wo_auc, t_end_s=t_end_s)
    return {key: np.where(covered, v, np.nan) for key, v in out.items()}


def _flat_params(params: ArrayLike, n: int) -> tuple[FloatArray, tuple[int, ...]]:
    """``params`` as ``(M, n)`` and the batch shape to restore."""
    p = _as_params(params, n)
    return p.reshape(-1, n), p.shape[:-1]


class _MomentStartModel(BolusModel):
    """A bolus model whose starting point comes from `_bolus_start` and whose box from `_data_box`.

    The lognormal, gamma-variate and LDRW models.  Their `initial_guess` and
    `bounds` are split into a per-sample part shared by all three
    (`_bolus_start`'s samples, `_data_box`) and a per-curve part of their own
    (`_guess_from_start`, `_box`), so that `fit_curves` can compute the
    per-sample part in compiled code and still run the per-curve formulas
    here (see `compiled_start`).
    """

    @abstractmethod
    def _guess_from_start(self, st: _BolusStart) -> FloatArray:
        """Starting point ``(..., P)`` from the moments of the smoothed curves (not yet clipped)."""

    @abstractmethod
    def _box(
        self,
        t_first: FloatArray,
        t_last: FloatArray,
        y_lo: FloatArray,
        y_hi: FloatArray,
        step: float | FloatArray,
    ) -> tuple[FloatArray, FloatArray]:
        """The box of `bounds` from the first and last time, the sample range and the median step."""

    def _guess_in_box(self, t: ArrayLike, y: ArrayLike) -> FloatArray:
        """`initial_guess`: `_guess_from_start` of `_bolus_start`, clipped to `bounds`."""
        st = _bolus_start(t, y)
        lo, hi = self.bounds(st.t, y)
        out: FloatArray = np.clip(self._guess_from_start(st), lo, hi)
        return out


class LognormalModel(_MomentStartModel):
    r"""Lognormal bolus on a constant baseline.

    .. math::

        f(t) = b + \frac{A}{\sigma \sqrt{2\pi}\,\tau}
               \exp\!\left(-\frac{(\ln\tau - \mu)^2}{2\sigma^2}\right),
        \qquad \tau = t - t_0 > 0,

    and ``f = b`` for ``tau <= 0``.

    Parameters (in order)
    ---------------------
    area : A, a.u. s -- area under the bolus above baseline.
    mu : ln s -- mean of ln(tau).
    sigma : dimensionless -- standard deviation of ln(tau).
    t0 : s -- arrival time (cine clock).
    baseline : b, a.u.

    Closed forms: mode (TTP) ``t0 + exp(mu - sigma^2)``, mean time
    ``t0 + exp(mu + sigma^2 / 2)``, peak above baseline
    ``A / (sigma sqrt(2 pi)) exp(sigma^2 / 2 - mu)``.
    """

    name = "lognormal"
    param_names = ("area", "mu", "sigma", "t0", "baseline")
    param_units = ("a.u.·s", "ln s", "1", "s", "a.u.")

    # -- formula -----------------------------------------------------------
    def _core(
        self, p: FloatArray, t: ArrayLike
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, NDArray[np.bool_]]:
        """Shared pieces: g (unit-area shape), z, g / tau, ln tau, mask tau > 0."""
        t = np.asarray(t, dtype=np.float64)
        mu = p[..., 1, None]
        sigma = p[..., 2, None]
        t0 = p[..., 3, None]
        tau = t - t0
        pos = tau > 0
        # ln(tau) computed only where tau > 0; working in logs keeps
        # g / tau finite (it underflows to 0) as tau -> 0+.
        log_tau = np.log(np.where(pos, tau, 1.0))
        z = (log_tau - mu) / sigma
        log_g = -0.5 * z * z - log_tau - np.log(sigma * _SQRT_2PI)
        g = np.where(pos, np.exp(np.minimum(log_g, 700.0)), 0.0)
        g_over_tau = np.where(pos, np.exp(np.minimum(log_g - log_tau, 700.0)), 0.0)
        return g, z, g_over_tau, log_tau, pos

    def predict(self, params: ArrayLike, t: ArrayLike) -> FloatArray:
        """Model curve (a.u.), shape ``(..., N)``; see the class docstring."""
        p = _as_params(params, 5)
        g, _, _, _, _ = self._core(p, t)
        out: FloatArray = p[..., 4, None] + p[..., 0, None] * g
        return out

    def jacobian(self, params: ArrayLike, t: ArrayLike) -> FloatArray:
        """Analytic Jacobian, shape ``(..., N, 5)``.

        With ``z = (ln tau - mu) / sigma`` and ``g`` the unit-area shape:
        ``df/dA = g``, ``df/dmu = A g z / sigma``,
        ``df/dsigma = A g (z^2 - 1) / sigma``,
        ``df/dt0 = A (g / tau) (1 + z / sigma)``, ``df/db = 1``.
        For ``tau <= 0`` all derivatives are 0 except ``df/db``; as
        ``tau -> 0+`` they all tend to 0 (g vanishes faster than any power).
        """
        p = _as_params(params, 5)
        g, z, g_over_tau, _, _ = self._core(p, t)
        a = p[..., 0, None]
        sigma = p[..., 2, None]
        ag = a * g
        d_a = g
        d_mu = ag * z / sigma
        d_sigma = ag * (z * z - 1.0) / sigma
        d_t0 = a * g_over_tau * (1.0 + z / sigma)
        d_b = np.ones_like(g)
        return np.stack([d_a, d_mu, d_sigma, d_t0, d_b], axis=-1)

    # -- closed forms (cross-checks) ----------------------------------------
    def mode(self, params: ArrayLike) -> FloatArray:
        """Time of the peak (s, cine clock): ``t0 + exp(mu - sigma^2)``."""
        p = _as_params(params, 5)
        out: FloatArray = p[..., 3] + np.exp(p[..., 1] - p[..., 2] ** 2)
        return out

    def mean_time(self, params: ArrayLike) -> FloatArray:
        """First moment of the bolus (s, cine clock): ``t0 + exp(mu + sigma^2/2)``."""
        p = _as_params(params, 5)
        out: FloatArray = p[..., 3] + np.exp(p[..., 1] + 0.5 * p[..., 2] ** 2)
        return out

    def peak(self, params: ArrayLike) -> FloatArray:
        """Peak above baseline (a.u.): ``A / (sigma sqrt(2 pi)) exp(sigma^2/2 - mu)``."""
        p = _as_params(params, 5)
        out: FloatArray = p[..., 0] / (p[..., 2] * _SQRT_2PI) * np.exp(0.5 * p[..., 2] ** 2 - p[..., 1])
        return out

    def time_to_peak(self, params: ArrayLike, t: ArrayLike) -> FloatArray:
        """Closed-form TTP (s); see `mode`."""
        return self.mode(params)

    def closed_form_descriptors(
        self,
        params: ArrayLike,
        t_end_s: float,
        *,
        extend_to_s: float | None = None,
        dt_s: float = DESCRIPTOR_DT_S,
    ) -> dict[str, FloatArray] | None:
        """Descriptors in closed form; see `BolusModel.closed_form_descriptors`.

        With ``u = ln tau`` and ``h = d ln g / d ln tau = -1 - (u - mu) /
        sigma^2``, the slope is ``g' = g h / tau`` and the curvature
        ``g'' = g (h^2 - h - 1 / sigma^2) / tau^2``.  The inflections solve
        ``h^2 - h - 1/sigma^2 = 0``: ``h = (1 +- sqrt(1 + 4 / sigma^2)) / 2``
        (``+`` on the wash-in flank), i.e. ``u = mu - sigma^2 (1 + h)``; the
        tangent there crosses the baseline at ``t0 + tau (1 - 1/h)``.  Areas
        are ``A Phi((ln tau - mu) / sigma)`` and partial first moments
        ``exp(mu + sigma^2/2) Phi((ln tau - mu - sigma^2) / sigma)`` (Phi the
        standard normal CDF).
        """
        p, batch = _flat_params(params, 5)
        area, mu, sigma, t0 = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
        s2 = sigma * sigma
        root = np.sqrt(1.0 + 4.0 / s2)
        tau_in = np.exp(mu - s2 * (1.0 + 0.5 * (1.0 + root)))
        tau_out = np.exp(mu - s2 * (1.0 + 0.5 * (1.0 - root)))
        tau_mode = np.exp(mu - s2)
        log_norm = np.log(sigma * _SQRT_2PI)

        def shape(tau: FloatArray) -> tuple[FloatArray, FloatArray]:
            u = np.log(tau)
            g = np.exp(-0.5 * ((u - mu) / sigma) ** 2 - u - log_norm)
            h = -1.0 - (u - mu) / s2
            return g, g * h / tau

        def cdf(tau: FloatArray) -> FloatArray:
            with np.errstate(divide="ignore"):
                out: FloatArray = special.ndtr((np.log(tau) - mu) / sigma)
            return out

        def moment(tau: FloatArray) -> FloatArray:
            with np.errstate(divide="ignore"):
                out: FloatArray = np.exp(mu + 0.5 * s2) * special.ndtr((np.log(tau) - mu - s2) / sigma)
            return out

        d = _closed_form_from_shape(
            area, t0, shape, cdf, moment, tau_mode, tau_in, tau_out,
            t_end_s=t_end_s, extend_to_s=extend_to_s, dt_s=dt_s,
        )
        return {key: v.reshape(batch) for key, v in d.items()}

    # -- starting point and box ----------------------------------------------
    def initial_guess(self, t: ArrayLike, y: ArrayLike) -> FloatArray:
        """Starting point from the moments of the smoothed curve.

        1. Smooth with a moving average over `GUESS_SMOOTH_S` seconds.
        2. Provisional baseline = lowest smoothed value before the smoothed
           peak; arrival = first crossing of `ARRIVAL_FRACTION` of the rise.
        3. Baseline = median of the raw samples before that crossing.
        4. ``t0``: from the crossing and the smoothed TTP, using the lognormal
           rising flank (a fraction q of the peak is reached at
           ``tau = mode * exp(-sigma sqrt(2 ln(1/q)))``); two passes, the
           first with sigma = 0.5.
        5. mode = TTP - t0; mean = first moment of the smoothed curve above
           baseline after t0; ``sigma^2 = (2/3) ln(mean / mode)`` clipped to
           `GUESS_SIGMA_RANGE`; ``mu = ln(mode) + sigma^2``.
        6. A = area of the smoothed curve above baseline.

        Parameters
        ----------
        t : array, shape (N,) or (..., N)
            Times (s), increasing.
        y : array, shape (..., N)
            Finite curves (a.u.); fill missing samples before calling.

        Returns
        -------
        array, shape (..., 5), inside `bounds`.
        """
        return self._guess_in_box(t, y)

    def _guess_from_start(self, st: _BolusStart) -> FloatArray:
        mu = np.log(st.mode) + st.sigma**2
        return np.stack([st.area, mu, st.sigma, st.t0, st.base], axis=-1)

    def bounds(self, t: ArrayLike, y: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Physically sensible box for each curve.

        - area: ``[0, 1000 * (max y - min y) * span]`` (a.u. s)
        - mu: ``[ln(dt / 4), ln(10 * span) + 2]`` (ln s), dt the median step
        - sigma: `SIGMA_BOUNDS`
        - t0: ``[t[0] - span / 2, t[-1]]`` (s)
        - baseline: ``[min y, max y]`` (a.u.)

        ``span = t[-1] - t[0]``; NaN samples are ignored.
        """
        return self._box(*_data_box(t, y))

    def _box(
        self,
        t_first: FloatArray,
        t_last: FloatArray,
        y_lo: FloatArray,
        y_hi: FloatArray,
        step: float | FloatArray,
    ) -> tuple[FloatArray, FloatArray]:
        span = np.maximum(t_last - t_first, 1e-9)
        rng = np.maximum(y_hi - y_lo, np.finfo(np.float64).tiny)
        ones = np.ones_like(span)
        lower = np.stack(
            [
                0.0 * ones,
                np.log(0.25 * step) * ones,
                SIGMA_BOUNDS[0] * ones,
                t_first - 0.5 * span,
                y_lo,
            ],
            axis=-1,
        )
        upper = np.stack(
            [
                1e3 * rng * span,
                np.log(10.0 * span) + 2.0,
                SIGMA_BOUNDS[1] * ones,
                t_last,
                y_hi,
            ],
            axis=-1,
        )
        return lower, upper


@functools.cache
def _gamma_half_table() -> tuple[FloatArray, FloatArray, FloatArray]:
    """Half-maximum points ``x_in < 1 < x_out`` (units of the mode) of the gamma variate vs alpha.

    ``(x e^(1 - x))^alpha = 1/2``, i.e. ``x e^-x = e^(-1 - ln 2 / alpha)``:
    the two real branches of Lambert's W give ``x = -W(-e^(-1 - ln 2 /
    alpha))``.
    """
    alpha = np.geomspace(ALPHA_BOUNDS[0], ALPHA_BOUNDS[1], 400)
    arg = -np.exp(-1.0 - math.log(2.0) / alpha)
    x_in = -special.lambertw(arg, 0).real
    x_out = -special.lambertw(arg, -1).real
    return alpha, x_in, x_out


class GammaVariateModel(_MomentStartModel):
    r"""Gamma-variate bolus on a constant baseline, parametrised by its area.

    .. math::

        f(t) = b + A\,\frac{\tau^{\alpha} e^{-\tau/\beta}}
               {\beta^{\alpha+1}\,\Gamma(\alpha+1)},
        \qquad \tau = t - t_0 > 0,

    and ``f = b`` for ``tau <= 0``.  This is the classical
    ``b + K tau^alpha exp(-tau / beta)`` with ``K = A / (beta^(alpha+1)
    Gamma(alpha+1))``: the area replaces K, which otherwise spans many orders
    of magnitude and couples strongly to alpha and beta.  The shape is a
    gamma probability density (shape ``alpha + 1``, scale ``beta``), so areas
    and moments are regularised incomplete gamma functions.

    Parameters (in order)
    ---------------------
    area : A, a.u. s -- area under the bolus above baseline.
    alpha : dimensionless, in `ALPHA_BOUNDS` -- shape (rise steepness).
    beta : s -- time scale.
    t0 : s -- arrival time (cine clock).
    baseline : b, a.u.

    Closed forms: mode (TTP) ``t0 + alpha beta``, mean time
    ``t0 + (alpha + 1) beta``, peak above baseline
    ``A alpha^alpha e^-alpha / (beta Gamma(alpha + 1))``; inflections at
    ``tau = beta (alpha -+ sqrt(alpha))`` (the wash-in one exists for
    ``alpha > 1``).
    """

    name = "gamma"
    param_names = ("area", "alpha", "beta", "t0", "baseline")
    param_units = ("a.u.·s", "1", "s", "s", "a.u.")

    # -- formula -----------------------------------------------------------
    def _core(self, p: FloatArray, t: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Shared pieces: g (unit-area shape), g / tau, ln tau (0 where tau <= 0)."""
        t = np.asarray(t, dtype=np.float64)
        alpha = p[..., 1, None]
        beta = p[..., 2, None]
        tau = t - p[..., 3, None]
        pos = tau > 0
        # Logs keep tau^alpha and the normalisation (which overflow
        # separately for large alpha) finite, and g / tau -> 0 as tau -> 0+.
        log_tau = np.log(np.where(pos, tau, 1.0))
        log_g = alpha * log_tau - tau / beta - (alpha + 1.0) * np.log(beta) - special.gammaln(alpha + 1.0)
        g = np.where(pos, np.exp(np.minimum(log_g, 700.0)), 0.0)
        g_over_tau = np.where(pos, np.exp(np.minimum(log_g - log_tau, 700.0)), 0.0)
        return g, g_over_tau, np.where(pos, log_tau, 0.0)

    def predict(self, params: ArrayLike, t: ArrayLike) -> FloatArray:
        """Model curve (a.u.), shape ``(..., N)``; see the class docstring."""
        p = _as_params(params, 5)
        g, _, _ = self._core(p, t)
        out: FloatArray = p[..., 4, None] + p[..., 0, None] * g
        return out

    def jacobian(self, params: ArrayLike, t: ArrayLike) -> FloatArray:
        """Analytic Jacobian, shape ``(..., N, 5)``.

        With ``g`` the unit-area shape and psi the digamma function:
        ``df/dA = g``, ``df/dalpha = A g (ln tau - ln beta - psi(alpha + 1))``,
        ``df/dbeta = A g (tau / beta^2 - (alpha + 1) / beta)``,
        ``df/dt0 = A (g / beta - alpha g / tau)``, ``df/db = 1``.
        For ``tau <= 0`` all derivatives are 0 except ``df/db``; as
        ``tau -> 0+`` they tend to 0 for ``alpha > 1`` (``df/dt0`` tends to
        ``-A / beta^2`` at ``alpha = 1``, where the wash-in starts with a
        finite jump in slope).
        """
        p = _as_params(params, 5)
        g, g_over_tau, log_tau = self._core(p, t)
        a = p[..., 0, None]
        alpha = p[..., 1, None]
        beta = p[..., 2, None]
        tau = np.asarray(t, dtype=np.float64) - p[..., 3, None]
        ag = a * g
        d_a = g
        d_alpha = ag * (log_tau - np.log(beta) - special.digamma(alpha + 1.0))
        d_beta = a * (g * tau / beta**2 - (alpha + 1.0) * g / beta)
        d_t0 = a * (g / beta - alpha * g_over_tau)
        d_b = np.ones_like(g)
        return np.stack([d_a, d_alpha, d_beta, d_t0, d_b], axis=-1)

    # -- closed forms (cross-checks) ----------------------------------------
    def mode(self, params: ArrayLike) -> FloatArray:
        """Time of the peak (s, cine clock): ``t0 + alpha beta``."""
        p = _as_params(params, 5)
        out: FloatArray = p[..., 3] + p[..., 1] * p[..., 2]
        return out

    def mean_time(self, params: ArrayLike) -> FloatArray:
        """First moment of the bolus (s, cine clock): ``t0 + (alpha + 1) beta``."""
        p = _as_params(params, 5)
        out: FloatArray = p[..., 3] + (p[..., 1] + 1.0) * p[..., 2]
        return out

    def peak(self, params: ArrayLike) -> FloatArray:
        """Peak above baseline (a.u.): ``A alpha^alpha e^-alpha / (beta Gamma(alpha + 1))``."""
        p = _as_params(params, 5)
        alpha = p[..., 1]
        log_pk = alpha * np.log(alpha) - alpha - np.log(p[..., 2]) - special.gammaln(alpha + 1.0)
        out: FloatArray = p[..., 0] * np.exp(log_pk)
        return out

    def time_to_peak(self, params: ArrayLike, t: ArrayLike) -> FloatArray:
        """Closed-form TTP (s); see `mode`."""
        return self.mode(params)

    def closed_form_descriptors(
        self,
        params: ArrayLike,
        t_end_s: float,
        *,
        extend_to_s: float | None = None,
        dt_s: float = DESCRIPTOR_DT_S,
    ) -> dict[str, FloatArray] | None:
        """Descriptors in closed form; see `BolusModel.closed_form_descriptors`.

        ``d ln g / d tau = alpha / tau - 1 / beta`` and
        ``g'' = g ((alpha / tau - 1 / beta)^2 - alpha / tau^2)``, zero at
        ``tau = beta (alpha -+ sqrt(alpha))``, where the tangents cross the
        baseline at ``t0 + beta (sqrt(alpha) -+ 1)^2``.  Areas are
        ``A P(alpha + 1, tau / beta)`` and partial first moments
        ``(alpha + 1) beta P(alpha + 2, tau / beta)`` (P the regularised lower
        incomplete gamma function).  Curves with ``alpha`` too close to 1 for
        the grid to resolve the wash-in inflection are left to the grid.
        """
        p, batch = _flat_params(params, 5)
        area, alpha, beta, t0 = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
        sq = np.sqrt(alpha)
        log_norm = (alpha + 1.0) * np.log(beta) + special.gammaln(alpha + 1.0)

        def shape(tau: FloatArray) -> tuple[FloatArray, FloatArray]:
            g = np.exp(alpha * np.log(tau) - tau / beta - log_norm)
            return g, g * (alpha / tau - 1.0 / beta)

        def cdf(tau: FloatArray) -> FloatArray:
            out: FloatArray = special.gammainc(alpha + 1.0, tau / beta)
            return out

        def moment(tau: FloatArray) -> FloatArray:
            out: FloatArray = (alpha + 1.0) * beta * special.gammainc(alpha + 2.0, tau / beta)
            return out

        d = _closed_form_from_shape(
            area, t0, shape, cdf, moment, alpha * beta, beta * (alpha - sq), beta * (alpha + sq),
            t_end_s=t_end_s, extend_to_s=extend_to_s, dt_s=dt_s,
        )
        return {key: v.reshape(batch) for key, v in d.items()}

    # -- starting point and box ----------------------------------------------
    def initial_guess(self, t: ArrayLike, y: ArrayLike) -> FloatArray:
        """Starting point from the moments of the smoothed curve.

        Baseline and area as in `LognormalModel.initial_guess`.  Shape and
        time scale from the smoothed curve's half-maximum crossings around
        its peak (`_shape_from_half_widths`: their asymmetry gives alpha,
        clipped to `GUESS_ALPHA_RANGE`, their distance the mode, hence
        ``beta = mode / alpha`` and ``t0 = TTP - mode``).  Where the curve
        does not fall below half its peak within the acquisition: the
        moments of `LognormalModel.initial_guess` (its t0 and mode, and
        ``mean / mode = (alpha + 1) / alpha``).  The moment ratio alone is a
        poor guide to alpha (the mean is within ``beta = mode / alpha`` of the
        mode, and noise and the truncated tail move it by as much).

        Parameters
        ----------
        t : array, shape (N,) or (..., N)
            Times (s), increasing.
        y : array, shape (..., N)
            Finite curves (a.u.); fill missing samples before calling.

        Returns
        -------
        array, shape (..., 5), inside `bounds`.
        """
        return self._guess_in_box(t, y)

    def _guess_from_start(self, st: _BolusStart) -> FloatArray:
        alpha_moments = np.clip(st.mode / (st.mean - st.mode), *GUESS_ALPHA_RANGE)
        alpha, mode, t0 = _shape_from_half_widths(
            st, *_gamma_half_table(), alpha_moments, GUESS_ALPHA_RANGE
        )
        return np.stack([st.area, alpha, mode / alpha, t0, st.base], axis=-1)

    def bounds(self, t: ArrayLike, y: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Physically sensible box for each curve.

        - area: ``[0, 1000 * (max y - min y) * span]`` (a.u. s)
        - alpha: `ALPHA_BOUNDS`
        - beta: ``[dt / 1000, 10 * span]`` (s), dt the median step (with
          ``alpha`` up to 400 the time to peak ``alpha beta`` still reaches
          below one step)
        - t0: ``[t[0] - span / 2, t[-1]]`` (s)
        - baseline: ``[min y, max y]`` (a.u.)

        ``span = t[-1] - t[0]``; NaN samples are ignored.
        """
        return self._box(*_data_box(t, y))

    def _box(
        self,
        t_first: FloatArray,
        t_last: FloatArray,
        y_lo: FloatArray,
        y_hi: FloatArray,
        step: float | FloatArray,
    ) -> tuple[FloatArray, FloatArray]:
        span = np.maximum(t_last - t_first, 1e-9)
        rng = np.maximum(y_hi - y_lo, np.finfo(np.float64).tiny)
        ones = np.ones_like(span)
        lower = np.stack(
            [0.0 * ones, ALPHA_BOUNDS[0] * ones, 1e-3 * step * ones, t_first - 0.5 * span, y_lo], axis=-1
        )
        upper = np.stack([1e3 * rng * span, ALPHA_BOUNDS[1] * ones, 10.0 * span, t_last, y_hi], axis=-1)
        return lower, upper


def _ldrw_mode_x(lam: FloatArray) -> FloatArray:
    """LDRW mode in units of mu: the positive root of ``lam x^2 + x - lam = 0``."""
    # Written as 2 lam / (1 + sqrt(1 + 4 lam^2)) to avoid cancellation at small lam.
    out: FloatArray = 2.0 * lam / (1.0 + np.sqrt(1.0 + 4.0 * lam * lam))
    return out


def _ldrw_inflections_x(lam: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Inflections of the LDRW shape in units of mu, ``(x_in, x_out)``.

    ``g''(tau) = 0`` with ``x = tau / mu`` is the quartic
    ``Q(x) = lam^2 (x^2 - 1)^2 + 2 lam x^3 - 6 lam x + 3 x^2 = 0``.  By
    Descartes' rule it has at most two positive roots, and ``Q(0) > 0``,
    ``Q(mode) < 0`` (the curve is concave at its peak), ``Q(inf) > 0``: one
    root on each side of the mode.  Each is found by bisection on its
    bracket, 60 halvings (to machine precision), vectorised over curves.
    """

    def q(x: FloatArray) -> FloatArray:
        out: FloatArray = lam * lam * (x * x - 1.0) ** 2 + 2.0 * lam * x**3 - 6.0 * lam * x + 3.0 * x * x
        return out

    xm = _ldrw_mode_x(lam)
    # Wash-in: Q > 0 left of the root, < 0 right of it (up to the mode).
    lo, hi = np.zeros_like(xm), xm.copy()
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        right = q(mid) > 0
        lo = np.where(right, mid, lo)
        hi = np.where(right, hi, mid)
    x_in = 0.5 * (lo + hi)
    # Wash-out: bracket [mode, x_hi] with Q(x_hi) > 0 by doubling.
    x_hi = 2.0 * xm + 1.0
    for _ in range(64):
        short = q(x_hi) <= 0
        if not short.any():
            break
        x_hi = np.where(short, 2.0 * x_hi, x_hi)
    lo, hi = xm.copy(), x_hi
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        right = q(mid) > 0
        lo = np.where(right, lo, mid)
        hi = np.where(right, mid, hi)
    return x_in, 0.5 * (lo + hi)


@functools.cache
def _ldrw_half_table() -> tuple[FloatArray, FloatArray, FloatArray]:
    """Half-maximum points ``x_in < 1 < x_out`` (units of the mode) of the LDRW shape vs lambda.

    With ``u = tau / mu`` and ``u_m`` the mode, ``ln g(u) - ln g(u_m) =
    -ln(u / u_m) / 2 - lambda / 2 ((u - 1)^2 / u - (u_m - 1)^2 / u_m)``, which
    decreases away from the mode on each side; ``= -ln 2`` is solved by
    bisection (in ln u) on each side.
    """
    lam = np.geomspace(LAMBDA_BOUNDS[0], LAMBDA_BOUNDS[1], 400)
    um = _ldrw_mode_x(lam)

    def drop(u: FloatArray) -> FloatArray:
        out: FloatArray = -0.5 * np.log(u / um) - 0.5 * lam * ((u - 1.0) ** 2 / u - (um - 1.0) ** 2 / um)
        return out + math.log(2.0)

    sides = []
    log_um = np.log(um)
    # (bracket in ln u, whether the root is on the rising side, where drop
    # goes from negative at the bracket's left end to positive at the mode)
    for lo, hi, rising in ((log_um - 60.0, log_um, True), (log_um, log_um + 60.0, False)):
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            positive = drop(np.exp(mid)) > 0
            if rising:
                lo, hi = np.where(positive, lo, mid), np.where(positive, mid, hi)
            else:
                lo, hi = np.where(positive, mid, lo), np.where(positive, hi, mid)
        sides.append(np.exp(0.5 * (lo + hi)) / um)
    return lam, sides[0], sides[1]


class LDRWModel(_MomentStartModel):
    r"""Local density random walk (LDRW) bolus on a constant baseline.

    Diffusion with drift of the indicator between injection and region of
    interest (Sheppard; Strouthos et al., IEEE TUFFC 57(6):1296, 2010;
    Mischi et al., Physiol. Meas. 29:281, 2008):

    .. math::

        f(t) = b + A \sqrt{\frac{\lambda}{2\pi\mu\tau}}\,
               \exp\!\left(-\frac{\lambda(\tau - \mu)^2}{2\mu\tau}\right),
        \qquad \tau = t - t_0 > 0,

    and ``f = b`` for ``tau <= 0``.  This is the literature's
    ``A e^lambda / mu sqrt(mu lambda / (2 pi tau)) exp(-lambda/2 (mu/tau +
    tau/mu))`` written with one exponential.  The shape has unit area (it is
    ``tau / mu`` times the inverse-Gaussian density of mean ``mu`` and shape
    ``lambda mu``), so ``A`` is the area above baseline.

    Parameters (in order)
    ---------------------
    area : A, a.u. s -- area under the bolus above baseline.
    mu : s -- transit time of the bolus centre (distance / drift velocity),
        called the mean transit time in the LDRW literature.  Note that the
        first moment of the curve (ceuskit's mean transit time, measured from
        t0) is ``mu (1 + 1 / lambda)``.
    lam : lambda, dimensionless, in `LAMBDA_BOUNDS` -- ``mu v / (2 D)``
        (drift over diffusion); small lambda = skewed, large = symmetric.
    t0 : s -- arrival time (cine clock), the time of injection as seen by
        the model (the curve leaves the baseline smoothly after it).
    baseline : b, a.u.

    Closed forms: mode (TTP) ``t0 + mu (sqrt(1 + 4 lambda^2) - 1) /
    (2 lambda)``, mean time ``t0 + mu (1 + 1 / lambda)``, peak ``A g(mode)``;
    areas via the normal CDF (see `closed_form_descriptors`).
    """

    name = "ldrw"
    param_names = ("area", "mu", "lam", "t0", "baseline")
    param_units = ("a.u.·s", "s", "1", "s", "a.u.")

    # -- formula -----------------------------------------------------------
    def _core(
        self, p: FloatArray, t: ArrayLike
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Shared pieces: g (unit-area shape), g / tau, g / tau^2, tau (0 where tau <= 0)."""
        t = np.asarray(t, dtype=np.float64)
        mu = p[..., 1, None]
        lam = p[..., 2, None]
        tau = t - p[..., 3, None]
        pos = tau > 0
        tau_s = np.where(pos, tau, 1.0)
        log_tau = np.log(tau_s)
        # In logs: exp(-lambda mu / (2 tau)) underflows to 0 as tau -> 0+,
        # and with it g / tau and g / tau^2 (the Jacobian's terms).
        with np.errstate(over="ignore", divide="ignore"):
            expo = -lam * (tau_s - mu) ** 2 / (2.0 * mu * tau_s)
        log_g = 0.5 * (np.log(lam) - np.log(2.0 * math.pi * mu) - log_tau) + expo
        g = np.where(pos, np.exp(np.minimum(log_g, 700.0)), 0.0)
        g1 = np.where(pos, np.exp(np.minimum(log_g - log_tau, 700.0)), 0.0)
        g2 = np.where(pos, np.exp(np.minimum(log_g - 2.0 * log_tau, 700.0)), 0.0)
        return g, g1, g2, np.where(pos, tau, 0.0)

    def predict(self, params: ArrayLike, t: ArrayLike) -> FloatArray:
        """Model curve (a.u.), shape ``(..., N)``; see the class docstring."""
        p = _as_params(params, 5)
        g, _, _, _ = self._core(p, t)
        out: FloatArray = p[..., 4, None] + p[..., 0, None] * g
        return out

    def jacobian(self, params: ArrayLike, t: ArrayLike) -> FloatArray:
        """Analytic Jacobian, shape ``(..., N, 5)``.

        With ``g`` the unit-area shape:
        ``df/dA = g``,
        ``df/dmu = A (-g / (2 mu) + lambda / 2 (g tau / mu^2 - g / tau))``,
        ``df/dlambda = A (g / (2 lambda) - (g tau / mu - 2 g + mu g / tau) / 2)``,
        ``df/dt0 = A (g / (2 tau) + lambda g / (2 mu) - lambda mu g / (2 tau^2))``,
        ``df/db = 1``.
        For ``tau <= 0`` all derivatives are 0 except ``df/db``; as
        ``tau -> 0+`` they all tend to 0 (g vanishes faster than any power).
        """
        p = _as_params(params, 5)
        g, g1, g2, tau = self._core(p, t)
        a = p[..., 0, None]
        mu = p[..., 1, None]
        lam = p[..., 2, None]
        g_tau = g * tau  # g tau, 0 where tau <= 0
        d_a = g
        d_mu = a * (-0.5 * g / mu + 0.5 * lam * (g_tau / mu**2 - g1))
        d_lam = a * (0.5 * g / lam - 0.5 * (g_tau / mu - 2.0 * g + mu * g1))
        d_t0 = a * (0.5 * g1 + 0.5 * lam * g / mu - 0.5 * lam * mu * g2)
        d_b = np.ones_like(g)
        return np.stack([d_a, d_mu, d_lam, d_t0, d_b], axis=-1)

    # -- closed forms (cross-checks) ----------------------------------------
    def mode(self, params: ArrayLike) -> FloatArray:
        """Time of the peak (s, cine clock): ``t0 + mu (sqrt(1 + 4 lambda^2) - 1) / (2 lambda)``."""
        p = _as_params(params, 5)
        out: FloatArray = p[..., 3] + p[..., 1] * _ldrw_mode_x(p[..., 2])
        return out

    def mean_time(self, params: ArrayLike) -> FloatArray:
        """First moment of the bolus (s, cine clock): ``t0 + mu (1 + 1 / lambda)``."""
        p = _as_params(params, 5)
        out: FloatArray = p[..., 3] + p[..., 1] * (1.0 + 1.0 / p[..., 2])
        return out

    def peak(self, params: ArrayLike) -> FloatArray:
        """Peak above baseline (a.u.): the curve at its mode."""
        p = _as_params(params, 5)
        out: FloatArray = self.predict(p, self.mode(p)[..., None])[..., 0] - p[..., 4]
        return out

    def time_to_peak(self, params: ArrayLike, t: ArrayLike) -> FloatArray:
        """Closed-form TTP (s); see `mode`."""
        return self.mode(params)

    def closed_form_descriptors(
        self,
        params: ArrayLike,
        t_end_s: float,
        *,
        extend_to_s: float | None = None,
        dt_s: float = DESCRIPTOR_DT_S,
    ) -> dict[str, FloatArray] | None:
        """Descriptors in closed form; see `BolusModel.closed_form_descriptors`.

        Inflections: roots of a quartic (`_ldrw_inflections_x`), found by
        bisection to machine precision.  With ``z_-+ = sqrt(lambda)
        (sqrt(tau / mu) -+ sqrt(mu / tau))``, the area up to tau is
        ``G = Phi(z_-) - e^(2 lambda) Phi(-z_+)`` and the partial first
        moment ``mu G / lambda + mu F - 2 mu tau g(tau) / lambda`` with
        ``F = Phi(z_-) + e^(2 lambda) Phi(-z_+)`` the inverse-Gaussian CDF
        (integration by parts of ``tau^(1/2) exp(-a tau - c / tau)``).
        """
        p, batch = _flat_params(params, 5)
        area, mu, lam, t0 = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
        x_in, x_out = _ldrw_inflections_x(lam)
        sq_lam = np.sqrt(lam)

        def shape(tau: FloatArray) -> tuple[FloatArray, FloatArray]:
            g = np.sqrt(lam / (2.0 * math.pi * mu * tau)) * np.exp(-lam * (tau - mu) ** 2 / (2.0 * mu * tau))
            h = -0.5 / tau - 0.5 * lam / mu + 0.5 * lam * mu / tau**2
            return g, g * h

        def cdfs(tau: FloatArray) -> tuple[FloatArray, FloatArray]:
            # (G, F) at tau >= 0; both 0 at tau = 0.
            pos = tau > 0
            ts = np.where(pos, tau, 1.0)
            r = np.sqrt(ts / mu)
            z_minus = sq_lam * (r - 1.0 / r)
            z_plus = sq_lam * (r + 1.0 / r)
            # e^(2 lambda) Phi(-z_+) in logs: the product is at most ~1 but
            # each factor overflows / underflows for large lambda.
            tail = np.exp(2.0 * lam + special.log_ndtr(-z_plus))
            body = special.ndtr(z_minus)
            return np.where(pos, body - tail, 0.0), np.where(pos, body + tail, 0.0)

        def cdf(tau: FloatArray) -> FloatArray:
            return cdfs(tau)[0]

        def moment(tau: FloatArray) -> FloatArray:
            big_g, big_f = cdfs(tau)
            pos = tau > 0
            ts = np.where(pos, tau, 1.0)
            g_tau = np.where(pos, ts * shape(ts)[0], 0.0)
            out: FloatArray = mu * big_g / lam + mu * big_f - 2.0 * mu * g_tau / lam
            return out

        d = _closed_form_from_shape(
            area, t0, shape, cdf, moment, mu * _ldrw_mode_x(lam), mu * x_in, mu * x_out,
            t_end_s=t_end_s, extend_to_s=extend_to_s, dt_s=dt_s,
        )
        return {key: v.reshape(batch) for key, v in d.items()}

    # -- starting point and box ----------------------------------------------
    def initial_guess(self, t: ArrayLike, y: ArrayLike) -> FloatArray:
        """Starting point from the moments of the smoothed curve.

        Baseline and area as in `LognormalModel.initial_guess`.  Shape and
        time scale from the smoothed curve's half-maximum crossings around
        its peak (`_shape_from_half_widths`: their asymmetry gives lambda,
        clipped to `GUESS_LAMBDA_RANGE`, their distance the mode, hence mu
        and ``t0 = TTP - mode``).  Where the curve does not fall below half
        its peak within the acquisition: the moments of
        `LognormalModel.initial_guess`; with ``r = mean / mode = 2 (lambda +
        1) / (sqrt(1 + 4 lambda^2) - 1)``, lambda is the positive root of
        ``(r - 1) lambda^2 - (r + 2) / (r + 1) lambda - 1 = 0``.

        Parameters
        ----------
        t : array, shape (N,) or (..., N)
            Times (s), increasing.
        y : array, shape (..., N)
            Finite curves (a.u.); fill missing samples before calling.

        Returns
        -------
        array, shape (..., 5), inside `bounds`.
        """
        return self._guess_in_box(t, y)

    def _guess_from_start(self, st: _BolusStart) -> FloatArray:
        r = st.mean / st.mode  # > 1 by construction
        c = (r + 2.0) / (r + 1.0)
        lam = (c + np.sqrt(c * c + 4.0 * (r - 1.0))) / (2.0 * (r - 1.0))
        lam, mode, t0 = _shape_from_half_widths(
            st, *_ldrw_half_table(), np.clip(lam, *GUESS_LAMBDA_RANGE), GUESS_LAMBDA_RANGE
        )
        mu = mode / _ldrw_mode_x(lam)
        return np.stack([st.area, mu, lam, t0, st.base], axis=-1)

    def bounds(self, t: ArrayLike, y: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Physically sensible box for each curve.

        - area: ``[0, 1000 * (max y - min y) * span]`` (a.u. s)
        - mu: ``[dt / 4, 10 * span]`` (s), dt the median step
        - lam: `LAMBDA_BOUNDS`
        - t0: ``[t[0] - span / 2, t[-1]]`` (s)
        - baseline: ``[min y, max y]`` (a.u.)

        ``span = t[-1] - t[0]``; NaN samples are ignored.
        """
        return self._box(*_data_box(t, y))

    def _box(
        self,
        t_first: FloatArray,
        t_last: FloatArray,
        y_lo: FloatArray,
        y_hi: FloatArray,
        step: float | FloatArray,
    ) -> tuple[FloatArray, FloatArray]:
        span = np.maximum(t_last - t_first, 1e-9)
        rng = np.maximum(y_hi - y_lo, np.finfo(np.float64).tiny)
        ones = np.ones_like(span)
        lower = np.stack(
            [0.0 * ones, 0.25 * step * ones, LAMBDA_BOUNDS[0] * ones, t_first - 0.5 * span, y_lo], axis=-1
        )
        upper = np.stack([1e3 * rng * span, 10.0 * span, LAMBDA_BOUNDS[1] * ones, t_last, y_hi], axis=-1)
        return lower, upper


#: Units of `ReplenishmentModel.derived`'s parameters (VueBox's replenishment set).
REPLENISHMENT_UNITS: dict[str, str] = {
    "relative_blood_volume": "a.u.",
    "wash_in_rate": "a.u./s",
    "mean_transit_time_s": "s",
    "perfusion_index": "a.u./s",
}


class ReplenishmentModel(BolusModel):
    r"""Destruction-replenishment under constant infusion (Wei et al. 1998).

    .. math::

        f(t) = b + A \left(1 - e^{-\beta \tau}\right),
        \qquad \tau = t - t_0 > 0,

    and ``f = b`` for ``tau <= 0`` (t0: the end of the destruction flash, or
    when the replenishment becomes visible).

    Parameters (in order)
    ---------------------
    area : A, a.u. -- plateau above baseline (rBV proxy).  Named ``area`` so
        that the amplitude has the same name in every model; here it is a
        power level, not an area.
    beta : 1/s -- replenishment rate (microbubble velocity / beam width).
    t0 : s -- start of the replenishment (cine clock).
    baseline : b, a.u. -- level right after destruction (tissue, residual
        bubbles).

    This is not a bolus: the curve rises monotonically to a plateau it never
    reaches, so it has no peak, no wash-out and an infinite area.  Its
    parameters are those of `derived` (VueBox: rBV, WiR, mTT, PI).  The
    curve descriptors that exist for it (arrival at t0, wash-in rate
    ``A beta``, AUC over the acquisition) come from
    `closed_form_descriptors`; the peak-based ones are NaN there (the dense
    grid of `FitResult.descriptors` would report where the curve saturates
    in floating point as its "peak": do not use those for this model).

    `time_to_peak` returns the time the curve reaches `PLATEAU_FRACTION` of
    its plateau, so the fitter's PEAK_OUTSIDE status means here "plateau not
    reached within the acquisition" (A is then an extrapolation).
    """

    name = "replenishment"
    param_names = ("area", "beta", "t0", "baseline")
    param_units = ("a.u.", "1/s", "s", "a.u.")
    is_bolus = False

    def predict(self, params: ArrayLike, t: ArrayLike) -> FloatArray:
        """Model curve (a.u.), shape ``(..., N)``; see the class docstring."""
        p = _as_params(params, 4)
        tau = np.asarray(t, dtype=np.float64) - p[..., 2, None]
        # -expm1(-x) = 1 - e^-x, accurate for small x (just after t0).
        rise = np.where(tau > 0, -np.expm1(-p[..., 1, None] * np.maximum(tau, 0.0)), 0.0)
        out: FloatArray = p[..., 3, None] + p[..., 0, None] * rise
        return out

    def jacobian(self, params: ArrayLike, t: ArrayLike) -> FloatArray:
        """Analytic Jacobian, shape ``(..., N, 4)``.

        For ``tau > 0``: ``df/dA = 1 - e^(-beta tau)``,
        ``df/dbeta = A tau e^(-beta tau)``, ``df/dt0 = -A beta e^(-beta tau)``,
        ``df/db = 1``; for ``tau <= 0`` only ``df/db = 1``.  At ``tau = 0``
        the curve has a kink: ``df/dt0`` jumps from 0 to ``-A beta`` (the
        one-sided derivative from before arrival, 0, is used there).
        """
        p = _as_params(params, 4)
        a = p[..., 0, None]
        beta = p[..., 1, None]
        tau = np.asarray(t, dtype=np.float64) - p[..., 2, None]
        pos = tau > 0
        tau_p = np.maximum(tau, 0.0)
        decay = np.where(pos, np.exp(-beta * tau_p), 0.0)
        d_a = np.where(pos, -np.expm1(-beta * tau_p), 0.0)
        d_beta = a * tau_p * decay
        d_t0 = -a * beta * decay
        d_b = np.ones_like(decay)
        return np.stack([d_a, d_beta, d_t0, d_b], axis=-1)

    def time_to_peak(self, params: ArrayLike, t: ArrayLike) -> FloatArray:
        """Time (s) the curve reaches `PLATEAU_FRACTION` of its plateau (no peak exists).

        ``t0 + ln(1 / (1 - PLATEAU_FRACTION)) / beta``; the fitter flags
        fits where this lies after the last sample (PEAK_OUTSIDE).
        """
        p = _as_params(params, 4)
        out: FloatArray = p[..., 2] + math.log(1.0 / (1.0 - PLATEAU_FRACTION)) / p[..., 1]
        return out

    def derived(self, params: ArrayLike) -> dict[str, FloatArray]:
        """VueBox-style replenishment parameters, units in `REPLENISHMENT_UNITS`.

        - ``relative_blood_volume`` (rBV) = A (a.u.)
        - ``wash_in_rate`` (WiR) = A beta, the initial slope (a.u./s)
        - ``mean_transit_time_s`` (mTT) = 1 / beta (s)
        - ``perfusion_index`` (PI) = rBV / mTT (a.u./s)

        Parameters
        ----------
        params : array, shape (..., 4)

        Returns
        -------
        dict of str to array, shape (...)
        """
        p = _as_params(params, 4)
        a, beta = p[..., 0], p[..., 1]
        with np.errstate(divide="ignore"):
            mtt = 1.0 / beta
        return {
            "relative_blood_volume": a,
            "wash_in_rate": a * beta,
            "mean_transit_time_s": mtt,
            "perfusion_index": a / mtt,
        }

    def closed_form_descriptors(
        self,
        params: ArrayLike,
        t_end_s: float,
        *,
        extend_to_s: float | None = None,
        dt_s: float = DESCRIPTOR_DT_S,
    ) -> dict[str, FloatArray] | None:
        """The curve descriptors that exist for a replenishment curve.

        Same definitions as `descriptors.curve_descriptors`, in the limit of
        a grid that extends indefinitely: the steepest rise is at t0+ (slope
        ``A beta``, ``wash_in_rate``) and its tangent crosses the baseline at
        t0 (``arrival_time_s``); ``auc`` is
        ``integral_max(t0, 0)^t_end A (1 - e^(-beta (t - t0))) dt``.  Every
        peak-based key (TTP, PE, rise, mTT, wash-out, WiAUC, WoAUC, WiPI,
        ``peak_in_acquisition``) is NaN: the curve has no peak.
        ``extend_to_s`` and ``dt_s`` are accepted for the common signature
        and not used.  See `derived` for rBV, WiR, mTT and PI.
        """
        p = _as_params(params, 4)
        a, beta, t0 = p[..., 0], p[..., 1], p[..., 2]
        wir = a * beta
        ok = wir > 0
        start = np.maximum(t0, 0.0)
        length = np.maximum(t_end_s - start, 0.0)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            # integral of 1 - e^(-beta (t - t0)) over [start, t_end]:
            # length - e^(-beta (start - t0)) (1 - e^(-beta length)) / beta.
            decayed = np.exp(-beta * (start - t0)) * -np.expm1(-beta * length) / beta
            auc = np.where(length > 0, a * (length - decayed), 0.0)
        nan = np.full(np.shape(a), np.nan)
        out = {key: nan.copy() for key in _descriptor_keys()}
        out["arrival_time_s"] = np.where(ok, t0, np.nan)
        out["wash_in_rate"] = np.where(ok, wir, np.nan)
        out["auc"] = np.where(np.isfinite(auc), auc, np.nan)
        return out

    def initial_guess(self, t: ArrayLike, y: ArrayLike) -> FloatArray:
        """Starting point from the smoothed curve.

        1. Smooth with a moving average over `GUESS_SMOOTH_S` seconds.
        2. Plateau = median of the smoothed curve over the last 20 % of the
           samples; provisional baseline = the smoothed curve's minimum.
        3. Times of the first crossings of 10 % and ``1 - 1/e`` (63 %) of
           the rise, by linear interpolation; for ``1 - e^(-beta tau)`` they
           are ``0.105 / beta`` and ``1 / beta`` after t0, which gives beta and
           t0.
        4. Baseline = median of the raw samples before the 10 % crossing (the
           provisional one if fewer than 2); A = plateau - baseline.

        Parameters
        ----------
        t : array, shape (N,) or (..., N)
            Times (s), increasing.
        y : array, shape (..., N)
            Finite curves (a.u.); fill missing samples before calling.

        Returns
        -------
        array, shape (..., 4), inside `bounds`.
        """
        y = np.asarray(y, dtype=np.float64)
        tt = np.broadcast_to(np.asarray(t, dtype=np.float64), y.shape)
        n = y.shape[-1]
        k = smoothing_window(tt, GUESS_SMOOTH_S, n)
        s = moving_average(y, k)
        idx = np.arange(n)
        late = idx >= n - max(1, n // 5)
        plateau = masked_median(s, late)
        b0 = np.min(s, axis=-1)
        rise = np.maximum(plateau - b0, 0.0)

        def crossing(frac: float) -> tuple[FloatArray, NDArray[np.intp]]:
            thr = b0 + frac * rise
            above = s >= thr[..., None]
            i = np.argmax(above, axis=-1)
            i_prev = np.maximum(i - 1, 0)
            s0 = np.take_along_axis(s, i_prev[..., None], axis=-1)[..., 0]
            s1 = np.take_along_axis(s, i[..., None], axis=-1)[..., 0]
            ta = np.take_along_axis(tt, i_prev[..., None], axis=-1)[..., 0]
            tb = np.take_along_axis(tt, i[..., None], axis=-1)[..., 0]
            with np.errstate(divide="ignore", invalid="ignore"):
                w = np.clip(np.where(s1 > s0, (thr - s0) / (s1 - s0), 1.0), 0.0, 1.0)
            return ta + w * (tb - ta), i

        q_lo = ARRIVAL_FRACTION
        tau_lo = -math.log(1.0 - q_lo)  # beta tau at the q_lo crossing
        t_lo, i_lo = crossing(q_lo)
        t_hi, _ = crossing(1.0 - math.exp(-1.0))
        step = typical_step(tt)
        beta = (1.0 - tau_lo) / np.maximum(t_hi - t_lo, step)
        t0 = t_lo - tau_lo / beta
        pre = idx < (i_lo - k // 2)[..., None]
        base = np.where(np.sum(pre, axis=-1) >= 2, masked_median(y, pre), b0)
        a = np.maximum(plateau - base, 0.0)
        guess = np.stack([a, beta, t0, base], axis=-1)
        lo, hi = self.bounds(tt, y)
        out: FloatArray = np.clip(guess, lo, hi)
        return out

    def bounds(self, t: ArrayLike, y: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Physically sensible box for each curve.

        - area (plateau): ``[0, 1000 * (max y - min y)]`` (a.u.)
        - beta: ``[1 / (100 span), 4 / dt]`` (1/s), dt the median step: from
          a curve still nearly linear at the end of the acquisition to one
          that reaches its plateau within a quarter of a frame
        - t0: ``[t[0] - span / 2, t[-1]]`` (s)
        - baseline: ``[min y, max y]`` (a.u.)

        ``span = t[-1] - t[0]``; NaN samples are ignored.
        """
        t_first, t_last, y_lo, y_hi, step = _data_box(t, y)
        span = np.maximum(t_last - t_first, 1e-9)
        rng = np.maximum(y_hi - y_lo, np.finfo(np.float64).tiny)
        ones = np.ones_like(span)
        lower = np.stack([0.0 * ones, 0.01 / span, t_first - 0.5 * span, y_lo], axis=-1)
        upper = np.stack([1e3 * rng, 4.0 / step * ones, t_last, y_hi], axis=-1)
        return lower, upper

MODELS: dict[str, BolusModel] = {
    "lognormal": LognormalModel(),
    "gamma": GammaVariateModel(),
    "ldrw": LDRWModel(),
    "replenishment": ReplenishmentModel(),
}


#: The starting-point and box implementations `compiled_start` accepts.
_MOMENT_START_METHODS = frozenset(
    method
    for cls in (LognormalModel, GammaVariateModel, LDRWModel)
    for method in (cls.initial_guess, cls.bounds)
)


def compiled_start_model(model: BolusModel) -> _MomentStartModel | None:
    """``model`` when its `initial_guess` and `bounds` are those of a built-in bolus model, else None.

    For such a model (or a subclass that does not override the two methods)
    the starting point and box are `_bolus_start` + `_guess_from_start` and
    `_data_box` + `_box`, whose per-sample parts
    :mod:`ceuskit.kinetics.prefit_numba` reproduces exactly; any other model
    keeps its own NumPy methods.
    """
    cls = type(model)
    if (
        isinstance(model, _MomentStartModel)
        and cls.initial_guess in _MOMENT_START_METHODS
        and cls.bounds in _MOMENT_START_METHODS
    ):
        return model
    return None


def get_model(name: str) -> BolusModel:
    """The registered model called ``name`` (see `MODELS`).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known ones.
    """
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown perfusion model {name!r}; choose one of {', '.join(sorted(MODELS))}"
        ) from None
