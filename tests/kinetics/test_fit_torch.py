"""The PyTorch Levenberg-Marquardt core against the NumPy core (on the CPU build of torch).

Both cores run the same algorithm from the same starting point, so they must
give the same parameters and descriptors (to 1e-6 relative) and the same
statuses.  Runs wherever torch imports; on a machine with a GPU,
``backend="torch"`` iterates there and the same assertions apply.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch", reason="PyTorch is an optional backend: pip install torch==2.13.0 "
                    "(pinned in the test extra, so CI runs these tests)")

import torch

from ceuskit.kinetics import fit as fit_mod
from ceuskit.kinetics import fit_torch
from ceuskit.kinetics.fit import FitResult, FitStatus, fit_curves
from ceuskit.kinetics.models import LognormalModel, get_model

from .test_fit_numba import assert_same_fit, awkward_curves, model_params, speckle_curves

MODEL = LognormalModel()
T = np.arange(900) * 0.1  # 900 samples over 90 s
T_END = 90.0
RTOL = 1e-6


def assert_same_descriptors(a: FitResult, b: FitResult) -> None:
    """The perfusion descriptors of both fits agree to 1e-6 relative (NaN where unusable)."""
    da, db = a.descriptors(T_END), b.descriptors(T_END)
    for key in da:
        np.testing.assert_allclose(db[key], da[key], rtol=RTOL, atol=1e-12, equal_nan=True, err_msg=key)


@pytest.mark.parametrize("name", ["lognormal", "gamma", "ldrw"])
def test_torch_formula_matches_numpy(name: str) -> None:
    model = get_model(name)
    p = model_params(name, np.random.default_rng(0), 40)
    p[2, 3] = 0.0  # onset at the first sample
    t = np.concatenate([T, p[3:6, 3] + np.array([-1e-9, 0.0, 1e-9])])
    f, jac = fit_torch.evaluate(model, p, t, device="cpu")
    np.testing.assert_allclose(f, model.predict(p, t), rtol=1e-13, atol=1e-300)
    j_ref = model.jacobian(p, t)
    scale = np.max(np.abs(j_ref), axis=-2, keepdims=True)
    assert np.max(np.abs(jac - j_ref) / (scale + 1e-300)) < 1e-13


def test_replenishment_formula_matches_numpy() -> None:
    model = get_model("replenishment")
    p = np.array([[2.0, 0.3, 5.0, 0.1], [1.0, 2.0, 0.0, 0.0], [0.5, 0.05, 30.0, 1.0]])
    f, jac = fit_torch.evaluate(model, p, T, device="cpu")
    np.testing.assert_allclose(f, model.predict(p, T), rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(jac, model.jacobian(p, T), rtol=1e-13, atol=1e-300)


def test_kernel_registry() -> None:
    for name in ("lognormal", "gamma", "ldrw", "replenishment"):
        assert fit_torch.has_kernel(get_model(name)), name

    class Renamed(LognormalModel):
        name = "lognormal-copy"

    assert not fit_torch.has_kernel(Renamed())


def test_torch_matches_numpy_on_noisy_curves() -> None:
    _, y = speckle_curves(1, 300)
    a = fit_curves(MODEL, T, y, backend="numpy")
    b = fit_curves(MODEL, T, y, backend="torch")
    assert np.mean(a.status == FitStatus.OK) > 0.9
    assert_same_fit(a, b)
    assert_same_descriptors(a, b)
    assert np.mean(a.n_iter == b.n_iter) > 0.95  # the same steps were taken


@pytest.mark.parametrize("name", ["gamma", "ldrw"])
def test_torch_matches_numpy_other_models(name: str) -> None:
    _, y = speckle_curves(8, 60)  # lognormal-shaped data: a mildly misspecified fit
    model = get_model(name)
    a = fit_curves(model, T, y, backend="numpy")
    b = fit_curves(model, T, y, backend="torch")
    assert np.mean(a.status == FitStatus.OK) > 0.9
    assert_same_fit(a, b)
    assert_same_descriptors(a, b)


def test_torch_replenishment_model() -> None:
    # no compiled start for this model: the chunked path with the torch iteration
    model = get_model("replenishment")
    rng = np.random.default_rng(3)
    t = np.arange(300) * 0.1
    p = np.column_stack([rng.uniform(0.5, 2.0, 20), rng.uniform(0.2, 1.5, 20), rng.uniform(1.0, 4.0, 20),
                         rng.uniform(0.01, 0.1, 20)])
    y = model.predict(p, t) * rng.gamma(20.0, 1.0 / 20.0, (20, t.size))
    a = fit_curves(model, t, y, backend="numpy")
    b = fit_curves(model, t, y, backend="torch")
    assert np.mean(a.usable) > 0.9
    assert_same_fit(a, b)


def test_bad_curves_get_the_same_status() -> None:
    rng = np.random.default_rng(14)
    awkward, y = awkward_curves(rng)
    batch = np.vstack([awkward, y[1:2]])
    a = fit_curves(MODEL, T, batch, backend="numpy")
    b = fit_curves(MODEL, T, batch, backend="torch")
    expected = ["ok", "no-enhancement", "non-finite", "ok", "peak-outside", "non-finite", "ok"]
    assert list(a.labels()) == expected
    assert_same_fit(a, b)
    assert_same_descriptors(a, b)
    # iteration cap: every curve stops after one step, as in the NumPy core
    a1 = fit_curves(MODEL, T, y, max_iter=1, backend="numpy")
    b1 = fit_curves(MODEL, T, y, max_iter=1, backend="torch")
    assert np.all(b1.status == FitStatus.MAX_ITER) and np.all(b1.n_iter == 1)
    assert_same_fit(a1, b1)


def test_two_sample_curves() -> None:
    y = np.array([[0.1, 0.5], [1.0, 2.0]])
    a = fit_curves(MODEL, [0.0, 0.1], y, backend="numpy")
    b = fit_curves(MODEL, [0.0, 0.1], y, backend="torch")
    assert np.all(b.status == FitStatus.TOO_FEW_SAMPLES)
    assert_same_fit(a, b)


def test_noiseless_and_weighted() -> None:
    rng = np.random.default_rng(11)
    p = model_params("lognormal", rng, 10)
    exact = fit_curves(MODEL, T, MODEL.predict(p, T), backend="torch")
    assert np.all(exact.status == FitStatus.OK)
    np.testing.assert_allclose(exact.params, p, rtol=1e-6, atol=1e-8)
    _, y = speckle_curves(4, 20)
    w = rng.uniform(0.5, 2.0, y.shape)
    w[:, 50:80] = 0.0
    a = fit_curves(MODEL, T, y, weights=w, backend="numpy")
    b = fit_curves(MODEL, T, y, weights=w, backend="torch")
    assert_same_fit(a, b)
    assert_same_descriptors(a, b)


def test_per_curve_time_axes() -> None:
    _, y = speckle_curves(5, 8)
    shift = np.linspace(-2.0, 3.0, 8)
    tt = T[None, :] + shift[:, None]
    tt[1] = np.cumsum(np.random.default_rng(0).uniform(0.05, 0.15, T.size))  # irregular frame times
    assert_same_fit(fit_curves(MODEL, tt, y, backend="numpy"), fit_curves(MODEL, tt, y, backend="torch"))


def test_p0_takes_the_chunked_path() -> None:
    _, y = speckle_curves(9, 6)
    p0 = MODEL.initial_guess(T, y) * 1.05
    assert_same_fit(
        fit_curves(MODEL, T, y, p0=p0, backend="numpy"), fit_curves(MODEL, T, y, p0=p0, backend="torch")
    )


def test_chunks_checks_and_compaction_do_not_change_results() -> None:
    _, y = speckle_curves(2, 40)
    w = np.ones((1, T.size))
    lo, hi = MODEL.bounds(T, y)
    p0 = np.clip(MODEL.initial_guess(T, y), lo, hi)
    kw = {"max_iter": 200, "tol": 1e-8, "xtol": 1e-8, "lambda0": 1e-3, "device": "cpu"}
    rows = np.arange(40)
    ref = fit_torch.levenberg_marquardt_rows(MODEL, T[None], y, w, rows, p0, lo, hi, **kw)
    got = fit_torch.levenberg_marquardt_rows(
        MODEL, T[None], y, w, rows, p0, lo, hi, chunk_rows=7, check_every=1, **kw
    )
    # Batched reductions may sum in another order for another batch size:
    # equal up to rounding, same convergence.
    for r, g in zip(ref[:3], got[:3], strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(got[3], ref[3])


def test_singular_fallback_redoes_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    # Report every system as singular: each block is redone with the
    # pseudo-inverse, which for these (regular) systems is the same step.
    _, y = speckle_curves(6, 10)
    ref = fit_curves(MODEL, T, y, backend="numpy")
    solve_ex = torch.linalg.solve_ex
    calls = {"n": 0}

    def always_singular(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls["n"] += 1
        x, info = solve_ex(a, b)
        return x, torch.ones_like(info)

    monkeypatch.setattr(torch.linalg, "solve_ex", always_singular)
    got = fit_curves(MODEL, T, y, backend="torch")
    assert calls["n"] > 0
    assert_same_fit(ref, got)


def test_backend_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    _, y = speckle_curves(7, 3)
    with pytest.raises(ValueError, match="backend"):
        fit_curves(MODEL, T, y, backend="gpu")

    class Renamed(LognormalModel):
        name = "lognormal-copy"

    with pytest.raises(ValueError, match="no torch kernel"):
        fit_curves(Renamed(), T, y, backend="torch")
    monkeypatch.setattr(fit_torch, "HAVE_TORCH", False)
    with pytest.raises(ValueError, match="needs PyTorch"):
        fit_curves(MODEL, T, y, backend="torch")


def test_auto_picks_torch_only_with_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _, y = speckle_curves(10, 4)
    used = {"n": 0}
    original = fit_torch.levenberg_marquardt_rows

    def spy(*args: object, **kwargs: object) -> object:
        used["n"] += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fit_torch, "levenberg_marquardt_rows", spy)
    if not torch.cuda.is_available():
        fit_curves(MODEL, T, y)
        assert used["n"] == 0  # no GPU: numba (or NumPy) as before
    # a GPU (simulated; the iteration still runs on the CPU): auto takes torch
    monkeypatch.setattr(fit_mod, "_gpu_driver_possible", lambda: True)
    monkeypatch.setattr(fit_torch, "gpu_available", lambda: True)
    monkeypatch.setattr(fit_torch, "default_device", lambda: torch.device("cpu"))
    res = fit_curves(MODEL, T, y)
    assert used["n"] == 1
    assert_same_fit(fit_curves(MODEL, T, y, backend="numpy"), res)


def test_auto_without_a_gpu_driver_does_not_ask_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU driver on the machine: `auto` decides without asking torch (no import cost)."""
    monkeypatch.setattr(fit_mod, "_gpu_driver_possible", lambda: False)
    monkeypatch.setattr(fit_torch, "gpu_available", lambda: pytest.fail("torch was asked"))
    assert not fit_mod._torch_gpu_kernel(MODEL)


def test_import_does_not_load_torch() -> None:
    code = "import sys, ceuskit, ceuskit.kinetics, ceuskit.kinetics.fit; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
