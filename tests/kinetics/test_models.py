"""Tests of the bolus models: formula, analytic Jacobian, closed forms, guesses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ceuskit.kinetics import descriptors
from ceuskit.kinetics.models import (
    ALPHA_BOUNDS,
    LAMBDA_BOUNDS,
    MODELS,
    REPLENISHMENT_UNITS,
    BolusModel,
    GammaVariateModel,
    LDRWModel,
    LognormalModel,
    ReplenishmentModel,
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


# --- gamma variate, LDRW, replenishment ------------------------------------------
BOLUS_MODELS = ("lognormal", "gamma", "ldrw")


def bolus_params(
    name: str, rng: np.random.Generator, m: int, *, peak: float | np.ndarray = 1.0, skewed: bool = False
) -> np.ndarray:
    """Realistic bolus parameters: t0 5-15 s, mode 3-15 s after t0, given peak height.

    Shapes: lognormal sigma 0.3-1; gamma alpha 2-20 (1.5-5 if ``skewed``);
    LDRW lambda 1-30 (1-5 if ``skewed``).  Baseline = 5 % of the peak.
    """
    model = get_model(name)
    t0 = rng.uniform(5.0, 15.0, m)
    mode = rng.uniform(3.0, 15.0, m)
    pk = np.broadcast_to(np.asarray(peak, dtype=float), (m,))
    if name == "lognormal":
        sigma = rng.uniform(0.3, 1.0, m)
        p = np.stack([np.ones(m), np.log(mode) + sigma**2, sigma, t0, 0.05 * pk], axis=-1)
    elif name == "gamma":
        alpha = rng.uniform(1.5, 5.0, m) if skewed else rng.uniform(2.0, 20.0, m)
        p = np.stack([np.ones(m), alpha, mode / alpha, t0, 0.05 * pk], axis=-1)
    elif name == "ldrw":
        lam = rng.uniform(1.0, 5.0, m) if skewed else rng.uniform(1.0, 30.0, m)
        x_mode = (np.sqrt(1.0 + 4.0 * lam**2) - 1.0) / (2.0 * lam)
        p = np.stack([np.ones(m), mode / x_mode, lam, t0, 0.05 * pk], axis=-1)
    else:
        raise ValueError(name)
    p[:, 0] = pk / model.peak(p)  # type: ignore[attr-defined]
    return p


def replenishment_params(rng: np.random.Generator, m: int) -> np.ndarray:
    """Plateau 0.5-2, beta 0.1-1 /s, t0 0.5-3 s, baseline 0-0.1."""
    area, beta = rng.uniform(0.5, 2.0, m), rng.uniform(0.1, 1.0, m)
    return np.stack([area, beta, rng.uniform(0.5, 3.0, m), rng.uniform(0, 0.1, m)], axis=-1)


def all_params(name: str, rng: np.random.Generator, m: int) -> np.ndarray:
    if name == "replenishment":
        return replenishment_params(rng, m)
    return bolus_params(name, rng, m, peak=rng.uniform(0.01, 10.0, m))


def test_registry_of_all_models() -> None:
    assert set(MODELS) == {"lognormal", "gamma", "ldrw", "replenishment"}
    assert isinstance(get_model("gamma"), GammaVariateModel)
    assert isinstance(get_model("ldrw"), LDRWModel)
    assert isinstance(get_model("replenishment"), ReplenishmentModel)
    for name, model in MODELS.items():
        assert model.name == name
        assert len(model.param_names) == len(model.param_units) == model.n_params
        assert "baseline" in model.param_names
    assert [m.is_bolus for m in MODELS.values()] == [True, True, True, False]
    assert get_model("replenishment").param_names == ("area", "beta", "t0", "baseline")


@pytest.mark.parametrize("name", ["gamma", "ldrw", "replenishment"])
def test_new_models_shapes(name: str) -> None:
    model = get_model(name)
    p = all_params(name, np.random.default_rng(20), 12).reshape(3, 4, -1)
    t = np.linspace(0, 60, 101)
    y = model.predict(p, t)
    assert y.shape == (3, 4, 101)
    assert model.jacobian(p, t).shape == (3, 4, 101, model.n_params)
    np.testing.assert_array_equal(model.predict(p, np.broadcast_to(t, (3, 4, 101))), y)
    np.testing.assert_allclose(model.predict(p[1, 2], t), y[1, 2])
    np.testing.assert_array_equal(model.baseline(p), p[..., -1])
    with pytest.raises(ValueError):
        model.predict(np.ones(model.n_params + 1), t)


@pytest.mark.parametrize("name", ["gamma", "ldrw", "replenishment"])
def test_new_models_jacobian_matches_central_differences(name: str) -> None:
    model = get_model(name)
    rng = np.random.default_rng(21)
    p = all_params(name, rng, 200)
    p[:, -1] = rng.uniform(-1.0, 1.0, 200)
    if name == "gamma":
        p[:10, 1] = rng.uniform(1.0, 1.2, 10)  # near the alpha = 1 bound
    t = np.linspace(0.0, 90.0, 451)
    jac = model.jacobian(p, t)
    fd = np.empty_like(jac)
    for j in range(model.n_params):
        h = 1e-6 * np.maximum(np.abs(p[:, j]), 1.0)
        dp = np.zeros_like(p)
        dp[:, j] = h
        fd[..., j] = (model.predict(p + dp, t) - model.predict(p - dp, t)) / (2 * h[:, None])
    ok = np.ones(jac.shape[:-1], dtype=bool)
    i_t0 = model.index("t0")
    # Where t0 sits within h of a sample, the difference quotient straddles
    # arrival: only the replenishment curve has a kink there.
    ok &= np.abs(t[None, :] - p[:, i_t0, None]) > 1e-4 * np.maximum(np.abs(p[:, i_t0, None]), 1.0)
    scale = np.max(np.abs(jac), axis=-2, keepdims=True)
    err = np.abs(jac - fd) <= 1e-5 * scale + 1e-12
    assert np.all(err[ok]), np.argwhere(~err & ok[..., None])[:5]


@pytest.mark.parametrize("name", ["gamma", "ldrw", "replenishment"])
def test_new_models_safe_at_and_before_arrival(name: str) -> None:
    model = get_model(name)
    lo_hi = {
        "gamma": [[5.0, 1.0, 0.1, 0.0, 1.0], [5.0, 400.0, 0.01, 0.0, 1.0], [5.0, 3.0, 2.0, 0.0, 1.0]],
        "ldrw": [[5.0, 0.1, 0.05, 0.0, 1.0], [5.0, 10.0, 1000.0, 0.0, 1.0], [5.0, 3.0, 2.0, 0.0, 1.0]],
        "replenishment": [[5.0, 0.01, 0.0, 1.0], [5.0, 40.0, 0.0, 1.0], [5.0, 1.0, 0.0, 1.0]],
    }[name]
    p = np.array(lo_hi)
    tau = np.array([-5.0, -1e-300, 0.0, 5e-324, 1e-300, 1e-200, 1e-100, 1e-3, 1.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        jac = model.jacobian(p, tau)
        y = model.predict(p, tau)
    assert np.all(np.isfinite(jac)) and np.all(np.isfinite(y))
    np.testing.assert_array_equal(jac[..., :3, :-1], 0.0)  # before and at arrival
    np.testing.assert_array_equal(jac[..., -1], 1.0)
    np.testing.assert_array_equal(y[:, :3], 1.0)
    if name == "ldrw":
        # the bolus leaves the baseline flat (all derivatives vanish as tau -> 0+)
        np.testing.assert_array_equal(jac[..., 3:7, :-1], 0.0)
    if name == "gamma":
        # alpha > 1: flat start; alpha = 1: finite slope jump (d f / d t0 -> -A / beta^2)
        np.testing.assert_array_equal(jac[1:, 3:6, :-1], 0.0)
        assert jac[0, 3, 3] == pytest.approx(-5.0 / 0.1**2)
    assert np.all(np.abs(jac[2, -1, :-1]) > 0)  # a moderate curve 1 s after arrival


@pytest.mark.parametrize("name", ["gamma", "ldrw"])
def test_bolus_closed_forms_match_dense_grid(name: str) -> None:
    model = get_model(name)
    rng = np.random.default_rng(22)
    p = bolus_params(name, rng, 20, peak=rng.uniform(0.1, 5.0, 20))
    dt = 0.01
    grid = descriptors.dense_grid(90.0, dt, extend_to_s=1000.0)
    curves = model.predict(p, grid)
    # unit area: the area above baseline is the parameter A
    area = np.sum(0.5 * (curves[:, 1:] + curves[:, :-1] - 2 * p[:, 4:5]) * dt, axis=-1)
    np.testing.assert_allclose(area, p[:, 0], rtol=1e-6)
    d = descriptors.curve_descriptors(grid, curves, model.baseline(p), t_end_s=90.0)
    assert np.all(np.abs(d["time_to_peak_s"] - model.mode(p)) <= dt)  # type: ignore[attr-defined]
    np.testing.assert_allclose(d["peak_enhancement"], model.peak(p), rtol=1e-4)  # type: ignore[attr-defined]
    np.testing.assert_allclose(
        d["mean_transit_time_s"] + d["arrival_time_s"], model.mean_time(p), rtol=1e-4  # type: ignore[attr-defined]
    )
    np.testing.assert_allclose(model.time_to_peak(p, grid[:9001]), model.mode(p))  # type: ignore[attr-defined]
    ttp_num = BolusModel.time_to_peak(model, p, np.linspace(0.0, 90.0, 901))
    assert np.all(np.abs(ttp_num - model.mode(p)) < 0.1)  # type: ignore[attr-defined]


def test_ldrw_first_moment_is_not_mu() -> None:
    # the LDRW literature's "mean transit time" mu vs the curve's first moment
    p = np.array([1.0, 10.0, 2.0, 0.0, 0.0])
    model = LDRWModel()
    assert model.mean_time(p) == pytest.approx(15.0)
    x_mode = (math.sqrt(17.0) - 1.0) / 4.0
    assert model.mode(p) == pytest.approx(10.0 * x_mode)


def test_gamma_closed_forms_explicit() -> None:
    model = GammaVariateModel()
    p = np.array([3.0, 4.0, 2.0, 5.0, 0.1])
    assert model.mode(p) == pytest.approx(13.0)
    assert model.mean_time(p) == pytest.approx(15.0)
    # classical form K tau^alpha exp(-tau / beta) with K = A / (beta^(alpha+1) Gamma(alpha+1))
    k = 3.0 / (2.0**5 * math.gamma(5.0))
    tau = np.array([1.0, 8.0, 20.0])
    np.testing.assert_allclose(model.predict(p, tau + 5.0), 0.1 + k * tau**4 * np.exp(-tau / 2.0))
    assert model.peak(p) == pytest.approx(k * 8.0**4 * math.exp(-4.0))


def test_replenishment_formula_and_derived() -> None:
    model = ReplenishmentModel()
    p = np.array([[2.0, 0.5, 1.0, 0.1], [1.0, 0.25, 0.0, 0.0]])
    t = np.array([0.0, 1.0, 3.0, 100.0])
    y = model.predict(p, t)
    np.testing.assert_allclose(y[0], [0.1, 0.1, 0.1 + 2 * (1 - math.exp(-1.0)), 2.1])
    d = model.derived(p)
    np.testing.assert_allclose(d["relative_blood_volume"], [2.0, 1.0])
    np.testing.assert_allclose(d["wash_in_rate"], [1.0, 0.25])
    np.testing.assert_allclose(d["mean_transit_time_s"], [2.0, 4.0])
    np.testing.assert_allclose(d["perfusion_index"], [1.0, 0.25])
    assert set(d) == set(REPLENISHMENT_UNITS)
    # the initial slope is WiR
    slope = (model.predict(p, [1.0 + 1e-6, 0.0 + 1e-6]) - p[:, 3:4])[[0, 1], [0, 1]] / 1e-6
    np.testing.assert_allclose(slope, d["wash_in_rate"], rtol=1e-5)
    # "time to peak" = time to 95 % of the plateau (no peak exists)
    np.testing.assert_allclose(model.time_to_peak(p, t), p[:, 2] + math.log(20.0) / p[:, 1])


@pytest.mark.parametrize("name", ["gamma", "ldrw", "replenishment"])
def test_new_models_initial_guess_inside_bounds_and_close(name: str) -> None:
    model = get_model(name)
    rng = np.random.default_rng(23)
    p = replenishment_params(rng, 100) if name == "replenishment" else bolus_params(name, rng, 100)
    t = np.arange(900) * 0.1
    clean = model.predict(p, t)
    y = clean + rng.normal(0.0, 0.1, (100, 900))
    g = model.initial_guess(t, y)
    lo, hi = model.bounds(t, y)
    assert g.shape == lo.shape == hi.shape == (100, model.n_params)
    assert np.all((lo <= g) & (g <= hi))
    assert np.all((lo <= p) & (p <= hi))
    assert np.median(np.abs(g[:, -1] - p[:, -1])) < 0.03  # baseline; noise sd is 0.1
    if name == "replenishment":
        assert np.median(np.abs(g[:, 0] - p[:, 0]) / p[:, 0]) < 0.1
        assert np.median(np.abs(g[:, 1] - p[:, 1]) / p[:, 1]) < 0.3
        assert np.median(np.abs(g[:, 2] - p[:, 2])) < 0.5
    else:
        rel_mode = np.abs(model.mode(g) - model.mode(p)) / (model.mode(p) - p[:, 3])  # type: ignore[attr-defined]
        assert np.median(rel_mode) < 0.1
        assert np.median(np.abs(g[:, 0] - p[:, 0]) / p[:, 0]) < 0.2


def test_new_models_bounds() -> None:
    t = np.linspace(10.0, 70.0, 61)
    y = np.linspace(1.0, 2.0, 61)
    lo, hi = GammaVariateModel().bounds(t, y)
    assert (lo[1], hi[1]) == ALPHA_BOUNDS and lo[2] == pytest.approx(1e-3) and hi[2] == pytest.approx(600.0)
    lo, hi = LDRWModel().bounds(t, y)
    assert (lo[2], hi[2]) == LAMBDA_BOUNDS and lo[1] == pytest.approx(0.25) and hi[1] == pytest.approx(600.0)
    lo, hi = ReplenishmentModel().bounds(t, y)
    assert lo[1] == pytest.approx(0.01 / 60.0) and hi[1] == pytest.approx(4.0)
    for model in (GammaVariateModel(), LDRWModel(), ReplenishmentModel()):
        lo, hi = model.bounds(t, y)
        assert lo[model.index("t0")] == pytest.approx(-20.0) and hi[model.index("t0")] == pytest.approx(70.0)
        assert lo[-1] == 1.0 and hi[-1] == 2.0
