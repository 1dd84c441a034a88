"""Bolus perfusion models: formula, analytic Jacobian, starting point and bounds.

A model object is stateless: it knows its formula, its parameters (names and
units), its analytic Jacobian, how to guess a starting point from a measured
curve and which parameter box is physically sensible.  Fitting lives in
:mod:`ceuskit.kinetics.fit`; perfusion descriptors (TTP, PE, mTT, ...) are
always computed by :mod:`ceuskit.kinetics.descriptors` from the fitted curve
evaluated on a dense grid, never from model-specific shortcuts.  The closed
forms each model offers (``mode``, ``mean_time``, ``peak``) are cross-checks.

Array conventions (all models)
------------------------------
- ``params``: shape ``(..., P)``, in the order of ``param_names``.
- ``t``: times in seconds, shape ``(N,)`` (shared by all curves) or
  ``(..., N)`` (per curve), broadcastable against ``params[..., :1]``.
- ``y``: linear echo power (a.u.), shape ``(..., N)``.
- ``predict`` returns ``(..., N)``; ``jacobian`` returns ``(..., N, P)``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
from numpy.typing import ArrayLike, NDArray

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _as_params(params: ArrayLike, n: int) -> FloatArray:
    p = np.asarray(params, dtype=np.float64)
    if p.ndim == 0 or p.shape[-1] != n:
        raise ValueError(f"params must have shape (..., {n}), got {p.shape}")
    return p


class LognormalModel(BolusModel):
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
        y = np.asarray(y, dtype=np.float64)
        tt = np.broadcast_to(np.asarray(t, dtype=np.float64), y.shape)
        n = y.shape[-1]
        k = smoothing_window(tt, GUESS_SMOOTH_S, n)
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
        span = tt[..., -1] - tt[..., 0]
        step = typical_step(tt)
        mode_floor = 0.5 * step

        sigma = np.full(s_pk.shape, 0.5)
        t0 = t_arr
        for _ in range(2):
            # Capped so that t0 is at most 1.5 (TTP - crossing) before the
            # crossing: small sigmas make the formula ill-conditioned.
            q = np.minimum(np.exp(-_ARRIVAL_K * sigma), 0.6)
            t0 = np.minimum((t_arr - q * t_pk) / (1.0 - q), t_arr)
            mode = np.maximum(t_pk - t0, mode_floor)
            after = tt > t0[..., None]
            w = np.where(after, above * dt, 0.0)
            area = np.sum(w, axis=-1)
            with np.errstate(divide="ignore", invalid="ignore"):
                mean = np.sum(w * (tt - t0[..., None]), axis=-1) / area
            mean = np.where(np.isfinite(mean) & (mean > mode), mean, 1.5 * mode)
            sig2 = (2.0 / 3.0) * np.log(mean / mode)
            sigma = np.clip(np.sqrt(np.maximum(sig2, 0.0)), *GUESS_SIGMA_RANGE)

        mu = np.log(mode) + sigma**2
        area = np.sum(above * dt, axis=-1)
        # Fallback when the curve has no area above its baseline.
        area = np.where(area > 0, area, np.maximum(s_pk - base, 0.0) * np.maximum(span, 1.0))
        guess = np.stack([area, mu, sigma, t0, base], axis=-1)
        lo, hi = self.bounds(tt, y)
        out: FloatArray = np.clip(guess, lo, hi)
        return out

    def bounds(self, t: ArrayLike, y: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Physically sensible box for each curve.

        - area: ``[0, 1000 * (max y - min y) * span]`` (a.u. s)
        - mu: ``[ln(dt / 4), ln(10 * span) + 2]`` (ln s), dt the median step
        - sigma: `SIGMA_BOUNDS`
        - t0: ``[t[0] - span / 2, t[-1]]`` (s)
        - baseline: ``[min y, max y]`` (a.u.)

        ``span = t[-1] - t[0]``; NaN samples are ignored.
        """
        y = np.asarray(y, dtype=np.float64)
        tt = np.broadcast_to(np.asarray(t, dtype=np.float64), y.shape)
        with np.errstate(all="ignore"):
            t_first = np.nanmin(tt, axis=-1)
            t_last = np.nanmax(tt, axis=-1)
            y_lo = np.nanmin(np.where(np.isfinite(y), y, np.nan), axis=-1)
            y_hi = np.nanmax(np.where(np.isfinite(y), y, np.nan), axis=-1)
        span = np.maximum(t_last - t_first, 1e-9)
        step = typical_step(tt)
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


MODELS: dict[str, BolusModel] = {"lognormal": LognormalModel()}


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
