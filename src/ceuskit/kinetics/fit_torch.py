"""PyTorch Levenberg-Marquardt core for :func:`ceuskit.kinetics.fit.fit_curves` (optional GPU path).

The NumPy core in :mod:`ceuskit.kinetics.fit` iterates a chunk of curves in
lock-step; this module runs the *same* algorithm -- Marquardt's scaled
damping with Nielsen's update, the active set of parameters pinned on a
bound, clipping to the box, the same three convergence tests -- on a
``torch.device`` in float64, so that a GPU can fit very large batches.
Given the same starting point, box and settings it takes the same steps and
stops at the same test as the NumPy and numba cores (the tests hold the
parameters to 1e-6 relative).

Only the iteration runs here.  Screening, starting values, boxes, standard
errors, QOF and statuses are `fit_curves`'s, shared by every core (compiled
by :mod:`ceuskit.kinetics.prefit_numba` when numba is installed).

Device residency
----------------
A chunk's curves are copied to the device once; all its iterations then run
there without host round-trips, except one small transfer every
``check_every`` iterations (are any curves still iterating, did any system
need the pseudo-inverse, how many are left).  Finished curves keep their
state through ``torch.where`` masks, and when fewer than half of the working
set is still iterating the working set is compacted to the active curves.

Singular systems: like the numba core, a system whose LU factorisation hits
an exactly zero pivot is solved by the pseudo-inverse, per curve.  Computing
that for every iteration would cost a batched SVD each time, so a block of
iterations runs with the plain solve and is redone from a snapshot with the
pseudo-inverse fallback in the (rare) case a singular system occurred in it.

Models
------
`KERNELS` lists the models with a torch formula: the lognormal,
gamma-variate, LDRW and replenishment models, each a line-by-line
translation of the model's NumPy ``predict``/``jacobian`` in
:mod:`ceuskit.kinetics.models`.  ``torch`` is imported with this module,
which :mod:`ceuskit.kinetics.fit` imports only when the torch core is asked
for (``import ceuskit`` never imports torch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ceuskit.kinetics.lm import DIAG_FLOOR, LAMBDA_MAX, LAMBDA_MIN

if TYPE_CHECKING:
    from ceuskit.kinetics.models import BolusModel, FloatArray

try:  # optional: the other cores never need it
    import torch

    HAVE_TORCH = True
except ImportError:  # pragma: no cover - exercised only without torch
    HAVE_TORCH = False

_SQRT_2PI = math.sqrt(2.0 * math.pi)
#: Iterations between two host checks of a chunk (each is one small
#: device-to-host transfer, i.e. a synchronisation).
CHECK_EVERY = 5
#: Compact the working set when fewer than this fraction of it still iterates.
COMPACT_BELOW = 0.5
# Per-chunk element budgets (curves x samples x (P + work arrays)): on a CPU
# a chunk that fits in the last-level caches' neighbourhood, on a GPU a
# fraction of its free memory.
_CPU_CHUNK_FLOATS = 16_000_000
_GPU_MEMORY_FRACTION = 0.4
# Float64 arrays of one curve's samples alive at once during an iteration:
# the Jacobian and its weighted copy (2 P), values, residuals and the
# formula's intermediates (about 14).
_WORK_ARRAYS = 14

#: Parameter names of the models with a torch formula, by `BolusModel.name`.
KERNELS: dict[str, tuple[str, ...]] = {
    "lognormal": ("area", "mu", "sigma", "t0", "baseline"),
    "gamma": ("area", "alpha", "beta", "t0", "baseline"),
    "ldrw": ("area", "mu", "lam", "t0", "baseline"),
    "replenishment": ("area", "beta", "t0", "baseline"),
}


def has_kernel(model: BolusModel) -> bool:
    """Whether the torch core can fit ``model`` (torch imports, formula registered, names match)."""
    names = KERNELS.get(model.name)
    return HAVE_TORCH and names is not None and tuple(model.param_names) == names


def gpu_available() -> bool:
    """Whether torch sees a CUDA device (False without torch)."""
    return HAVE_TORCH and bool(torch.cuda.is_available())


def default_device() -> torch.device:
    """The first CUDA device when there is one, else the CPU."""
    return torch.device("cuda" if gpu_available() else "cpu")


def device_name(device: torch.device | str | None = None) -> str:
    """Human-readable name of ``device`` (default `default_device`): ``"cpu"`` or the GPU's name."""
    dev = default_device() if device is None else torch.device(device)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type


# ---------------------------------------------------------------------------
# model formulas: value (M, N) and Jacobian (M, N, P) at parameters p (M, P)
# and times t ((N,) shared or (M, N) per curve), in the models' NumPy order
# ---------------------------------------------------------------------------
def _lognormal(p: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`LognormalModel.predict` and `.jacobian` (see there for the formulas)."""
    a, mu, sigma, t0, b = (p[:, i, None] for i in range(5))
    tau = t - t0
    pos = tau > 0
    # ln(tau) only where tau > 0: g / tau then underflows to 0 as tau -> 0+.
    log_tau = torch.log(torch.where(pos, tau, 1.0))
    z = (log_tau - mu) / sigma
    log_g = -0.5 * z * z - log_tau - torch.log(sigma * _SQRT_2PI)
    g = torch.where(pos, torch.exp(torch.clamp(log_g, max=700.0)), 0.0)
    g_over_tau = torch.where(pos, torch.exp(torch.clamp(log_g - log_tau, max=700.0)), 0.0)
    ag = a * g
    jac = torch.stack(
        [
            g,
            ag * z / sigma,
            ag * (z * z - 1.0) / sigma,
            a * g_over_tau * (1.0 + z / sigma),
            torch.ones_like(g),
        ],
        dim=-1,
    )
    return b + a * g, jac


def _gamma(p: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`GammaVariateModel.predict` and `.jacobian` (see there for the formulas)."""
    a, alpha, beta, t0, b = (p[:, i, None] for i in range(5))
    tau = t - t0
    pos = tau > 0
    # Logs keep tau^alpha and the normalisation (which overflow separately
    # for large alpha) finite.
    log_tau = torch.log(torch.where(pos, tau, 1.0))
    log_beta = torch.log(beta)
    log_g = alpha * log_tau - tau / beta - (alpha + 1.0) * log_beta - torch.lgamma(alpha + 1.0)
    g = torch.where(pos, torch.exp(torch.clamp(log_g, max=700.0)), 0.0)
    g_over_tau = torch.where(pos, torch.exp(torch.clamp(log_g - log_tau, max=700.0)), 0.0)
    log_tau = torch.where(pos, log_tau, 0.0)
    ag = a * g
    jac = torch.stack(
        [
            g,
            ag * (log_tau - log_beta - torch.digamma(alpha + 1.0)),
            a * (g * tau / beta**2 - (alpha + 1.0) * g / beta),
            a * (g / beta - alpha * g_over_tau),
            torch.ones_like(g),
        ],
        dim=-1,
    )
    return b + ag, jac


def _ldrw(p: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`LDRWModel.predict` and `.jacobian` (see there for the formulas)."""
    a, mu, lam, t0, b = (p[:, i, None] for i in range(5))
    tau = t - t0
    pos = tau > 0
    tau_s = torch.where(pos, tau, 1.0)
    log_tau = torch.log(tau_s)
    # In logs: exp(-lambda mu / (2 tau)) underflows to 0 as tau -> 0+, and
    # with it g / tau and g / tau^2.
    expo = -lam * (tau_s - mu) ** 2 / (2.0 * mu * tau_s)
    log_g = 0.5 * (torch.log(lam) - torch.log(2.0 * math.pi * mu) - log_tau) + expo
    g = torch.where(pos, torch.exp(torch.clamp(log_g, max=700.0)), 0.0)
    g1 = torch.where(pos, torch.exp(torch.clamp(log_g - log_tau, max=700.0)), 0.0)
    g2 = torch.where(pos, torch.exp(torch.clamp(log_g - 2.0 * log_tau, max=700.0)), 0.0)
    g_tau = g * torch.where(pos, tau, 0.0)
    jac = torch.stack(
        [
            g,
            a * (-0.5 * g / mu + 0.5 * lam * (g_tau / mu**2 - g1)),
            a * (0.5 * g / lam - 0.5 * (g_tau / mu - 2.0 * g + mu * g1)),
            a * (0.5 * g1 + 0.5 * lam * g / mu - 0.5 * lam * mu * g2),
            torch.ones_like(g),
        ],
        dim=-1,
    )
    return b + a * g, jac


def _replenishment(p: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`ReplenishmentModel.predict` and `.jacobian` (see there for the formulas)."""
    a, beta, t0, b = (p[:, i, None] for i in range(4))
    tau = t - t0
    pos = tau > 0
    tau_p = torch.clamp(tau, min=0.0)
    # -expm1(-x) = 1 - e^-x, accurate just after t0.
    rise = torch.where(pos, -torch.expm1(-beta * tau_p), 0.0)
    decay = torch.where(pos, torch.exp(-beta * tau_p), 0.0)
    jac = torch.stack([rise, a * tau_p * decay, -a * beta * decay, torch.ones_like(rise)], dim=-1)
    return b + a * rise, jac


_Formula = Callable[["torch.Tensor", "torch.Tensor"], tuple["torch.Tensor", "torch.Tensor"]]
_FORMULAS: dict[str, _Formula] = {
    "lognormal": _lognormal,
    "gamma": _gamma,
    "ldrw": _ldrw,
    "replenishment": _replenishment,
}


def _formula(model: BolusModel) -> _Formula:
    if not HAVE_TORCH:
        raise ValueError("the torch core needs PyTorch, which is not installed (pip install torch)")
    if not has_kernel(model):
        raise ValueError(f"no torch kernel for model {model.name!r} (kernels: {', '.join(KERNELS)})")
    return _FORMULAS[model.name]


def evaluate(
    model: BolusModel, params: ArrayLike, t: ArrayLike, device: torch.device | str | None = None
) -> tuple[FloatArray, FloatArray]:
    """The torch model formula: values and Jacobian, for testing against NumPy.

    Parameters
    ----------
    model : BolusModel
        A model with a torch kernel (`has_kernel`).
    params : array, shape (M, P)
    t : array, shape (N,) or (M, N)
        Times (s).
    device : torch.device or str, optional
        Default `default_device`.

    Returns
    -------
    values : array, shape (M, N)
        ``model.predict(params, t)`` (a.u.) up to rounding.
    jacobian : array, shape (M, N, P)
        ``model.jacobian(params, t)`` up to rounding.
    """
    fn = _formula(model)
    dev = default_device() if device is None else torch.device(device)
    p = torch.as_tensor(np.atleast_2d(np.asarray(params, dtype=np.float64)), device=dev)
    tt = torch.as_tensor(np.asarray(t, dtype=np.float64), device=dev)
    f, jac = fn(p, tt)
    return f.cpu().numpy(), jac.cpu().numpy()


# ---------------------------------------------------------------------------
# the iteration
# ---------------------------------------------------------------------------
def _normal_equations(
    fn: _Formula, p: torch.Tensor, t: torch.Tensor, y: torch.Tensor, w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cost ``sum w r^2`` (M,), ``J^T W J`` (M, P, P) and ``J^T W r`` (M, P) at ``p``."""
    f, jac = fn(p, t)
    r = y - f
    cost = torch.sum(w * r * r, dim=-1)
    jt = (jac * w[..., None]).transpose(-1, -2)
    return cost, jt @ jac, (jt @ r[..., None])[..., 0]


# State of the curves being iterated, batch dimension first.  Per-curve data
# (y, lo, hi, cost_scale and, when not shared, t and w) travel with it on
# compaction.
_STATE = ("p", "cost", "jtj", "grad", "lam", "nu", "conv", "n_iter", "act")
_DATA = ("y", "lo", "hi", "cost_scale", "t", "w", "rows")


def _lm_block(
    fn: _Formula,
    s: dict[str, torch.Tensor],
    n_steps: int,
    *,
    tol: float,
    xtol: float,
    exact: bool,
) -> torch.Tensor:
    """``n_steps`` iterations of the projected LM on the working set ``s`` (updated in place).

    Every line mirrors ``fit._levenberg_marquardt``; finished curves (``act``
    False) keep their state through masks.  Returns a device flag: did a
    finite system have an exactly zero pivot (with ``exact`` False, the block
    must then be redone with ``exact`` True, which solves such systems by
    the pseudo-inverse as the other cores do).
    """
    n_p = s["p"].shape[-1]
    dev = s["p"].device
    eye = torch.eye(n_p, dtype=torch.bool, device=dev)
    eye_f = torch.eye(n_p, dtype=torch.float64, device=dev)
    any_singular = torch.zeros((), dtype=torch.bool, device=dev)
    lo, hi, y, t, w = s["lo"], s["hi"], s["y"], s["t"], s["w"]
    for _ in range(n_steps):
        p, grad, jtj, act = s["p"], s["grad"], s["jtj"], s["act"]
        pinned = ((p <= lo) & (grad < 0)) | ((p >= hi) & (grad > 0))
        diag = torch.diagonal(jtj, dim1=-2, dim2=-1)
        dmax = torch.amax(diag, dim=-1, keepdim=True)
        scale = torch.maximum(diag, DIAG_FLOOR * dmax)
        scale = torch.where(dmax > 0, scale, 1.0)
        h = jtj + torch.diag_embed(s["lam"][:, None] * scale)
        free = ~pinned
        h = torch.where(free[..., :, None] & free[..., None, :], h, 0.0)
        h = torch.where(eye & pinned[..., None], 1.0, h)
        g_eff = torch.where(free, grad, 0.0)
        delta, info = torch.linalg.solve_ex(h, g_eff[..., None])
        delta = delta[..., 0]
        finite_h = torch.isfinite(h).all(dim=-1).all(dim=-1)
        singular = (info > 0) & finite_h & act
        if exact:
            # pinv of the singular systems only (identity elsewhere: cheap, unused).
            h_s = torch.where(singular[:, None, None], h, eye_f)
            pinv_step = (torch.linalg.pinv(h_s, rtol=1e-15) @ g_eff[..., None])[..., 0]
            delta = torch.where(singular[:, None], pinv_step, delta)
        else:
            any_singular = any_singular | singular.any()
        # A non-finite system gives no step (as in the other cores).
        delta = torch.where(finite_h[:, None] & torch.isfinite(delta), delta, 0.0)
        p_new = torch.minimum(torch.maximum(p + delta, lo), hi)
        step = p_new - p

        # Trial cost and, in the same pass, the normal equations there (used
        # only where the step is accepted).
        cost_new, jtj_new, grad_new = _normal_equations(fn, p_new, t, y, w)
        actual = s["cost"] - cost_new
        predicted = torch.sum(step * (2.0 * grad - (jtj @ step[..., None])[..., 0]), dim=-1)
        accept = torch.isfinite(cost_new) & (actual > 0)
        s["n_iter"] = s["n_iter"] + act.to(torch.int32)

        rho = torch.where(predicted > 0, actual / predicted, 1.0)
        shrink = torch.clamp(1.0 - (2.0 * rho - 1.0) ** 3, min=1.0 / 3.0)
        lam = torch.where(accept, s["lam"] * shrink, s["lam"] * s["nu"])
        s["lam"] = torch.where(act, torch.clamp(lam, min=LAMBDA_MIN), s["lam"])
        s["nu"] = torch.where(act, torch.where(accept, 2.0, s["nu"] * 2.0), s["nu"])

        upd = act & accept
        s["p"] = torch.where(upd[:, None], p_new, p)
        s["cost"] = torch.where(upd, cost_new, s["cost"])
        s["jtj"] = torch.where(upd[:, None, None], jtj_new, jtj)
        s["grad"] = torch.where(upd[:, None], grad_new, grad)

        small_step = torch.all(torch.abs(step) <= xtol * (torch.abs(p) + xtol), dim=-1)
        small_cost = actual <= tol * s["cost"]
        tiny_cost = s["cost"] <= 1e-28 * s["cost_scale"]
        stop = tiny_cost | (s["lam"] > LAMBDA_MAX)
        done = (accept & (small_cost | small_step)) | (~accept & small_step) | stop
        s["conv"] = s["conv"] | (act & done)
        s["act"] = act & ~done
    return any_singular


def _lm_chunk(
    fn: _Formula,
    t: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    p: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    *,
    max_iter: int,
    tol: float,
    xtol: float,
    lambda0: float,
    check_every: int,
) -> dict[str, torch.Tensor]:
    """Projected LM on one chunk already on the device; returns the final state (`_STATE`)."""
    m = p.shape[0]
    dev = p.device
    cost, jtj, grad = _normal_equations(fn, p, t, y, w)
    s: dict[str, torch.Tensor] = {
        "p": p,
        "cost": cost,
        "jtj": jtj,
        "grad": grad,
        "lam": torch.full((m,), float(lambda0), dtype=torch.float64, device=dev),
        "nu": torch.full((m,), 2.0, dtype=torch.float64, device=dev),
        "conv": torch.zeros(m, dtype=torch.bool, device=dev),
        "n_iter": torch.zeros(m, dtype=torch.int32, device=dev),
        "act": torch.isfinite(cost) & torch.isfinite(jtj).all(dim=-1).all(dim=-1),
        "y": y,
        "lo": lo,
        "hi": hi,
        "cost_scale": torch.sum(w * y * y, dim=-1),
        "t": t,
        "w": w,
        "rows": torch.arange(m, device=dev),
    }
    # Shared rows (t of shape (N,), w of shape (1, N)) stay as they are on
    # compaction; per-curve ones are gathered with the state.
    per_curve = {k for k in _DATA if k not in ("t", "w")}
    if t.ndim == 2 and t.shape[0] == m:
        per_curve.add("t")
    if w.shape[0] == m and m > 1:
        per_curve.add("w")
    out = {k: s[k].clone() for k in _STATE}
    done_iter = 0
    while done_iter < max_iter:
        n_steps = min(check_every, max_iter - done_iter)
        snapshot = {k: s[k] for k in _STATE}  # tensors are replaced, never written in place
        singular = _lm_block(fn, s, n_steps, tol=tol, xtol=xtol, exact=False)
        flags = torch.stack([singular.to(torch.int64), s["act"].sum()]).tolist()  # the one sync
        if flags[0]:
            s.update(snapshot)
            _lm_block(fn, s, n_steps, tol=tol, xtol=xtol, exact=True)
            flags[1] = int(s["act"].sum())
        done_iter += n_steps
        n_active = flags[1]
        if n_active == 0:
            break
        if n_active < COMPACT_BELOW * s["act"].shape[0]:
            rows = s["rows"]
            for k in _STATE:
                out[k][rows] = s[k]
            keep = torch.nonzero(s["act"])[:, 0]
            for k in (*_STATE, *per_curve):
                s[k] = s[k][keep]
    for k in _STATE:
        out[k][s["rows"]] = s[k]
    return out


def _chunk_rows(device: torch.device, n: int, n_p: int) -> int:
    """Curves per device chunk for ``n`` samples and ``n_p`` parameters (memory bound)."""
    per_curve = max(1, n * (2 * n_p + _WORK_ARRAYS))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(1, int(_GPU_MEMORY_FRACTION * free) // (8 * per_curve))
    return max(1, _CPU_CHUNK_FLOATS // per_curve)


def levenberg_marquardt_rows(
    model: BolusModel,
    t: FloatArray,
    y: FloatArray,
    w: FloatArray,
    rows: NDArray[np.intp],
    p: FloatArray,
    lo: FloatArray,
    hi: FloatArray,
    *,
    max_iter: int,
    tol: float,
    xtol: float,
    lambda0: float,
    device: torch.device | str | None = None,
    chunk_rows: int | None = None,
    check_every: int = CHECK_EVERY,
) -> tuple[FloatArray, FloatArray, FloatArray, NDArray[np.bool_], NDArray[np.int32]]:
    """Torch drop-in for ``fit_numba.levenberg_marquardt_rows``: fit rows ``rows`` of ``y``.

    Parameters
    ----------
    model : BolusModel
        A model with a torch kernel (`has_kernel`).
    t : array, shape (1, N), (N,) or (M, N)
        Times (s) shared by all curves or one row per row of ``y``.
    y : array, shape (M, N)
        Curves (a.u.; invalid samples set to 0).
    w : array, shape (1, N) or (M, N)
        Weights (1/a.u.^2; 0 drops a sample), shared or per row of ``y``.
    rows : int array, shape (R,)
        The rows to fit.
    p, lo, hi : arrays, shape (R, P)
        Starting point (inside the box) and box of each fitted row.
    max_iter, tol, xtol, lambda0
        As in `fit_curves`.
    device : torch.device or str, optional
        Where to iterate; default `default_device` (CUDA when available).
    chunk_rows : int, optional
        Curves per device chunk; default from the device's memory (GPU) or
        a cache-sized budget (CPU).
    check_every : int
        Iterations between host checks ("all done?").  Neither it nor
        ``chunk_rows`` changes the steps taken; only the summation order of
        batched reductions may differ (rounding level).

    Returns
    -------
    p, cost, jtj, converged, n_iter
        Shapes (R, P), (R,), (R, P, P), (R,), (R,), indexed like ``rows``:
        fitted parameters, weighted SSE (a.u.^2 x weight units),
        ``J^T W J`` at the result, convergence flag and iteration count.
    """
    fn = _formula(model)
    dev = default_device() if device is None else torch.device(device)
    p = np.asarray(p, dtype=np.float64)
    r_n, n_p = p.shape
    t = np.asarray(t, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n = y.shape[-1]
    p_out = p.copy()
    cost_out = np.full(r_n, np.nan)
    jtj_out = np.zeros((r_n, n_p, n_p))
    conv_out = np.zeros(r_n, dtype=np.bool_)
    it_out = np.zeros(r_n, dtype=np.int32)
    shared_t = t.ndim == 1 or t.shape[0] == 1
    shared_w = w.shape[0] == 1
    step = chunk_rows or _chunk_rows(dev, n, n_p)
    t_dev = torch.as_tensor(t.reshape(-1), device=dev) if shared_t else None
    w_dev = torch.as_tensor(w.reshape(1, -1), device=dev) if shared_w else None

    def on_dev(a: NDArray[Any]) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a, dtype=np.float64), device=dev)

    with torch.no_grad():
        for start in range(0, r_n, step):
            sl = slice(start, start + step)
            sel = np.asarray(rows[sl])
            res = _lm_chunk(
                fn,
                t_dev if t_dev is not None else on_dev(t[sel]),
                on_dev(y[sel]),
                w_dev if w_dev is not None else on_dev(w[sel]),
                on_dev(p[sl]),
                on_dev(lo[sl]),
                on_dev(hi[sl]),
                max_iter=int(max_iter),
                tol=float(tol),
                xtol=float(xtol),
                lambda0=float(lambda0),
                check_every=max(1, int(check_every)),
            )
            p_out[sl] = res["p"].cpu().numpy()
            cost_out[sl] = res["cost"].cpu().numpy()
            jtj_out[sl] = res["jtj"].cpu().numpy()
            conv_out[sl] = res["conv"].cpu().numpy()
            it_out[sl] = res["n_iter"].cpu().numpy()
    return p_out, cost_out, jtj_out, conv_out, it_out


def levenberg_marquardt(
    model: BolusModel,
    t: FloatArray,
    y: FloatArray,
    w: FloatArray,
    p: FloatArray,
    lo: FloatArray,
    hi: FloatArray,
    *,
    max_iter: int,
    tol: float,
    xtol: float,
    lambda0: float,
    device: torch.device | str | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray, NDArray[np.bool_], NDArray[np.int32]]:
    """Torch drop-in for the NumPy core ``fit._levenberg_marquardt`` (all rows of ``y``).

    Parameters
    ----------
    model : BolusModel
        A model with a torch kernel (`has_kernel`).
    t : array, shape (N,) or (M, N)
        Shared or per-curve times (s).
    y, w : arrays, shape (M, N)
        Curves (a.u.; invalid samples set to 0) and weights (0 drops a sample).
    p, lo, hi : arrays, shape (M, P)
        Starting point (inside the box) and box.
    max_iter, tol, xtol, lambda0
        As in `fit_curves`.
    device : torch.device or str, optional
        Default `default_device`.

    Returns
    -------
    p, cost, jtj, converged, n_iter
        As the NumPy core: shapes (M, P), (M,), (M, P, P), (M,), (M,).
    """
    y2 = np.asarray(y, dtype=np.float64)
    return levenberg_marquardt_rows(
        model, t, y2, np.asarray(w, dtype=np.float64), np.arange(y2.shape[0]), p, lo, hi,
        max_iter=max_iter, tol=tol, xtol=xtol, lambda0=lambda0, device=device,
    )
