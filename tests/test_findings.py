"""CEUS findings from a results document: definitions, margins and what is not assessable.

The documents are built from curves whose lesion-to-reference level is known
exactly, so every label and onset below follows from the definitions in
`ceuskit.findings`, not from the code under test.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ceuskit.findings import (
    ENHANCEMENT_MARGIN_DB,
    WASH_IN_MARGIN_S,
    WASH_OUT_DROP_DB,
    WASH_OUT_MARKED_DB,
    assess_wash_out,
    classify_enhancement,
    classify_wash_in,
    derive_findings,
    enhancement_db,
)

BASE = 0.002  # a.u., every ROI's baseline


def _reference(t: np.ndarray) -> np.ndarray:
    """A gamma-variate-like reference bolus above baseline, arriving at 12 s, peak 0.01."""
    tau = np.clip(t - 12.0, 0.0, None)
    y = (tau / 10.0) ** 2 * np.exp(2.0 * (1.0 - tau / 10.0))
    return 0.01 * y


def _roi(role: str, t: np.ndarray, above: np.ndarray | None, *, enhancing: bool = True,
         arrival_s: float | None = None, fitted: bool = True, **extra: Any) -> dict[str, Any]:
    curve = (BASE + above) if above is not None else np.full(t.size, BASE)
    pe = float(above.max()) if above is not None else None
    ttp = float(t[int(np.argmax(above))]) if above is not None else None
    doc: dict[str, Any] = {
        "role": role,
        "enhancing": enhancing,
        "enhancement_test": {"enhancing": enhancing, "statistic": 40.0 if enhancing else 1.2,
                             "z_threshold": 5.0, "min_rise_db": 1.0, "baseline": BASE},
        "perfusion": {"arrival_time_s": arrival_s if enhancing else None,
                      "time_to_peak_s": ttp if enhancing else None,
                      "peak_enhancement": pe if enhancing else None},
        "fit": {"parameters": {"baseline": BASE}} if enhancing and fitted else None,
        "tic": {"times_s": t.tolist(), "intensity": curve.tolist(),
                "fitted": curve.tolist() if enhancing and fitted else None},
    }
    doc.update(extra)
    return doc


def _doc(duration_s: float, rel_db: Callable[[np.ndarray], np.ndarray], *, fps: float = 1.0,
         lesion_arrival_s: float = 8.0, reference_arrival_s: float = 12.0,
         lesion: dict[str, Any] | None = None, reference: bool = True,
         reference_enhancing: bool = True, heterogeneous: bool | None = True,
         fitted: bool = True) -> dict[str, Any]:
    """A results document whose lesion is the reference scaled by 10^(rel_db(t)/10)."""
    t = np.arange(0.0, duration_s + 1e-9, 1.0 / fps)
    ref = _reference(t)
    les = ref * 10.0 ** (rel_db(t) / 10.0)
    rois: dict[str, Any] = {}
    extra: dict[str, Any] = {"necrosis_fraction": 0.3}
    if heterogeneous is not None:
        extra["map"] = {"heterogeneity": {"index": 0.4 if heterogeneous else 0.1,
                                          "heterogeneous": heterogeneous, "threshold_cv": 0.25,
                                          "threshold_necrosis": 0.1}}
    rois["lesion"] = lesion if lesion is not None else _roi(
        "lesion", t, les, arrival_s=lesion_arrival_s, fitted=fitted, **extra)
    if reference:
        rois["muscle"] = _roi("reference", t, ref if reference_enhancing else None,
                              enhancing=reference_enhancing, arrival_s=reference_arrival_s,
                              fitted=fitted)
    rois["lumen"] = _roi("vessel", t, ref, arrival_s=14.0)
    return {"rois": rois}


def _falling(start_db: float, from_s: float, slope_db_per_s: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda t: start_db - slope_db_per_s * np.clip(t - from_s, 0.0, None)


# --------------------------------------------------------------------------- classifiers


def test_wash_in_and_enhancement_margins() -> None:
    assert classify_wash_in(-WASH_IN_MARGIN_S) == "rapid"
    assert classify_wash_in(-WASH_IN_MARGIN_S + 0.01) == "synchronous"
    assert classify_wash_in(WASH_IN_MARGIN_S - 0.01) == "synchronous"
    assert classify_wash_in(WASH_IN_MARGIN_S) == "slow"
    assert classify_enhancement(ENHANCEMENT_MARGIN_DB) == "hyper"
    assert classify_enhancement(ENHANCEMENT_MARGIN_DB - 0.01) == "iso"
    assert classify_enhancement(-ENHANCEMENT_MARGIN_DB + 0.01) == "iso"
    assert classify_enhancement(-ENHANCEMENT_MARGIN_DB) == "hypo"
    assert enhancement_db(2.0, 1.0) == pytest.approx(10 * math.log10(2.0))
    assert enhancement_db(0.0, 1.0) == -math.inf
    with pytest.raises(ValueError, match="reference"):
        enhancement_db(1.0, 0.0)


# --------------------------------------------------------------------------- wash-out


def _wash_out(duration_s: float, rel: Callable[[np.ndarray], np.ndarray], e_db: float, *,
              fps: float = 1.0, injection_time_s: float = 0.0, peak_s: float = 20.0):
    t = np.arange(0.0, duration_s + 1e-9, 1.0 / fps)
    ref = _reference(t)
    return assess_wash_out(t, ref * 10.0 ** (rel(t) / 10.0), ref, peak_s, e_db,
                           injection_time_s=injection_time_s)


def test_onset_is_the_first_frame_of_a_sustained_fall() -> None:
    # +6 dB, a 2-frame dip to -5 dB at 30-31 s (too short), then -1 dB/s from 40 s:
    # -3 dB first reached at 49 s, -10 dB at 56 s.
    def rel(t: np.ndarray) -> np.ndarray:
        r = _falling(6.0, 40.0, 1.0)(t)
        return np.where((t >= 30.0) & (t <= 31.0), -5.0, r)

    w = _wash_out(90.0, rel, 6.0)
    assert w.present is True and w.onset_s == 49.0
    assert w.timing == "early" and w.degree == "marked"
    assert w.start_level_db == 0.0
    assert w.lowest_db is not None and w.lowest_db < -WASH_OUT_MARKED_DB


def test_late_mild_wash_out_needs_the_cine_to_reach_two_minutes() -> None:
    # -3 dB at 110 s (late), -4.5 dB at 125 s: never the 10 dB of a marked one.
    rel = _falling(6.0, 20.0, 0.1)
    w = _wash_out(140.0, rel, 6.0)
    assert (w.present, w.onset_s, w.timing, w.degree) == (True, 110.0, "late", "mild")
    short = _wash_out(118.0, rel, 6.0)
    assert short.present is True and short.timing == "late"
    assert short.degree is None and "120 s" in (short.reason or "")


def test_injection_time_moves_the_early_late_limit() -> None:
    rel = _falling(6.0, 40.0, 1.0)  # onset 49 s on the cine clock
    assert _wash_out(90.0, rel, 6.0).timing == "early"
    assert _wash_out(90.0, rel, 6.0, injection_time_s=-15.0).timing == "late"


def test_a_hypo_enhancing_lesion_must_fall_below_its_own_level() -> None:
    steady = _wash_out(90.0, lambda t: np.full(t.shape, -8.0), -8.0)
    assert steady.present is False and steady.start_level_db == -8.0
    falling = _wash_out(90.0, _falling(-8.0, 30.0, 0.5), -8.0)
    # -8 - 3 dB is first held from 36 s.
    assert falling.present is True and falling.onset_s == 36.0


def test_not_assessable_cases() -> None:
    flat = lambda t: np.full(t.shape, 6.0)  # noqa: E731
    assert _wash_out(90.0, flat, 6.0).present is False
    short = _wash_out(45.0, flat, 6.0)
    assert short.present is None and "60 s" in (short.reason or "")
    late_peak = _wash_out(90.0, flat, 6.0, peak_s=95.0)
    assert late_peak.present is None and "before the lesion's peak" in (late_peak.reason or "")


def test_fall_just_short_of_the_threshold_is_not_wash_out() -> None:
    w = _wash_out(90.0, lambda t: np.where(t > 30.0, -WASH_OUT_DROP_DB + 0.05, 5.0), 5.0)
    assert w.present is False
    w = _wash_out(90.0, lambda t: np.where(t > 30.0, -WASH_OUT_DROP_DB - 0.05, 5.0), 5.0)
    # The cine ends before 120 s + 5 s: a mild wash-out cannot be told from a marked one.
    assert w.present is True and w.onset_s == 31.0 and w.degree is None


# --------------------------------------------------------------------------- derive_findings


def _none_findings(f: dict[str, Any]) -> int:
    keys = ("intraluminal_enhancement", "wash_in", "enhancement", "homogeneity", "necrosis_percent")
    return sum(f[k] is None for k in keys) + (f["wash_out"]["present"] is None)


def test_a_rapid_hyper_washing_out_tumour() -> None:
    doc = _doc(90.0, _falling(8.0, 30.0, 1.0), lesion_arrival_s=8.0, reference_arrival_s=12.0)
    f = derive_findings(doc)
    assert f["lesion_roi"] == "lesion" and f["reference_roi"] == "muscle"
    assert f["intraluminal_enhancement"] is True
    assert f["wash_in"] == "rapid"
    assert f["enhancement"] == "hyper"
    assert f["homogeneity"] == "heterogeneous"
    # 8 - 1 dB/s from 30 s: -3 dB from 41 s, -10 dB from 48 s.
    assert f["wash_out"] == {"present": True, "onset_s": 41.0, "timing": "early", "degree": "marked"}
    assert f["necrosis_percent"] == pytest.approx(30.0)
    assert f["missing"] == []
    ev = f["evidence"]
    assert set(ev) == {"intraluminal_enhancement", "wash_in", "enhancement", "enhancement_whole_roi",
                       "homogeneity",
                       "wash_out", "wash_out_timing", "wash_out_degree", "necrosis_percent"}
    for entry in ev.values():
        assert set(entry) == {"text", "statistic", "value", "unit", "threshold", "source"}
        assert entry["text"].endswith(".")
    assert ev["wash_in"]["value"] == pytest.approx(-4.0) and ev["wash_in"]["unit"] == "s"
    assert ev["enhancement"]["value"] == pytest.approx(8.0, abs=1e-6)
    assert "proposed" in ev["wash_in"]["source"] and "proposed" in ev["enhancement"]["source"]
    assert "LI-RADS" in ev["intraluminal_enhancement"]["source"]
    assert ev["intraluminal_enhancement"]["value"] == 40.0
    assert "z > 5" in ev["intraluminal_enhancement"]["threshold"]
    assert ev["wash_out_timing"]["value"] == pytest.approx(41.0)
    assert f["definitions"]["wash_in_margin_s"] == WASH_IN_MARGIN_S
    assert f["definitions"]["injection_time_s"] == 0.0
    json.dumps(f, allow_nan=False)


@pytest.mark.parametrize("arrival_s, rel, wash_in, enhancement", [
    (12.2, 0.5, "synchronous", "iso"),
    (16.0, -8.0, "slow", "hypo"),
    (11.5, 2.0, "synchronous", "iso"),
])
def test_labels_follow_the_margins(arrival_s: float, rel: float, wash_in: str,
                                   enhancement: str) -> None:
    f = derive_findings(_doc(90.0, lambda t: np.full(t.shape, rel), lesion_arrival_s=arrival_s))
    assert f["wash_in"] == wash_in and f["enhancement"] == enhancement
    assert f["wash_out"]["present"] is False
    assert f["wash_out"]["timing"] is None and f["wash_out"]["degree"] is None
    assert any(m.startswith("wash-out timing and degree") for m in f["missing"])


def test_bland_thrombus() -> None:
    t = np.arange(0.0, 60.0, 1.0)
    lesion = _roi("lesion", t, None, enhancing=False, necrosis_fraction=1.0)
    f = derive_findings(_doc(60.0, lambda t: np.zeros(t.shape), lesion=lesion))
    assert f["intraluminal_enhancement"] is False
    assert f["enhancement"] == "none"
    assert f["wash_in"] is None and f["homogeneity"] is None and f["necrosis_percent"] is None
    assert f["wash_out"] == {"present": None, "onset_s": None, "timing": None, "degree": None}
    assert _none_findings(f) <= len(f["missing"])
    assert all("does not enhance" in m for m in f["missing"])
    assert f["evidence"]["intraluminal_enhancement"]["value"] == 1.2
    json.dumps(f, allow_nan=False)


def test_without_a_reference_only_enhancement_is_assessed() -> None:
    f = derive_findings(_doc(90.0, _falling(8.0, 30.0, 1.0), reference=False))
    assert f["reference_roi"] is None
    assert f["intraluminal_enhancement"] is True
    assert f["wash_in"] is None and f["enhancement"] is None and f["wash_out"]["present"] is None
    assert any(m.startswith("reference ROI") for m in f["missing"])
    assert f["homogeneity"] == "heterogeneous" and f["necrosis_percent"] == pytest.approx(30.0)


def test_a_reference_that_does_not_enhance_is_named() -> None:
    f = derive_findings(_doc(90.0, _falling(8.0, 30.0, 1.0), reference_enhancing=False))
    assert f["wash_in"] is None and f["enhancement"] is None and f["wash_out"]["present"] is None
    assert any("'muscle' does not enhance" in m for m in f["missing"])


def test_without_a_lesion_nothing_is_assessable() -> None:
    doc = _doc(90.0, _falling(8.0, 30.0, 1.0))
    del doc["rois"]["lesion"]
    f = derive_findings(doc)
    assert f["lesion_roi"] is None and f["intraluminal_enhancement"] is None
    assert f["enhancement"] is None and f["wash_out"]["present"] is None
    assert f["missing"] and f["missing"][0].startswith("lesion ROI")
    assert derive_findings({})["missing"][0].startswith("lesion ROI")


def test_homogeneity_needs_the_map_summary() -> None:
    f = derive_findings(_doc(90.0, _falling(8.0, 30.0, 1.0), heterogeneous=None))
    assert f["homogeneity"] is None
    assert any(m.startswith("homogeneity") for m in f["missing"])
    g = derive_findings(_doc(90.0, _falling(8.0, 30.0, 1.0), heterogeneous=False))
    assert g["homogeneity"] == "homogeneous"
    assert g["evidence"]["homogeneity"]["value"] == pytest.approx(0.1)


def test_measured_curves_are_used_without_a_fit() -> None:
    f = derive_findings(_doc(90.0, _falling(8.0, 30.0, 1.0), fitted=False))
    # The 3 s moving average delays a linear fall by at most a frame.
    assert f["wash_out"]["present"] is True
    assert f["wash_out"]["onset_s"] == pytest.approx(41.0, abs=1.0)
    assert "smoothed measured" in f["evidence"]["wash_out"]["text"]


def test_injection_time_is_a_parameter() -> None:
    doc = _doc(120.0, _falling(8.0, 45.0, 1.0))  # onset 56 s
    assert derive_findings(doc)["wash_out"]["timing"] == "early"
    late = derive_findings(doc, injection_time_s=-10.0)
    assert late["wash_out"]["timing"] == "late"
    assert late["definitions"]["injection_time_s"] == -10.0
    with pytest.raises(ValueError, match="injection_time_s"):
        derive_findings(doc, injection_time_s=math.nan)


# --------------------------------------------------------------------------- dynamic range's interval


def _with_dr(doc: dict[str, Any], source: str, dr: float, interval: list[float] | None) -> dict[str, Any]:
    lin: dict[str, Any] = {"dynamic_range_db": dr, "dynamic_range_source": source}
    if source == "estimated":
        lin["dynamic_range_ci_db"] = interval
    elif interval is not None:
        lin["dynamic_range_check"] = {"estimate_db": sum(interval) / 2, "ci_db": interval}
    return {**doc, "linearization": lin}


def test_a_degree_that_the_dynamic_ranges_interval_can_change_is_undecided() -> None:
    # 3.3 dB is hyper at the DR used; over 44-56 dB at 50 dB it is 2.9-3.7 dB: iso or hyper.
    doc = _doc(90.0, lambda t: np.full(t.shape, 3.3))
    assert derive_findings(_with_dr(doc, "user", 50.0, None))["enhancement"] == "hyper"
    f = derive_findings(_with_dr(doc, "estimated", 50.0, [44.0, 56.0]))
    assert f["enhancement"] is None and f["enhancement_whole_roi"] is None
    why = f["not_assessable"]["enhancement"]
    assert why.startswith("enhancement degree: iso or hyper") and "--dynamic-range" in why
    assert "2.9 to 3.7 dB" in why and "44.0-56.0 dB" in why
    assert why in f["missing"]
    assert "degree undecided" in f["evidence"]["enhancement"]["text"]
    # The margin is what matters, not the interval's width: 6 dB stays hyper over 44-56 dB,
    # and the evidence gives its range.
    f6 = derive_findings(_with_dr(_doc(90.0, lambda t: np.full(t.shape, 6.0)), "estimated", 50.0,
                                  [44.0, 56.0]))
    assert f6["enhancement"] == "hyper"
    assert ("(5.3 to 6.7 dB over the estimated dynamic range's interval, 44.0-56.0 dB)"
            in f6["evidence"]["enhancement"]["text"])
    # The default DR with the speckle check's interval: the same rule (the default itself is
    # kept inside the range even where the check reads elsewhere).
    fd = derive_findings(_with_dr(doc, "default", 60.0, [45.0, 55.0]))
    assert fd["enhancement"] is None
    assert "the default dynamic range, 60 dB" in fd["not_assessable"]["enhancement"]
    # No interval (a user's value, or a refused estimate): the label stands.
    assert derive_findings(_with_dr(doc, "default", 60.0, None))["enhancement"] == "hyper"
    json.dumps(f, allow_nan=False)


def test_wash_out_that_the_dynamic_ranges_interval_can_change_is_undecided() -> None:
    # Iso until 30 s, then a fall to -2.8 dB: short of 3 dB at the DR used, 3.1 dB at the
    # interval's top (x 1.12): wash-out cannot be called absent.
    def rel(t: np.ndarray) -> np.ndarray:
        return np.where(t < 30.0, 0.0, -2.8)

    doc = _doc(150.0, rel)
    assert derive_findings(_with_dr(doc, "user", 50.0, None))["wash_out"]["present"] is False
    f = derive_findings(_with_dr(doc, "estimated", 50.0, [44.0, 56.0]))
    assert f["wash_out"] == {"present": None, "onset_s": None, "timing": None, "degree": None}
    assert "dynamic range" in f["not_assessable"]["wash_out"]
    # A marked fall of 9.5 dB within 120 s: present either way, mild or marked undecided.
    doc2 = _doc(150.0, lambda t: np.where(t < 30.0, 0.0, -9.5))
    assert derive_findings(_with_dr(doc2, "user", 50.0, None))["wash_out"]["degree"] == "mild"
    f2 = derive_findings(_with_dr(doc2, "estimated", 50.0, [44.0, 56.0]))
    assert f2["wash_out"]["present"] is True and f2["wash_out"]["timing"] == "early"
    assert f2["wash_out"]["degree"] is None
    assert any(m.startswith("wash-out degree: whether the wash-out is mild or marked")
               for m in f2["missing"])


def test_the_whole_rois_range_comes_from_the_measured_ratio_range() -> None:
    # results.json's measured ratio range (the curves linearised at the interval's ends) is
    # used where there is one, so the evidence and the report's ratio range agree: here
    # 3.1-3.6 dB, hyper throughout, where scaling 3.3 dB by 44/50-56/50 would say iso or hyper.
    doc = _with_dr(_doc(90.0, lambda t: np.full(t.shape, 3.3)), "estimated", 50.0, [44.0, 56.0])
    doc["rois"]["lesion"]["relative_to_reference"] = {
        "peak_enhancement_ratio": 10 ** 0.33,
        "peak_enhancement_ratio_interval": [10 ** 0.31, 10 ** 0.36]}
    f = derive_findings(doc)
    assert f["enhancement"] == "hyper" and f["enhancement_whole_roi"] == "hyper"
    assert "(3.1 to 3.6 dB over the estimated dynamic range's interval" in \
        f["evidence"]["enhancement_whole_roi"]["text"]
    # A measured range that crosses the margin: undecided, with the measured figures.
    doc["rois"]["lesion"]["relative_to_reference"]["peak_enhancement_ratio_interval"] = [
        10 ** 0.28, 10 ** 0.36]
    f = derive_findings(doc)
    assert f["enhancement"] is None
    assert "2.8 to 3.6 dB" in f["not_assessable"]["enhancement"]
