import numpy as np
import pytest

from ceuskit.linearize import check_dynamic_range, linear_power_table, to_display, to_linear_power


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


@pytest.mark.parametrize("dr", [30.0, 60.0, 47.3])
@pytest.mark.parametrize("display_max", [255.0, 200.0])
def test_uint8_table_equals_the_formula_bit_for_bit(dr, display_max):
    # 8-bit cines are linearised through a 256-entry table: the same float32
    # values as the formula, for every shape and for strided views.
    rng = np.random.default_rng(2)
    cine = rng.integers(0, 256, size=(40, 70, 90), dtype=np.uint8)
    views = [cine, cine[3:30, 5:60, 7:80], cine[::2, ::3, 1::2], cine[0], cine.reshape(-1),
             cine.reshape(4, 10, 70, 90)]
    for v in views:
        got = to_linear_power(v, dr, display_max)
        want = to_linear_power(v.astype(np.float32), dr, display_max)
        assert got.dtype == np.float32 and got.shape == v.shape
        np.testing.assert_array_equal(got, want)
    table = linear_power_table(dr, display_max)
    assert table.shape == (256,) and not table.flags.writeable
    np.testing.assert_array_equal(table, to_linear_power(np.arange(256.0), dr, display_max))
    assert table[0] == pytest.approx(10 ** (-dr / 10), rel=1e-5)
