"""Fitting the gamma-variate, LDRW and replenishment models: recovery and statuses."""

from __future__ import annotations

import numpy as np
import pytest

from ceuskit.kinetics.fast import fast_descriptors
from ceuskit.kinetics.fit import FitStatus, fit_curves
from ceuskit.kinetics.models import get_model

from .test_fast import ok_result
from .test_models import BOLUS_MODELS, bolus_params, replenishment_params

T = np.arange(900) * 0.1  # 900 samples over 90 s (10 frames/s)
T_END = 90.0
# Replenishment after a destruction flash: 20 s at 10 frames/s.
T_REPL = np.arange(200) * 0.1


@pytest.mark.parametrize("name", BOLUS_MODELS)
def test_recovery_at_20_db(name: str) -> None:
    model = get_model(name)
    rng = np.random.default_rng(40)
    m = 200
    peak = rng.uniform(0.5, 2.0, m)
    p = bolus_params(name, rng, m, peak=peak)
    y = model.predict(p, T) + rng.normal(0.0, 1.0, (m, T.size)) * (peak / 10.0)[:, None]
    res = fit_curves(model, T, y)
    assert np.mean(res.status == FitStatus.OK) > 0.95
    truth = fast_descriptors(ok_result(model, p), T_END)
    fitted = fast_descriptors(res, T_END)
    # measured medians (%), TTP / MTT / PE: lognormal 0.5 / 1.8 / 1.0,
    # gamma 0.3 / 1.5 / 1.3, ldrw 0.3 / 1.8 / 1.4
    for key in ("time_to_peak_s", "mean_transit_time_s", "peak_enhancement"):
        err = np.abs(fitted[key] - truth[key]) / np.abs(truth[key])
        assert np.nanmedian(err) < 0.05, (key, np.nanmedian(err))
    # standard errors are calibrated (white Gaussian noise)
    z = (res.params - p) / res.stderr
    sd = np.nanstd(z[res.status == FitStatus.OK], axis=0)
    assert np.all((sd > 0.75) & (sd < 1.35)), sd


@pytest.mark.parametrize("name", BOLUS_MODELS)
def test_noiseless_fit_is_exact(name: str) -> None:
    model = get_model(name)
    p = bolus_params(name, np.random.default_rng(41), 20)
    res = fit_curves(model, T, model.predict(p, T))
    assert np.all(res.status == FitStatus.OK)
    np.testing.assert_allclose(res.predict(T), model.predict(p, T), atol=1e-7)
    np.testing.assert_allclose(res.params, p, rtol=1e-4, atol=1e-6)


def test_replenishment_recovery() -> None:
    model = get_model("replenishment")
    rng = np.random.default_rng(42)
    m = 200
    p = replenishment_params(rng, m)
    noise = p[:, 0] / 10.0  # 20 dB below the plateau
    y = model.predict(p, T_REPL) + rng.normal(0.0, 1.0, (m, T_REPL.size)) * noise[:, None]
    res = fit_curves(model, T_REPL, y)
    # PEAK_OUTSIDE here: the 95 % plateau time lies after the last sample
    late = p[:, 2] + np.log(20.0) / p[:, 1] > T_REPL[-1]
    assert np.mean(res.status[~late] == FitStatus.OK) > 0.95
    assert np.mean(res.status[late] == FitStatus.PEAK_OUTSIDE) > 0.8
    ok = res.usable
    d_fit = model.derived(res.params)  # type: ignore[attr-defined]
    d_true = model.derived(p)  # type: ignore[attr-defined]
    # measured medians: rBV 2.0 %, WiR 5.2 %, mTT 6.0 %, PI 5.2 %; t0 0.09 s
    for key in ("relative_blood_volume", "wash_in_rate", "mean_transit_time_s", "perfusion_index"):
        err = np.abs(d_fit[key] - d_true[key])[ok] / np.abs(d_true[key][ok])
        assert np.median(err) < 0.08, (key, np.median(err))
    assert np.median(np.abs(res.param("t0") - p[:, 2])[ok]) < 0.1


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("name", ["gamma", "ldrw", "replenishment"])
def test_bad_curves_give_statuses_not_exceptions(name: str) -> None:
    model = get_model(name)
    rng = np.random.default_rng(43)
    if name == "replenishment":
        t = T_REPL
        good = model.predict([1.0, 0.5, 1.0, 0.05], t) + rng.normal(0.0, 0.03, t.size)
    else:
        t = T
        good = model.predict(bolus_params(name, rng, 1)[0], t) + rng.normal(0.0, 0.03, t.size)
    flat = 0.1 + rng.normal(0.0, 0.01, t.size)
    all_nan = np.full(t.size, np.nan)
    some_nan = good.copy()
    some_nan[[0, 3, 100, 150, 151]] = np.nan
    some_nan[120] = np.inf
    zeros = np.zeros(t.size)
    spike = np.zeros(t.size)
    spike[t.size // 2] = 1e6
    negative = -good
    huge = good * 1e100
    overflow = good * 1e200  # its squares overflow: J^T W J is not finite
    y = np.stack([good, flat, all_nan, some_nan, zeros, spike, negative, huge, overflow])
    res = fit_curves(model, t, y)
    labels = list(res.labels())
    assert labels[0] == "ok" and labels[3] == "ok"
    assert labels[8] == "failed" and np.all(np.isnan(res.params[8]))
    assert labels[1] == labels[4] == "no-enhancement"
    assert labels[2] == "non-finite"
    assert all(lab in {s.label for s in FitStatus} for lab in labels)
    assert np.all(np.isnan(res.params[[1, 2, 4]]))
    # unscreened: a flat curve still ends with a status
    res = fit_curves(model, t, np.stack([flat, zeros, negative]), screen=False)
    assert set(res.labels()) <= {"ok", "max-iter", "peak-outside", "failed"}
    # too few samples
    two = fit_curves(model, t[:2], good[:2])
    assert two.status == FitStatus.TOO_FEW_SAMPLES
    d = fast_descriptors(fit_curves(model, t, y), t[-1])
    assert d["auc"].shape == (9,)
