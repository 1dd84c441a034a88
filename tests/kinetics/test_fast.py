"""Closed-form descriptors == dense-grid descriptors: one definition, two implementations."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ceuskit.kinetics import descriptors
from ceuskit.kinetics.fast import fast_descriptors
from ceuskit.kinetics.fit import FitResult, FitStatus
from ceuskit.kinetics.models import (
    CLOSED_FORM_MIN_STEPS,
    LognormalModel,
    get_model,
)

from .test_models import BOLUS_MODELS, bolus_params, replenishment_params

T_END = 90.0
KEYS = [*descriptors.DESCRIPTOR_UNITS, "peak_in_acquisition"]


def ok_result(model, p: np.ndarray) -> FitResult:  # type: ignore[no-untyped-def]
    """A FitResult holding parameters ``p (..., P)``, every curve OK."""
    batch = p.shape[:-1]
    return FitResult(
        model, p, np.full_like(p, np.nan), np.ones(batch), np.ones(batch),
        np.zeros(batch, np.int8), np.ones(batch, np.int32),
    )


def grid_descriptors(model, p, dt, ext=None):  # type: ignore[no-untyped-def]
    ext = max(4 * T_END, 300.0) if ext is None else ext
    grid = descriptors.dense_grid(T_END, dt, extend_to_s=ext)
    return descriptors.curve_descriptors(grid, model.predict(p, grid), model.baseline(p), t_end_s=T_END)


def broad_params(name: str, rng: np.random.Generator, m: int) -> np.ndarray:
    """Shapes over most of each model's box, arrival from -3 s to 20 s, mode 0.5-30 s."""
    t0 = rng.uniform(-3.0, 20.0, m)
    mode = np.exp(rng.uniform(np.log(0.5), np.log(30.0), m))
    area = rng.uniform(1.0, 100.0, m)
    base = rng.uniform(0.0, 1.0, m)
    if name == "lognormal":
        sigma = rng.uniform(0.05, 2.0, m)
        return np.stack([area, np.log(mode) + sigma**2, sigma, t0, base], axis=-1)
    if name == "gamma":
        alpha = np.exp(rng.uniform(0.0, np.log(400.0), m))
        return np.stack([area, alpha, mode / alpha, t0, base], axis=-1)
    lam = np.exp(rng.uniform(np.log(0.05), np.log(1000.0), m))
    x_mode = 2 * lam / (1 + np.sqrt(1 + 4 * lam**2))
    return np.stack([area, mode / x_mode, lam, t0, base], axis=-1)


def assert_equal_descriptors(c, g, dt, curv_rtol):  # type: ignore[no-untyped-def]
    """Closed form ``c`` vs grid ``g``, tolerances from the grid's resolution.

    The grid reads TTP on its nodes (within dt/2), so TTP, rise and fall times
    may differ by dt/2 and the areas bounded by TTP by PE dt/2; tangent
    crossings (TI, TO) and the first moment are stationary in the node
    position (errors O(dt^2)); areas agree to O(dt^2); PE and the slopes,
    read at the node nearest to an extremum, to ``curv_rtol`` ~ (dt / w)^2
    with w the feature's width.
    """
    for key in KEYS:
        assert np.array_equal(np.isnan(c[key]), np.isnan(g[key])), key
    pe = c["peak_enhancement"]
    np.testing.assert_array_less(np.abs(c["time_to_peak_s"] - g["time_to_peak_s"]), 0.5 * dt + 1e-9)
    for key in ("arrival_time_s", "wash_out_end_s", "mean_transit_time_s"):
        np.testing.assert_array_less(np.abs(c[key] - g[key]), 0.25 * dt, err_msg=key)
    for key in ("rise_time_s", "fall_time_s"):  # TTP's and TI's (TO's) errors add up
        np.testing.assert_array_less(np.abs(c[key] - g[key]), 0.75 * dt, err_msg=key)
    np.testing.assert_allclose(g["auc"], c["auc"], rtol=1e-3)
    for key in ("peak_enhancement", "wash_in_rate", "wash_out_rate"):
        np.testing.assert_array_less(np.abs(c[key] - g[key]), curv_rtol * np.abs(c[key]), err_msg=key)
    for key in ("wash_in_auc", "wash_out_auc"):
        tol = 1e-3 * np.abs(c[key]) + 0.5 * pe * dt * 1.01
        np.testing.assert_array_less(np.abs(c[key] - g[key]), tol, err_msg=key)
    # WiPI = WiAUC / RT: the two relative tolerances add up
    rel = 1e-3 + 0.51 * pe * dt / c["wash_in_auc"] + 0.51 * dt / c["rise_time_s"]
    np.testing.assert_array_less(
        np.abs(c["wash_in_perfusion_index"] - g["wash_in_perfusion_index"]),
        rel * c["wash_in_perfusion_index"],
    )
    near_end = np.abs(c["time_to_peak_s"] - T_END) < dt
    assert np.array_equal(c["peak_in_acquisition"][~near_end], g["peak_in_acquisition"][~near_end])


@pytest.mark.parametrize("name", BOLUS_MODELS)
def test_closed_form_equals_grid_realistic(name: str) -> None:
    model = get_model(name)
    rng = np.random.default_rng(30)
    p = bolus_params(name, rng, 150, peak=rng.uniform(0.01, 10.0, 150))
    dt = 0.01
    c = model.closed_form_descriptors(p, T_END, dt_s=dt)
    assert c is not None
    assert all(c[k].shape == (150,) for k in KEYS)
    assert np.all(np.isfinite(c["time_to_peak_s"]))  # every realistic curve is covered
    g = grid_descriptors(model, p, dt)
    assert_equal_descriptors(c, g, dt, curv_rtol=1e-3)


@pytest.mark.parametrize("name", BOLUS_MODELS)
def test_closed_form_equals_grid_broad_and_default_step(name: str) -> None:
    # Extreme shapes, early arrivals, the default step of FitResult.descriptors:
    # curves the grid cannot reproduce are NaN (left to the grid), the rest
    # agree within the grid's discretisation error.
    model = get_model(name)
    p = broad_params(name, np.random.default_rng(31), 200)
    dt = 0.05
    c = model.closed_form_descriptors(p, T_END, dt_s=dt)
    assert c is not None
    covered = np.isfinite(c["time_to_peak_s"])
    assert 0.6 < covered.mean() < 1.0
    for key in KEYS:  # all or nothing per curve
        assert np.all(np.isnan(c[key][~covered])), key
    g = grid_descriptors(model, p[covered], dt)
    cc = {k: v[covered] for k, v in c.items()}
    # slopes: O((dt / w)^2) with w >= CLOSED_FORM_MIN_STEPS dt; measured worst
    # case over 1,000 such curves: 5.7 % (WiR), 0.6 % (PE), TI 0.16 dt
    assert_equal_descriptors(cc, g, dt, curv_rtol=1.5 / CLOSED_FORM_MIN_STEPS**2)


def test_uncovered_curves_are_what_the_grid_cannot_resolve() -> None:
    model = LognormalModel()
    sigma = 0.5
    mu = np.log(6.0) + sigma**2
    p = np.array(
        [
            [10.0, mu, sigma, 10.0, 0.0],  # ordinary
            [10.0, mu, sigma, -6.0, 0.0],  # peak at 0: wash-in before the grid starts
            [10.0, np.log(0.05) + 0.01, 0.1, 10.0, 0.0],  # 50 ms bolus
            [10.0, np.log(2000.0), sigma, 10.0, 0.0],  # wash-out after the grid ends
            [0.0, mu, sigma, 10.0, 0.0],  # no bolus
        ]
    )
    c = model.closed_form_descriptors(p, T_END)
    assert c is not None
    assert np.isfinite(c["time_to_peak_s"]).tolist() == [True, False, False, False, False]


@pytest.mark.parametrize("name", BOLUS_MODELS)
def test_fast_descriptors_equal_fitresult_descriptors(name: str) -> None:
    model = get_model(name)
    rng = np.random.default_rng(32)
    p = np.concatenate([bolus_params(name, rng, 8), broad_params(name, rng, 16)])
    status = np.full(24, int(FitStatus.OK), dtype=np.int8)
    status[[1, 5]] = FitStatus.NO_ENHANCEMENT
    status[2] = FitStatus.PEAK_OUTSIDE
    status[3] = FitStatus.MAX_ITER
    p[[1, 5]] = np.nan
    res = FitResult(
        model=model,
        params=p.reshape(4, 6, 5),
        stderr=np.full((4, 6, 5), np.nan),
        qof=np.ones((4, 6)),
        sse=np.ones((4, 6)),
        status=status.reshape(4, 6),
        n_iter=np.ones((4, 6), dtype=np.int32),
    )
    fast = fast_descriptors(res, T_END)
    slow = res.descriptors(T_END)
    assert set(fast) == set(slow) == set(KEYS)
    covered = np.isfinite(model.closed_form_descriptors(p, T_END)["time_to_peak_s"]).reshape(4, 6)  # type: ignore[index]
    assert covered.any() and (~covered & res.usable).any()  # both paths exercised
    for key in KEYS:
        assert fast[key].shape == (4, 6)
        assert np.all(np.isnan(fast[key][~res.usable])), key
        # the grid fallback is the grid
        np.testing.assert_array_equal(fast[key][~covered & res.usable], slow[key][~covered & res.usable])
    cc = {k: v[covered] for k, v in fast.items()}
    gg = {k: v[covered] for k, v in slow.items()}
    assert_equal_descriptors(cc, gg, 0.05, curv_rtol=1.5 / CLOSED_FORM_MIN_STEPS**2)


def test_model_without_closed_forms_uses_the_grid() -> None:
    class GridOnly(LognormalModel):
        def closed_form_descriptors(self, params, t_end_s, *, extend_to_s=None, dt_s=0.05):  # type: ignore[no-untyped-def]
            return None

    p = bolus_params("lognormal", np.random.default_rng(33), 3)
    res = ok_result(GridOnly(), p)
    fast = fast_descriptors(res, T_END)
    slow = res.descriptors(T_END)
    for key in KEYS:
        np.testing.assert_array_equal(fast[key], slow[key])


def test_replenishment_closed_forms() -> None:
    model = get_model("replenishment")
    rng = np.random.default_rng(34)
    p = replenishment_params(rng, 50)
    c = model.closed_form_descriptors(p, T_END)
    assert c is not None and set(c) == set(KEYS)
    np.testing.assert_array_equal(c["arrival_time_s"], p[:, 2])
    np.testing.assert_allclose(c["wash_in_rate"], p[:, 0] * p[:, 1])
    np.testing.assert_allclose(c["wash_in_rate"], model.derived(p)["wash_in_rate"])  # type: ignore[attr-defined]
    peak_keys = set(KEYS) - {"arrival_time_s", "wash_in_rate", "auc"}
    for key in peak_keys:  # no peak, no wash-out: not a bolus
        assert np.all(np.isnan(c[key])), key
    # the quantities that exist agree with the grid (the kink at t0 costs the
    # grid's slope O(beta dt) and its tangent crossing O(dt))
    dt = 0.005
    g = grid_descriptors(model, p, dt, ext=T_END)
    np.testing.assert_allclose(g["auc"], c["auc"], rtol=1e-4)
    np.testing.assert_allclose(g["wash_in_rate"], c["wash_in_rate"], rtol=2 * p[:, 1].max() * dt)
    np.testing.assert_array_less(np.abs(g["arrival_time_s"] - c["arrival_time_s"]), dt)
    # and fast_descriptors keeps the NaNs (no grid fallback for a non-bolus)
    res = ok_result(model, p)
    fast = fast_descriptors(res, T_END)
    assert np.all(np.isnan(fast["time_to_peak_s"])) and np.all(np.isnan(fast["peak_enhancement"]))
    np.testing.assert_allclose(fast["auc"], c["auc"])


def test_closed_forms_are_much_faster_than_the_grid() -> None:
    model = get_model("lognormal")
    p = bolus_params("lognormal", np.random.default_rng(35), 2000)
    res = ok_result(model, p)
    tic = time.perf_counter()
    fast_descriptors(res, T_END)
    t_fast = time.perf_counter() - tic
    sub = res.select(slice(0, 200))  # type: ignore[arg-type]
    tic = time.perf_counter()
    sub.descriptors(T_END)
    t_grid = (time.perf_counter() - tic) * 10
    # measured ~1 us vs ~1 ms per curve; a wide margin for loaded machines
    assert t_fast * 30 < t_grid, (t_fast, t_grid)
