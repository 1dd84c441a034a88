"""Curve-fitting throughput: ceuskit's batched fitter against a per-curve scipy loop.

Fits the same synthetic time-intensity curves several ways in one run:

1. ceuskit's default engine: ``fit_curves(model, t, y)`` (``backend="auto"``:
   the torch core on a CUDA GPU when torch is installed, else the compiled
   numba core where the model has one);
2. ceuskit's optional PyTorch engine, when torch is installed:
   ``fit_curves(..., backend="torch")`` (the iteration on the GPU when torch
   sees one, else on the CPU; the row names the device);
3. ceuskit's NumPy engine: ``fit_curves(..., backend="numpy")``;
4. a per-curve ``scipy.optimize.curve_fit(method="trf", bounds=...)`` loop
   with the lognormal formula, as the open peer tool fits its windows, on
   the first ``--scipy-n`` curves.

Curves: ``--n`` curves of 900 samples over 90 s (10 frames/s); half have a
lognormal, half a gamma-variate ground truth (onset 5-15 s, time to peak
3-15 s after onset, peak 10-20 dB above the baseline).  Speckle noise is
multiplicative: each sample is scaled by the mean of L independent unit
exponential draws (drawn as Gamma(L, 1/L), the same distribution), L per
curve from 11 to 100 (coefficient of variation 0.1-0.3), plus a small
additive Gaussian floor (1 % of the peak).  Fixed seed.

Every engine fits the *lognormal* model (the peer tool's only model) to
both families, so the gamma-truth errors include model misspecification,
the same for every engine.  The scipy loop gets the starting point and box
ceuskit computes (``LognormalModel.initial_guess`` and ``bounds``,
vectorised, computed before its clock starts); without them it would do
worse, not better.  Its Jacobian is scipy's 2-point finite difference, as
in the peer tool (a second, informational row passes the analytic one).

Errors: the descriptors (TTP, MTT, PE) of each fitted curve and of the
noise-free truth come from the same definition,
``ceuskit.kinetics.descriptors.curve_descriptors`` on the dense grid that
``FitResult.descriptors`` uses (0.05 s steps to 360 s).  MTT is the first
moment measured from the tangent-intersection arrival TI, as defined there.
A failed fit counts as an infinite error in the medians.

Stage profile (``--profile M``, default 10,000; 0 skips it): the default
engine fits the first M curves three times and the best run's wall time is
split between the stages of `fit_curves` (compiled screening and start pass,
per-curve start formulas and second moment pass, LM iteration, errors and
statuses, the rest), measured by timing the functions that run them.

Usage::

    python benchmarks/fit_throughput.py [--n 20000] [--scipy-n 200] [--seed 0] [--profile 10000]

The last line reads ``fit_throughput: RATIO x scipy loop, FITS fits/s,
ttp_err_s=E1 mtt_err_pct=E2 pe_err_pct=E3`` for ceuskit's default engine
(errors over all its curves).
"""

from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special

from ceuskit.kinetics import descriptors
from ceuskit.kinetics.fit import FitStatus, fit_curves
from ceuskit.kinetics.models import LognormalModel

FloatArray = NDArray[np.float64]
MODEL = LognormalModel()
N_SAMPLES = 900
DURATION_S = 90.0
# The grid of FitResult.descriptors: 0.05 s steps to max(4 T, 300 s).
GRID = descriptors.dense_grid(DURATION_S, 0.05, extend_to_s=max(4.0 * DURATION_S, 300.0))
KEYS = {"ttp_err_s": "time_to_peak_s", "mtt_err_pct": "mean_transit_time_s", "pe_err_pct": "peak_enhancement"}


# ---------------------------------------------------------------------------
# synthetic curves
# ---------------------------------------------------------------------------
def gamma_variate(p: FloatArray, t: FloatArray) -> FloatArray:
    """Gamma-variate bolus ``b + A tau^alpha e^(-tau/beta) / (beta^(alpha+1) Gamma(alpha+1))``.

    ``p`` = (area, alpha, beta, t0, baseline), shape (M, 5); unit-area shape,
    so ``A`` is the area above baseline.
    """
    area, alpha, beta, t0, base = (p[:, i, None] for i in range(5))
    tau = t - t0
    pos = tau > 0
    log_tau = np.log(np.where(pos, tau, 1.0))
    log_g = alpha * log_tau - tau / beta - (alpha + 1.0) * np.log(beta) - special.gammaln(alpha + 1.0)
    out: FloatArray = base + area * np.where(pos, np.exp(np.minimum(log_g, 700.0)), 0.0)
    return out


@dataclass
class Curves:
    """Noisy curves, their truth and the truth's descriptors."""

    t: FloatArray
    y: FloatArray
    family: NDArray[np.str_]
    truth: dict[str, FloatArray]


def make_curves(n: int, seed: int) -> Curves:
    """``n`` noisy curves, alternately lognormal and gamma-variate truth."""
    rng = np.random.default_rng(seed)
    t = np.arange(N_SAMPLES) * (DURATION_S / N_SAMPLES)
    family = np.where(np.arange(n) % 2 == 0, "lognormal", "gamma")
    t0 = rng.uniform(5.0, 15.0, n)
    mode = rng.uniform(3.0, 15.0, n)
    peak = rng.uniform(0.5, 2.0, n)
    base = peak / 10.0 ** (rng.uniform(10.0, 20.0, n) / 10.0)
    # lognormal: sigma 0.3-1.0; gamma: alpha 1.5-10 (skewed to symmetric)
    sigma = rng.uniform(0.3, 1.0, n)
    alpha = rng.uniform(1.5, 10.0, n)
    mu = np.log(mode) + sigma**2
    ln_area = peak * sigma * math.sqrt(2.0 * math.pi) * np.exp(mu - 0.5 * sigma**2)
    beta = mode / alpha
    # peak of the unit-area gamma variate at its mode alpha * beta
    log_g_peak = alpha * np.log(mode) - alpha - (alpha + 1.0) * np.log(beta) - special.gammaln(alpha + 1.0)
    g_peak = np.exp(log_g_peak)
    gm_area = peak / g_peak
    is_ln = family == "lognormal"
    p_ln = np.stack([ln_area, mu, sigma, t0, base], axis=-1)[is_ln]
    p_gm = np.stack([gm_area, alpha, beta, t0, base], axis=-1)[~is_ln]

    clean = np.empty((n, N_SAMPLES))
    clean[is_ln] = MODEL.predict(p_ln, t)
    clean[~is_ln] = gamma_variate(p_gm, t)
    looks = np.round(1.0 / rng.uniform(0.1, 0.3, n) ** 2)
    speckle = rng.gamma(looks[:, None], 1.0 / looks[:, None], clean.shape)
    y = clean * speckle + 0.01 * peak[:, None] * rng.standard_normal(clean.shape)

    truth = {k: np.empty(n) for k in KEYS.values()}
    for sel, fn, p in ((is_ln, MODEL.predict, p_ln), (~is_ln, gamma_variate, p_gm)):
        d = curve_descriptors(fn, p)
        for k in truth:
            truth[k][sel] = d[k]
    return Curves(t=t, y=y, family=family, truth=truth)


def curve_descriptors(
    predict: Callable[[FloatArray, FloatArray], FloatArray], params: FloatArray, chunk: int = 1000
) -> dict[str, FloatArray]:
    """TTP, MTT and PE of model curves ``predict(params, GRID)`` (NaN params give NaN)."""
    m = params.shape[0]
    out = {k: np.full(m, np.nan) for k in KEYS.values()}
    ok = np.flatnonzero(np.all(np.isfinite(params), axis=-1))
    for start in range(0, ok.size, chunk):
        sel = ok[start : start + chunk]
        p = params[sel]
        d = descriptors.curve_descriptors(GRID, predict(p, GRID), p[:, 4], t_end_s=DURATION_S)
        for k in out:
            out[k][sel] = d[k]
    return out


# ---------------------------------------------------------------------------
# engines
# ---------------------------------------------------------------------------
@dataclass
class Run:
    """One engine's fits of curves ``0 .. n-1``."""

    name: str
    n: int
    seconds: float
    params: FloatArray
    failed: int
    note: str = ""

    @property
    def fits_per_s(self) -> float:
        return self.n / self.seconds


def run_ceuskit(curves: Curves, n: int, backend: str) -> Run:
    y = curves.y[:n]
    start = time.perf_counter()
    res = fit_curves(MODEL, curves.t, y, backend=backend)
    seconds = time.perf_counter() - start
    params = np.where(res.usable[:, None], res.params, np.nan)
    failed = int(np.sum(~res.usable))
    codes, numbers = np.unique(res.status, return_counts=True)
    counts = {FitStatus(s).label: int(c) for s, c in zip(codes, numbers, strict=True)}
    name = f"ceuskit {'default (' + backend + ')' if backend == 'auto' else backend}"
    note = " ".join(f"{k}={v}" for k, v in counts.items())
    if backend == "torch":
        from ceuskit.kinetics import fit_torch

        name = f"ceuskit torch ({fit_torch.device_name()})"[:36]
    return Run(name, n, seconds, params, failed, note=note)


def torch_available() -> bool:
    """Whether ceuskit's optional torch core can run here (torch imports)."""
    try:
        from ceuskit.kinetics import fit_torch
    except ImportError:
        return False
    return fit_torch.HAVE_TORCH and fit_torch.has_kernel(MODEL)


def run_core(curves: Curves, n: int) -> Run | None:
    """The compiled Levenberg-Marquardt core alone (no screening, start, box or errors).

    Not an engine of its own: it shows how much of the default engine's time
    the iteration takes; the rest is the shared NumPy code of `fit_curves`.
    """
    from ceuskit.kinetics import fit_numba

    if not fit_numba.has_kernel(MODEL):
        return None
    y = curves.y[:n]
    lo, hi = MODEL.bounds(curves.t, y)
    p0 = np.clip(MODEL.initial_guess(curves.t, y), lo, hi)
    start = time.perf_counter()
    p, _, _, _, _ = fit_numba.levenberg_marquardt(
        MODEL, curves.t, y, np.ones_like(y), p0, lo, hi, max_iter=200, tol=1e-8, xtol=1e-8, lambda0=1e-3
    )
    seconds = time.perf_counter() - start
    return Run("  of which the LM core (numba)", n, seconds, p, 0, note="iteration only, same start and box")


def run_scipy(curves: Curves, n: int, analytic_jac: bool) -> Run:
    y = curves.y[:n]
    t = curves.t
    lo, hi = MODEL.bounds(t, y)
    p0 = np.clip(MODEL.initial_guess(t, y), lo, hi)

    def f(tt: FloatArray, *p: float) -> FloatArray:
        return MODEL.predict(np.array(p), tt)

    def jac(tt: FloatArray, *p: float) -> FloatArray:
        return MODEL.jacobian(np.array(p), tt)

    params = np.full((n, 5), np.nan)
    failed = 0
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(n):
            try:
                popt, _ = optimize.curve_fit(
                    f, t, y[i], p0=p0[i], bounds=(lo[i], hi[i]), method="trf",
                    jac=jac if analytic_jac else None,
                )
                params[i] = popt
            except (RuntimeError, ValueError):
                failed += 1
    seconds = time.perf_counter() - start
    name = "scipy curve_fit loop" + (" (analytic jac)" if analytic_jac else "")
    return Run(name, n, seconds, params, failed)


def stage_profile(curves: Curves, n: int, repeats: int = 3) -> list[tuple[str, float]]:
    """Wall time (s) of each stage of the default engine on the first ``n`` curves (best of ``repeats``).

    The stages are the functions `fit_curves` hands its work to, timed by
    wrapping them for the duration of the measurement.
    """
    from ceuskit.kinetics import fit as fit_module
    from ceuskit.kinetics import fit_numba, prefit_numba

    stages = {
        "screening + start, one compiled pass (2 threads)": (prefit_numba, "prefit_rows"),
        "start: per-curve formulas (NumPy) + 2nd moment pass (compiled)": (prefit_numba.RowStarts, "start"),
        "LM iteration (numba, 2 threads)": (fit_numba, "levenberg_marquardt_rows"),
        "errors (pinv, 2 threads), QOF, statuses (NumPy)": (fit_module._Fits, "store"),
    }
    spent = dict.fromkeys(stages, 0.0)
    originals = {name: getattr(owner, attr) for name, (owner, attr) in stages.items()}

    def timed(name: str, fn: Callable[..., object]) -> Callable[..., object]:
        def wrapper(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start

        return wrapper

    y = curves.y[:n]
    best: list[tuple[str, float]] = []
    best_total = math.inf
    for name, (owner, attr) in stages.items():
        setattr(owner, attr, timed(name, originals[name]))
    try:
        for _ in range(repeats):
            for name in spent:
                spent[name] = 0.0
            start = time.perf_counter()
            fit_curves(MODEL, curves.t, y)
            total = time.perf_counter() - start
            if total < best_total:
                best_total = total
                rest = total - sum(spent.values())
                best = [*spent.items(), ("input checks, boxes, guesses (NumPy), assembly", rest)]
    finally:
        for name, (owner, attr) in stages.items():
            setattr(owner, attr, originals[name])
    return [*best, ("total", best_total)]


def errors(fitted: dict[str, FloatArray], curves: Curves, idx: NDArray[np.intp]) -> dict[str, float]:
    """Median absolute errors of descriptors ``fitted`` over curves ``idx``; a failed fit counts as +inf."""
    out = {}
    for label, key in KEYS.items():
        truth = curves.truth[key][idx]
        diff = np.abs(fitted[key][idx] - truth)
        if label.endswith("_pct"):
            diff = 100.0 * diff / np.abs(truth)
        out[label] = float(np.median(np.where(np.isfinite(diff), diff, np.inf)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="curves fitted by the ceuskit engines")
    ap.add_argument("--scipy-n", type=int, default=200, help="curves of the scipy loop (the first ones)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-numpy", action="store_true", help="leave out ceuskit's NumPy engine")
    ap.add_argument("--profile", type=int, default=10000, help="curves of the stage profile (0: none)")
    args = ap.parse_args()
    n, n_sp = args.n, min(args.scipy_n, args.n)

    try:
        import numba

        threads = f"numba threads={numba.get_num_threads()}"
    except ImportError:
        threads = "numba not installed"
    print(f"fit_throughput: {n} curves x {N_SAMPLES} samples over {DURATION_S:g} s, seed {args.seed}, "
          f"{os.cpu_count()} CPUs, {threads}")
    t_gen = time.perf_counter()
    curves = make_curves(n, args.seed)
    print(f"generated curves and truth in {time.perf_counter() - t_gen:.1f} s; lognormal model fitted to all "
          "(the gamma-truth half includes model misspecification)")

    # Warm-up: numba compiles on the very first call in an environment
    # (cached on disk afterwards); not part of any timing below.
    t_w = time.perf_counter()
    fit_curves(MODEL, curves.t, curves.y[:8])
    print(f"warm-up (numba compile or cache load + first call): {time.perf_counter() - t_w:.2f} s")

    runs = [run_ceuskit(curves, n, "auto")]
    core = run_core(curves, n)
    if torch_available():
        # Warm-up as above (torch import, device start-up, first kernels).
        t_w = time.perf_counter()
        fit_curves(MODEL, curves.t, curves.y[:8], backend="torch")
        print(f"torch warm-up (device start-up + first call): {time.perf_counter() - t_w:.2f} s")
        runs.append(run_ceuskit(curves, n, "torch"))
    if not args.skip_numpy:
        runs.append(run_ceuskit(curves, n, "numpy"))
    scipy_run = run_scipy(curves, n_sp, analytic_jac=False)
    runs.append(scipy_run)
    runs.append(run_scipy(curves, n_sp, analytic_jac=True))

    w = 36  # engine column
    print(
        f"\n{'engine':{w}s} {'curves':>7s} {'time_s':>8s} {'fits/s':>9s} {'x scipy':>8s} {'failed':>6s}"
        "  statuses"
    )
    for run in runs[:1] + ([core] if core else []) + runs[1:]:
        ratio = run.fits_per_s / scipy_run.fits_per_s
        print(
            f"{run.name:{w}s} {run.n:7d} {run.seconds:8.2f} {run.fits_per_s:9.1f} {ratio:8.1f} "
            f"{run.failed:6d}  {run.note}"
        )

    print("\nmedian absolute errors against the truth (failed fits count as inf)")
    print(
        f"{'engine':{w}s} {'curves':24s} {'n':>6s} {'ttp_err_s':>10s} {'mtt_err_pct':>12s} "
        f"{'pe_err_pct':>11s}"
    )
    fam = curves.family
    default_err: dict[str, float] = {}
    for run in runs:
        fitted = curve_descriptors(MODEL.predict, run.params)
        idx = np.arange(run.n)
        sets = {
            f"scipy subsample (first {n_sp})": np.arange(n_sp),
            "all fitted": idx,
            "  lognormal truth": idx[fam[: run.n] == "lognormal"],
            "  gamma truth": idx[fam[: run.n] == "gamma"],
        }
        for label, sel in sets.items():
            if run.n == n_sp and label != "all fitted" and not label.startswith("  "):
                continue  # the scipy loop's "all" is its subsample
            e = errors(fitted, curves, sel)
            if run is runs[0] and label == "all fitted":
                default_err = e
            print(
                f"{run.name:{w}s} {label:24s} {sel.size:6d} {e['ttp_err_s']:10.3f} {e['mtt_err_pct']:12.2f} "
                f"{e['pe_err_pct']:11.2f}"
            )
    if args.profile > 0:
        m = min(args.profile, n)
        profile = stage_profile(curves, m)
        total = profile[-1][1]
        print(f"\nwhere the default engine's time goes ({m} curves, best of 3: {m / total:.0f} fits/s)")
        print(f"{'stage':66s} {'share':>6s} {'us/curve':>9s}")
        for label, seconds in profile:
            print(f"{label:66s} {100.0 * seconds / total:5.1f}% {1e6 * seconds / m:9.1f}")
    best = runs[0]
    ratio = best.fits_per_s / scipy_run.fits_per_s
    print(
        f"fit_throughput: {ratio:.0f} x scipy loop, {best.fits_per_s:.0f} fits/s, "
        f"ttp_err_s={default_err['ttp_err_s']:.3f} mtt_err_pct={default_err['mtt_err_pct']:.2f} "
        f"pe_err_pct={default_err['pe_err_pct']:.2f}"
    )


if __name__ == "__main__":
    main()
