"""Tests of the bolus models: formula, analytic Jacobian, closed forms, guesses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ceuskit.kinetics import descriptors
from ceuskit.kinetics.models import (
    MODELS,
    BolusModel,
    LognormalModel,
    get_model,
    masked_median,
    moving_average,
)

MODEL = LognormalModel()


def lognormal_params(rng: np.random.Generator, m: int, *, peak: float | np.ndarray = 1.0) -> np.ndarray:
    """Realistic lognormal parameters: t0 5-15 s, mode 3-15 s after t0, sigma 0.3-1."""
    t0 = rng.uniform(5.0, 15.0, m)
    mode = rng.uniform(3.0, 15.0, m)
    sigma = rng.uniform(0.3, 1.0, m)
    mu = np.log(mode) + sigma**2
    pk = np.broadcast_to(np.asarray(peak, dtype=float), (m,))
    area = pk * sigma * math.sqrt(2 * math.pi) * np.exp(mu - 0.5 * sigma**2)
    return np.stack([area, mu, sigma, t0, 0.05 * pk], axis=-1)


def test_registry() -> None:
    assert isinstance(get_model("lognormal"), LognormalModel)
    assert MODELS["lognormal"].name == "lognormal"
    with pytest.raises(ValueError, match="unknown perfusion model"):
        get_model("gamma-variate-typo")


def test_metadata() -> None:
    assert MODEL.param_names == ("area", "mu", "sigma", "t0", "baseline")
    assert len(MODEL.param_units) == MODEL.n_params == 5
    assert MODEL.index("t0") == 3
    with pytest.raises(ValueError, match="no parameter"):
        MODEL.index("beta")


def test_shapes_and_broadcasting() -> None:
    rng = np.random.default_rng(0)
    p = lognormal_params(rng, 12).reshape(3, 4, 5)
    t = np.linspace(0, 60, 101)
    y = MODEL.predict(p, t)
    assert y.shape == (3, 4, 101)
    assert MODEL.jacobian(p, t).shape == (3, 4, 101, 5)
    # per-curve time axes give the same values
    tt = np.broadcast_to(t, (3, 4, 101))
    np.testing.assert_array_equal(MODEL.predict(p, tt), y)
    # one curve
    assert MODEL.predict(p[0, 0], t).shape == (101,)
    np.testing.assert_allclose(MODEL.predict(p[1, 2], t), y[1, 2])
    assert MODEL.baseline(p).shape == (3, 4)
    with pytest.raises(ValueError):
        MODEL.predict(np.ones(4), t)


def test_baseline_before_arrival() -> None:
    p = np.array([10.0, 2.0, 0.5, 10.0, 0.3])
    t = np.array([0.0, 5.0, 9.999, 10.0, 10.0 + 1e-300, 10.0 + 1e-12, 10.5, 30.0])
    y = MODEL.predict(p, t)
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y[:6], 0.3)
    assert y[-2] > 0.3 and y[-1] > 0.3


def test_jacobian_matches_central_differences() -> None:
    rng = np.random.default_rng(1)
    p = lognormal_params(rng, 200, peak=rng.uniform(0.01, 10.0, 200))
    p[:, 4] = rng.uniform(-1.0, 1.0, 200)
    t = np.linspace(0.0, 90.0, 451)
    jac = MODEL.jacobian(p, t)
    fd = np.empty_like(jac)
    for j in range(5):
        h = 1e-6 * np.maximum(np.abs(p[:, j]), 1.0)
        dp = np.zeros_like(p)
        dp[:, j] = h
        fd[..., j] = (MODEL.predict(p + dp, t) - MODEL.predict(p - dp, t)) / (2 * h[:, None])
    scale = np.max(np.abs(jac), axis=-2, keepdims=True)
    np.testing.assert_allclose(jac, fd, rtol=1e-5, atol=1e-6 * scale.max())
    # columnwise, relative to each derivative's own size
    assert np.all(np.abs(jac - fd) <= 1e-5 * scale + 1e-12)


def test_jacobian_safe_at_and_before_arrival() -> None:
    p = np.array([[5.0, 1.5, 0.05, 0.0, 1.0], [5.0, 1.5, 3.0, 0.0, 1.0]])
    tau = np.array([-5.0, -1e-300, 0.0, 5e-324, 1e-300, 1e-200, 1e-100, 1e-3, 1.0])
    jac = MODEL.jacobian(p, tau)
    assert np.all(np.isfinite(jac))
    np.testing.assert_array_equal(jac[..., :3, :4], 0.0)
    np.testing.assert_array_equal(jac[..., 4], 1.0)
    # all derivatives vanish as tau -> 0+ (the bolus is flat at arrival)
    np.testing.assert_array_equal(jac[..., 3:7, :4], 0.0)
    assert np.all(np.abs(jac[:, -1, :4]) > 0)
    y = MODEL.predict(p, tau)
    assert np.all(np.isfinite(y))


def test_closed_forms_match_dense_descriptors() -> None:
    rng = np.random.default_rng(2)
    p = lognormal_params(rng, 20, peak=rng.uniform(0.1, 5.0, 20))
    dt = 0.01
    grid = descriptors.dense_grid(90.0, dt, extend_to_s=2000.0)
    curves = MODEL.predict(p, grid)
    d = descriptors.curve_descriptors(grid, curves, MODEL.baseline(p), t_end_s=90.0)
    assert np.all(np.abs(d["time_to_peak_s"] - MODEL.mode(p)) <= dt)
    np.testing.assert_allclose(d["peak_enhancement"], MODEL.peak(p), rtol=1e-3)
    # first moment = mTT + TI on the dense grid
    np.testing.assert_allclose(d["mean_transit_time_s"], MODEL.mean_time(p) - d["arrival_time_s"], rtol=2e-3)
    # the numeric default of the base class agrees with the closed form
    t = np.linspace(0.0, 90.0, 901)
    ttp_num = BolusModel.time_to_peak(MODEL, p, t)
    assert np.all(np.abs(ttp_num - MODEL.mode(p)) < 0.1)
    np.testing.assert_allclose(MODEL.time_to_peak(p, t), MODEL.mode(p))


def test_initial_guess_inside_bounds_and_close() -> None:
    rng = np.random.default_rng(3)
    p = lognormal_params(rng, 100)
    t = np.arange(900) * 0.1
    y = MODEL.predict(p, t) + rng.normal(0.0, 0.1, (100, 900))
    g = MODEL.initial_guess(t, y)
    lo, hi = MODEL.bounds(t, y)
    assert g.shape == lo.shape == hi.shape == (100, 5)
    assert np.all((lo <= g) & (g <= hi))
    assert np.all((lo <= p) & (p <= hi))
    rel_mode = np.abs(MODEL.mode(g) - MODEL.mode(p)) / MODEL.mode(p)
    assert np.median(rel_mode) < 0.1
    rel_area = np.abs(g[:, 0] - p[:, 0]) / p[:, 0]
    assert np.median(rel_area) < 0.2
    assert np.median(np.abs(g[:, 4] - p[:, 4])) < 0.03  # noise sd is 0.1


def test_bounds_box() -> None:
    t = np.linspace(10.0, 70.0, 61)
    y = np.linspace(1.0, 2.0, 61)
    lo, hi = MODEL.bounds(t, y)
    assert lo[0] == 0 and lo[2] == 0.05 and hi[2] == 3.0
    assert lo[3] == pytest.approx(-20.0) and hi[3] == pytest.approx(70.0)
    assert lo[4] == 1.0 and hi[4] == 2.0


def test_helpers() -> None:
    rng = np.random.default_rng(4)
    y = rng.normal(size=(7, 50))
    mask = rng.random((7, 50)) < 0.5
    mask[0] = False
    med = masked_median(y, mask)
    assert np.isnan(med[0])
    for i in range(1, 7):
        assert med[i] == pytest.approx(np.median(y[i, mask[i]]))
    ma = moving_average(y, 5)
    np.testing.assert_allclose(ma[:, 2:-2], np.stack([np.convolve(r, np.ones(5) / 5, "valid") for r in y]))
    np.testing.assert_allclose(ma[:, 0], y[:, :3].mean(axis=-1))
