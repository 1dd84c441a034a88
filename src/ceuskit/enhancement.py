"""Does the lesion truly enhance?  The intraluminal-enhancement verdict.

A significance test alone says only that an ROI's mean rose above its own
baseline.  On real cines that is not enough: thousands of pixels make a
leak of a few percent of a bright neighbour's signal (lumen blooming,
partial volume, residual misregistration) astronomically significant, and
tissue or heart motion in a non-contrast cine makes an ROI's mean fluctuate
"significantly" with no bolus at all.  A reader asks more, and so does
`enhancement_verdict`:

1. **Was a bolus seen at all?** (`bolus_evidence`, `contrast_bolus_seen`)
   A curve shows a bolus when the cine is long enough to hold a wash-in
   (`MIN_CINE_S`), it starts from a pre-arrival baseline, and its curve,
   smoothed over `BOLUS_SMOOTH_S` (which averages cardiac and arterial
   pulsation away), rises by at least `BOLUS_MIN_RISE_DB` and stays above
   half that rise for `BOLUS_MIN_HALF_WIDTH_S`.  The bolus is looked for in
   every reference and vessel ROI and in the whole contrast panel.
2. **Does the lesion rise by itself, by a size that matters?**  The
   statistical test (`ceuskit.kinetics.fit.enhancement_test`) stays a
   necessary condition; the lesion's rise must also be a sustained,
   bolus-shaped one (`bolus_evidence`) and not negligible beside the
   reference tissue (`MIN_RISE_VS_REFERENCE_DB`).
3. **Is it the lesion's own signal?**  The ROI's *core* - its pixels at
   least `CORE_MARGIN_PX` from any brighter neighbour (`core_mask`) - is
   tested the same way, and the whole ROI's curve is compared with the
   bright neighbour's: a small scaled copy of it with its timing
   (`leakage_fit`) is what leakage looks like.  A lesion that fills
   clearly *before* the neighbour (arterial feeding of tumour, while the
   venous lumen fills later) cannot be a copy of it.

The verdict is True, False or None (not assessable, with the reason):

- None when no bolus was seen anywhere (too short a cine, no baseline
  before arrival, no rise in any reference/vessel ROI or the panel, not an
  ultrasound cine); and when the whole ROI's rise looks like the
  neighbour's leakage but its core cannot be tested (too thin), or when
  only the rim enhances and leakage is not established either way.
- False when a bolus was seen and the lesion did not take it up: no
  significant rise, a negligible or unsustained one, or a rise confined to
  the rim facing a brighter neighbour whose curve it copies.
- True when the lesion's core enhances by itself (or, with no core to test
  and no brighter neighbour to copy, the whole ROI does), or when its
  signal arrives before the neighbour's.

Every margin is a module constant; `margins()` lists them with their
reasons for results.json and the report.  Pure functions over arrays; no
I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.ndimage import binary_dilation, distance_transform_edt

from ceuskit.kinetics.fit import (
    BASELINE_MIN_S,
    ENHANCEMENT_SMOOTH_S,
    enhancement_test,
    fill_nonfinite,
)

FloatArray = NDArray[np.float64]

#: Shortest cine (s) that can show a wash-in: contrast takes several seconds
#: from arrival to peak in perfused tissue and veins (the rise time of the
#: slowest simulated family is ~10 s, of real limb muscle 5-15 s); a 1-4 s
#: clip (an echo loop, a Doppler cine) shows at best a fragment.
MIN_CINE_S = 10.0
#: Smoothing window (s) for the bolus test: averages over at least one
#: cardiac cycle (0.5-2 Hz) and arterial pulsation, which move an ROI's mean
#: periodically, while a bolus rising over several seconds keeps its shape.
BOLUS_SMOOTH_S = 2.0
#: A bolus raises the smoothed curve at least this far above its baseline
#: (dB of power, 6 dB = x4).  Contrast uptake in perfused tissue and lumen
#: is 10-30 dB; motion and gain drift of a non-contrast cine change an ROI's
#: smoothed mean by a few dB.
BOLUS_MIN_RISE_DB = 6.0
#: ... and keeps it above half its rise for this long (s): a first pass lasts
#: tens of seconds in tissue and at least several in a vein, while a flash,
#: a probe touch or a motion excursion lasts a second or two.
BOLUS_MIN_HALF_WIDTH_S = 4.0
#: At the first frames (the first `BASELINE_MIN_S` of the kinetics test) the
#: smoothed curve must be below this share of its rise: otherwise the
#: contrast was already there and no pre-arrival baseline exists.
BASELINE_MAX_SHARE = 0.25
#: A lesion's rise must reach at least this level relative to the reference
#: tissue's rise (dB).  Hypo-enhancing tumours sit at about -10 dB (the
#: simulator's hypo family -10 to -6 dB, down to ~-14 dB with heavy
#: necrosis); a rise 20 dB (100 x) below the reference's is nothing a reader
#: would call uptake, however significant.
MIN_RISE_VS_REFERENCE_DB = -20.0
#: Pixels of a lesion ROI closer than this to a brighter neighbour are its rim
#: (px): blooming of the bright lumen (the point-spread function of a
#: saturating signal), partial volume and residual misregistration after
#: motion correction (<= 0.5 px) reach a few pixels into it.
CORE_MARGIN_PX = 5.0
#: A neighbour is "brighter" when its cine-mean linear power is at least this
#: far above the lesion ROI's mean (dB): only a neighbour several times
#: brighter can leak enough to matter.
NEIGHBOUR_BRIGHTER_DB = 6.0
#: Width (px) of the ring around the lesion searched for brighter neighbours.
NEIGHBOUR_RING_PX = 8
#: Smallest core (pixels) worth testing: its mean must still average speckle.
CORE_MIN_PX = 30
#: Leakage: the lesion's enhancement is at most this share of the
#: neighbour's (linear; 0.25 = -6 dB) - blooming and partial volume carry a
#: fraction of a neighbour's signal, not most of it ...
LEAK_MAX_SHARE = 0.25
#: ... and the neighbour's scaled curve explains at least this share of the
#: lesion's enhancement (coefficient of determination over the frames where
#: the neighbour is enhanced) ...
LEAK_MIN_R2 = 0.8
#: ... with the same timing: arrival (20 % of the rise) within this many
#: seconds (the findings' wash-in margin, `ceuskit.findings.WASH_IN_MARGIN_S`).
LEAK_MAX_LAG_S = 1.25
#: A lesion that reaches 20 % of its rise this much earlier than the
#: neighbour fills before it (s): it cannot be the neighbour's copy.
EARLIER_MARGIN_S = 1.25
#: Share of the rise that marks arrival in the timing comparisons.
ARRIVAL_SHARE = 0.2
#: Strong blooming reaches past `CORE_MARGIN_PX`.  Leakage then still shows
#: in the core as a copy of the neighbour's curve that fades with distance:
#: the core's rise at least this far (dB) below the whole ROI's.  Measured:
#: tumour cores 1-1.6 dB below their whole ROI (necrosis 0-0.8, blooming
#: 0-3 px); bland thrombi under 3 px blooming and 3-8 px motion 11-12 dB.
CORE_DECAY_DB = 8.0
#: ... and not bright: a core within this level of the reference tissue's
#: rise (dB) is taken as uptake whatever its shape (never explained away).
FAINT_CORE_VS_REFERENCE_DB = -3.0


#: (results.json name, value, unit, reason) of every margin, for `margins`.
_MARGINS: tuple[tuple[str, float, str, str], ...] = (
    ("min_cine_s", MIN_CINE_S, "s", "shorter cines cannot hold a wash-in (arrival to peak takes several s)"),
    ("bolus_smooth_s", BOLUS_SMOOTH_S, "s", "averages cardiac/arterial pulsation away, keeps a bolus"),
    ("bolus_min_rise_db", BOLUS_MIN_RISE_DB, "dB",
     "contrast uptake is 10-30 dB; motion and drift change a mean by a few dB"),
    ("bolus_min_half_width_s", BOLUS_MIN_HALF_WIDTH_S, "s",
     "a first pass lasts many seconds; flashes and motion excursions a second or two"),
    ("baseline_max_share", BASELINE_MAX_SHARE, "1",
     f"in the first {BASELINE_MIN_S:g} s the curve must be below this share of its rise (a "
     "pre-arrival baseline)"),
    ("min_rise_vs_reference_db", MIN_RISE_VS_REFERENCE_DB, "dB",
     "hypo-enhancing tumour sits near -10 dB; 100 x below the reference is not uptake"),
    ("core_margin_px", CORE_MARGIN_PX, "px",
     "blooming, partial volume and residual misregistration reach a few pixels into the ROI from a "
     "brighter neighbour"),
    ("neighbour_brighter_db", NEIGHBOUR_BRIGHTER_DB, "dB",
     "only a neighbour several times brighter leaks enough to matter"),
    ("leak_max_share", LEAK_MAX_SHARE, "1", "leakage carries a fraction of the neighbour's signal"),
    ("leak_min_r2", LEAK_MIN_R2, "1", "a copy of the neighbour's curve explains most of the lesion's"),
    ("leak_max_lag_s", LEAK_MAX_LAG_S, "s", "a copy has the neighbour's timing (the wash-in margin)"),
    ("earlier_margin_s", EARLIER_MARGIN_S, "s",
     "tissue filling this much before the neighbour cannot be its copy (arterial feeding of tumour)"),
    ("core_decay_db", CORE_DECAY_DB, "dB",
     "leakage fades with distance from its source; a lesion's own uptake does not"),
    ("faint_core_vs_reference_db", FAINT_CORE_VS_REFERENCE_DB, "dB",
     "a core this close to the reference's level is never explained away as leakage"),
)


def margins() -> dict[str, Any]:
    """Every margin of the verdict with its value, unit and reason (results.json, report)."""
    out: dict[str, Any] = {name: {"value": value, "unit": unit, "reason": reason}
                           for name, value, unit, reason in _MARGINS}
    out["source"] = ("ceuskit heuristic (proposed): margins chosen from the physics of leakage and the "
                     "simulator's confounders (tests/test_enhancement_verdict.py)")
    return out


# --------------------------------------------------------------------------- curves


def smooth_over(t: FloatArray, y: FloatArray, window_s: float) -> FloatArray:
    """Centred moving average of ``y`` over ``window_s`` seconds.

    The window is an odd number of samples at the median frame interval; the
    edges are padded with the end values; a copy of ``y`` when the window is
    one sample or longer than the curve.
    """
    dt = float(np.median(np.diff(t))) if t.size > 1 else 1.0
    k = max(1, round(window_s / dt) | 1) if dt > 0 else 1
    if k <= 1 or y.size < k:
        return y.copy()
    pad = k // 2
    padded = np.pad(y, pad, mode="edge")
    return np.asarray(np.convolve(padded, np.ones(k) / k, mode="valid"))


def _prepared(t: ArrayLike, y: ArrayLike, valid: ArrayLike | None) -> tuple[FloatArray, FloatArray]:
    tt = np.asarray(t, dtype=np.float64).reshape(-1)
    yy = np.asarray(y, dtype=np.float64).reshape(-1)
    ok = np.isfinite(yy) if valid is None else np.asarray(valid, dtype=bool) & np.isfinite(yy)
    return tt, fill_nonfinite(yy, ok)


def _db(ratio: float) -> float | None:
    if not math.isfinite(ratio):
        return None
    return 10.0 * math.log10(ratio) if ratio > 0 else -math.inf


@dataclass(frozen=True)
class BolusEvidence:
    """Whether one curve shows a contrast bolus (`bolus_evidence`).

    Attributes
    ----------
    seen : bool or None
        True: a bolus; False: none although the cine could show one; None:
        the cine cannot tell (too short, no baseline before arrival).
    reason : str
        One sentence.
    rise_db : float or None
        Smoothed peak over the baseline (dB of power).
    half_width_s : float or None
        Longest time the smoothed curve stays above half its rise (s).
    baseline_share : float or None
        Level of the first frames as a share of the rise (0 = flat baseline).
    arrival_s : float or None
        First time the smoothed curve reaches `ARRIVAL_SHARE` of its rise (s).
    """

    seen: bool | None
    reason: str
    rise_db: float | None = None
    half_width_s: float | None = None
    baseline_share: float | None = None
    arrival_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


def bolus_evidence(times_s: ArrayLike, curve: ArrayLike, valid: ArrayLike | None = None) -> BolusEvidence:
    """Does a curve of linear power show a contrast bolus?

    Parameters
    ----------
    times_s : array, shape (T,)
        Frame times (s), increasing.
    curve : array, shape (T,)
        Mean linear power (a.u.), NaN where missing.
    valid : bool array, shape (T,), optional
        Frames to use (e.g. those motion correction kept).

    Returns
    -------
    BolusEvidence
    """
    t, y = _prepared(times_s, curve, valid)
    duration = float(t[-1] - t[0]) if t.size > 1 else 0.0
    if duration < MIN_CINE_S:
        return BolusEvidence(None, f"the cine lasts {duration:.1f} s, less than the {MIN_CINE_S:g} s "
                                   "a contrast wash-in needs")
    s = smooth_over(t, y, BOLUS_SMOOTH_S)
    early = t <= t[0] + BASELINE_MIN_S
    base = float(np.median(y[early]))
    i_peak = int(np.argmax(s))
    peak = float(s[i_peak])
    rise = peak - base
    # The floor of the whole curve: a bolus present from frame 0 only decays
    # towards it, so its first frames sit high above it.
    lowest = float(np.min(s))
    full = peak - lowest
    share = (base - lowest) / full if full > 0 else 0.0
    full_db = _db(peak / lowest) if lowest > 0 else (math.inf if full > 0 else None)
    if share > BASELINE_MAX_SHARE and full_db is not None and full_db >= BOLUS_MIN_RISE_DB:
        return BolusEvidence(None, "the curve starts high and falls: the contrast was already "
                                   "present at the first frame, there is no pre-arrival baseline",
                             full_db, None, share, None)
    if base > 0 and rise > 0:
        rise_db = _db(peak / base)
    else:
        rise_db = math.inf if rise > 0 else None
    if rise <= 0 or rise_db is None:
        return BolusEvidence(False, "the curve never rises above its first frames", rise_db)
    above = s >= base + 0.5 * rise
    half_width = _longest_run_s(t, above)
    arrival = _arrival(t, s, base)
    ev = {"rise_db": rise_db, "half_width_s": half_width, "baseline_share": share, "arrival_s": arrival}
    if rise_db < BOLUS_MIN_RISE_DB:
        return BolusEvidence(False, f"the curve, smoothed over {BOLUS_SMOOTH_S:g} s, rises only "
                                    f"{rise_db:.1f} dB (a bolus rises at least {BOLUS_MIN_RISE_DB:g} dB)",
                             **ev)
    if half_width < BOLUS_MIN_HALF_WIDTH_S:
        return BolusEvidence(False, f"the rise lasts {half_width:.1f} s above half its height (a bolus "
                                    f"at least {BOLUS_MIN_HALF_WIDTH_S:g} s): a transient, not a bolus",
                             **ev)
    return BolusEvidence(True, f"a {rise_db:.0f} dB bolus rise lasting {half_width:.0f} s above half "
                               "its height", **ev)


def _longest_run_s(t: FloatArray, flags: NDArray[np.bool_]) -> float:
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    d = np.diff(padded)
    starts, stops = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    if starts.size == 0:
        return 0.0
    dt = float(np.median(np.diff(t))) if t.size > 1 else 0.0
    return float(max(t[b - 1] - t[a] + dt for a, b in zip(starts, stops, strict=True)))


# --------------------------------------------------------------------------- bolus anywhere


def contrast_bolus_seen(
    times_s: ArrayLike,
    curves: Mapping[str, ArrayLike],
    *,
    valid: ArrayLike | None = None,
    modality: str | None = None,
) -> tuple[bool | None, str, dict[str, Any]]:
    """Was a contrast bolus seen anywhere in the cine?

    Parameters
    ----------
    times_s : array, shape (T,)
    curves : mapping of str to array (T,)
        Candidate curves (linear power): every reference and vessel ROI and
        the whole contrast panel, named for the report.
    valid : bool array, shape (T,), optional
    modality : str, optional
        The file's modality (DICOM ``Modality``); anything but ``US``
        cannot be a CEUS cine.

    Returns
    -------
    (seen, reason, evidence per curve)
    """
    evidence = {name: bolus_evidence(times_s, y, valid) for name, y in curves.items()}
    ev_json = {name: e.as_dict() for name, e in evidence.items()}
    if modality is not None and modality.upper() not in ("US", ""):
        return None, (f"the file's modality is {modality}, not ultrasound: no contrast-enhanced "
                      "ultrasound bolus can be assessed"), ev_json
    seen = [n for n, e in evidence.items() if e.seen is True]
    if seen:
        best = max(seen, key=lambda n: evidence[n].rise_db or 0.0)
        return True, f"bolus seen in {', '.join(seen)} ({evidence[best].reason})", ev_json
    undetermined = [n for n, e in evidence.items() if e.seen is None]
    if undetermined:
        return None, f"no bolus can be assessed: {evidence[undetermined[0]].reason}", ev_json
    if not evidence:
        return None, "no curve to look for a bolus in", ev_json
    detail = "; ".join(f"{n}: {e.reason}" for n, e in evidence.items())
    return False, ("no contrast bolus was seen in any reference or vessel ROI or in the panel (not a "
                   f"contrast-mode cine, or no contrast was given): {detail}"), ev_json


# --------------------------------------------------------------------------- geometry


def neighbour_masks(lesion: NDArray[np.bool_], mean_power: NDArray[np.floating[Any]],
                    vessels: Sequence[NDArray[np.bool_]] = ()) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """The lesion's brighter neighbours and its core, from the cine-mean power image.

    Parameters
    ----------
    lesion : bool array (H, W)
    mean_power : array (H, W)
        Cine-mean linear power per pixel (a.u.; NaN where unknown).
    vessels : sequence of bool arrays (H, W)
        Vessel ROIs (patent lumen): counted as brighter neighbours where they
        touch the ring, whatever their measured level.

    Returns
    -------
    (bright, core)
        ``bright``: pixels within `NEIGHBOUR_RING_PX` outside the lesion whose
        mean power is at least `NEIGHBOUR_BRIGHTER_DB` above the lesion's
        mean (or that belong to a vessel ROI); ``core``: lesion pixels at
        least `CORE_MARGIN_PX` from every bright pixel.
    """
    lesion = np.asarray(lesion, dtype=bool)
    img = np.asarray(mean_power, dtype=np.float64)
    ring = binary_dilation(lesion, iterations=NEIGHBOUR_RING_PX) & ~lesion
    vals = img[lesion]
    lesion_mean = float(np.nanmean(vals)) if np.any(np.isfinite(vals)) else math.nan
    factor = 10.0 ** (NEIGHBOUR_BRIGHTER_DB / 10.0)
    with np.errstate(invalid="ignore"):
        bright = ring & np.isfinite(img) & (img >= factor * lesion_mean) if math.isfinite(lesion_mean) \
            else np.zeros_like(lesion)
    for v in vessels:
        bright |= ring & np.asarray(v, dtype=bool)
    if not bright.any():
        return bright, lesion.copy()
    dist = distance_transform_edt(~bright)
    core = lesion & (dist >= CORE_MARGIN_PX)
    return bright, core


# --------------------------------------------------------------------------- leakage


@dataclass(frozen=True)
class Leakage:
    """How well a scaled copy of the neighbour's curve explains the lesion's (`leakage_fit`).

    Attributes
    ----------
    share : float or None
        Least-squares scale of the neighbour's enhancement in the lesion's (linear).
    share_db : float or None
        The same in dB.
    r2 : float or None
        Share of the lesion's enhancement the scaled copy explains.
    lag_s : float or None
        Lesion arrival minus neighbour arrival (s, at `ARRIVAL_SHARE` of each rise).
    explained : bool
        All three leakage conditions hold.
    earlier : bool
        The lesion arrives at least `EARLIER_MARGIN_S` before the neighbour.
    """

    share: float | None
    share_db: float | None
    r2: float | None
    lag_s: float | None
    explained: bool
    earlier: bool

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


def _arrival(t: FloatArray, s: FloatArray, base: float) -> float | None:
    rise = float(np.max(s)) - base
    if rise <= 0:
        return None
    idx = np.flatnonzero(s >= base + ARRIVAL_SHARE * rise)
    return float(t[idx[0]]) if idx.size else None


def leakage_fit(times_s: ArrayLike, lesion: ArrayLike, neighbour: ArrayLike,
                valid: ArrayLike | None = None) -> Leakage:
    """Is the lesion's curve a small scaled copy of its neighbour's, with its timing?

    Both curves are smoothed over `ENHANCEMENT_SMOOTH_S` and taken above
    their baselines (median of the first `BASELINE_MIN_S`); the scale is the
    least-squares factor through the origin over the frames where the
    neighbour is above 10 % of its rise.

    Parameters
    ----------
    times_s : array (T,)
    lesion, neighbour : array (T,)
        Linear power (a.u.).
    valid : bool array (T,), optional

    Returns
    -------
    Leakage
    """
    t, yl = _prepared(times_s, lesion, valid)
    _, yn = _prepared(times_s, neighbour, valid)
    sl, sn = smooth_over(t, yl, ENHANCEMENT_SMOOTH_S), smooth_over(t, yn, ENHANCEMENT_SMOOTH_S)
    early = t <= t[0] + BASELINE_MIN_S
    bl, bn = float(np.median(yl[early])), float(np.median(yn[early]))
    el, en = sl - bl, sn - bn
    rise_n = float(np.max(en))
    if not rise_n > 0:
        return Leakage(None, None, None, None, False, False)
    sel = en >= 0.1 * rise_n
    share = float(np.sum(el[sel] * en[sel]) / np.sum(en[sel] ** 2))
    total = float(np.sum(el[sel] ** 2))
    r2 = 1.0 - float(np.sum((el[sel] - share * en[sel]) ** 2)) / total if total > 0 else None
    ta, tn = _arrival(t, sl, bl), _arrival(t, sn, bn)
    lag = None if ta is None or tn is None else ta - tn
    explained = (share <= LEAK_MAX_SHARE and r2 is not None and r2 >= LEAK_MIN_R2
                 and lag is not None and abs(lag) <= LEAK_MAX_LAG_S)
    earlier = lag is not None and lag <= -EARLIER_MARGIN_S
    return Leakage(share, _db(share) if share > 0 else None, r2, lag, bool(explained), bool(earlier))


# --------------------------------------------------------------------------- verdict


@dataclass(frozen=True)
class RiseTest:
    """One curve's own enhancement: significance, size and shape."""

    significant: bool
    z: float | None
    rise_vs_reference_db: float | None
    bolus: BolusEvidence
    enhances: bool
    why: str

    def as_dict(self) -> dict[str, Any]:
        z = self.z if self.z is not None and math.isfinite(self.z) else None
        r = self.rise_vs_reference_db
        return {"significant": self.significant, "z": z,
                "rise_vs_reference_db": r if r is not None and math.isfinite(r) else None,
                "bolus": self.bolus.as_dict(), "enhances": self.enhances, "why": self.why}


def rise_test(times_s: ArrayLike, curve: ArrayLike, *, valid: ArrayLike | None = None,
              reference_rise: float | None = None) -> RiseTest:
    """Significance (`enhancement_test`), shape (`bolus_evidence`) and size of one curve's rise.

    Parameters
    ----------
    times_s, curve, valid
        As `bolus_evidence`.
    reference_rise : float, optional
        The reference tissue's smoothed rise above its baseline (a.u.); when
        given, the curve's rise must be within `MIN_RISE_VS_REFERENCE_DB` of it.
    """
    t, y = _prepared(times_s, curve, valid)
    yv = y.copy()
    if valid is not None:
        yv[~np.asarray(valid, dtype=bool)] = np.nan
    enh, z_arr, det = enhancement_test(t, yv)
    significant = bool(np.asarray(enh).reshape(-1)[0])
    z = float(np.asarray(z_arr).reshape(-1)[0])
    rise = float(np.asarray(det["smoothed_peak"]).reshape(-1)[0] - np.asarray(det["baseline"]).reshape(-1)[0])
    rel = None
    if reference_rise is not None and reference_rise > 0:
        rel = _db(rise / reference_rise) if rise > 0 else -math.inf
    bolus = bolus_evidence(t, y, valid)
    if not significant:
        return RiseTest(False, z, rel, bolus, False, "no significant rise above its pre-bolus baseline")
    if rel is not None and rel < MIN_RISE_VS_REFERENCE_DB:
        return RiseTest(True, z, rel, bolus, False,
                        f"its rise is {-rel:.0f} dB below the reference tissue's (negligible; at most "
                        f"{-MIN_RISE_VS_REFERENCE_DB:g} dB below counts)")
    if bolus.seen is False and bolus.half_width_s is not None and bolus.half_width_s < BOLUS_MIN_HALF_WIDTH_S:
        return RiseTest(True, z, rel, bolus, False, f"its rise is not sustained ({bolus.reason})")
    return RiseTest(True, z, rel, bolus, True, "a significant, sustained rise of its own")


@dataclass(frozen=True)
class Verdict:
    """The intraluminal-enhancement verdict of one lesion ROI (`enhancement_verdict`)."""

    enhancing: bool | None
    reason: str
    whole: RiseTest
    core: RiseTest | None
    core_px: int
    lesion_px: int
    bright_neighbour_px: int
    leakage: Leakage | None
    neighbour: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "intraluminal_enhancement": self.enhancing,
            "reason": self.reason,
            "whole_roi": self.whole.as_dict(),
            "core": None if self.core is None else self.core.as_dict(),
            "core_px": self.core_px,
            "lesion_px": self.lesion_px,
            "bright_neighbour_px": self.bright_neighbour_px,
            "neighbour": self.neighbour,
            "leakage": None if self.leakage is None else self.leakage.as_dict(),
            "margins": margins(),
        }


def enhancement_verdict(
    times_s: ArrayLike,
    whole: ArrayLike,
    *,
    core: ArrayLike | None,
    core_px: int,
    lesion_px: int,
    neighbour: ArrayLike | None,
    neighbour_name: str | None,
    bright_neighbour_px: int,
    reference_rise: float | None,
    bolus_seen: bool | None,
    bolus_reason: str,
    valid: ArrayLike | None = None,
) -> Verdict:
    """Decide whether a lesion enhances by itself (module rules).

    Parameters
    ----------
    times_s : array (T,)
    whole : array (T,)
        The lesion ROI's mean linear power (a.u.).
    core : array (T,) or None
        Mean power of the lesion's core (`neighbour_masks`); None when the
        core has fewer than `CORE_MIN_PX` pixels.
    core_px, lesion_px, bright_neighbour_px : int
        Pixel counts, for the record.
    neighbour : array (T,) or None
        Mean power of the brighter neighbour (ring pixels, or the vessel ROI);
        None when there is none.
    neighbour_name : str or None
        What ``neighbour`` is, for the reason.
    reference_rise : float or None
        The reference ROI's smoothed rise (a.u.), None without an enhancing reference.
    bolus_seen, bolus_reason
        `contrast_bolus_seen`'s answer.
    valid : bool array (T,), optional
        Frames to use.

    Returns
    -------
    Verdict
    """
    w = rise_test(times_s, whole, valid=valid, reference_rise=reference_rise)
    c = (rise_test(times_s, core, valid=valid, reference_rise=reference_rise)
         if core is not None and core_px >= CORE_MIN_PX else None)
    leak = leakage_fit(times_s, whole, neighbour, valid) if neighbour is not None else None

    def verdict(value: bool | None, reason: str) -> Verdict:
        return Verdict(value, reason, w, c, int(core_px), int(lesion_px), int(bright_neighbour_px),
                       leak, neighbour_name)

    if bolus_seen is not True:
        return verdict(None, "not assessable: " + bolus_reason)
    if not w.enhances:
        return verdict(False, f"a bolus was seen, and the lesion did not take it up: {w.why}")
    if leak is not None and leak.earlier:
        return verdict(True, f"the lesion enhances, {-(leak.lag_s or 0.0):.1f} s before the brighter "
                             f"neighbour ({neighbour_name}) fills: its own, not the neighbour's signal")
    copy = (f"the whole ROI's curve is a {leak.share_db:.0f} dB copy of the brighter neighbour's "
            f"({neighbour_name}; R2 {leak.r2:.2f}, lag {leak.lag_s:+.1f} s)"
            if leak is not None and leak.explained and leak.share_db is not None
            and leak.r2 is not None and leak.lag_s is not None else None)
    if c is None:
        if copy is not None:
            return verdict(None, f"not assessable: {copy}, and the ROI is too thin to test a core "
                                 f"{CORE_MARGIN_PX:g} px away from it (draw a larger ROI or use "
                                 "motion correction)")
        return verdict(True, "the lesion enhances: " + w.why
                       + ("" if bright_neighbour_px == 0 else
                          "; its curve is not a copy of the brighter neighbour's"))
    if c.enhances and copy is not None and neighbour is not None and core is not None:
        core_leak = leakage_fit(times_s, core, neighbour, valid)
        wr, cr = w.rise_vs_reference_db, c.rise_vs_reference_db
        fading = (core_leak.r2 is not None and core_leak.r2 >= LEAK_MIN_R2
                  and core_leak.lag_s is not None and abs(core_leak.lag_s) <= LEAK_MAX_LAG_S
                  and wr is not None and cr is not None and wr - cr >= CORE_DECAY_DB
                  and cr <= FAINT_CORE_VS_REFERENCE_DB)
        if fading:
            assert wr is not None and cr is not None
            return verdict(False, f"a bolus was seen, and the lesion did not take it up: {copy}, and "
                                  f"its core holds only a faint copy of it ({cr:.0f} dB re the "
                                  f"reference, {wr - cr:.0f} dB below the whole ROI), fading with "
                                  "distance from the neighbour: blooming/leakage, not enhancement")
    if c.enhances:
        return verdict(True, f"the lesion's core, {CORE_MARGIN_PX:g} px or more from any brighter "
                             f"neighbour, enhances by itself ({c.why})")
    if copy is not None:
        return verdict(False, f"a bolus was seen, and the lesion did not take it up: its core does not "
                              f"enhance ({c.why}) and {copy}: leakage, not enhancement")
    return verdict(None, f"not assessable: the ROI enhances only at its rim next to a brighter "
                         f"neighbour and its core does not ({c.why}), but the rim's curve is not a "
                         "copy of the neighbour's either")
