"""CEUS findings of a venous mass, read from the quantification.

`derive_findings` turns a results.json document (`ceuskit.pipeline.build_results`)
into the descriptors a clinician reads (CEUS LI-RADS vocabulary, used for its
definitions, not its categories), each with the number behind it.  It is a
pure function: no I/O, no fitting; it only reads the perfusion figures and
curves the pipeline measured.

Definitions (cine clock: t = 0 at the first frame; the injection is assumed
at ``injection_time_s``, 0 unless the caller knows better):

- **Intraluminal enhancement**: the lesion ROI's ``enhancing`` flag, i.e. the
  pipeline's enhancement test (z statistic and minimum rise, reported from
  ``enhancement_test``).  Enhancing material in a vein is tumour, not bland
  thrombus (CEUS LI-RADS LR-TIV definition; Eur Radiol 2020 meta-analysis,
  doi:10.1007/s00330-019-06649-z).
- **Wash-in** relative to the reference: ``d = TI_lesion - TI_reference``
  (arrival times, s): ``rapid`` if ``d <= -WASH_IN_MARGIN_S``, ``slow`` if
  ``d >= +WASH_IN_MARGIN_S``, ``synchronous`` otherwise.
- **Intraluminal enhancement**, above, is now the verdict of
  `ceuskit.enhancement` (``rois.<lesion>.enhancement_verdict``: a bolus
  seen, the lesion's core rising by itself, not a copy of a brighter
  neighbour); None with the reason in ``not_assessable`` when the cine
  cannot tell, and then every finding below is None too.
- **Enhancement degree**: ``E = 10 log10(PE_viable / PE_reference)`` (dB),
  on the lesion's viable part (pixels the necrosis test calls enhancing,
  ``rois.<lesion>.viable_part``; the whole ROI where it was not measured):
  ``hyper`` if ``E >= +ENHANCEMENT_MARGIN_DB``, ``hypo`` if
  ``E <= -ENHANCEMENT_MARGIN_DB``, ``iso`` in between; ``none`` when the
  lesion does not enhance.  ``enhancement_whole_roi`` is the same on the
  whole ROI (necrosis included).
- **Wash-out**: the relative level ``r(t) = 10 log10(L(t) / R(t))`` (dB) of
  the lesion's and the reference's enhancement above their baselines (the
  fitted curves at the frame times; the measured curve smoothed over
  `SMOOTH_S` where an ROI has no fit).  Its starting level is
  ``min(0, E)``: the reference's level for a hyper- or iso-enhancing lesion
  (wash-out in the LI-RADS sense, the lesion becomes hypo-enhancing
  relative to the reference), the lesion's own peak level for a
  hypo-enhancing one (it must fall further; a proposed extension).  Wash-out
  is present when, after the lesion's time to peak, ``r`` is at least
  `WASH_OUT_DROP_DB` below the starting level at every frame of a span of
  `WASH_OUT_MIN_DURATION_S`; the onset is the first frame of the first such
  span.  Timing: ``early`` when ``onset - injection < WASH_OUT_EARLY_LIMIT_S``
  (60 s), ``late`` otherwise.  Degree: ``marked`` ("punched out") when a span
  at least `WASH_OUT_MARKED_DB` below the starting level begins within
  `WASH_OUT_MARKED_WITHIN_S` (120 s) of the injection, ``mild`` when the cine
  covers those 120 s without one.  Not assessable when the lesion or the
  reference does not enhance, when the cine ends before the lesion's peak,
  and, for a negative answer, when the cine ends less than 60 s after the
  injection (late wash-out after the cine's end can never be excluded; the
  evidence says up to when the lesion was watched).
- **Homogeneity**: the lesion's parametric-map summary
  (``rois.<lesion>.map.heterogeneity.heterogeneous``, `ceuskit.maps`).
- **Necrosis**: ``100 x rois.<lesion>.necrosis_fraction`` (non-enhancing
  share of the lesion ROI, `ceuskit.maps.lesion_necrosis`).

The margins are the project's own (no published number exists for a
quantitative cut-off): each lies in the gap between the simulator's kinetics
families (`ceuskit.simulate`, ``--kinetics``), which the cohort test
(tests/test_findings_cohort.py) classifies through the whole pipeline.  The
simulator's truth labels need the noise-free curves to clear each threshold
by a margin (`ceuskit.simulate.TRUTH_MARGINS`: 0.75 s, 1.5 dB, and a
wash-out level held 1.5 dB beyond the threshold for 10 s, 10 s clear of the
60 s / 120 s limits), and its families sit beyond those: arrival
differences <= -2.5 s (rapid), within +-0.3 s (synchronous) or >= +3 s
(slow); enhancement >= +4.5 dB (hyper; the default family with up to 55 %
necrosis), within +-1 dB (iso) or -10 to -6 dB (hypo).  Measured through the
pipeline (40 tumours, 2 frames/s, noise floor -50 to -40 dB, necrosis 0 to
0.55), arrival differences came within 0.5 s of the truth, peak ratios
within 0.5 dB and wash-out onsets within 5 s.

`None` always means "not assessable"; the reason is in ``missing``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ceuskit.dynamic_range import LevelScale, level_scale
from ceuskit.enhancement import CORE_MARGIN_PX, MIN_RISE_VS_REFERENCE_DB, smooth_over
from ceuskit.kinetics.fit import ENHANCEMENT_Z
from ceuskit.outputs import finite_or_none

__all__ = [
    "ENHANCEMENT_MARGIN_DB",
    "PROPOSED",
    "SMOOTH_S",
    "WASH_IN_MARGIN_S",
    "WASH_OUT_DROP_DB",
    "WASH_OUT_EARLY_LIMIT_S",
    "WASH_OUT_MARKED_DB",
    "WASH_OUT_MARKED_WITHIN_S",
    "WASH_OUT_MIN_DURATION_S",
    "WashOut",
    "assess_wash_out",
    "classify_enhancement",
    "classify_wash_in",
    "definitions",
    "derive_findings",
    "enhancement_db",
]

#: Arrival-time difference (s) beyond which the lesion's wash-in is rapid
#: (lesion earlier) or slow (later).  The families sit at <= -2.5 s, +-0.3 s
#: and >= +3 s; the pipeline measures the difference within ~0.6 s.
WASH_IN_MARGIN_S = 1.25
#: Peak-enhancement ratio (dB) beyond which the lesion is hyper / hypo (3 dB
#: is a factor of 2 in echo power).  Families: >= +4.5 dB, +-1 dB, <= -6 dB.
ENHANCEMENT_MARGIN_DB = 3.0
#: Fall of the lesion-to-reference level (dB) below its starting level that
#: counts as wash-out (the lesion becomes hypo-enhancing by the same margin
#: as the enhancement degree's).
WASH_OUT_DROP_DB = 3.0
#: The fall must hold at every frame for this long (s): a smoothed curve's
#: single-frame dips are not wash-out.
WASH_OUT_MIN_DURATION_S = 5.0
#: Wash-out starting less than this long after the injection is early (s)
#: (CEUS LI-RADS).
WASH_OUT_EARLY_LIMIT_S = 60.0
#: Fall (dB) below the starting level that makes wash-out marked
#: ("punched out"), if reached within `WASH_OUT_MARKED_WITHIN_S`.
WASH_OUT_MARKED_DB = 10.0
#: Window after the injection (s) in which a marked fall counts (CEUS LI-RADS: 2 min).
WASH_OUT_MARKED_WITHIN_S = 120.0
#: Moving-average window (s) for a measured curve used without a fit.
SMOOTH_S = 3.0

PROPOSED = "ceuskit heuristic (proposed)"
#: Findings that depend on the intraluminal-enhancement verdict.
_DEPENDENT = ("wash_in", "enhancement", "enhancement_whole_roi", "homogeneity", "wash_out",
              "necrosis_percent")
_SRC_TIV = ("CEUS LI-RADS LR-TIV definition (enhancing soft tissue in a vein); Eur Radiol 2020 "
            "meta-analysis, doi:10.1007/s00330-019-06649-z")
_SRC_LIRADS = "CEUS LI-RADS terminology (wash-out early < 60 s, marked within 2 min)"
_SRC_NECROSIS = ("ceuskit heuristic (proposed): non-enhancing share of the lesion ROI; quartile "
                 "precedent Clin Mol Hepatol 2015;21:158")



# --------------------------------------------------------------------------- classifiers


def classify_wash_in(arrival_difference_s: float) -> str:
    """Wash-in label from the arrival-time difference lesion - reference (s)."""
    if arrival_difference_s <= -WASH_IN_MARGIN_S:
        return "rapid"
    if arrival_difference_s >= WASH_IN_MARGIN_S:
        return "slow"
    return "synchronous"


def enhancement_db(pe_lesion: float, pe_reference: float) -> float:
    """``10 log10(PE_lesion / PE_reference)`` in dB (-inf for a lesion that does not rise)."""
    if not pe_reference > 0:
        raise ValueError(f"reference peak enhancement must be > 0, got {pe_reference!r}")
    if pe_lesion <= 0:
        return -math.inf
    return 10.0 * math.log10(pe_lesion / pe_reference)


def classify_enhancement(db: float) -> str:
    """Enhancement degree of an enhancing lesion from its peak ratio (dB)."""
    if db >= ENHANCEMENT_MARGIN_DB:
        return "hyper"
    if db <= -ENHANCEMENT_MARGIN_DB:
        return "hypo"
    return "iso"


@dataclass(frozen=True)
class WashOut:
    """Outcome of `assess_wash_out`.

    Attributes
    ----------
    present : bool or None
        None when not assessable (`reason` says why).
    onset_s : float or None
        First frame (cine clock, s) of the first sustained fall.
    timing, degree : str or None
        ``early|late`` and ``mild|marked`` (None when absent or not assessable).
    start_level_db : float or None
        ``min(0, E)``: the level the fall is measured from (dB).
    lowest_db : float or None
        Lowest sustained relative level after the lesion's peak (dB; the
        highest level held for `WASH_OUT_MIN_DURATION_S` at its low point).
    lowest_db_marked_window : float or None
        The same, for spans that begin within 120 s of the injection.
    observed_until_s : float
        Last frame time (s).
    reason : str or None
        Why `present` is None, or why `degree` is None when wash-out is present.
    """

    present: bool | None
    onset_s: float | None
    timing: str | None
    degree: str | None
    start_level_db: float | None
    lowest_db: float | None
    lowest_db_marked_window: float | None
    observed_until_s: float
    reason: str | None = None


def _relative_db(lesion: NDArray[np.float64], reference: NDArray[np.float64]) -> NDArray[np.float64]:
    """``10 log10(lesion / reference)``; +-inf where only one of them is above zero, NaN where neither is."""
    out = np.full(lesion.shape, np.nan)
    both = (lesion > 0) & (reference > 0)
    out[both] = 10.0 * np.log10(lesion[both] / reference[both])
    out[(lesion > 0) & ~(reference > 0)] = np.inf
    out[~(lesion > 0) & (reference > 0)] = -np.inf
    return out


def _sustained_level(t: NDArray[np.float64], rel: NDArray[np.float64],
                     duration_s: float) -> NDArray[np.float64]:
    """For each frame i, the highest ``rel`` over frames in ``[t_i, t_i + duration_s]``.

    NaN where the cine ends before ``t_i + duration_s`` (the span cannot be
    confirmed) and where a sample in the span is NaN.
    """
    n = t.size
    end = np.searchsorted(t, t + duration_s - 1e-9, side="left")
    out = np.full(n, np.nan)
    for i in range(n):
        j = int(end[i])
        if j >= n:
            break
        span = rel[i:j + 1]
        if not np.any(np.isnan(span)):
            out[i] = float(np.max(span))
    return out


def assess_wash_out(
    times_s: ArrayLike,
    lesion_enhancement: ArrayLike,
    reference_enhancement: ArrayLike,
    lesion_peak_s: float,
    enhancement_degree_db: float,
    *,
    injection_time_s: float = 0.0,
    level_scale: float = 1.0,
) -> WashOut:
    """Wash-out of the lesion relative to the reference (module definitions).

    Parameters
    ----------
    times_s : array, shape (T,)
        Frame times (s, cine clock), increasing.
    lesion_enhancement, reference_enhancement : array, shape (T,)
        Curves above their baselines (linear power, a.u.; any common scale
        per ROI: only their ratio matters).
    lesion_peak_s : float
        The lesion's time to peak (s); the fall is looked for from there on.
    enhancement_degree_db : float
        ``E``, the peak ratio in dB (starting level ``min(0, E)``).
    injection_time_s : float
        When the contrast was injected (s, cine clock).
    level_scale : float
        Factor applied to every dB level (the relative level and ``E``): the
        same curves read at another display dynamic range
        (`ceuskit.dynamic_range.LevelScale`).

    Returns
    -------
    WashOut
    """
    t = np.asarray(times_s, dtype=np.float64).reshape(-1)
    les = np.asarray(lesion_enhancement, dtype=np.float64).reshape(-1)
    ref = np.asarray(reference_enhancement, dtype=np.float64).reshape(-1)
    if not (t.size == les.size == ref.size) or t.size < 2:
        raise ValueError("times and curves must have the same length (>= 2)")
    t_end = float(t[-1])
    start = min(0.0, float(enhancement_degree_db) * level_scale)
    if not math.isfinite(lesion_peak_s) or lesion_peak_s > t_end:
        return WashOut(None, None, None, None, start, None, None, t_end,
                       reason=f"the cine ends ({t_end:.0f} s) before the lesion's peak")
    rel = _relative_db(les, ref) * level_scale
    level = _sustained_level(t, rel, WASH_OUT_MIN_DURATION_S)
    after = t >= lesion_peak_s
    marked_window = after & (t <= injection_time_s + WASH_OUT_MARKED_WITHIN_S)
    ok = after & np.isfinite(level)
    lowest = float(np.min(level[ok])) if np.any(ok) else None
    okm = marked_window & np.isfinite(level)
    lowest_m = float(np.min(level[okm])) if np.any(okm) else None
    below = ok & (level <= start - WASH_OUT_DROP_DB)
    if not np.any(below):
        if t_end < injection_time_s + WASH_OUT_EARLY_LIMIT_S:
            return WashOut(None, None, None, None, start, lowest, lowest_m, t_end, reason=(
                f"no wash-out up to the cine's end ({t_end:.0f} s), which is less than "
                f"{WASH_OUT_EARLY_LIMIT_S:g} s after the injection"))
        return WashOut(False, None, None, None, start, lowest, lowest_m, t_end)
    onset = float(t[np.flatnonzero(below)[0]])
    timing = "early" if onset - injection_time_s < WASH_OUT_EARLY_LIMIT_S else "late"
    marked = okm & (level <= start - WASH_OUT_MARKED_DB)
    degree: str | None
    reason = None
    if np.any(marked):
        degree = "marked"
    elif t_end >= injection_time_s + WASH_OUT_MARKED_WITHIN_S + WASH_OUT_MIN_DURATION_S:
        degree = "mild"
    else:
        degree = None
        reason = (f"the cine ends at {t_end:.0f} s, before the {WASH_OUT_MARKED_WITHIN_S:g} s "
                  "after the injection (plus the span that confirms a fall) that tell a mild "
                  "from a marked wash-out")
    return WashOut(True, onset, timing, degree, start, lowest, lowest_m, t_end, reason=reason)


def definitions(injection_time_s: float = 0.0) -> dict[str, Any]:
    """The margins and conventions in force, for reports."""
    return {
        "clock": ("cine clock: t = 0 at the first frame; the injection is assumed at "
                  f"injection_time_s = {injection_time_s:g} s"),
        "injection_time_s": float(injection_time_s),
        "wash_in_margin_s": WASH_IN_MARGIN_S,
        "wash_in": (f"arrival-time difference lesion - reference: rapid <= -{WASH_IN_MARGIN_S:g} s, "
                    f"slow >= +{WASH_IN_MARGIN_S:g} s, synchronous in between"),
        "enhancement_margin_db": ENHANCEMENT_MARGIN_DB,
        "enhancement": (f"10 log10(PE lesion / PE reference): hyper >= +{ENHANCEMENT_MARGIN_DB:g} dB, "
                        f"hypo <= -{ENHANCEMENT_MARGIN_DB:g} dB, iso in between; none when the "
                        "lesion does not enhance"),
        "wash_out_drop_db": WASH_OUT_DROP_DB,
        "wash_out_min_duration_s": WASH_OUT_MIN_DURATION_S,
        "wash_out_early_limit_s": WASH_OUT_EARLY_LIMIT_S,
        "wash_out_marked_db": WASH_OUT_MARKED_DB,
        "wash_out_marked_within_s": WASH_OUT_MARKED_WITHIN_S,
        "wash_out": (
            f"after the lesion's peak, 10 log10(lesion / reference enhancement) stays at least "
            f"{WASH_OUT_DROP_DB:g} dB below min(0, enhancement dB) for {WASH_OUT_MIN_DURATION_S:g} s; "
            f"onset = first such frame; early if onset - injection < {WASH_OUT_EARLY_LIMIT_S:g} s; "
            f"marked if a fall of {WASH_OUT_MARKED_DB:g} dB begins within "
            f"{WASH_OUT_MARKED_WITHIN_S:g} s of the injection, mild otherwise"),
        "curves": ("fitted model at the frame times, less its baseline; the measured curve "
                   f"smoothed over {SMOOTH_S:g} s less the pre-bolus baseline where an ROI has no fit"),
        "homogeneity": "the lesion's parametric-map heterogeneity verdict (ceuskit.maps)",
        "necrosis_percent": "100 x non-enhancing share of the lesion ROI (ceuskit.maps.lesion_necrosis)",
        "source_of_margins": (
            f"{PROPOSED}: each margin lies in the gap between the simulator's kinetics families "
            "(tests/test_findings_cohort.py)"),
    }


# --------------------------------------------------------------------------- results.json


def _first_with_role(rois: Mapping[str, Any], role: str) -> str | None:
    return next((name for name, r in rois.items() if isinstance(r, Mapping) and r.get("role") == role),
                None)


def _enhancement_curve(roi: Mapping[str, Any]) -> tuple[NDArray[np.float64], NDArray[np.float64], str] | None:
    """(times, curve above baseline, which curve) of one ROI, or None."""
    tic = roi.get("tic")
    if not isinstance(tic, Mapping) or tic.get("times_s") is None:
        return None
    t = np.array([np.nan if v is None else v for v in tic["times_s"]], dtype=np.float64)
    fit = roi.get("fit")
    fitted = tic.get("fitted")
    base = None
    if isinstance(fit, Mapping) and isinstance(fit.get("parameters"), Mapping):
        base = finite_or_none(fit["parameters"].get("baseline"))
    if fitted is not None and base is not None:
        y = np.array([np.nan if v is None else v for v in fitted], dtype=np.float64)
        return t, y - base, "fitted"
    measured = tic.get("intensity")
    test = roi.get("enhancement_test")
    base = finite_or_none(test.get("baseline")) if isinstance(test, Mapping) else None
    if measured is None or base is None:
        return None
    y = np.array([np.nan if v is None else v for v in measured], dtype=np.float64)
    good = np.isfinite(y)
    if np.count_nonzero(good) < 2:
        return None
    y = np.interp(t, t[good], y[good])
    return t, smooth_over(t, y, SMOOTH_S) - base, "smoothed measured"


def _evidence(text: str, statistic: str, value: float | None, unit: str, threshold: str,
              source: str, value_range: tuple[float, float] | None = None) -> dict[str, Any]:
    """One finding's evidence; ``value_range`` is the value's range over the DR's interval."""
    return {"text": text, "statistic": statistic, "value": value, "unit": unit,
            "threshold": threshold, "source": source,
            **({"value_range": [round(value_range[0], 2), round(value_range[1], 2)]}
               if value_range is not None else {})}


def _level_range(db: float, scale: LevelScale | None,
                 ratio_range: Any = None) -> tuple[float, float] | None:
    """The level's range (dB) over the DR's interval; None without an interval.

    From the ratio's measured range (``relative_to_reference.
    peak_enhancement_ratio_interval``) where results.json has one for this
    ratio, else the level scaled by the interval's factors.
    """
    if scale is None or not math.isfinite(db):
        return None
    if (isinstance(ratio_range, list) and len(ratio_range) == 2
            and all(isinstance(v, int | float) and v > 0 for v in ratio_range)):
        return 10.0 * math.log10(min(ratio_range)), 10.0 * math.log10(max(ratio_range))
    return db * scale.low, db * scale.high


def _over_interval(rng: tuple[float, float] | None, scale: LevelScale | None) -> str:
    """`` (X to Y dB over <the DR's interval>)`` for an evidence text; empty without an interval."""
    if rng is None or scale is None:
        return ""
    return f" ({rng[0]:.1f} to {rng[1]:.1f} dB over {scale.describe()})"


def _degree_undecided(db: float, rng: tuple[float, float] | None, scale: LevelScale | None,
                      what: str) -> str | None:
    """Why the enhancement degree of ``db`` changes within the DR's interval; None when it does not.

    `classify_enhancement` is monotonic in the level, so the range's ends decide.
    """
    if rng is None or scale is None:
        return None
    lo, hi = classify_enhancement(rng[0]), classify_enhancement(rng[1])
    if lo == hi:
        return None
    return (f"enhancement degree: {lo} or {hi} depending on the display's dynamic range: {what} "
            f"{abs(db):.1f} dB {'above' if db >= 0 else 'below'} the reference at "
            f"{scale.dynamic_range_db:g} dB, {rng[0]:.1f} to {rng[1]:.1f} dB over "
            f"{scale.describe()}; give the scanner's dynamic range (--dynamic-range) to decide")


def derive_findings(results: Mapping[str, Any], *, injection_time_s: float | None = None) -> dict[str, Any]:
    """CEUS findings of the lesion, with the evidence behind each.

    Parameters
    ----------
    results : mapping
        A results.json document (`ceuskit.pipeline.build_results`); reads
        ``rois.<name>`` (``role``, ``enhancing``, ``enhancement_test``,
        ``perfusion``, ``fit``, ``tic``, ``necrosis_fraction`` and, when
        present, ``map.heterogeneity``).
    injection_time_s : float, optional
        Injection time on the cine clock (s); default: the analysis's own
        (``results["analysis"]["injection_time_s"]``), else 0 (the cine starts
        at the injection).

    Returns
    -------
    dict
        The agreed ``findings`` shape: ``lesion_roi``, ``reference_roi``,
        ``intraluminal_enhancement``, ``wash_in``, ``enhancement``,
        ``homogeneity``, ``wash_out`` {present, onset_s, timing, degree},
        ``necrosis_percent``, ``evidence``, ``missing``, ``definitions``.
        None means not assessable; ``missing`` says why.
    """
    if injection_time_s is None:
        # The analysis records when the contrast was injected (results.json analysis).
        analysis = results.get("analysis") if isinstance(results, Mapping) else None
        recorded = analysis.get("injection_time_s") if isinstance(analysis, Mapping) else None
        injection_time_s = float(recorded) if isinstance(recorded, int | float) else 0.0
    inj = float(injection_time_s)
    if not math.isfinite(inj):
        raise ValueError(f"injection_time_s must be finite, got {injection_time_s!r}")
    rois_any = results.get("rois") if isinstance(results, Mapping) else None
    rois: Mapping[str, Any] = rois_any if isinstance(rois_any, Mapping) else {}
    lesion_name = _first_with_role(rois, "lesion")
    ref_name = _first_with_role(rois, "reference")
    les: Mapping[str, Any] = rois[lesion_name] if lesion_name is not None else {}
    ref: Mapping[str, Any] = rois[ref_name] if ref_name is not None else {}
    missing: list[str] = []
    evidence: dict[str, Any] = {}
    out: dict[str, Any] = {
        "lesion_roi": lesion_name,
        "reference_roi": ref_name,
        "intraluminal_enhancement": None,
        "wash_in": None,
        "enhancement": None,
        "enhancement_whole_roi": None,
        "homogeneity": None,
        "wash_out": {"present": None, "onset_s": None, "timing": None, "degree": None},
        "necrosis_percent": None,
        "evidence": evidence,
        "not_assessable": {},
        "verdict": None,
        "missing": missing,
        "definitions": definitions(inj),
    }

    # -- intraluminal enhancement
    enhancing: bool | None = None
    if lesion_name is None:
        missing.append("lesion ROI: every finding needs an ROI with role 'lesion' on the "
                       "intraluminal material; draw one")
    elif isinstance(les.get("enhancement_verdict"), Mapping):
        v = les["enhancement_verdict"]
        acq_any = results.get("acquisition")
        acq: Mapping[str, Any] = acq_any if isinstance(acq_any, Mapping) else {}
        out["verdict"] = {"reason": v.get("reason"), "margins": v.get("margins"),
                          "contrast_bolus_seen": acq.get("contrast_bolus_seen"),
                          "contrast_bolus_reason": acq.get("contrast_bolus_reason")}
        value = v.get("intraluminal_enhancement")
        reason = str(v.get("reason") or "")
        whole = v.get("whole_roi") if isinstance(v.get("whole_roi"), Mapping) else {}
        core = v.get("core") if isinstance(v.get("core"), Mapping) else None
        z = finite_or_none(whole.get("z"))
        rel = finite_or_none((core or whole).get("rise_vs_reference_db"))
        thr = (f"the statistical test (z > {ENHANCEMENT_Z:g}), a sustained bolus-shaped rise no more "
               f"than {-MIN_RISE_VS_REFERENCE_DB:g} dB below the reference's, in the ROI's core "
               f"{CORE_MARGIN_PX:g} px from brighter neighbours, and not a copy of the neighbour's curve")
        if value is None:
            out["not_assessable"]["intraluminal_enhancement"] = reason
            missing.append(f"intraluminal enhancement: {reason}")
            evidence["intraluminal_enhancement"] = _evidence(
                f"Whether the lesion ROI '{lesion_name}' enhances cannot be assessed: "
                f"{reason.removeprefix('not assessable: ')}.",
                "rise of the lesion core relative to the reference", rel, "dB", thr, _SRC_TIV)
        else:
            enhancing = bool(value)
            out["intraluminal_enhancement"] = enhancing
            verdict = ("enhances: enhancing intraluminal material suggests tumour rather than "
                       "bland thrombus" if enhancing
                       else "does not enhance, consistent with bland thrombus")
            evidence["intraluminal_enhancement"] = _evidence(
                f"The lesion ROI '{lesion_name}' {verdict} ({reason}).",
                "rise of the lesion core relative to the reference", rel, "dB", thr, _SRC_TIV)
            if z is not None:
                evidence["intraluminal_enhancement"]["z"] = z
    elif not isinstance(les.get("enhancing"), bool):
        missing.append(f"lesion ROI '{lesion_name}': no enhancement test result; re-run the analysis")
    else:
        # A results.json from before the verdict existed: the significance test alone.
        enhancing = bool(les["enhancing"])
        out["intraluminal_enhancement"] = enhancing
        test_any = les.get("enhancement_test")
        test: Mapping[str, Any] = test_any if isinstance(test_any, Mapping) else {}
        z = finite_or_none(test.get("statistic"))
        z_thr = finite_or_none(test.get("z_threshold"))
        rise = finite_or_none(test.get("min_rise_db"))
        thr = (f"z > {z_thr:g} and a rise of at least {rise:g} dB above the pre-bolus baseline"
               if z_thr is not None and rise is not None else "the pipeline's enhancement test")
        verdict = ("enhances: enhancing intraluminal material suggests tumour rather than "
                   "bland thrombus" if enhancing else "does not enhance, consistent with bland thrombus")
        z_text = f" (z = {z:.1f})" if z is not None else ""
        evidence["intraluminal_enhancement"] = _evidence(
            f"The lesion ROI '{lesion_name}'{z_text} {verdict} (significance test only: results "
            "from an older ceuskit).",
            "enhancement-test z", z, "1", thr, _SRC_TIV)
    if lesion_name is None:
        for key in _DEPENDENT:
            out["not_assessable"][key] = "there is no lesion ROI (role 'lesion') to assess"
    elif enhancing is None:
        why = out["not_assessable"].get("intraluminal_enhancement") or \
            "the lesion's enhancement could not be assessed"
        for key in _DEPENDENT:
            out["not_assessable"][key] = ("depends on whether the lesion enhances, which cannot be "
                                          f"assessed: {why.removeprefix('not assessable: ')}")

    ref_ok = ref_name is not None and ref.get("enhancing") is True
    if lesion_name is not None and enhancing is not None:
        if ref_name is None:
            missing.append("reference ROI: wash-in, enhancement degree and wash-out need one "
                           "(tissue at the lesion's depth, role 'reference')")
        elif not ref_ok:
            missing.append(f"reference ROI '{ref_name}' does not enhance: wash-in, enhancement "
                           "degree and wash-out cannot be compared with it; choose perfused tissue")
    lp: Mapping[str, Any] = les.get("perfusion") or {}
    rp: Mapping[str, Any] = ref.get("perfusion") or {}
    lin = results.get("linearization") if isinstance(results, Mapping) else None
    scale = level_scale(lin) if isinstance(lin, Mapping) else None

    # -- wash-in
    if enhancing is False:
        missing.append("wash-in: the lesion does not enhance")
    elif enhancing and ref_ok:
        ta, tb = finite_or_none(lp.get("arrival_time_s")), finite_or_none(rp.get("arrival_time_s"))
        if ta is None or tb is None:
            missing.append("wash-in: an arrival time could not be measured")
        else:
            d = ta - tb
            wash_in = classify_wash_in(d)
            out["wash_in"] = wash_in
            when = "before" if d < 0 else "after"
            evidence["wash_in"] = _evidence(
                f"Contrast reaches the lesion {abs(d):.1f} s {when} the reference "
                f"(arrival {ta:.1f} s vs {tb:.1f} s): {wash_in} wash-in.",
                "arrival-time difference lesion - reference", d, "s",
                f"rapid <= -{WASH_IN_MARGIN_S:g} s, slow >= +{WASH_IN_MARGIN_S:g} s", PROPOSED)

    # -- enhancement degree
    e_db: float | None = None
    if enhancing is False:
        out["enhancement"] = "none"
        out["enhancement_whole_roi"] = "none"
        evidence["enhancement"] = _evidence(
            "The lesion does not enhance.", "enhancement-test z",
            finite_or_none((les.get("enhancement_test") or {}).get("statistic")), "1",
            "the pipeline's enhancement test", _SRC_TIV)
    elif enhancing and ref_ok:
        pa, pb = finite_or_none(lp.get("peak_enhancement")), finite_or_none(rp.get("peak_enhancement"))
        if pa is None or pb is None or pb <= 0:
            missing.append("enhancement degree: a peak enhancement could not be measured")
        else:
            thr = f"hyper >= +{ENHANCEMENT_MARGIN_DB:g} dB, hypo <= -{ENHANCEMENT_MARGIN_DB:g} dB"
            e_db = enhancement_db(pa, pb)
            whole_label: str | None = classify_enhancement(e_db)
            relative = les.get("relative_to_reference")
            whole_rng = _level_range(e_db, scale, relative.get("peak_enhancement_ratio_interval")
                                     if isinstance(relative, Mapping) else None)
            whole_why = _degree_undecided(e_db, whole_rng, scale, "the whole lesion ROI peaks")
            if whole_why is not None:
                whole_label = None
                out["not_assessable"]["enhancement_whole_roi"] = whole_why
            out["enhancement_whole_roi"] = whole_label
            whole_verdict = f"{whole_label}-enhancing" if whole_label else "degree undecided"
            evidence["enhancement_whole_roi"] = _evidence(
                f"The whole lesion ROI's peak enhancement (necrosis included) is {abs(e_db):.1f} dB "
                f"{'above' if e_db >= 0 else 'below'} the reference's{_over_interval(whole_rng, scale)}: "
                f"{whole_verdict}.",
                "10 log10(peak enhancement lesion ROI / reference)", finite_or_none(e_db), "dB",
                thr, PROPOSED, whole_rng)
            viable = les.get("viable_part") if isinstance(les.get("viable_part"), Mapping) else None
            pv = finite_or_none(viable.get("peak_enhancement")) if viable is not None else None
            label: str | None  # the degree of the viable part, else of the whole ROI
            if pv is not None and pv > 0 and viable is not None:
                v_db = enhancement_db(pv, pb)
                label = classify_enhancement(v_db)
                v_rng = _level_range(v_db, scale)
                why = _degree_undecided(v_db, v_rng, scale, "the lesion's enhancing (viable) part peaks")
                share = viable.get("viable_px", 0) / max(1, viable.get("lesion_px", 1))
                evidence["enhancement"] = _evidence(
                    f"The lesion's enhancing (viable) part, {100 * share:.0f} % of the ROI, peaks "
                    f"{abs(v_db):.1f} dB {'above' if v_db >= 0 else 'below'} the reference"
                    f"{_over_interval(v_rng, scale)}: "
                    f"{f'{label}-enhancing' if why is None else 'degree undecided'}.",
                    "10 log10(peak enhancement viable part / reference)", finite_or_none(v_db), "dB",
                    thr, PROPOSED, v_rng)
            else:
                label = classify_enhancement(e_db)
                why = whole_why
                evidence["enhancement"] = _evidence(
                    f"The lesion's peak enhancement is {abs(e_db):.1f} dB "
                    f"{'above' if e_db >= 0 else 'below'} the reference's"
                    f"{_over_interval(whole_rng, scale)}: "
                    f"{f'{label}-enhancing' if why is None else 'degree undecided'} (whole "
                    "ROI: no viable part was measured apart).",
                    "10 log10(peak enhancement lesion / reference)", finite_or_none(e_db), "dB",
                    thr, PROPOSED, whole_rng)
            if why is not None:
                label = None
                missing.append(why)
                out["not_assessable"]["enhancement"] = why
            out["enhancement"] = label

    # -- wash-out
    if enhancing is False:
        missing.append("wash-out: the lesion does not enhance")
    elif enhancing and ref_ok and e_db is not None:
        _wash_out(out, evidence, missing, les, ref, lp, e_db, inj, scale)
    elif enhancing and ref_ok:
        missing.append("wash-out: needs the enhancement degree, which could not be measured")

    # -- homogeneity
    het = les.get("map", {}).get("heterogeneity") if isinstance(les.get("map"), Mapping) else None
    if enhancing is False:
        missing.append("homogeneity: the lesion does not enhance")
    elif enhancing and not isinstance(het, Mapping):
        missing.append("homogeneity: needs the lesion's parametric-map summary (run the maps)")
    elif enhancing and isinstance(het, Mapping):
        het_flag = het.get("heterogeneous")
        if not isinstance(het_flag, bool):
            missing.append("homogeneity: the map has too few enhancing pixels for a verdict")
        else:
            het_label = "heterogeneous" if het_flag else "homogeneous"
            out["homogeneity"] = het_label
            index = finite_or_none(het.get("index"))
            cv_thr = finite_or_none(het.get("threshold_cv"))
            nec_thr = finite_or_none(het.get("threshold_necrosis"))
            thr = (f"heterogeneous when index > {cv_thr:g} or necrosis fraction > {nec_thr:g}"
                   if cv_thr is not None and nec_thr is not None else "the map's threshold")
            idx_text = f" (index {index:.2f})" if index is not None else ""
            evidence["homogeneity"] = _evidence(
                f"Peak enhancement varies across the lesion{idx_text}: {het_label}.",
                "robust coefficient of variation of pixel peak enhancement", index, "1", thr,
                PROPOSED)

    # -- necrosis
    frac = finite_or_none(les.get("necrosis_fraction"))
    if enhancing is False:
        missing.append("necrosis: the lesion does not enhance, so there is no viable tissue to "
                       "measure a necrotic share against")
    elif enhancing and frac is None:
        missing.append("necrosis: the lesion has no necrosis fraction (needs the pixel test)")
    elif enhancing and frac is not None:
        pct = 100.0 * frac
        out["necrosis_percent"] = pct
        evidence["necrosis_percent"] = _evidence(
            f"{pct:.0f} % of the lesion ROI does not enhance (estimated necrosis).",
            "non-enhancing share of the lesion ROI", pct, "%",
            "pixel enhancement test (ceuskit.maps)", _SRC_NECROSIS)
    _fill_not_assessable(out)
    return out


#: Words of a `missing` entry that name each finding.
_MISSING_WORDS = {"wash_in": ("wash-in",), "enhancement": ("enhancement degree",),
                  "enhancement_whole_roi": ("enhancement degree",),
                  "homogeneity": ("homogeneity",), "wash_out": ("wash-out",),
                  "necrosis_percent": ("necrosis",)}


def _fill_not_assessable(out: dict[str, Any]) -> None:
    """Give every finding that is None its reason in ``not_assessable`` (from ``missing``)."""
    na: dict[str, str] = out["not_assessable"]
    for key, words in _MISSING_WORDS.items():
        value = out[key]["present"] if key == "wash_out" else out[key]
        if value is not None or key in na:
            continue
        reason = next((m for m in out["missing"] if any(w in m for w in words)), None)
        na[key] = reason or "not assessable with the ROIs and curves given"


def _decided_over(w: WashOut, ends: list[WashOut], scale: LevelScale) -> tuple[WashOut, str | None]:
    """``w`` with what changes over the DR's interval (the `ends`) made undecided (None).

    A larger level scale deepens every fall, so the interval's ends bound
    what any DR inside it would give.  Returns the outcome and, when only the
    timing is undecided, why (``reason`` holds the rest).
    """
    where = (f"depends on the display's dynamic range ({scale.describe()}); give the scanner's "
             "dynamic range (--dynamic-range) to decide")
    if any(e.present is not None and e.present != w.present for e in ends):
        return replace(w, present=None, onset_s=None, timing=None, degree=None,
                       reason=f"whether the lesion falls {WASH_OUT_DROP_DB:g} dB below its starting "
                              f"level {where}"), None
    if not w.present:
        return w, None
    timing_why = None
    if any(e.timing != w.timing for e in ends):
        w = replace(w, timing=None)
        timing_why = f"whether the wash-out is early or late {where}"
    if w.degree is not None and any(e.degree is not None and e.degree != w.degree for e in ends):
        w = replace(w, degree=None, reason=f"whether the wash-out is mild or marked {where}")
    return w, timing_why


def _wash_out(out: dict[str, Any], evidence: dict[str, Any], missing: list[str],
              les: Mapping[str, Any], ref: Mapping[str, Any], lp: Mapping[str, Any],
              e_db: float, inj: float, scale: LevelScale | None = None) -> None:
    ttp = finite_or_none(lp.get("time_to_peak_s"))
    cl, cr = _enhancement_curve(les), _enhancement_curve(ref)
    if ttp is None or cl is None or cr is None:
        missing.append("wash-out: the lesion's peak time or a curve is missing")
        return
    t, yl, kind_l = cl
    _, yr, kind_r = cr
    if yl.size != yr.size or yl.size < 2 or not np.all(np.isfinite(t)):
        missing.append("wash-out: the lesion and reference curves do not share a time axis")
        return
    w = assess_wash_out(t, yl, yr, ttp, e_db, injection_time_s=inj)
    timing_why = None
    if scale is not None and w.present is not None:
        w, timing_why = _decided_over(
            w, [assess_wash_out(t, yl, yr, ttp, e_db, injection_time_s=inj, level_scale=f)
                for f in (scale.low, scale.high)], scale)
    out["wash_out"] = {"present": w.present, "onset_s": w.onset_s, "timing": w.timing,
                       "degree": w.degree}
    curves = kind_l if kind_l == kind_r else f"{kind_l} (lesion), {kind_r} (reference)"
    start = w.start_level_db if w.start_level_db is not None else 0.0
    start_text = ("the reference's level" if start == 0.0
                  else f"its own peak level ({start:.1f} dB)")
    drop = None if w.lowest_db is None else finite_or_none(start - w.lowest_db)
    thr = (f">= {WASH_OUT_DROP_DB:g} dB below min(0, enhancement dB) = {start:.1f} dB for "
           f"{WASH_OUT_MIN_DURATION_S:g} s after the lesion's peak")
    if w.present is None:
        missing.append(f"wash-out: {w.reason}")
        text = f"Wash-out cannot be assessed: {w.reason}."
    elif w.present:
        text = (f"From {w.onset_s:.0f} s the lesion stays at least {WASH_OUT_DROP_DB:g} dB below "
                f"{start_text} ({curves} curves): wash-out.")
    else:
        text = (f"The lesion does not fall {WASH_OUT_DROP_DB:g} dB below {start_text} up to the "
                f"cine's end ({w.observed_until_s:.0f} s): no wash-out within the cine (a later one "
                "cannot be excluded).")
        missing.append("wash-out timing and degree: no wash-out within the cine")
    evidence["wash_out"] = _evidence(
        text, "largest sustained fall of 10 log10(lesion / reference enhancement) below the "
        "starting level after the lesion's peak", drop, "dB", thr, _SRC_LIRADS + "; " + PROPOSED)
    if w.present:
        onset_after = w.onset_s - inj if w.onset_s is not None else None
        if timing_why is not None:
            missing.append(f"wash-out timing: {timing_why}")
        evidence["wash_out_timing"] = _evidence(
            f"Wash-out begins {onset_after:.0f} s after the injection: "
            f"{w.timing if timing_why is None else 'timing undecided: ' + timing_why}.",
            "wash-out onset - injection time", onset_after, "s",
            f"early < {WASH_OUT_EARLY_LIMIT_S:g} s", _SRC_LIRADS)
        drop_m = (None if w.lowest_db_marked_window is None
                  else finite_or_none(start - w.lowest_db_marked_window))
        if w.degree is None:
            missing.append(f"wash-out degree: {w.reason}")
            deg_text = f"Wash-out degree cannot be assessed: {w.reason}."
        else:
            deg_text = (f"Within {WASH_OUT_MARKED_WITHIN_S:g} s of the injection the lesion falls "
                        f"{drop_m:.1f} dB below {start_text}: {w.degree}." if drop_m is not None
                        else f"Wash-out degree: {w.degree}.")
        evidence["wash_out_degree"] = _evidence(
            deg_text, "largest sustained fall within 120 s of the injection", drop_m, "dB",
            f"marked >= {WASH_OUT_MARKED_DB:g} dB", _SRC_LIRADS)
