import numpy as np
import pytest

from ceuskit.kinetics.descriptors import DESCRIPTOR_UNITS, curve_descriptors, dense_grid


def lognormal(t, area, mu, sigma, t0, base):
    tau = np.clip(t - t0, 1e-12, None)
    f = area / (sigma * np.sqrt(2 * np.pi) * tau) * np.exp(-((np.log(tau) - mu) ** 2) / (2 * sigma**2))
    return np.where(t > t0, f, 0.0) + base


def test_lognormal_analytic_values():
    t = dense_grid(90.0, 0.005, extend_to_s=900.0)
    area, mu, sigma, t0, base = 8.0, np.log(10.0), 0.5, 7.0, 0.02
    d = curve_descriptors(t, lognormal(t, area, mu, sigma, t0, base), base, t_end_s=90.0)
    mode = t0 + np.exp(mu - sigma**2)
    mean = t0 + np.exp(mu + sigma**2 / 2)
    peak = area / (sigma * np.sqrt(2 * np.pi)) * np.exp(sigma**2 / 2 - mu)
    assert d["time_to_peak_s"] == pytest.approx(mode, abs=0.005)
    assert d["peak_enhancement"] == pytest.approx(peak, rel=1e-4)
    assert d["mean_transit_time_s"] + d["arrival_time_s"] == pytest.approx(mean, rel=1e-3)
    assert t0 < d["arrival_time_s"] < mode
    assert d["rise_time_s"] == pytest.approx(d["time_to_peak_s"] - d["arrival_time_s"])
    assert d["wash_out_rate"] < 0 < d["wash_in_rate"]
    # AUC over 90 s misses only the tail beyond the acquisition.
    assert 0.95 * area < d["auc"] < area
    assert d["wash_in_auc"] + d["wash_out_auc"] < d["auc"]
    assert d["wash_in_perfusion_index"] == pytest.approx(d["wash_in_auc"] / d["rise_time_s"])
    assert d["peak_in_acquisition"] == 1.0
    assert set(DESCRIPTOR_UNITS) <= set(d)


def test_triangle_tangents_exact():
    # Piecewise-linear bolus: the tangent intersections are the corners.
    t = np.linspace(0, 40, 4001)
    y = np.interp(t, [0, 10, 15, 25, 40], [1, 1, 6, 1, 1])
    d = curve_descriptors(t, y, 1.0)
    assert d["arrival_time_s"] == pytest.approx(10.0, abs=0.02)
    assert d["time_to_peak_s"] == pytest.approx(15.0, abs=0.01)
    assert d["wash_out_end_s"] == pytest.approx(25.0, abs=0.02)
    assert d["wash_in_rate"] == pytest.approx(1.0, rel=1e-3)
    assert d["wash_out_rate"] == pytest.approx(-0.5, rel=1e-3)
    assert d["wash_in_auc"] == pytest.approx(12.5, rel=1e-3)
    assert d["wash_out_auc"] == pytest.approx(25.0, rel=1e-3)
    assert d["auc"] == pytest.approx(37.5, rel=1e-3)
    assert d["mean_transit_time_s"] == pytest.approx((10 + 15 + 25) / 3 - 10, rel=1e-3)


def test_batch_shape_and_undefined_values():
    t = np.linspace(0, 30, 301)
    rising = np.broadcast_to(t / 30, (2, 3, 301))  # peaks at the end: no wash-out
    d = curve_descriptors(t, rising, 0.0, t_end_s=20.0)
    assert d["time_to_peak_s"].shape == (2, 3)
    assert np.all(np.isnan(d["wash_out_rate"])) and np.all(np.isnan(d["fall_time_s"]))
    assert np.all(d["peak_in_acquisition"] == 0.0)
    flat = curve_descriptors(t, np.ones(301), 1.0)
    assert np.isnan(flat["arrival_time_s"]) and np.isnan(flat["wash_in_rate"])


def test_bad_grid():
    with pytest.raises(ValueError):
        curve_descriptors(np.arange(2.0), np.arange(2.0))
