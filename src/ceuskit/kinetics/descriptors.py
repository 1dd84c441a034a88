"""Descriptors of a time-intensity curve: one definition each.

Every perfusion parameter ceuskit reports is computed here, from a curve
sampled on a (fine) time grid: a fitted model evaluated densely, a smoothed
measured curve, or a simulator's noise-free truth.  Sharing one definition is
what makes "measured vs truth" and "model A vs model B" comparisons honest.
For fitted models the same definitions also exist in closed form
(`BolusModel.closed_form_descriptors`, used by `ceuskit.kinetics.fast`),
tested equal to this module's results up to the grid's discretisation.

Definitions (times on the cine clock, t = 0 at the first frame; powers in
linear echo power, a.u.; ``b`` is the curve's baseline):

- ``time_to_peak_s`` (TTP): time of the curve's maximum.
- ``peak_enhancement`` (PE): maximum minus baseline.
- ``wash_in_rate`` (WiR, a.u./s): steepest rising slope before the peak.
- ``wash_out_rate`` (WoR, a.u./s): steepest falling slope after the peak
  (negative).
- ``arrival_time_s`` (TI): where the tangent at the steepest rise crosses
  the baseline.
- ``wash_out_end_s`` (TO): where the tangent at the steepest fall crosses the
  baseline.
- ``rise_time_s`` = TTP - TI; ``fall_time_s`` = TO - TTP.
- ``mean_transit_time_s``: first moment of (curve - b) over the whole grid,
  measured from TI (VueBox's local mTT).
- ``auc`` (a.u. s): area of (curve - b) from the first frame to the end of the
  acquisition (``t_end_s``).
- ``wash_in_auc``: area TI..TTP; ``wash_out_auc``: area TTP..TO
  (a.u. s).
- ``wash_in_perfusion_index`` = wash_in_auc / rise_time_s (a.u.).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

DESCRIPTOR_UNITS: dict[str, str] = {
    "arrival_time_s": "s",
    "time_to_peak_s": "s",
    "rise_time_s": "s",
    "mean_transit_time_s": "s",
    "fall_time_s": "s",
    "wash_out_end_s": "s",
    "peak_enhancement": "a.u.",
    "auc": "a.u.·s",
    "wash_in_rate": "a.u./s",
    "wash_out_rate": "a.u./s",
    "wash_in_auc": "a.u.·s",
    "wash_out_auc": "a.u.·s",
    "wash_in_perfusion_index": "a.u.",
}

#: The descriptors that need a bolus peak and wash-out (plus the
#: ``peak_in_acquisition`` flag of `ceuskit.kinetics.fit.FitResult.descriptors`):
#: they do not exist for a curve that only rises to a plateau (the
#: replenishment model, ``BolusModel.is_bolus`` False), where they are NaN.
#: The others (arrival, wash-in rate, AUC) exist for every curve.
PEAK_DESCRIPTORS: tuple[str, ...] = (
    "time_to_peak_s",
    "rise_time_s",
    "mean_transit_time_s",
    "fall_time_s",
    "wash_out_end_s",
    "peak_enhancement",
    "wash_out_rate",
    "wash_in_auc",
    "wash_out_auc",
    "wash_in_perfusion_index",
    "peak_in_acquisition",
)


def _masked_trapezoid(
    t: NDArray[np.float64], y: NDArray[np.float64], lo: NDArray[Any], hi: NDArray[Any]
) -> NDArray[np.float64]:
    """Trapezoid integral of y over [lo, hi] (per curve), clipping each segment."""
    # Integrate each grid segment over its overlap with [lo, hi]; the integrand
    # is linear on a segment, so the overlap's area is exact for that segment.
    t0, t1 = t[:-1], t[1:]
    y0, y1 = y[..., :-1], y[..., 1:]
    a = np.clip(lo[..., None], t0, t1)
    b = np.clip(hi[..., None], t0, t1)
    width = t1 - t0
    slope = (y1 - y0) / width
    ya = y0 + slope * (a - t0)
    yb = y0 + slope * (b - t0)
    area = 0.5 * (ya + yb) * (b - a)
    out = np.sum(area, axis=-1)
    valid = np.isfinite(lo) & np.isfinite(hi) & (hi >= lo)
    return np.where(valid, out, np.nan)


def curve_descriptors(
    t: ArrayLike,
    y: ArrayLike,
    baseline: ArrayLike = 0.0,
    *,
    t_end_s: float | None = None,
) -> dict[str, NDArray[np.float64]]:
    """Perfusion descriptors of curves sampled on a shared time grid.

    Parameters
    ----------
    t : array, shape (N,)
        Strictly increasing times in seconds (cine clock).  May extend past
        the acquisition so that the first moment sees the curve's tail.
    y : array, shape (..., N)
        Curves in linear echo power (a.u.); any leading batch shape.
    baseline : array broadcastable to y.shape[:-1]
        Baseline power of each curve (a.u.).
    t_end_s : float, optional
        End of the acquisition in seconds; ``auc`` integrates up to it and
        ``peak_in_acquisition`` compares TTP with it.  Default: ``t[-1]``.

    Returns
    -------
    dict of str to array, each of shape y.shape[:-1]
        The keys of `DESCRIPTOR_UNITS` plus ``peak_in_acquisition`` (bool
        as float 0/1).  Values that do not exist for a curve (no rise, no
        fall after the peak) are NaN.
    """
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if t.ndim != 1 or t.size < 3 or y.shape[-1] != t.size:
        raise ValueError("t must be (N,) with N >= 3 and y (..., N)")
    b = np.broadcast_to(np.asarray(baseline, dtype=np.float64), y.shape[:-1])
    t_end = float(t[-1]) if t_end_s is None else float(t_end_s)
    yb = y - b[..., None]

    i_peak = np.argmax(yb, axis=-1)
    ttp = t[i_peak]
    pe = np.take_along_axis(yb, i_peak[..., None], axis=-1)[..., 0]

    slope = np.gradient(y, t, axis=-1)
    idx = np.arange(t.size)
    before = idx <= i_peak[..., None]
    rising = np.where(before, slope, -np.inf)
    falling = np.where(~before | (idx == i_peak[..., None]), slope, np.inf)
    i_in = np.argmax(rising, axis=-1)
    i_out = np.argmin(falling, axis=-1)
    wir = np.take_along_axis(slope, i_in[..., None], axis=-1)[..., 0]
    wor = np.take_along_axis(slope, i_out[..., None], axis=-1)[..., 0]
    y_in = np.take_along_axis(yb, i_in[..., None], axis=-1)[..., 0]
    y_out = np.take_along_axis(yb, i_out[..., None], axis=-1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        ti = np.where(wir > 0, t[i_in] - y_in / wir, np.nan)
        to = np.where(wor < 0, t[i_out] - y_out / wor, np.nan)
    wir = np.where(wir > 0, wir, np.nan)
    wor = np.where(wor < 0, wor, np.nan)

    area_all = _masked_trapezoid(t, yb, np.full_like(ttp, -np.inf), np.full_like(ttp, np.inf))
    area_all = np.where(np.isfinite(area_all), area_all, np.sum(
        0.5 * (yb[..., 1:] + yb[..., :-1]) * np.diff(t), axis=-1))
    moment = np.sum(0.5 * (yb[..., 1:] * t[1:] + yb[..., :-1] * t[:-1]) * np.diff(t), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        first_moment = np.where(area_all > 0, moment / area_all, np.nan)

    auc = _masked_trapezoid(t, yb, np.full_like(ttp, t[0]), np.full_like(ttp, t_end))
    wi_auc = _masked_trapezoid(t, yb, ti, ttp)
    wo_auc = _masked_trapezoid(t, yb, ttp, to)
    return descriptor_dict(ti=ti, ttp=ttp, to=to, first_moment=first_moment, pe=pe, auc=auc,
                           wir=wir, wor=wor, wi_auc=wi_auc, wo_auc=wo_auc, t_end_s=t_end)


def descriptor_dict(
    *,
    ti: NDArray[np.float64],
    ttp: NDArray[np.float64],
    to: NDArray[np.float64],
    first_moment: NDArray[np.float64],
    pe: NDArray[np.float64],
    auc: NDArray[np.float64],
    wir: NDArray[np.float64],
    wor: NDArray[np.float64],
    wi_auc: NDArray[np.float64],
    wo_auc: NDArray[np.float64],
    t_end_s: float,
) -> dict[str, NDArray[np.float64]]:
    """Assemble the descriptor set from its primary quantities.

    The derived parameters (rise time, fall time, mTT from arrival, WiPI,
    peak in acquisition) are defined here once, for the dense-grid path
    (`curve_descriptors`) and the models' closed forms alike.
    """
    rise = ttp - ti
    with np.errstate(divide="ignore", invalid="ignore"):
        wipi = np.where(rise > 0, wi_auc / rise, np.nan)
    return {
        "arrival_time_s": ti,
        "time_to_peak_s": ttp,
        "rise_time_s": rise,
        "mean_transit_time_s": first_moment - ti,
        "fall_time_s": to - ttp,
        "wash_out_end_s": to,
        "peak_enhancement": pe,
        "auc": auc,
        "wash_in_rate": wir,
        "wash_out_rate": wor,
        "wash_in_auc": wi_auc,
        "wash_out_auc": wo_auc,
        "wash_in_perfusion_index": wipi,
        "peak_in_acquisition": (ttp <= t_end_s).astype(np.float64),
    }


def dense_grid(t_end_s: float, dt_s: float, *, extend_to_s: float | None = None) -> NDArray[np.float64]:
    """A fine time grid from 0 to ``max(t_end_s, extend_to_s)`` with step ``dt_s`` (s)."""
    stop = max(t_end_s, extend_to_s or 0.0)
    n = int(np.ceil(stop / dt_s)) + 1
    return np.linspace(0.0, (n - 1) * dt_s, n)
