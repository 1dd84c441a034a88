"""Model selection per curve: fit several models, keep the best by an information criterion.

`fit_auto` fits each candidate model to all curves with `fit_curves` and
picks, per curve, the usable fit with the lowest criterion (AICc by default).
With equal parameter counts (the three bolus models have five each) every
criterion reduces to "smallest residual sum of squares"; the penalties matter
when models of different sizes compete.

How well the choice identifies the generating model depends on the noise:
lognormal and LDRW shapes are close (both right-skewed, tails ~exp(-ln^2)
vs ~exp(-tau)), so at moderate noise the choice between them is often a
coin toss while the fitted descriptors barely differ.  The Akaike weights
(`AutoFitResult.weights`) say how clear each choice is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ceuskit.kinetics.fit import USABLE_STATUSES, FitResult, FitStatus, fit_curves
from ceuskit.kinetics.models import BolusModel, FloatArray, get_model

#: Criteria `fit_auto` knows.
CRITERIA = ("aicc", "aic", "bic")

# Statuses set before any fitting (screening); a curve with one of them has
# it for every model, so later models skip it.
_SCREENED = (FitStatus.NO_ENHANCEMENT, FitStatus.TOO_FEW_SAMPLES, FitStatus.NON_FINITE)


def information_criterion(sse: ArrayLike, n: ArrayLike, k: int, criterion: str = "aicc") -> FloatArray:
    """Information criterion of least-squares fits (Gaussian errors, unknown variance).

    - ``"aic"``: ``n ln(SSE / n) + 2 k``
    - ``"aicc"``: AIC ``+ 2 k (k + 1) / (n - k - 1)`` (small-sample
      correction; NaN when ``n <= k + 1``)
    - ``"bic"``: ``n ln(SSE / n) + k ln n``

    Parameters
    ----------
    sse : array
        Residual sums of squares (a.u.^2, weighted as fitted).
    n : array
        Number of samples the fit used.
    k : int
        Number of fitted parameters.
    criterion : str
        One of `CRITERIA`.

    Returns
    -------
    array
        Lower is better; ``-inf`` for an exact fit (SSE = 0).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    sse = np.asarray(sse, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        fit_term = n * np.log(sse / n)
        if criterion == "aic":
            out = fit_term + 2.0 * k
        elif criterion == "aicc":
            out = np.where(n > k + 1, fit_term + 2.0 * k + 2.0 * k * (k + 1) / (n - k - 1), np.nan)
        else:
            out = fit_term + k * np.log(n)
    return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class AutoFitResult:
    """Per-curve model selection among several fitted models.

    Attributes
    ----------
    models : tuple of BolusModel
        The candidates, in the order given to `fit_auto`.
    results : tuple of FitResult
        One per candidate, each of the full batch shape (curves skipped by
        the screening carry the screening status in every result).
    criterion : array, shape (..., M)
        Criterion value of each candidate (NaN where its fit is not usable).
    choice : int array, shape (...)
        Index into `models` of the selected fit; -1 where no fit is usable.
    criterion_name : str
        ``"aicc"``, ``"aic"`` or ``"bic"``.
    n_valid : int array, shape (...)
        Samples each fit used (the ``n`` of the criterion).
    """

    models: tuple[BolusModel, ...]
    results: tuple[FitResult, ...]
    criterion: FloatArray
    choice: NDArray[np.intp]
    criterion_name: str
    n_valid: NDArray[np.int64]

    # -- bookkeeping -----------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        """Model names, in candidate order."""
        return tuple(m.name for m in self.models)

    @property
    def shape(self) -> tuple[int, ...]:
        """Batch shape of the curves."""
        return tuple(self.choice.shape)

    def model_names(self) -> NDArray[np.str_]:
        """Name of the selected model per curve (``""`` where none), shape (...)."""
        table = np.array([*self.names, ""])
        return np.asarray(table[np.where(self.choice >= 0, self.choice, len(self.models))])

    def _pick(self, values: Sequence[NDArray[Any]], fallback: NDArray[Any]) -> NDArray[Any]:
        """Per curve, the value of the selected model (``fallback`` where none)."""
        out = np.array(fallback, copy=True)
        for i, v in enumerate(values):
            sel = self.choice == i
            out[sel] = np.asarray(v)[sel]
        return out

    @property
    def status(self) -> NDArray[np.int8]:
        """`FitStatus` of the selected fit; where none is usable, the first model's status."""
        out: NDArray[np.int8] = self._pick([r.status for r in self.results], self.results[0].status)
        return out

    @property
    def usable(self) -> NDArray[np.bool_]:
        """Curves with a selected (usable) fit."""
        return np.asarray(self.choice >= 0)

    def labels(self) -> NDArray[np.str_]:
        """Status labels of the selected fits, shape (...)."""
        table = np.array([s.label for s in FitStatus])
        return np.asarray(table[self.status.astype(np.intp)])

    @property
    def qof(self) -> FloatArray:
        """Quality of fit in [0, 1] of the selected fit (NaN where none)."""
        out: FloatArray = self._pick([r.qof for r in self.results], np.full(self.shape, np.nan))
        return out

    @property
    def sse(self) -> FloatArray:
        """Residual sum of squares of the selected fit (NaN where none)."""
        out: FloatArray = self._pick([r.sse for r in self.results], np.full(self.shape, np.nan))
        return out

    @property
    def delta(self) -> FloatArray:
        """Criterion minus the curve's best, shape (..., M) (0 for the selected model)."""
        c = self.criterion
        best = np.min(np.where(np.isnan(c), np.inf, c), axis=-1, keepdims=True)
        with np.errstate(invalid="ignore"):
            # c == best first: two exact fits (-inf) differ by 0, not NaN.
            out: FloatArray = np.where(c == best, 0.0, c - best)
        return np.where(self.usable[..., None], out, np.nan)

    @property
    def weights(self) -> FloatArray:
        """Akaike weights ``exp(-delta / 2)`` normalised per curve, shape (..., M).

        The weight of the selected model near 1 means a clear choice; near
        ``1 / M``, the candidates fit equally well.
        """
        d = self.delta
        w = np.where(np.isnan(d), 0.0, np.exp(-0.5 * np.nan_to_num(d, nan=0.0)))
        with np.errstate(invalid="ignore", divide="ignore"):
            out: FloatArray = w / np.sum(w, axis=-1, keepdims=True)
        return np.where(self.usable[..., None], out, np.nan)

    # -- per-model views -------------------------------------------------------------
    def chosen(self, model: int | str) -> FitResult:
        """The fits of one candidate, restricted to the curves it won.

        Curves won by another model (or by none) get status FAILED and NaN
        parameters, so the result's `FitResult.usable` marks exactly the
        curves that model describes.
        """
        i = self.names.index(model) if isinstance(model, str) else int(model)
        r = self.results[i]
        won = self.choice == i
        return replace(
            r,
            params=np.where(won[..., None], r.params, np.nan),
            stderr=np.where(won[..., None], r.stderr, np.nan),
            qof=np.where(won, r.qof, np.nan),
            sse=np.where(won, r.sse, np.nan),
            status=np.where(won, r.status, int(FitStatus.FAILED)).astype(np.int8),
        )

    @property
    def params(self) -> dict[str, FloatArray]:
        """Parameters of the selected model, keyed ``"<model>.<parameter>"``.

        E.g. ``"lognormal.mu"`` (ln s) and ``"ldrw.mu"`` (s) are different
        quantities and stay apart; each array has shape (...) and is NaN
        where another model (or none) was selected.  Units: the models'
        ``param_units``.
        """
        out: dict[str, FloatArray] = {}
        for i, (model, r) in enumerate(zip(self.models, self.results, strict=True)):
            won = self.choice == i
            for j, pname in enumerate(model.param_names):
                out[f"{model.name}.{pname}"] = np.where(won, r.params[..., j], np.nan)
        return out

    def baseline(self) -> FloatArray:
        """Fitted baseline (a.u.) of the selected model, shape (...)."""
        vals = [r.model.baseline(r.params) for r in self.results]
        out: FloatArray = self._pick(vals, np.full(self.shape, np.nan))
        return out

    def predict(self, t: ArrayLike) -> FloatArray:
        """Selected model's curve (a.u.) at times ``t`` (s), shape (..., N); NaN where none.

        ``t`` is ``(N,)`` or broadcastable to ``(..., N)``.
        """
        t_arr = np.asarray(t, dtype=np.float64)
        n = t_arr.shape[-1]
        out = np.full((*self.shape, n), np.nan)
        for i, r in enumerate(self.results):
            won = self.choice == i
            if not won.any():
                continue
            tt = t_arr if t_arr.ndim == 1 else np.broadcast_to(t_arr, (*self.shape, n))[won]
            out[won] = r.model.predict(r.params[won], tt)
        return out

    def descriptors(
        self, t_end_s: float, dt_s: float = 0.05, extend_to_s: float | None = None
    ) -> dict[str, FloatArray]:
        """Dense-grid descriptors of each curve's selected fit (see `FitResult.descriptors`)."""
        return self._merge(lambda r: r.descriptors(t_end_s, dt_s, extend_to_s))

    def fast_descriptors(
        self, t_end_s: float, dt_s: float = 0.05, extend_to_s: float | None = None
    ) -> dict[str, FloatArray]:
        """Closed-form descriptors of each curve's selected fit (see `fast.fast_descriptors`)."""
        from ceuskit.kinetics.fast import fast_descriptors

        return self._merge(lambda r: fast_descriptors(r, t_end_s, dt_s, extend_to_s))

    def _merge(self, compute: Any) -> dict[str, FloatArray]:
        merged: dict[str, FloatArray] = {}
        for i in range(len(self.models)):
            if not np.any(self.choice == i):
                continue
            d = compute(self.chosen(i))
            for key, v in d.items():
                if key not in merged:
                    merged[key] = np.full(self.shape, np.nan)
                sel = self.choice == i
                merged[key][sel] = v[sel]
        if not merged:
            # No curve selected anything: still the full set of keys.
            d = compute(self.chosen(0))
            merged = {key: np.full(self.shape, np.nan) for key in d}
        return merged

    def select(self, index: int | tuple[int, ...]) -> AutoFitResult:
        """The selection for one curve of the batch (a result of batch shape ())."""
        return AutoFitResult(
            models=self.models,
            results=tuple(r.select(index) for r in self.results),
            criterion=np.asarray(self.criterion[index]),
            choice=np.asarray(self.choice[index]),
            criterion_name=self.criterion_name,
            n_valid=np.asarray(self.n_valid[index]),
        )


def fit_auto(
    t: ArrayLike,
    y: ArrayLike,
    models: Sequence[str | BolusModel] = ("lognormal", "gamma", "ldrw"),
    criterion: str = "aicc",
    *,
    weights: ArrayLike | None = None,
    screen: bool = True,
    **fit_kwargs: Any,
) -> AutoFitResult:
    """Fit several models to every curve and select one per curve.

    1. The first model is fitted to all curves (with the screening of
       `fit_curves`: sample counts, non-finite samples, enhancement test).
    2. The other models are fitted to the curves that passed the screening
       only (the screening does not depend on the model).
    3. Per curve, the criterion (`information_criterion`, ``n`` = valid
       samples, ``k`` = the model's parameter count) of every usable fit
       (status OK, MAX_ITER or PEAK_OUTSIDE); the lowest wins.  Ties go to
       the earlier model in ``models``.

    Parameters
    ----------
    t : array, shape (N,) or (..., N)
        Sample times (s, cine clock).
    y : array, shape (..., N)
        Curves in linear echo power (a.u.).
    models : sequence of str or BolusModel
        Candidates (names from `models.MODELS` or model objects); at least
        one, no duplicates.
    criterion : str
        ``"aicc"`` (default), ``"aic"`` or ``"bic"``.
    weights : array broadcastable to y, optional
        Per-sample weights, as in `fit_curves` (SSE is then weighted).
    screen : bool
        Run the enhancement test (see `fit_curves`).
    **fit_kwargs
        Passed to every `fit_curves` call (``max_iter``, ``tol``,
        ``backend``, ...); not ``p0`` (model-specific).

    Returns
    -------
    AutoFitResult
        Batch shape ``y.shape[:-1]``.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    if "p0" in fit_kwargs:
        raise ValueError("fit_auto does not take p0: starting points are model-specific")
    cands = tuple(get_model(m) if isinstance(m, str) else m for m in models)
    if not cands:
        raise ValueError("fit_auto needs at least one model")
    names = [m.name for m in cands]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate models in {names}")

    y_arr = np.asarray(y, dtype=np.float64)
    if y_arr.ndim == 0:
        raise ValueError("y must have shape (..., N)")
    batch, n = y_arr.shape[:-1], y_arr.shape[-1]
    t_arr = np.asarray(t, dtype=np.float64)
    yf = y_arr.reshape(-1, n)
    m_curves = yf.shape[0]
    if t_arr.ndim == 1:
        tf = t_arr
    else:
        try:
            tf = np.broadcast_to(t_arr, y_arr.shape).reshape(-1, n)
        except ValueError:
            raise ValueError(f"t of shape {t_arr.shape} does not broadcast to y's {y_arr.shape}") from None
    wf = None
    if weights is not None:
        wf = np.broadcast_to(np.asarray(weights, dtype=np.float64), y_arr.shape).reshape(-1, n)

    first = fit_curves(cands[0], tf, yf, weights=wf, screen=screen, **fit_kwargs)
    results = [first]
    todo = np.flatnonzero(~np.isin(first.status, [int(s) for s in _SCREENED]))
    for model in cands[1:]:
        params = np.full((m_curves, model.n_params), np.nan)
        stderr = np.full_like(params, np.nan)
        qof = np.full(m_curves, np.nan)
        sse = np.full(m_curves, np.nan)
        status = first.status.copy()
        n_iter = np.zeros(m_curves, dtype=np.int32)
        if todo.size:
            r = fit_curves(
                model,
                tf if tf.ndim == 1 else tf[todo],
                yf[todo],
                weights=None if wf is None else wf[todo],
                screen=False,
                **fit_kwargs,
            )
            params[todo], stderr[todo], qof[todo] = r.params, r.stderr, r.qof
            sse[todo], status[todo], n_iter[todo] = r.sse, r.status, r.n_iter
        results.append(FitResult(model, params, stderr, qof, sse, status, n_iter))

    # Valid samples, as counted by fit_curves.
    valid = np.isfinite(yf)
    if wf is not None:
        valid &= np.isfinite(wf) & (wf > 0)
    if tf.ndim == 2:
        valid &= np.isfinite(tf)
    n_valid = np.sum(valid, axis=-1)

    usable_codes = [int(s) for s in USABLE_STATUSES]
    crit = np.full((m_curves, len(cands)), np.nan)
    for i, (model, r) in enumerate(zip(cands, results, strict=True)):
        ok = np.isin(r.status, usable_codes)
        c = information_criterion(r.sse, n_valid, model.n_params, criterion)
        crit[:, i] = np.where(ok, c, np.nan)
    has = np.any(~np.isnan(crit), axis=-1)
    # NaN (not usable) never wins; -inf (exact fit) does.
    choice = np.where(has, np.argmin(np.where(np.isnan(crit), np.inf, crit), axis=-1), -1)

    def unflat(r: FitResult) -> FitResult:
        return FitResult(
            model=r.model,
            params=r.params.reshape(*batch, r.params.shape[-1]),
            stderr=r.stderr.reshape(*batch, r.stderr.shape[-1]),
            qof=r.qof.reshape(batch),
            sse=r.sse.reshape(batch),
            status=r.status.reshape(batch),
            n_iter=r.n_iter.reshape(batch),
        )

    return AutoFitResult(
        models=cands,
        results=tuple(unflat(r) for r in results),
        criterion=crit.reshape(*batch, len(cands)),
        choice=choice.astype(np.intp).reshape(batch),
        criterion_name=criterion,
        n_valid=n_valid.astype(np.int64).reshape(batch),
    )
