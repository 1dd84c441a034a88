"""Descriptors of fitted curves from closed forms, for parametric maps.

`FitResult.descriptors` evaluates every fitted curve on a dense grid (about
6,000 points for a 90 s acquisition) and applies
`descriptors.curve_descriptors`: about a millisecond per curve, minutes for a
512 x 512 map.  `fast_descriptors` returns the same quantities from the
models' closed forms (`BolusModel.closed_form_descriptors`: the same
definitions in the limit of a vanishing grid step), a few microseconds per
curve, and falls back to the grid for the curves, or models, the closed forms
do not cover.  The two agree to the grid's discretisation error (times within
half a grid step, the rest typically to 1e-3 relative or better); see
tests/kinetics/test_fast.py.
"""

from __future__ import annotations

import numpy as np

from ceuskit.kinetics import descriptors as _desc
from ceuskit.kinetics.fit import FitResult, FitStatus
from ceuskit.kinetics.models import DESCRIPTOR_DT_S, FloatArray


def fast_descriptors(
    result: FitResult,
    t_end_s: float,
    dt_s: float = DESCRIPTOR_DT_S,
    extend_to_s: float | None = None,
    *,
    max_elements: int = 20_000_000,
) -> dict[str, FloatArray]:
    """Perfusion descriptors of fitted curves, closed forms where available.

    Same arguments and result as `FitResult.descriptors`:

    1. If the model has no closed forms (``closed_form_descriptors`` returns
       None), this is ``result.descriptors(...)``.
    2. Otherwise the closed forms give every usable curve's descriptors; for
       a bolus model (``model.is_bolus``), curves outside the closed forms'
       domain (every key NaN: features before t = 0, past the grid's end,
       or too narrow for the grid) are evaluated on the dense grid.
    3. For a non-bolus model (replenishment) the closed forms are the
       answer: peak-based keys are NaN by definition, not a gap to fill.

    Parameters
    ----------
    result : FitResult
        Any batch shape.
    t_end_s : float
        End of the acquisition (s, cine clock); ``auc`` stops there.
    dt_s : float
        Step (s) of the grid whose descriptors are reproduced (and used for
        the fallback).
    extend_to_s : float, optional
        Grid end (s); default ``max(4 * t_end_s, 300)`` as in
        `FitResult.descriptors`.
    max_elements : int
        Memory bound of the grid fallback (see `FitResult.descriptors`).

    Returns
    -------
    dict of str to array, shape ``result.shape``
        Keys of `descriptors.DESCRIPTOR_UNITS` plus ``peak_in_acquisition``;
        NaN where the status is not usable.
    """
    model = result.model
    keys = [*_desc.DESCRIPTOR_UNITS, "peak_in_acquisition"]
    flat = result.params.reshape(-1, result.params.shape[-1])
    use = np.flatnonzero(result.usable.reshape(-1))
    closed = model.closed_form_descriptors(flat[use], t_end_s, extend_to_s=extend_to_s, dt_s=dt_s)
    if closed is None:
        return result.descriptors(t_end_s, dt_s, extend_to_s, max_elements=max_elements)

    m = flat.shape[0]
    out = {key: np.full(m, np.nan) for key in keys}
    for key in keys:
        out[key][use] = closed[key]
    if model.is_bolus:
        missing = np.all(np.stack([np.isnan(closed[key]) for key in keys]), axis=0)
        rows = use[missing]
        if rows.size:
            sub = FitResult(
                model=model,
                params=flat[rows],
                stderr=np.full_like(flat[rows], np.nan),
                qof=np.full(rows.size, np.nan),
                sse=np.full(rows.size, np.nan),
                status=np.full(rows.size, int(FitStatus.OK), dtype=np.int8),
                n_iter=np.zeros(rows.size, dtype=np.int32),
            )
            grid = sub.descriptors(t_end_s, dt_s, extend_to_s, max_elements=max_elements)
            for key in keys:
                out[key][rows] = grid[key]
    return {key: v.reshape(result.shape) for key, v in out.items()}
