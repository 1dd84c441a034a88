"""Tests of the batched Levenberg-Marquardt fitter and the enhancement test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ceuskit.kinetics import descriptors
from ceuskit.kinetics.fast import fast_descriptors
from ceuskit.kinetics.fit import (
    ENHANCEMENT_MIN_DB,
    ENHANCEMENT_Z,
    FitResult,
    FitStatus,
    enhancement_test,
    fill_nonfinite,
    fit_curves,
)
from ceuskit.kinetics.models import LognormalModel, get_model

from .test_models import lognormal_params

MODEL = LognormalModel()
T = np.arange(900) * 0.1  # 900 samples over 90 s (10 frames/s)
T_END = 90.0


def synthetic(seed: int, m: int, *, noise: str = "additive") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy lognormal curves at 20 dB SNR: noise sd = peak / 10."""
    rng = np.random.default_rng(seed)
    peak = rng.uniform(0.5, 2.0, m)
    p = lognormal_params(rng, m, peak=peak)
    clean = MODEL.predict(p, T)
    if noise == "additive":
        y = clean + rng.normal(0.0, 1.0, clean.shape) * (peak / 10.0)[:, None]
    else:
        # speckle-like multiplicative noise: gamma with CV 0.1 (sd = peak / 10 at the peak)
        shape = 100.0
        y = clean * rng.gamma(shape, 1.0 / shape, clean.shape)
    return p, clean, y


def one_bolus(peak_db: float, base: float = 1e-3) -> np.ndarray:
    """Noise-free lognormal bolus whose peak is ``peak_db`` dB above ``base``."""
    sigma, mode, t0 = 0.5, 6.0, 10.0
    mu = math.log(mode) + sigma**2
    pk = base * (10 ** (peak_db / 10) - 1)
    area = pk * sigma * math.sqrt(2 * math.pi) * math.exp(mu - sigma**2 / 2)
    return MODEL.predict([area, mu, sigma, t0, base], T)


def relative_errors(res: FitResult, p_true: np.ndarray) -> dict[str, np.ndarray]:
    grid = descriptors.dense_grid(T_END, 0.05, extend_to_s=max(4 * T_END, 300.0))
    truth = descriptors.curve_descriptors(grid, MODEL.predict(p_true, grid), p_true[..., 4], t_end_s=T_END)
    fitted = res.descriptors(T_END)
    return {
        k: np.abs(fitted[k] - truth[k]) / np.abs(truth[k])
        for k in ("time_to_peak_s", "mean_transit_time_s", "peak_enhancement")
    }


@pytest.mark.parametrize("noise", ["additive", "multiplicative"])
def test_recovery_200_noisy_curves(noise: str) -> None:
    p, _, y = synthetic(10, 200, noise=noise)
    res = fit_curves(MODEL, T, y)
    assert res.params.shape == (200, 5)
    assert np.mean(res.status == FitStatus.OK) > 0.95
    err = relative_errors(res, p)
    # observed: additive ~0.5 % / 1.9 % / 1.0 %, multiplicative ~0.3 % / 0.9 % / 0.8 %
    for key, e in err.items():
        assert np.nanmedian(e) < 0.05, key
    assert np.all((res.qof >= 0) & (res.qof <= 1))
    if noise == "additive":
        # stderr is calibrated for white Gaussian noise
        zscore = (res.params - p) / res.stderr
        sd = np.std(zscore, axis=0)
        assert np.all((sd > 0.75) & (sd < 1.3)), sd


def test_noiseless_fit_is_exact() -> None:
    rng = np.random.default_rng(11)
    p = lognormal_params(rng, 20)
    res = fit_curves(MODEL, T, MODEL.predict(p, T))
    assert np.all(res.status == FitStatus.OK)
    np.testing.assert_allclose(res.params, p, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(res.qof, 1.0)
    np.testing.assert_allclose(res.predict(T), MODEL.predict(p, T), atol=1e-8)


def test_batch_shape_matches_one_by_one() -> None:
    _, _, y = synthetic(12, 12)
    batch = fit_curves(MODEL, T, y.reshape(3, 4, -1))
    assert batch.params.shape == (3, 4, 5)
    assert batch.stderr.shape == (3, 4, 5)
    for name in ("qof", "sse", "status", "n_iter"):
        assert getattr(batch, name).shape == (3, 4)
    assert batch.shape == (3, 4)
    assert batch.param("t0").shape == (3, 4)
    for i in range(12):
        single = fit_curves(MODEL, T, y[i])
        assert single.params.shape == (5,)
        assert single.status == batch.status.reshape(-1)[i]
        np.testing.assert_allclose(single.params, batch.params.reshape(-1, 5)[i], rtol=1e-6, atol=1e-9)
    d = batch.descriptors(T_END)
    assert d["time_to_peak_s"].shape == (3, 4)


def test_per_curve_time_axes() -> None:
    _, _, y = synthetic(13, 6)
    shift = np.linspace(-2.0, 3.0, 6)
    res_shared = fit_curves(MODEL, T, y)
    res_own = fit_curves(MODEL, T[None, :] + shift[:, None], y)
    np.testing.assert_allclose(res_own.param("t0"), res_shared.param("t0") + shift, atol=1e-5)
    np.testing.assert_allclose(res_own.param("mu"), res_shared.param("mu"), atol=1e-6)


def test_bad_curves_get_a_clear_status() -> None:
    rng = np.random.default_rng(14)
    good = one_bolus(10.0, base=0.1) + rng.normal(0.0, 0.03, T.size)
    flat = 0.1 + rng.normal(0.0, 0.01, T.size)
    all_nan = np.full(T.size, np.nan)
    some_nan = good.copy()
    some_nan[[0, 3, 100, 150, 151, 400]] = np.nan
    some_nan[200] = np.inf
    # a slow bolus whose peak (t = 130 s) comes after the last sample (90 s)
    sigma, mode = 0.6, 120.0
    mu = math.log(mode) + sigma**2
    area = sigma * math.sqrt(2 * math.pi) * math.exp(mu - sigma**2 / 2)
    late = MODEL.predict([area, mu, sigma, 10.0, 0.05], T) + rng.normal(0.0, 0.02, T.size)
    res = fit_curves(MODEL, T, np.stack([good, flat, all_nan, some_nan, late]))
    assert list(res.labels()) == ["ok", "no-enhancement", "non-finite", "ok", "peak-outside"]
    assert np.all(np.isnan(res.params[1:3]))
    assert np.all(np.isnan(res.qof[1:3]))
    np.testing.assert_allclose(res.params[3], res.params[0], rtol=0.02)
    assert res.param("t0")[3] == pytest.approx(10.0, abs=0.3)
    d = res.descriptors(T_END)
    assert np.all(np.isfinite(d["time_to_peak_s"][[0, 3, 4]]))
    assert np.all(np.isnan(d["time_to_peak_s"][1:3]))
    assert d["peak_in_acquisition"][4] == 0.0
    assert d["time_to_peak_s"][4] > T_END

    two = fit_curves(MODEL, T[:2], good[:2])
    assert two.status == FitStatus.TOO_FEW_SAMPLES and np.all(np.isnan(two.params))
    # too few finite samples left after dropping NaNs
    sparse = good.copy()
    sparse[10:] = np.nan
    assert fit_curves(MODEL, T, sparse).status == FitStatus.NON_FINITE


def test_max_iter_and_unscreened_flat_curve() -> None:
    _, _, y = synthetic(15, 4)
    res = fit_curves(MODEL, T, y, max_iter=1)
    assert np.all(res.status == FitStatus.MAX_ITER)
    assert np.all(res.n_iter == 1)
    assert np.all(np.isfinite(res.descriptors(T_END)["time_to_peak_s"]))
    flat = 0.1 + np.random.default_rng(0).normal(0.0, 0.01, (2, T.size))
    res = fit_curves(MODEL, T, flat, screen=False)
    assert set(res.labels()) <= {"ok", "max-iter", "peak-outside", "failed"}


def test_zero_weights_equal_dropped_samples() -> None:
    _, _, y = synthetic(16, 3)
    drop = np.zeros_like(y, dtype=bool)
    drop[:, 50:80] = True
    y_nan = np.where(drop, np.nan, y)
    a = fit_curves(MODEL, T, y_nan)
    b = fit_curves(MODEL, T, np.where(drop, 0.0, y), weights=np.where(drop, 0.0, 1.0))
    np.testing.assert_allclose(a.params, b.params, rtol=1e-6)


def test_status_labels_and_model_lookup() -> None:
    assert FitStatus.OK.label == "ok"
    assert FitStatus.PEAK_OUTSIDE.label == "peak-outside"
    assert len({s.label for s in FitStatus}) == len(FitStatus)
    res = fit_curves(get_model("lognormal"), T, one_bolus(6.0))
    assert res.status == FitStatus.OK and res.labels() == "ok"


def test_fill_nonfinite() -> None:
    y = np.array([[np.nan, 1.0, np.nan, 3.0, np.nan], [np.nan] * 5])
    np.testing.assert_allclose(fill_nonfinite(y), [[1, 1, 2, 3, 3], [0, 0, 0, 0, 0]])


# --- enhancement test -------------------------------------------------------
def bland(seed: int, cv: float, mean: float = 1e-3) -> np.ndarray:
    """Thrombus-like ROI mean: constant, gamma (summed-exponential) speckle noise."""
    shape = 1.0 / cv**2
    return mean * np.random.default_rng(seed).gamma(shape, 1.0 / shape, T.size)


@pytest.mark.parametrize("cv", [0.1, 0.15, 0.2])
def test_enhancement_bland_vs_bolus(cv: float) -> None:
    seeds = range(20)
    bl = np.stack([bland(s, cv) for s in seeds])
    enh, z, details = enhancement_test(T, bl)
    assert not enh.any(), z
    assert details["baseline"] == pytest.approx(np.full(20, 1e-3), rel=0.1)
    shape = 1.0 / cv**2
    rng = np.random.default_rng(99)
    bolus = one_bolus(6.0) * rng.gamma(shape, 1.0 / shape, (20, T.size))
    enh, z, details = enhancement_test(T, bolus)
    assert enh.all() and np.all(z > ENHANCEMENT_Z)
    assert np.all(details["peak_to_baseline_db"] > ENHANCEMENT_MIN_DB)
    # a real but tiny (0.5 dB) rise is not called enhancing
    small = one_bolus(0.5) * rng.gamma(shape, 1.0 / shape, (20, T.size))
    enh, _, _ = enhancement_test(T, small)
    assert not enh.any()


def test_enhancement_test_screens_fits() -> None:
    noisy_bolus = one_bolus(6.0) * (1 + 0.15 * np.random.default_rng(2).standard_normal(T.size))
    y = np.stack([bland(1, 0.15), noisy_bolus])
    res = fit_curves(MODEL, T, y)
    assert list(res.labels()) == ["no-enhancement", "ok"]


def test_enhancement_test_edge_cases() -> None:
    enh, z, _ = enhancement_test(T, np.full((2, T.size), np.nan))
    assert not enh.any() and np.all(np.isnan(z))
    enh, _, _ = enhancement_test(T, np.full(T.size, 2.0))  # perfectly flat
    assert not enh
    enh, _, _ = enhancement_test(T, one_bolus(3.0))  # noise-free bolus
    assert enh
    # early arrival: bolus inside the first 10 % of the curve
    early = np.roll(one_bolus(6.0), -80) * np.random.default_rng(3).gamma(44, 1 / 44, T.size)
    enh, _, details = enhancement_test(T, early)
    # the window stops before the half-rise: the mean stays near the true
    # baseline (a little above it, which only makes the test conservative)
    assert enh and details["baseline"] == pytest.approx(1e-3, rel=0.25)
    assert details["n_baseline"] < 90
    assert enhancement_test(T, np.ones((3, 4, T.size)))[0].shape == (3, 4)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("backend", ["auto", "numpy"])
def test_flat_curve_with_a_huge_spike_is_screened_silently(backend: str) -> None:
    zeros = np.zeros(T.size)
    zeros[450] = 1e6
    flat = np.full(T.size, 0.1)
    flat[300] = 1e200
    enh, z, details = enhancement_test(T, np.stack([zeros, flat]), backend=backend)
    # noise-free curves (sigma at its floor): any rise is infinitely significant
    assert np.all(z == np.inf) and enh.all()
    assert details["peak_to_baseline_db"][0] == np.inf and np.isfinite(details["peak_to_baseline_db"][1])


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("backend", ["auto", "numpy"])
def test_overflowing_curves_fail_instead_of_raising(backend: str) -> None:
    good = one_bolus(10.0, base=0.1) + np.random.default_rng(20).normal(0.0, 0.03, T.size)
    # squares of 1e160 and 1e200 overflow: cost and J^T W J are not finite
    y = np.stack([good, good * 1e100, good * 1e160, good * 1e200])
    res = fit_curves(MODEL, T, y, backend=backend)
    assert list(res.labels()) == ["ok", "ok", "failed", "failed"]
    assert np.all(np.isnan(res.params[2:])) and np.all(np.isnan(res.stderr[2:]))
    ttp = MODEL.time_to_peak(res.params[:2], T)
    assert ttp[1] == pytest.approx(ttp[0], rel=0.05)


def test_descriptors_of_a_non_bolus_model() -> None:
    model = get_model("replenishment")
    t = np.arange(200) * 0.1
    p = np.array([[1.0, 0.5, 1.0, 0.05], [2.0, 1.5, 3.0, 0.1]])
    y = model.predict(p, t) + np.random.default_rng(21).normal(0.0, 0.01, (2, t.size))
    res = fit_curves(model, t, y)
    assert np.all(res.usable)
    d = res.descriptors(t[-1])
    # no peak, no wash-out: the peak-based descriptors do not exist
    for key in descriptors.PEAK_DESCRIPTORS:
        assert np.all(np.isnan(d[key])), key
    # the others are the closed forms (those of fast_descriptors)
    fast = fast_descriptors(res, t[-1])
    for key in ("arrival_time_s", "wash_in_rate", "auc"):
        np.testing.assert_array_equal(d[key], fast[key])
    np.testing.assert_allclose(d["arrival_time_s"], p[:, 2], atol=0.1)
    np.testing.assert_allclose(d["wash_in_rate"], p[:, 0] * p[:, 1], rtol=0.1)

    class NoClosedForms(type(model)):  # type: ignore[misc]
        def closed_form_descriptors(self, *args: object, **kwargs: object) -> None:
            return None

    grid = FitResult(
        model=NoClosedForms(), params=res.params, stderr=res.stderr, qof=res.qof, sse=res.sse,
        status=res.status, n_iter=res.n_iter,
    ).descriptors(t[-1])
    for key in descriptors.PEAK_DESCRIPTORS:
        assert np.all(np.isnan(grid[key])), key
    np.testing.assert_allclose(grid["auc"], d["auc"], rtol=1e-3)
    np.testing.assert_allclose(grid["arrival_time_s"], d["arrival_time_s"], atol=0.1)
