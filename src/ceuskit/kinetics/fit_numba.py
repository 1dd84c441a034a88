"""Compiled (numba) Levenberg-Marquardt core for :func:`ceuskit.kinetics.fit.fit_curves`.

The NumPy core in :mod:`ceuskit.kinetics.fit` iterates all curves of a chunk
in lock-step: every iteration materialises the ``(M, N, P)`` Jacobian and
re-reads the data several times, which makes it memory-bound.  The kernel here
runs the *same* algorithm one curve at a time, curves spread over threads
(``prange``), and never stores the Jacobian: ``J^T W J``, ``J^T W r`` and the
cost come out of one fused pass over the samples.  Given the same starting
point, box and settings, it takes the same steps and stops at the same test
as the NumPy core, so both return the same parameters up to rounding (the
tests hold them to 1e-6 relative).

Everything else -- screening, starting values, bounds, standard errors, QOF,
statuses and `FitResult` assembly -- is `fit_curves`'s, shared by both cores
(its per-sample parts compiled in :mod:`ceuskit.kinetics.prefit_numba`).
`levenberg_marquardt_rows` lets it fit rows of a batch in place, with unit
weights as one shared row.

Adding a model
--------------
A compiled model is two small ``@njit`` functions plus three registrations:

- ``prepare(p) -> c``: per-curve constants of one parameter vector ``p``
  (shape ``(5,)``) as an 8-tuple of floats (pad with 0.0), computed once per
  pass over the samples (divisions, logs of parameters);
- ``point(c, t) -> (f, df/dp0, ..., df/dp4)``: the model value and its
  analytic Jacobian row at one time ``t`` (s), the formula of the model's
  NumPy ``predict``/``jacobian``;
- one ``model_id`` branch in each of `_prepare`, `_point` and
  `_accumulate`, and a `CompiledModel` entry in `KERNELS` keyed by
  `BolusModel.name`.

`evaluate` runs the compiled formula so that a test can hold it to the NumPy
one.  The kernels are written for five-parameter models whose last
parameter is an additive baseline (all bolus models of
:mod:`ceuskit.kinetics.models` are); another layout needs its own
accumulation routine.  Kernels exist for the lognormal, gamma-variate and
LDRW models; `fit_curves` uses the NumPy core for any other.

Bolus models equal their baseline up to their onset ``t0``; the kernel uses
that (``CompiledModel.onset``) to replace the samples at or before ``t0`` by
three prefix sums, so that only the samples after the onset evaluate the
formula.

Speed
-----
numba would call the C library's scalar ``exp`` and ``log`` for every sample,
which keeps the per-sample loop scalar; `_exp` and `_log` below use only
arithmetic and bit casts, so the fused pass is vectorised: ~4-5 us per
900-sample pass on the reference machine (AVX-512) against ~8 us, about
25,000 lognormal fits/s per core.  Curves are spread over numba's default
thread count.  The compiled code is cached on disk (``cache=True``): the
first call in a fresh environment compiles for ~11 s, later processes load
it in ~0.3 s.  See benchmarks/README.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ceuskit.kinetics.lm import DIAG_FLOOR, LAMBDA_MAX, LAMBDA_MIN

if TYPE_CHECKING:
    from ceuskit.kinetics.models import BolusModel, FloatArray

try:  # numba is a declared dependency, but the NumPy core must work without it
    from numba import njit, prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only without numba
    HAVE_NUMBA = False

# Floating-point liberties of the per-sample code: fused multiply-add and
# re-association (so that the compiler may split the sums over SIMD lanes).
# Both change results at the rounding level only.  Not "nnan"/"ninf": the
# iteration tests finiteness and must see NaN and inf.  The iteration logic
# (`_lm_one`) is compiled without any.
_FASTMATH = {"contract", "reassoc"}
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_SQRT2 = math.sqrt(2.0)
_INV_LN2 = 1.0 / math.log(2.0)
# ln 2 in two parts: _LN2_HI has its last 11 bits zero, so k * _LN2_HI is
# exact for |k| < 2048; _LN2_LO = ln 2 - _LN2_HI to double precision
# (from 50-digit decimal arithmetic: Decimal(2).ln() - Decimal(_LN2_HI)).
_LN2_HI = float.fromhex("0x1.62e42fee00000p-1")
_LN2_LO = 1.9082149292705877e-10
#: Number of parameters the kernels are written for.
N_PARAMS = 5


@dataclass(frozen=True)
class CompiledModel:
    """A model with a compiled kernel.

    Attributes
    ----------
    model_id : int
        Branch of `_prepare`, `_point` and `_accumulate` that evaluates the
        model.
    param_names : tuple of str
        The parameters the kernel expects, in order; a model whose
        ``param_names`` differ does not get the kernel.
    onset : int
        Index of the onset time ``t0`` among the parameters (the model equals
        its baseline for ``t <= t0``), or -1 when it has no such time.
    baseline : int
        Index of the additive baseline parameter (must be ``N_PARAMS - 1``).
    """

    model_id: int
    param_names: tuple[str, ...]
    onset: int
    baseline: int


#: Models with a compiled kernel, by `BolusModel.name`.  A kernel is used
#: only for a model whose name and parameter names match an entry.
KERNELS: dict[str, CompiledModel] = {
    "lognormal": CompiledModel(0, ("area", "mu", "sigma", "t0", "baseline"), onset=3, baseline=4),
    "gamma": CompiledModel(1, ("area", "alpha", "beta", "t0", "baseline"), onset=3, baseline=4),
    "ldrw": CompiledModel(2, ("area", "mu", "lam", "t0", "baseline"), onset=3, baseline=4),
}


def has_kernel(model: BolusModel) -> bool:
    """Whether the compiled core can fit ``model`` (numba imports, kernel registered)."""
    spec = KERNELS.get(model.name)
    return (
        HAVE_NUMBA
        and spec is not None
        and tuple(model.param_names) == spec.param_names
        and len(spec.param_names) == N_PARAMS
        and spec.baseline == N_PARAMS - 1
    )


if HAVE_NUMBA:
    # ------------------------------------------------------------------
    # exp and log the compiler can vectorise
    # ------------------------------------------------------------------
    # Only arithmetic, comparisons and bit casts, so that a loop calling them
    # is vectorised.  Both stay within a few ulp of NumPy's (tested).  Under
    # "reassoc" the compiler could in principle merge the two-part reduction
    # x - k (hi + lo); that would cost |k| * 2.3e-17 relative, i.e. < 2e-15
    # for every exponent above -50 -- still far below what the fit resolves.
    @njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
    def _exp(x):
        """``e**x`` for ``x <= 709``; 0 below -708 (where it is < 3.3e-308).

        ``x = k ln 2 + r`` with ``|r| <= ln(2) / 2``; ``e**r`` by its Taylor
        series to degree 12 (truncation < 2e-16 relative); ``2**k`` from the
        exponent bits.
        """
        kf = math.floor(x * _INV_LN2 + 0.5)
        r = (x - kf * _LN2_HI) - kf * _LN2_LO
        q = 1.0 / 479001600.0
        q = q * r + 1.0 / 39916800.0
        q = q * r + 1.0 / 3628800.0
        q = q * r + 1.0 / 362880.0
        q = q * r + 1.0 / 40320.0
        q = q * r + 1.0 / 5040.0
        q = q * r + 1.0 / 720.0
        q = q * r + 1.0 / 120.0
        q = q * r + 1.0 / 24.0
        q = q * r + 1.0 / 6.0
        q = q * r + 0.5
        q = q * r + 1.0
        q = q * r + 1.0
        # Clamped so that the exponent field stays valid on the lanes the
        # select below discards.
        k = np.int64(min(max(kf, -1022.0), 1023.0))
        out = q * np.int64((k + 1023) << 52).view(np.float64) if x > -708.0 else 0.0
        return out if x == x else x  # NaN stays NaN

    @njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
    def _log(x):
        """Natural log of a positive, finite, normal (>= 2.3e-308) ``x``.

        ``x = m 2**e`` with ``m`` in ``[sqrt(1/2), sqrt(2))`` from the bits;
        ``ln m = 2 atanh(s)``, ``s = (m - 1) / (m + 1)``, ``|s| <= 0.172``, by
        its odd series to ``s**23`` (truncation < 1e-17).
        """
        bits = np.float64(x).view(np.int64)
        e = float((bits >> 52) - 1023)
        m = np.int64((bits & 0xFFFFFFFFFFFFF) | 0x3FF0000000000000).view(np.float64)
        big = m > _SQRT2
        m = 0.5 * m if big else m
        e = e + 1.0 if big else e
        s = (m - 1.0) / (m + 1.0)
        s2 = s * s
        q = 1.0 / 23.0
        q = q * s2 + 1.0 / 21.0
        q = q * s2 + 1.0 / 19.0
        q = q * s2 + 1.0 / 17.0
        q = q * s2 + 1.0 / 15.0
        q = q * s2 + 1.0 / 13.0
        q = q * s2 + 1.0 / 11.0
        q = q * s2 + 1.0 / 9.0
        q = q * s2 + 1.0 / 7.0
        q = q * s2 + 1.0 / 5.0
        q = q * s2 + 1.0 / 3.0
        q = q * s2 + 1.0
        return e * _LN2_HI + (2.0 * s * q + e * _LN2_LO)

    # ------------------------------------------------------------------
    # model kernels
    # ------------------------------------------------------------------
    # "inline" at numba level: the model code must end up inside the
    # per-sample loop (a call there would keep the loop scalar).
    @njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
    def _lognormal_prepare(p):
        """Constants of a lognormal parameter vector (area, mu, sigma, t0, b)."""
        area, mu, sigma, t0, b = p[0], p[1], p[2], p[3], p[4]
        inv_sigma = 1.0 / sigma
        return (area, mu, inv_sigma, math.log(sigma * _SQRT_2PI), t0, b, area * inv_sigma, 0.0)

    @njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
    def _lognormal_point(c, t):
        """Lognormal value and Jacobian row at time ``t``; see `LognormalModel.jacobian`."""
        area, mu, inv_sigma, log_norm, t0, b, a_over_sigma, _ = c
        tau = t - t0
        if tau > 0.0:
            # Floor: keeps _log's argument a normal number (g is 0 there).
            log_tau = _log(max(tau, 1e-300))
            z = (log_tau - mu) * inv_sigma
            log_g = -0.5 * z * z - log_tau - log_norm
            # The NumPy formula's clamp; g / tau saves it a second exp.
            g = _exp(min(log_g, 700.0))
            ag_s = a_over_sigma * g
            return (
                b + area * g,
                g,
                ag_s * z,
                ag_s * (z * z - 1.0),
                area * (g / tau) * (1.0 + z * inv_sigma),
                1.0,
            )
        return (b, 0.0, 0.0, 0.0, 0.0, 1.0)

    @njit(cache=True, error_model="numpy")
    def _digamma(x):
        """Digamma function psi(x) for x > 0 (absolute error < 1e-15).

        The recurrence ``psi(x) = psi(x + 1) - 1 / x`` moves x to >= 10, where
        the asymptotic series ``ln x - 1/(2x) - sum B_2k / (2k x^2k)``
        (Bernoulli numbers, through x^-14) is accurate to < 1e-16.
        """
        if not x > 0.0:  # also NaN and -inf, which would never leave the loop
            return np.nan
        acc = 0.0
        while x < 10.0:
            acc -= 1.0 / x
            x += 1.0
        i2 = 1.0 / (x * x)
        series = i2 * (
            1.0 / 12.0
            - i2 * (1.0 / 120.0 - i2 * (1.0 / 252.0 - i2 * (1.0 / 240.0 - i2 * (
                1.0 / 132.0 - i2 * (691.0 / 32760.0 - i2 / 12.0)))))
        )
        return acc + math.log(x) - 0.5 / x - series

    @njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
    def _gamma_prepare(p):
        """Constants of a gamma-variate parameter vector (area, alpha, beta, t0, b)."""
        area, alpha, beta, t0, b = p[0], p[1], p[2], p[3], p[4]
        log_beta = math.log(beta)
        log_norm = (alpha + 1.0) * log_beta + math.lgamma(alpha + 1.0)
        return (area, alpha, 1.0 / beta, log_norm, t0, b, log_beta + _digamma(alpha + 1.0), 0.0)

    @njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
    def _gamma_point(c, t):
        """Gamma-variate value and Jacobian row at time ``t``; see `GammaVariateModel.jacobian`."""
        area, alpha, inv_beta, log_norm, t0, b, log_beta_psi, _ = c
        tau = t - t0
        if tau > 0.0:
            log_tau = _log(max(tau, 1e-300))
            g = _exp(min(alpha * log_tau - tau * inv_beta - log_norm, 700.0))
            ag = area * g
            return (
                b + ag,
                g,
                ag * (log_tau - log_beta_psi),
                ag * inv_beta * (tau * inv_beta - (alpha + 1.0)),
                ag * (inv_beta - alpha / tau),
                1.0,
            )
        return (b, 0.0, 0.0, 0.0, 0.0, 1.0)

    @njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
    def _ldrw_prepare(p):
        """Constants of an LDRW parameter vector (area, mu, lam, t0, b)."""
        area, mu, lam, t0, b = p[0], p[1], p[2], p[3], p[4]
        half_log_c = 0.5 * (math.log(lam) - math.log(2.0 * math.pi * mu))
        return (area, mu, lam, half_log_c, t0, b, 1.0 / mu, 0.0)

    @njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
    def _ldrw_point(c, t):
        """LDRW value and Jacobian row at time ``t``; see `LDRWModel.jacobian`."""
        area, mu, lam, half_log_c, t0, b, inv_mu, _ = c
        tau = t - t0
        if tau > 0.0:
            tau_s = max(tau, 1e-300)
            log_tau = _log(tau_s)
            dev = tau_s - mu
            g = _exp(min(half_log_c - 0.5 * log_tau - 0.5 * lam * dev * dev * inv_mu / tau_s, 700.0))
            g1 = g / tau_s
            g_tau = g * tau_s
            return (
                b + area * g,
                g,
                area * (-0.5 * g * inv_mu + 0.5 * lam * (g_tau * inv_mu * inv_mu - g1)),
                area * (0.5 * g / lam - 0.5 * (g_tau * inv_mu - 2.0 * g + mu * g1)),
                area * (0.5 * g1 + 0.5 * lam * g * inv_mu - 0.5 * lam * mu * g1 / tau_s),
                1.0,
            )
        return (b, 0.0, 0.0, 0.0, 0.0, 1.0)

    # The model is picked by an integer rather than by passing its functions:
    # a function passed as an argument is a run-time object to numba, and a
    # kernel that holds one cannot be cached on disk.  (`_accumulate` has one
    # sample loop per model instead of calling `_point`, see there.)
    @njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
    def _prepare(model_id, p):
        """Constants (8-tuple) of parameter vector ``p`` for model ``model_id``."""
        if model_id == 0:
            return _lognormal_prepare(p)
        if model_id == 1:
            return _gamma_prepare(p)
        if model_id == 2:
            return _ldrw_prepare(p)
        return (np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan)

    @njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
    def _point(model_id, c, t):
        """Value and Jacobian row (6-tuple) of model ``model_id`` at time ``t``."""
        if model_id == 0:
            return _lognormal_point(c, t)
        if model_id == 1:
            return _gamma_point(c, t)
        if model_id == 2:
            return _ldrw_point(c, t)
        return (np.nan, np.nan, np.nan, np.nan, np.nan, np.nan)

    @njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
    def _evaluate(model_id, p, t, out):
        """``out[i, j, :] = (f, J row)`` of curve ``i`` at ``t[j]`` (for tests: serial, compiles fast)."""
        for i in range(p.shape[0]):
            c = _prepare(model_id, p[i])
            for j in range(t.shape[0]):
                v = _point(model_id, c, t[j])
                for q in range(6):
                    out[i, j, q] = v[q]

    # ------------------------------------------------------------------
    # Levenberg-Marquardt
    # ------------------------------------------------------------------
    @njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
    def _add_sample(acc, wi, yi, v):
        """Add one sample to the running sums ``acc``.

        ``acc`` = (cost, g0..g4, h00, h01, h02, h03, h04, h11, h12, h13, h14,
        h22, h23, h24, h33, h34, h44): the cost, ``J^T W r`` and the upper
        triangle of ``J^T W J``; ``v`` = (f, J row) of the sample.  A tuple
        rather than an array so that the sums live in registers.
        """
        f, j0, j1, j2, j3, j4 = v
        r = yi - f
        wr = wi * r
        w0 = wi * j0
        w1 = wi * j1
        w2 = wi * j2
        w3 = wi * j3
        w4 = wi * j4
        return (
            acc[0] + wr * r,
            acc[1] + wr * j0,
            acc[2] + wr * j1,
            acc[3] + wr * j2,
            acc[4] + wr * j3,
            acc[5] + wr * j4,
            acc[6] + w0 * j0,
            acc[7] + w0 * j1,
            acc[8] + w0 * j2,
            acc[9] + w0 * j3,
            acc[10] + w0 * j4,
            acc[11] + w1 * j1,
            acc[12] + w1 * j2,
            acc[13] + w1 * j3,
            acc[14] + w1 * j4,
            acc[15] + w2 * j2,
            acc[16] + w2 * j3,
            acc[17] + w2 * j4,
            acc[18] + w3 * j3,
            acc[19] + w3 * j4,
            acc[20] + w4 * j4,
        )

    @njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
    def _accumulate(model_id, onset, t, y, w, pv, sorted_t, pre, ref, h, g):
        """Cost ``sum w r^2`` at ``pv``; fills ``h = J^T W J`` and ``g = J^T W r``.

        One fused pass over the samples after the onset: value, Jacobian row
        and their products are formed per sample and summed at once, the
        Jacobian is never stored.  The samples at or before ``t0`` (model =
        baseline, Jacobian row = ``e_b``, b the last parameter) enter through
        the prefix sums ``pre[:, k]`` of ``w``, ``w (y - ref)`` and
        ``w (y - ref)^2`` over the first ``k`` samples: with ``d = b - ref``
        their cost is ``S2 - 2 d S1 + d^2 S0``.  ``ref`` (the starting
        baseline) keeps that difference free of cancellation.  When ``t`` is
        not sorted every sample goes through the formula.
        """
        c = _prepare(model_id, pv)
        n = t.shape[0]
        k = 0
        if onset >= 0 and sorted_t:
            k = np.searchsorted(t, pv[onset], side="right")
        d = pv[4] - ref
        s0 = pre[0, k]
        s1 = pre[1, k]
        cost = pre[2, k] - d * (2.0 * s1 - d * s0)
        z = 0.0
        acc = (cost, z, z, z, z, s1 - d * s0, z, z, z, z, z, z, z, z, z, z, z, z, z, z, s0)
        # One loop per model, so that each is vectorised for its own formula
        # (with the branch inside, the compiler evaluates every model for
        # every sample and selects).
        if model_id == 0:
            for i in range(k, n):
                acc = _add_sample(acc, w[i], y[i], _lognormal_point(c, t[i]))
        elif model_id == 1:
            for i in range(k, n):
                acc = _add_sample(acc, w[i], y[i], _gamma_point(c, t[i]))
        elif model_id == 2:
            for i in range(k, n):
                acc = _add_sample(acc, w[i], y[i], _ldrw_point(c, t[i]))
        else:  # unknown model: a NaN cost stops the iteration
            return np.nan
        (
            cost, g0, g1, g2, g3, g4,
            h00, h01, h02, h03, h04, h11, h12, h13, h14, h22, h23, h24, h33, h34, h44,
        ) = acc
        h[0, 0] = h00
        h[0, 1] = h[1, 0] = h01
        h[0, 2] = h[2, 0] = h02
        h[0, 3] = h[3, 0] = h03
        h[0, 4] = h[4, 0] = h04
        h[1, 1] = h11
        h[1, 2] = h[2, 1] = h12
        h[1, 3] = h[3, 1] = h13
        h[1, 4] = h[4, 1] = h14
        h[2, 2] = h22
        h[2, 3] = h[3, 2] = h23
        h[2, 4] = h[4, 2] = h24
        h[3, 3] = h33
        h[3, 4] = h[4, 3] = h34
        h[4, 4] = h44
        g[0] = g0
        g[1] = g1
        g[2] = g2
        g[3] = g3
        g[4] = g4
        return cost

    @njit(cache=True, error_model="numpy")
    def _solve_small(a, b, x, lu, rhs):
        """``x = a^-1 b`` for a small square ``a``, by LU with partial pivoting.

        The factorisation of LAPACK's ``gesv`` (which the NumPy core calls),
        with its notion of singular: an exactly zero pivot.  A singular
        system gets the pseudo-inverse solution, as the NumPy core's fallback
        gives it.  A non-finite ``a`` gives NaN (the caller zeroes non-finite
        steps, as the NumPy core does).  ``lu`` and ``rhs`` are scratch.
        """
        n = b.shape[0]
        for i in range(n):
            rhs[i] = b[i]
            for j in range(n):
                lu[i, j] = a[i, j]
                if not np.isfinite(a[i, j]):
                    x[:] = np.nan
                    return
        for col in range(n):
            piv = col
            big = abs(lu[col, col])
            for r in range(col + 1, n):
                v = abs(lu[r, col])
                if v > big:
                    big = v
                    piv = r
            if big == 0.0:
                sol = np.linalg.pinv(a) @ b
                for i in range(n):
                    x[i] = sol[i]
                return
            if piv != col:
                for j in range(n):
                    tmp = lu[col, j]
                    lu[col, j] = lu[piv, j]
                    lu[piv, j] = tmp
                tmp = rhs[col]
                rhs[col] = rhs[piv]
                rhs[piv] = tmp
            inv = 1.0 / lu[col, col]
            for r in range(col + 1, n):
                f = lu[r, col] * inv
                for j in range(col + 1, n):
                    lu[r, j] -= f * lu[col, j]
                rhs[r] -= f * rhs[col]
        for i in range(n - 1, -1, -1):
            acc = rhs[i]
            for j in range(i + 1, n):
                acc -= lu[i, j] * x[j]
            x[i] = acc / lu[i, i]

    @njit(cache=True, error_model="numpy")
    def _lm_one(model_id, onset, t, y, w, p, lo, hi, max_iter, tol, xtol, lambda0, jtj):
        """Projected Levenberg-Marquardt on one curve, step for step the NumPy core's.

        ``p`` (the start, shape (P,)) is overwritten with the result and
        ``jtj`` with ``J^T W J`` there.  Returns ``(cost, converged, n_iter)``.
        See ``fit._levenberg_marquardt`` for the algorithm; every test below
        mirrors one line there.
        """
        n = t.shape[0]
        n_p = p.shape[0]
        # Prefix sums for the samples before the onset (see _accumulate).
        # Non-decreasing times suffice for them.
        ref = p[n_p - 1]
        pre = np.zeros((3, n + 1))
        sorted_t = True
        cost_scale = 0.0
        for i in range(n):
            e = y[i] - ref
            we = w[i] * e
            pre[0, i + 1] = pre[0, i] + w[i]
            pre[1, i + 1] = pre[1, i] + we
            pre[2, i + 1] = pre[2, i] + we * e
            cost_scale += w[i] * y[i] * y[i]
            if i > 0 and not t[i] >= t[i - 1]:
                sorted_t = False

        grad = np.empty(n_p)
        h_new = np.empty((n_p, n_p))
        g_new = np.empty(n_p)
        hm = np.empty((n_p, n_p))
        gm = np.empty(n_p)
        lu = np.empty((n_p, n_p))
        rhs = np.empty(n_p)
        delta = np.empty(n_p)
        p_new = np.empty(n_p)
        step = np.empty(n_p)
        pinned = np.empty(n_p, dtype=np.bool_)

        cost = _accumulate(model_id, onset, t, y, w, p, sorted_t, pre, ref, jtj, grad)
        lam = lambda0
        nu = 2.0
        n_iter = 0
        converged = False
        if not np.isfinite(cost) or not np.all(np.isfinite(jtj)):
            return cost, converged, n_iter
        for _ in range(max_iter):
            # Parameters on a bound whose gradient points outward are frozen;
            # Marquardt's scaling with a floor relative to the largest diagonal.
            dmax = -np.inf
            for a in range(n_p):
                pinned[a] = (p[a] <= lo[a] and grad[a] < 0.0) or (p[a] >= hi[a] and grad[a] > 0.0)
                dmax = max(dmax, jtj[a, a])
            for a in range(n_p):
                sc = max(jtj[a, a], DIAG_FLOOR * dmax) if dmax > 0.0 else 1.0
                for b in range(n_p):
                    hm[a, b] = 0.0 if (pinned[a] or pinned[b]) else jtj[a, b]
                if pinned[a]:
                    hm[a, a] = 1.0
                    gm[a] = 0.0
                else:
                    hm[a, a] = jtj[a, a] + lam * sc
                    gm[a] = grad[a]
            _solve_small(hm, gm, delta, lu, rhs)
            small_step = True
            for a in range(n_p):
                da = delta[a] if np.isfinite(delta[a]) else 0.0
                p_new[a] = min(max(p[a] + da, lo[a]), hi[a])
                step[a] = p_new[a] - p[a]
                if not abs(step[a]) <= xtol * (abs(p[a]) + xtol):
                    small_step = False
            predicted = 0.0
            for a in range(n_p):
                hs = 0.0
                for b in range(n_p):
                    hs += jtj[a, b] * step[b]
                predicted += step[a] * (2.0 * grad[a] - hs)

            # Trial cost and, in the same pass, the normal equations there
            # (used only if the step is accepted, which most are).
            cost_new = _accumulate(model_id, onset, t, y, w, p_new, sorted_t, pre, ref, h_new, g_new)
            actual = cost - cost_new
            accept = np.isfinite(cost_new) and actual > 0.0
            n_iter += 1

            rho = actual / predicted if predicted > 0.0 else 1.0
            if accept:
                u = 2.0 * rho - 1.0
                lam = lam * max(1.0 / 3.0, 1.0 - u * u * u)
                nu = 2.0
            else:
                lam = lam * nu
                nu = nu * 2.0
            lam = max(lam, LAMBDA_MIN)
            if accept:
                for a in range(n_p):
                    p[a] = p_new[a]
                    grad[a] = g_new[a]
                    for b in range(n_p):
                        jtj[a, b] = h_new[a, b]
                cost = cost_new

            small_cost = actual <= tol * cost
            tiny_cost = cost <= 1e-28 * cost_scale
            if (
                (accept and (small_cost or small_step))
                or (not accept and small_step)
                or tiny_cost
                or lam > LAMBDA_MAX
            ):
                converged = True
                break
        return cost, converged, n_iter

    @njit(cache=True, parallel=True, error_model="numpy")
    def _lm_batch(
        model_id, onset, t, y, w, rows, p, lo, hi, max_iter, tol, xtol, lambda0, cost, jtj, conv, n_iter
    ):
        """`_lm_one` on rows ``rows`` of ``y``, in parallel; results indexed like ``rows``.

        ``t`` and ``w`` are (1, N) (shared by all curves: e.g. unit weights
        without materialising them) or indexed like ``y``.
        """
        shared_t = t.shape[0] == 1
        shared_w = w.shape[0] == 1
        for i in prange(rows.shape[0]):
            r = rows[i]
            ti = t[0] if shared_t else t[r]
            wi = w[0] if shared_w else w[r]
            c, ok, it = _lm_one(
                model_id, onset, ti, y[r], wi, p[i], lo[i], hi[i], max_iter, tol, xtol, lambda0, jtj[i]
            )
            cost[i] = c
            conv[i] = ok
            n_iter[i] = it


def _kernel_array(a: ArrayLike, dtype: type = np.float64) -> NDArray[Any]:
    """``a`` C-ordered and writeable: a read-only array would compile a second kernel."""
    out: NDArray[Any] = np.ascontiguousarray(a, dtype=dtype)
    return out if out.flags.writeable else out.copy()


def _spec(model: BolusModel) -> CompiledModel:
    if not has_kernel(model):
        raise ValueError(f"no compiled (numba) kernel for model {model.name!r}")
    return KERNELS[model.name]


def evaluate(model: BolusModel, params: ArrayLike, t: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """The compiled model formula: values and Jacobian, for testing against NumPy.

    Parameters
    ----------
    model : BolusModel
        A model with a kernel (`has_kernel`).
    params : array, shape (M, P)
    t : array, shape (N,)
        Times (s).

    Returns
    -------
    values : array, shape (M, N)
        Same as ``model.predict(params, t)`` up to rounding.
    jacobian : array, shape (M, N, P)
        Same as ``model.jacobian(params, t)`` up to rounding.
    """
    spec = _spec(model)
    p = np.ascontiguousarray(np.atleast_2d(np.asarray(params, dtype=np.float64)))
    tt = np.ascontiguousarray(np.asarray(t, dtype=np.float64).reshape(-1))
    out = np.empty((p.shape[0], tt.size, N_PARAMS + 1))
    _evaluate(spec.model_id, p, tt, out)
    return out[..., 0], out[..., 1:]


def levenberg_marquardt(
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
    """Compiled drop-in for the NumPy core ``fit._levenberg_marquardt``.

    Parameters
    ----------
    model : BolusModel
        A model with a kernel (`has_kernel`).
    t : array, shape (N,) or (M, N)
        Shared or per-curve times (s), non-decreasing (otherwise every
        sample goes through the formula: slower, same result).
    y, w : arrays, shape (M, N)
        Curves (invalid samples set to 0) and weights (0 drops a sample).
    p, lo, hi : arrays, shape (M, P)
        Starting point (inside the box) and box.
    max_iter, tol, xtol, lambda0
        As in `fit_curves`.

    Returns
    -------
    p, cost, jtj, converged, n_iter
        Shapes (M, P), (M,), (M, P, P), (M,), (M,): what the NumPy core
        returns -- fitted parameters, weighted SSE, ``J^T W J`` at the
        result, convergence flag and iteration count.
    """
    y2 = np.ascontiguousarray(y, dtype=np.float64)
    return levenberg_marquardt_rows(
        model,
        np.atleast_2d(np.asarray(t, dtype=np.float64)),
        y2,
        np.ascontiguousarray(w, dtype=np.float64),
        np.arange(y2.shape[0]),
        p,
        lo,
        hi,
        max_iter=max_iter,
        tol=tol,
        xtol=xtol,
        lambda0=lambda0,
    )


def levenberg_marquardt_rows(
    model: BolusModel,
    t: FloatArray,
    y: FloatArray,
    w: FloatArray,
    rows: NDArray[np.intp],
    p: FloatArray,
    lo: FloatArray,
    hi: FloatArray,
    *,
    max_iter: int,
    tol: float,
    xtol: float,
    lambda0: float,
) -> tuple[FloatArray, FloatArray, FloatArray, NDArray[np.bool_], NDArray[np.int32]]:
    """`levenberg_marquardt` on rows ``rows`` of ``y`` without copying them out.

    Parameters
    ----------
    t, w : arrays, shape (1, N) or (M, N)
        Times (s) and weights shared by all curves (one row) or one row per
        row of ``y``.
    y : array, shape (M, N)
        Curves (invalid samples set to 0).
    rows : int array, shape (R,)
        The rows to fit.
    p, lo, hi : arrays, shape (R, P)
        Starting point and box of each fitted row.

    Returns
    -------
    p, cost, jtj, converged, n_iter
        As `levenberg_marquardt`, indexed like ``rows``.
    """
    spec = _spec(model)
    m, n_p = p.shape
    p_out = np.array(p, dtype=np.float64, order="C", copy=True)
    cost = np.full(m, np.nan)
    jtj = np.zeros((m, n_p, n_p))
    conv = np.zeros(m, dtype=np.bool_)
    n_iter = np.zeros(m, dtype=np.int32)
    if m:
        _lm_batch(
            spec.model_id,
            spec.onset,
            _kernel_array(t),
            _kernel_array(y),
            _kernel_array(w),
            _kernel_array(rows, np.int64),
            p_out,
            np.ascontiguousarray(lo, dtype=np.float64),
            np.ascontiguousarray(hi, dtype=np.float64),
            int(max_iter),
            float(tol),
            float(xtol),
            float(lambda0),
            cost,
            jtj,
            conv,
            n_iter,
        )
    return p_out, cost, jtj, conv, n_iter
