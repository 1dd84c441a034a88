"""The compiled (numba) Levenberg-Marquardt core against the NumPy core.

Both cores run the same algorithm from the same starting point, so they must
give the same parameters (to 1e-6 relative; observed ~1e-11) and the same
statuses.  The first run in a fresh environment compiles the kernel (~10 s);
later runs load it from numba's on-disk cache.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ceuskit.kinetics import fit_numba
from ceuskit.kinetics.fit import FitResult, FitStatus, fit_curves
from ceuskit.kinetics.models import LognormalModel, get_model

from .test_models import lognormal_params

MODEL = LognormalModel()
T = np.arange(900) * 0.1  # 900 samples over 90 s
RTOL = 1e-6


def speckle_curves(seed: int, m: int, looks: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Lognormal boluses with averaged-exponential (gamma, CV 0.5) speckle and an additive floor."""
    rng = np.random.default_rng(seed)
    peak = rng.uniform(0.5, 2.0, m)
    p = lognormal_params(rng, m, peak=peak)
    clean = MODEL.predict(p, T)
    y = clean * rng.gamma(looks, 1.0 / looks, clean.shape) + 0.01 * peak[:, None] * rng.standard_normal(
        clean.shape
    )
    return p, y


def assert_same_fit(a: FitResult, b: FitResult, rtol: float = RTOL) -> None:
    """Same statuses; same parameters to ``rtol`` relative where fitted."""
    np.testing.assert_array_equal(a.status, b.status)
    np.testing.assert_array_equal(np.isnan(a.params), np.isnan(b.params))
    np.testing.assert_allclose(a.params, b.params, rtol=rtol, atol=0.0, equal_nan=True)
    np.testing.assert_allclose(a.sse, b.sse, rtol=rtol, equal_nan=True)
    np.testing.assert_allclose(a.qof, b.qof, rtol=rtol, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(a.stderr, b.stderr, rtol=1e-4, equal_nan=True)


def model_params(name: str, rng: np.random.Generator, m: int) -> np.ndarray:
    """Realistic parameters of model ``name``: onset 5-15 s, peak 3-15 s later."""
    if name == "lognormal":
        return lognormal_params(rng, m, peak=rng.uniform(0.1, 10.0, m))
    area = rng.uniform(1.0, 50.0, m)
    t0 = rng.uniform(5.0, 15.0, m)
    base = rng.uniform(0.0, 1.0, m)
    if name == "gamma":
        alpha = rng.uniform(1.0, 30.0, m)
        shape = np.stack([alpha, rng.uniform(3.0, 15.0, m) / alpha], axis=-1)
    else:  # ldrw: mu (s), lambda
        shape = np.stack([rng.uniform(3.0, 20.0, m), rng.uniform(0.3, 20.0, m)], axis=-1)
    return np.column_stack([area, shape, t0, base])


def test_kernel_registry() -> None:
    for name in ("lognormal", "gamma", "ldrw"):
        assert fit_numba.has_kernel(get_model(name)), name

    class Renamed(LognormalModel):
        name = "lognormal-copy"

    assert not fit_numba.has_kernel(Renamed())


@pytest.mark.parametrize("name", ["lognormal", "gamma", "ldrw"])
def test_compiled_formula_matches_numpy(name: str) -> None:
    model = get_model(name)
    rng = np.random.default_rng(0)
    p = model_params(name, rng, 50)
    p[2, 3] = 0.0  # onset at the first sample
    # samples just before, at and after some onsets
    t = np.concatenate([T, p[3:6, 3] + np.array([-1e-9, 0.0, 1e-9])])
    f, jac = fit_numba.evaluate(model, p, t)
    f_ref = model.predict(p, t)
    j_ref = model.jacobian(p, t)
    # 1e-13 relative (gamma: the normalisation ln Gamma(alpha + 1) enters
    # exp() with a factor up to ~100 of cancellation)
    np.testing.assert_allclose(f, f_ref, rtol=1e-13, atol=1e-300)
    # each column to 1e-13 of its own scale (entries that are ~0 by
    # cancellation, e.g. df/dsigma at z = +-1, have no relative precision)
    scale = np.max(np.abs(j_ref), axis=-2, keepdims=True)
    err = np.abs(jac - j_ref) / (scale + 1e-300)
    assert np.max(err) < 1e-13, np.max(err, axis=(0, 1))


def test_exp_log_accuracy() -> None:
    x = np.concatenate([np.linspace(-707.0, 700.0, 3001), np.linspace(-1.0, 1.0, 2001)])
    got = np.array([fit_numba._exp(v) for v in x])
    np.testing.assert_allclose(got, np.exp(x), rtol=5e-16, atol=0.0)
    assert fit_numba._exp(-710.0) == 0.0 and math.isnan(fit_numba._exp(math.nan))
    u = np.concatenate([np.geomspace(1e-300, 1e300, 3001), np.linspace(0.5, 2.0, 2001)])
    got = np.array([fit_numba._log(v) for v in u])
    ref = np.log(u)
    # a few ulp of the result, or of 1 near u = 1 where ln u -> 0
    assert np.all(np.abs(got - ref) <= 4.0 * np.spacing(np.abs(ref)) + 3e-16)


def test_numba_matches_numpy_on_noisy_curves() -> None:
    _, y = speckle_curves(1, 300)
    a = fit_curves(MODEL, T, y, backend="numpy")
    b = fit_curves(MODEL, T, y, backend="numba")
    assert np.mean(a.status == FitStatus.OK) > 0.9
    assert_same_fit(a, b)
    # the same steps were taken
    assert np.mean(a.n_iter == b.n_iter) > 0.95
    # auto picks the compiled core for the lognormal model
    assert_same_fit(fit_curves(MODEL, T, y[:20]), b.select(slice(0, 20)))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["gamma", "ldrw"])
def test_numba_matches_numpy_other_models(name: str) -> None:
    # lognormal-shaped data: a realistic, mildly misspecified fit
    _, y = speckle_curves(8, 100)
    model = get_model(name)
    a = fit_curves(model, T, y, backend="numpy")
    b = fit_curves(model, T, y, backend="numba")
    assert np.mean(a.status == FitStatus.OK) > 0.9
    assert_same_fit(a, b)


def test_batch_shapes_and_chunks() -> None:
    _, y = speckle_curves(2, 12)
    ref = fit_curves(MODEL, T, y, backend="numpy")
    res = fit_curves(MODEL, T, y.reshape(3, 4, -1), backend="numba", chunk_size=5)
    assert res.params.shape == (3, 4, 5) and res.stderr.shape == (3, 4, 5)
    for name in ("qof", "sse", "status", "n_iter"):
        assert getattr(res, name).shape == (3, 4)
    flat = FitResult(
        model=MODEL,
        params=res.params.reshape(12, 5),
        stderr=res.stderr.reshape(12, 5),
        qof=res.qof.reshape(12),
        sse=res.sse.reshape(12),
        status=res.status.reshape(12),
        n_iter=res.n_iter.reshape(12),
    )
    assert_same_fit(flat, ref)
    one = fit_curves(MODEL, T, y[3], backend="numba")
    assert one.params.shape == (5,) and one.status.shape == ()
    np.testing.assert_allclose(one.params, ref.params[3], rtol=RTOL)
    empty = fit_curves(MODEL, T, np.empty((0, T.size)), backend="numba")
    assert empty.params.shape == (0, 5)


def awkward_curves(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Six curves that must each get a clear status (good, flat, all NaN, some NaN and an
    inf, peak after the last sample, two samples), and the speckle curves they came from."""
    _, y = speckle_curves(3, 2)
    good = y[0]
    flat = 0.1 + rng.normal(0.0, 0.01, T.size)
    all_nan = np.full(T.size, np.nan)
    some_nan = good.copy()
    some_nan[[0, 3, 100, 150, 151, 400]] = np.nan
    some_nan[200] = np.inf
    sigma, mode = 0.6, 120.0  # peak after the last sample
    mu = math.log(mode) + sigma**2
    area = sigma * math.sqrt(2 * math.pi) * math.exp(mu - sigma**2 / 2)
    late = MODEL.predict([area, mu, sigma, 10.0, 0.05], T) + rng.normal(0.0, 0.02, T.size)
    sparse = good.copy()
    sparse[10:] = np.nan
    return np.stack([good, flat, all_nan, some_nan, late, sparse]), y


def test_bad_curves_get_the_same_status() -> None:
    rng = np.random.default_rng(14)
    batch, y = awkward_curves(rng)
    a = fit_curves(MODEL, T, batch, backend="numpy")
    b = fit_curves(MODEL, T, batch, backend="numba")
    assert list(b.labels()) == ["ok", "no-enhancement", "non-finite", "ok", "peak-outside", "non-finite"]
    assert_same_fit(a, b)
    # Unscreened flat curves: fitting a bolus to noise is ill-posed (flat
    # directions in the cost), rounding differences move the parameters
    # along them, but the statuses and the cost reached agree (the cost to
    # about the convergence tolerance, tol = 1e-8 per step).
    flat2 = 0.1 + rng.normal(0.0, 0.01, (3, T.size))
    a2 = fit_curves(MODEL, T, flat2, screen=False, backend="numpy")
    b2 = fit_curves(MODEL, T, flat2, screen=False, backend="numba")
    np.testing.assert_array_equal(a2.status, b2.status)
    np.testing.assert_allclose(a2.sse, b2.sse, rtol=RTOL)
    a1 = fit_curves(MODEL, T, y, max_iter=1, backend="numpy")
    b1 = fit_curves(MODEL, T, y, max_iter=1, backend="numba")
    assert np.all(b1.status == FitStatus.MAX_ITER) and np.all(b1.n_iter == 1)
    assert_same_fit(a1, b1)


def test_noiseless_and_weighted() -> None:
    rng = np.random.default_rng(11)
    p = lognormal_params(rng, 20)
    exact = fit_curves(MODEL, T, MODEL.predict(p, T), backend="numba")
    assert np.all(exact.status == FitStatus.OK)
    np.testing.assert_allclose(exact.params, p, rtol=1e-6, atol=1e-8)
    _, y = speckle_curves(4, 20)
    w = rng.uniform(0.5, 2.0, y.shape)
    w[:, 50:80] = 0.0
    assert_same_fit(
        fit_curves(MODEL, T, y, weights=w, backend="numpy"),
        fit_curves(MODEL, T, y, weights=w, backend="numba"),
    )


def test_per_curve_time_axes() -> None:
    _, y = speckle_curves(5, 8)
    shift = np.linspace(-2.0, 3.0, 8)
    tt = T[None, :] + shift[:, None]
    tt[1] = np.cumsum(np.random.default_rng(0).uniform(0.05, 0.15, T.size))  # irregular frame times
    assert_same_fit(
        fit_curves(MODEL, tt, y, backend="numpy"),
        fit_curves(MODEL, tt, y, backend="numba"),
    )


def test_unsorted_samples_give_the_same_fit() -> None:
    # the pre-onset prefix sums need sorted times; unsorted ones take the
    # plain per-sample path, which must reach the same optimum
    _, y = speckle_curves(6, 4)
    w = np.ones_like(y)
    lo, hi = MODEL.bounds(T, y)
    p0 = MODEL.initial_guess(T, y)
    kw = {"max_iter": 200, "tol": 1e-8, "xtol": 1e-8, "lambda0": 1e-3}
    ref = fit_numba.levenberg_marquardt(MODEL, T, y, w, p0, lo, hi, **kw)
    perm = np.random.default_rng(1).permutation(T.size)
    tp = np.broadcast_to(T[perm], y.shape)
    got = fit_numba.levenberg_marquardt(MODEL, tp, y[:, perm], w, p0, lo, hi, **kw)
    np.testing.assert_allclose(got[0], ref[0], rtol=RTOL)
    np.testing.assert_array_equal(got[3], ref[3])


def test_backend_argument() -> None:
    _, y = speckle_curves(7, 3)
    with pytest.raises(ValueError, match="backend"):
        fit_curves(MODEL, T, y, backend="gpu")

    class Renamed(LognormalModel):
        name = "lognormal-copy"

    with pytest.raises(ValueError, match="no compiled"):
        fit_curves(Renamed(), T, y, backend="numba")
    # auto falls back to the NumPy core for a model without a kernel
    assert_same_fit(fit_curves(Renamed(), T, y), fit_curves(MODEL, T, y, backend="numpy"), rtol=0.0)
