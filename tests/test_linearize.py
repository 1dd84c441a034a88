import numpy as np
import pytest

from ceuskit.linearize import check_dynamic_range, to_display, to_linear_power


def test_endpoints_and_midpoint():
    p = to_linear_power(np.array([0.0, 127.5, 255.0]), 60.0)
    np.testing.assert_allclose(p, [1e-6, 1e-3, 1.0], rtol=1e-5)


@pytest.mark.parametrize("dr", [40.0, 60.0, 72.0])
def test_each_display_step_is_dr_over_255_db(dr):
    g = np.arange(256, dtype=np.float32)
    p = to_linear_power(g, dr)
    steps_db = np.diff(10 * np.log10(p.astype(np.float64)))
    np.testing.assert_allclose(steps_db, dr / 255, rtol=1e-4)


def test_inverse_round_trip_and_any_shape():
    g = np.random.default_rng(0).uniform(0, 255, size=(3, 4, 5)).astype(np.float32)
    p = to_linear_power(g, 55.0)
    assert p.shape == g.shape and p.dtype == np.float32
    np.testing.assert_allclose(to_display(p, 55.0), g, atol=2e-3)


def test_mean_of_linearised_speckle_recovers_power():
    # Averaging must happen on linear power: the mean of exponential speckle
    # displayed in dB and linearised back equals the true mean power.
    rng = np.random.default_rng(1)
    true_mean = 10 ** (-20 / 10)
    power = rng.exponential(true_mean, size=200_000)
    g = np.round(to_display(power, 60.0))
    est = to_linear_power(g, 60.0).astype(np.float64).mean()
    assert est == pytest.approx(true_mean, rel=0.02)
    # while averaging display values first is biased by several dB
    biased = to_linear_power(np.array([g.mean()]), 60.0)[0]
    assert abs(10 * np.log10(biased / true_mean)) > 2.0


@pytest.mark.parametrize("bad", [0.0, 5.0, 500.0, float("nan")])
def test_unreasonable_dynamic_range_refused(bad):
    with pytest.raises(ValueError, match="dynamic range"):
        check_dynamic_range(bad)
