"""The compiled screening and starting values against their NumPy reference.

`prefit_numba` reproduces the NumPy code operation for operation (same IEEE
operations in the same order, NumPy's summation orders, order statistics),
so the tests ask for identical numbers, not close ones: a starting point one
ulp away moves some ill-conditioned fits by far more than the fitter's
tolerance.  The full-pipeline tests compare `fit_curves` with the compiled
screening and start against `fit_curves` with the NumPy ones, both with the
compiled iteration.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from ceuskit.kinetics import prefit_numba
from ceuskit.kinetics.fit import FitResult, enhancement_test, fit_curves
from ceuskit.kinetics.models import (
    GUESS_SMOOTH_S,
    LognormalModel,
    _bolus_start,
    compiled_start_model,
    get_model,
    masked_median,
    moving_average,
    smoothing_window,
    typical_step,
)

from .test_models import lognormal_params

MODEL = LognormalModel()
T = np.arange(900) * 0.1  # 900 samples over 90 s


def speckle(seed: int, m: int, t: np.ndarray = T) -> np.ndarray:
    """Lognormal boluses with averaged-exponential speckle (CV 0.1-0.5) and a 1 % additive floor."""
    rng = np.random.default_rng(seed)
    peak = rng.uniform(0.5, 2.0, m)
    clean = MODEL.predict(lognormal_params(rng, m, peak=peak), t)
    looks = rng.uniform(4.0, 100.0, m)[:, None]
    return clean * rng.gamma(looks, 1.0 / looks, clean.shape) + 0.01 * peak[:, None] * rng.standard_normal(
        clean.shape
    )


def awkward(seed: int, t: np.ndarray = T) -> np.ndarray:
    """Curves that exercise the corner cases of screening and start."""
    rng = np.random.default_rng(seed)
    n = t.size
    y = speckle(seed, 12, t)
    flat = 1e-3 * rng.gamma(25.0, 1 / 25.0, (3, n))
    ties = np.round(y[:3] * 20) / 20  # quantised: many equal values
    early = np.roll(y[:2], -80, axis=-1)  # bolus inside the baseline window
    spike = np.full((1, n), 0.1)
    spike[0, n // 2] = 1e6
    huge = y[:2] * 1e120  # beyond MAX_ABS_SAMPLE: the NumPy reference
    rows = [y, flat, ties, early, spike, np.zeros((1, n)), -y[:1], huge]
    return np.concatenate(rows)


def assert_identical(a: object, b: object) -> None:
    """Same arrays (values, NaNs, dtypes) field by field."""
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for x, z in zip(a, b, strict=True):
            assert_identical(x, z)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            assert_identical(a[key], b[key])
    else:
        x, z = np.asarray(a), np.asarray(b)
        assert x.dtype == z.dtype
        np.testing.assert_array_equal(x, z)


# --- building blocks ---------------------------------------------------------
def test_sums_in_numpys_order() -> None:
    rng = np.random.default_rng(0)
    stack, lefts = np.empty((64, 3), dtype=np.int64), np.empty(64)
    for n in [*range(0, 140), 255, 256, 257, 431, 899, 900, 5000, 9001]:
        x = rng.standard_normal((3, n)) * 1e3 + 1.0
        pairwise = [prefit_numba._pairwise_sum(row, n, stack, lefts) for row in x]
        np.testing.assert_array_equal(pairwise, np.sum(x, axis=-1))  # C-ordered: pairwise
        sequential = [prefit_numba._sequential_sum(row, n) for row in x]
        np.testing.assert_array_equal(sequential, np.sum(np.asfortranarray(x), axis=-1))


def test_medians_by_selection() -> None:
    rng = np.random.default_rng(1)
    for n in [*range(0, 70), 90, 91, 899, 900]:
        x = rng.standard_normal((6, n))
        x[1] = np.round(x[1] * 2)  # ties
        x[2] = 1.0  # all equal
        x[3] = np.sort(x[3])
        x[4] = np.sort(x[4])[::-1]
        x[5] = np.where(rng.random(n) < 0.5, 0.0, 1.0)  # two values
        b1, b2 = np.empty(n), np.empty(n)
        before = x.copy()
        got = [prefit_numba._median(row, n, b1, b2) for row in x]
        np.testing.assert_array_equal(x, before)  # the source is not reordered
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mean of empty slice (n = 0)
            np.testing.assert_array_equal(got, np.median(x, axis=-1))
        np.testing.assert_array_equal(got, masked_median(x, np.ones(n, dtype=bool)))


def test_moving_average() -> None:
    rng = np.random.default_rng(2)
    for n in (2, 3, 5, 17, 100, 901):
        y = rng.standard_normal(n)
        s, c = np.empty(n), np.empty(n + 1)
        for k in (1, 2, 3, 4, 15, 16, n // 5, n, n + 3):
            prefit_numba._moving_average(y, k, c, s)
            np.testing.assert_array_equal(s, moving_average(y, k))


def test_typical_step_of_a_broadcast_axis_is_that_of_its_rows() -> None:
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.choice([0.1, 0.1, 0.2, 0.05], 300))
    assert typical_step(np.broadcast_to(t, (50, t.size))) == typical_step(t)
    rows = t + rng.choice([0.0, 0.01], (3, 1, 1)) * np.arange(t.size)
    wide = np.broadcast_to(rows, (3, 4, t.size))
    assert typical_step(wide) == typical_step(np.ascontiguousarray(wide))


# --- screening -----------------------------------------------------------------
@pytest.mark.parametrize("case", ["speckle", "awkward", "nan", "per-curve", "short", "batch"])
def test_screening_identical(case: str) -> None:
    t: np.ndarray = T
    if case == "speckle":
        y = speckle(4, 300)
    elif case == "awkward":
        y = awkward(5)
    elif case == "nan":
        y = awkward(6)
        rng = np.random.default_rng(6)
        y[rng.random(y.shape) < 0.05] = np.nan
        y[0, :20] = np.nan
        y[1, :] = np.nan
        y[2, 100:] = np.inf
    elif case == "per-curve":
        y = awkward(7)
        t = T + np.linspace(-2.0, 3.0, y.shape[0])[:, None]
        t[1, 5] = np.nan
        t[2] += 1e55  # beyond MAX_ABS_TIME: the NumPy reference
    elif case == "short":
        t = np.arange(5) * 0.5
        y = np.random.default_rng(8).standard_normal((4, t.size)) + 3.0
    else:
        y = speckle(9, 12).reshape(3, 4, -1)
    ref = enhancement_test(t, y, backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = enhancement_test(t, y, backend="numba")
    assert_identical(got, ref)


# --- starting values ------------------------------------------------------------
def compiled_guess(model_name: str, t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``initial_guess`` of filled curves ``y (M, N)`` through the compiled start, as one batch."""
    model = compiled_start_model(get_model(model_name))
    assert model is not None
    m, n = y.shape
    shared = t.ndim == 1
    t2 = np.ascontiguousarray(t[None] if shared else t)
    step = typical_step(t)
    k = smoothing_window(t, GUESS_SMOOTH_S, n)
    _, starts = prefit_numba.prefit_rows(
        t2, np.ascontiguousarray(y), np.arange(m),
        k_start=np.full(m, k), sequential=np.full(m, shared and m >= 2),
    )
    assert starts is not None
    span = t[-1] - t[0] if shared else t[:, -1] - t[:, 0]
    st = starts.start(step, span)
    guess = model._guess_from_start(st)
    return np.clip(guess, *model._box(*starts.box, step))


@pytest.mark.parametrize("name", ["lognormal", "gamma", "ldrw"])
@pytest.mark.parametrize("case", ["speckle", "awkward", "one", "two", "per-curve"])
def test_starting_values_identical(name: str, case: str) -> None:
    t: np.ndarray = T
    y = speckle(10, 200) if case == "speckle" else awkward(11)
    if case == "one":
        y = y[:1]
    elif case == "two":
        y = y[:2]
    elif case == "per-curve":
        t = T + np.linspace(-2.0, 3.0, y.shape[0])[:, None]
    model = get_model(name)
    ref = model.initial_guess(t, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = compiled_guess(name, t, y)
    np.testing.assert_array_equal(got, ref)
    # the shared per-curve part saw the same moments
    st = _bolus_start(t, y)
    assert np.all(np.isfinite(st.area))


# --- the whole fit -----------------------------------------------------------
def fit_reference_prefit(monkeypatch: pytest.MonkeyPatch, *args: object, **kwargs: object) -> FitResult:
    """`fit_curves` with NumPy screening and start (and the compiled iteration)."""
    with monkeypatch.context() as patch:
        patch.setattr(prefit_numba, "HAVE_NUMBA", False)
        return fit_curves(*args, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["lognormal", "gamma", "ldrw"])
def test_fit_identical_to_numpy_prefit(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = get_model(name)
    y = np.concatenate([speckle(12, 150), awkward(13)])
    y[3, 40:60] = np.nan  # a curve with a gap takes the general path
    ref = fit_reference_prefit(monkeypatch, model, T, y)
    got = fit_curves(model, T, y)
    assert np.mean(got.status == 0) > 0.8
    for field in ("params", "stderr", "qof", "sse", "status", "n_iter"):
        assert_identical(getattr(got, field), getattr(ref, field))


@pytest.mark.parametrize(
    "option", ["chunks", "single-curve chunks", "per-curve", "weights", "no-screen", "batch"]
)
def test_fit_options_identical(option: str, monkeypatch: pytest.MonkeyPatch) -> None:
    y = np.concatenate([speckle(14, 40), awkward(15)])
    t: np.ndarray = T
    kwargs: dict[str, object] = {}
    if option == "chunks":
        kwargs["chunk_size"] = 7
    elif option == "single-curve chunks":
        y = y[:9]
        kwargs["chunk_size"] = 4  # the last chunk holds one curve
    elif option == "per-curve":
        t = T + np.linspace(-2.0, 3.0, y.shape[0])[:, None]
        t[4] = np.cumsum(np.random.default_rng(15).uniform(0.05, 0.15, T.size))
        kwargs["chunk_size"] = 9
    elif option == "weights":
        kwargs["weights"] = np.where(np.random.default_rng(16).random(y.shape) < 0.1, 0.0, 2.0)
    elif option == "no-screen":
        kwargs["screen"] = False
    else:
        y = y[:24].reshape(2, 3, 4, -1)
    ref = fit_reference_prefit(monkeypatch, MODEL, t, y, **kwargs)
    got = fit_curves(MODEL, t, y, **kwargs)
    for field in ("params", "stderr", "qof", "sse", "status", "n_iter"):
        assert_identical(getattr(got, field), getattr(ref, field))


def test_model_without_compiled_start_keeps_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    class Shifted(LognormalModel):
        def initial_guess(self, t: object, y: object) -> np.ndarray:
            guess: np.ndarray = super().initial_guess(t, y)  # type: ignore[arg-type]
            return guess + np.array([0.0, 0.0, 0.0, 0.1, 0.0])

    assert compiled_start_model(Shifted()) is None
    assert compiled_start_model(MODEL) is MODEL
    assert compiled_start_model(get_model("replenishment")) is None
    y = speckle(17, 20)
    ref = fit_reference_prefit(monkeypatch, Shifted(), T, y, max_iter=1)
    got = fit_curves(Shifted(), T, y, max_iter=1)
    assert_identical(got.params, ref.params)
    # the replenishment model: compiled screening, NumPy start and iteration
    t = np.arange(200) * 0.1
    model = get_model("replenishment")
    noise = np.random.default_rng(18).normal(0.0, 0.03, (6, t.size))
    yr = model.predict([[1.0, 0.5, 1.0, 0.05]] * 6, t) + noise
    assert_identical(fit_curves(model, t, yr).params, fit_curves(model, t, yr, backend="numpy").params)


def test_few_parallel_regions() -> None:
    """Screening, start and iteration of a large batch take a handful of parallel regions."""
    calls: list[int] = []
    real = prefit_numba._run_blocks

    def counting(task: int, *args: object, **kwargs: object) -> None:
        calls.append(task)
        real(task, *args, **kwargs)  # type: ignore[arg-type]

    y = speckle(19, 100)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prefit_numba, "_run_blocks", counting)
        fit_curves(MODEL, T, y, chunk_size=16)
    # screening + start, then the second moment pass: not one set per chunk
    assert calls == [0, 1]


def test_first_moment_pass_is_reused() -> None:
    y = speckle(20, 5)
    _, starts = prefit_numba.prefit_rows(
        T[None], y, np.arange(5), k_start=np.full(5, 15), sequential=np.ones(5, dtype=bool)
    )
    assert starts is not None
    q = prefit_numba._first_q()
    assert q == float(np.minimum(np.exp(-math.sqrt(2 * math.log(10.0)) * np.full(3, 0.5)), 0.6)[0])
    t_arr, t_pk = starts.out[:, 2], starts.out[:, 1]
    np.testing.assert_array_equal(starts.out[:, 11], np.minimum((t_arr - q * t_pk) / (1.0 - q), t_arr))
