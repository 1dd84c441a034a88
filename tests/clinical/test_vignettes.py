"""Clinical vignettes, read as a vascular specialist would (issue 13).

Each row: a case file (dict or None), CEUS findings (dict or None) and what the
decision support must say: the level (or the lowest acceptable level), the red
flags that must / must not be raised, the leaders of the differential, and the
recommendations that must / must not appear.  The vignettes are illustrative,
not real patients; the index case follows the published case report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from ceuskit import DISCLAIMER
from ceuskit.clinical.case import example_case, parse_case
from ceuskit.clinical.rules import LEVELS, assess
from tests.clinical.helpers import findings, malignant_findings, non_enhancing_findings


@dataclass(frozen=True)
class Vignette:
    name: str
    case: dict[str, Any] | None
    ceus: dict[str, Any] | None
    levels: tuple[str, ...] = ()  # the level must be one of these
    min_level: str | None = None  # ... or at least this one
    max_level: str | None = None  # ... and at most this one
    flags: frozenset[str] = frozenset()
    no_flags: frozenset[str] = frozenset()
    top1: str | None = None
    top3: frozenset[str] = frozenset()  # must all be among the first three
    not_top3: frozenset[str] = frozenset()
    above: tuple[tuple[str, str], ...] = ()  # (a, b): a ranks above b
    recs: frozenset[str] = frozenset()
    no_recs: frozenset[str] = frozenset()
    text: tuple[str, ...] = ()  # must appear (case-insensitive) in the recommendations or d-dimer notes
    extra: dict[str, Any] = field(default_factory=dict)


def _fs(*ids: str) -> frozenset[str]:
    return frozenset(ids)


INDEX = example_case("index_case").model_dump(exclude_none=True)
ENHANCING_HYPER = findings(True, enhancement="hyper", wash_in="rapid", homogeneity="heterogeneous")

VIGNETTES: tuple[Vignette, ...] = (
    Vignette("index case with its CEUS", INDEX, malignant_findings(), levels=("high",),
             flags=_fs("clin-refractory-anticoagulation", "lab-normal-d-dimer-chronic",
                       "us-extraluminal-mass", "ceus-enhancement"),
             top1="ddx-venous-leiomyosarcoma",
             recs=_fs("rec-cross-sectional-imaging", "rec-sarcoma-team", "rec-biopsy"),
             no_recs=_fs("rec-ceus")),
    Vignette("index case without CEUS", INDEX, None, min_level="intermediate",
             flags=_fs("us-extraluminal-mass"), recs=_fs("rec-ceus", "rec-cross-sectional-imaging")),
    Vignette("6 cm solid mass beside the femoral vein, bland lumen", {
        "age_years": 61, "sex": "male", "symptom_duration_days": 40, "site": "femoral", "side": "right",
        "ultrasound": {"mass": True, "lesion_content": "solid", "compressing_structure": "mass",
                       "thrombus_seen": True, "extraluminal_component": True}},
        non_enhancing_findings(), min_level="intermediate", flags=_fs("us-extraluminal-mass"),
        top3=_fs("ddx-extrinsic-compression"),
        recs=_fs("rec-cross-sectional-imaging"), no_recs=_fs("rec-anticoagulation-bland")),
    Vignette("compression by a mass (legacy field), bland lumen", {
        "site": "femoral", "ultrasound": {"compression_of_vein": True}},
        non_enhancing_findings(), min_level="intermediate", flags=_fs("us-extraluminal-mass"),
        recs=_fs("rec-cross-sectional-imaging"), no_recs=_fs("rec-anticoagulation-bland")),
    Vignette("extraluminal component only, bland lumen", {
        "site": "femoral", "ultrasound": {"extraluminal_component": True}},
        non_enhancing_findings(), min_level="intermediate", recs=_fs("rec-cross-sectional-imaging")),
    Vignette("solid mass without CEUS", {"ultrasound": {"mass": True, "lesion_content": "solid"}},
             None, min_level="intermediate", recs=_fs("rec-cross-sectional-imaging", "rec-ceus")),
    Vignette("nothing assessable", {}, findings(None, lesion_roi=None,
                                                not_assessable={"intraluminal_enhancement": "no lesion ROI"}),
             levels=("indeterminate",), recs=_fs("rec-ceus"), no_recs=_fs("rec-anticoagulation-bland")),
    Vignette("female, worse on anticoagulation, nothing else", {
        "sex": "female", "anticoagulation": {"response": "worse"}}, None, levels=("indeterminate",),
        recs=_fs("rec-ceus")),
    Vignette("chronic post-thrombotic vein, bland CEUS", {
        "age_years": 58, "sex": "male", "symptom_duration_days": 548, "site": "femoral", "side": "left",
        "anticoagulation": {"drug": "apixaban", "duration_days": 548, "response": "unchanged"},
        "d_dimer": {"value": 310, "unit": "ug/L FEU", "on_anticoagulation": True},
        "ultrasound": {"thrombus_seen": True, "post_thrombotic_changes": True, "mass": False,
                       "extraluminal_component": False, "compressing_structure": "none",
                       "vein_expansion": False}},
        non_enhancing_findings(), levels=("low",),
        no_flags=_fs("clin-refractory-anticoagulation", "lab-normal-d-dimer-chronic", "us-extraluminal-mass"),
        top1="ddx-bland-dvt", no_recs=_fs("rec-sarcoma-team", "rec-biopsy", "rec-complete-wells"),
        text=("anticoagulation",)),
    Vignette("Baker cyst: popliteal, cystic, no thrombus", {
        "age_years": 66, "sex": "female", "site": "popliteal", "side": "right", "symptom_duration_days": 10,
        "ultrasound": {"mass": True, "lesion_content": "cystic", "thrombus_seen": False,
                       "compressing_structure": "none"}},
        None, max_level="indeterminate", no_flags=_fs("us-extraluminal-mass"), top1="ddx-baker-cyst",
        no_recs=_fs("rec-biopsy", "rec-sarcoma-team")),
    Vignette("no Baker cyst in an iliac vein", {
        "site": "iliac", "side": "right", "ultrasound": {"lesion_content": "cystic", "thrombus_seen": False}},
        None, not_top3=_fs("ddx-baker-cyst")),
    Vignette("May-Thurner: left common iliac compressed by the artery", {
        "age_years": 29, "sex": "female", "symptom_duration_days": 6, "site": "common-iliac", "side": "left",
        "d_dimer": {"value": 2100, "unit": "ug/L FEU"},
        "ultrasound": {"thrombus_seen": True, "compressing_structure": "artery", "mass": False}},
        None, max_level="indeterminate", no_flags=_fs("us-extraluminal-mass"), top1="ddx-may-thurner",
        no_recs=_fs("rec-sarcoma-team", "rec-biopsy")),
    Vignette("no May-Thurner points for the external iliac vein", {
        "sex": "female", "site": "external-iliac", "side": "left"}, None, top1="ddx-bland-dvt"),
    Vignette("renal tumour thrombus in the IVC", {
        "age_years": 64, "sex": "male", "site": "ivc",
        "known_cancer": {"present": True, "site": "renal", "status": "active"},
        "ultrasound": {"thrombus_seen": True, "vein_expansion": True}},
        ENHANCING_HYPER, min_level="intermediate", flags=_fs("ceus-enhancement"), top1="ddx-tumour-thrombus",
        above=(("ddx-tumour-thrombus", "ddx-venous-leiomyosarcoma"),),
        recs=_fs("rec-primary-staging", "rec-cross-sectional-imaging"),
        no_recs=_fs("rec-sarcoma-team", "rec-fnclcc-necrosis"), text=("urolog",)),
    Vignette("adrenal mass beside an enhancing IVC thrombus", {
        "age_years": 55, "sex": "female", "site": "ivc",
        "ultrasound": {"thrombus_seen": True, "adjacent_organ_mass": "adrenal"}},
        findings(True, necrosis_percent=30.0), min_level="intermediate", top1="ddx-tumour-thrombus",
        above=(("ddx-tumour-thrombus", "ddx-venous-leiomyosarcoma"),
               ("ddx-tumour-thrombus", "ddx-intravascular-leiomyomatosis")),
        recs=_fs("rec-primary-staging"), no_recs=_fs("rec-sarcoma-team", "rec-fnclcc-necrosis"),
        text=("oncolog",)),
    Vignette("pregnant, solid mass beside the femoral vein", {
        "age_years": 32, "sex": "female", "pregnant": True, "site": "femoral",
        "d_dimer": {"value": 1400, "unit": "ug/L FEU"},
        "ultrasound": {"mass": True, "lesion_content": "solid", "thrombus_seen": True}},
        None, min_level="intermediate", recs=_fs("rec-ceus", "rec-cross-sectional-imaging"),
        text=("not recommended in pregnancy", "pregnancy")),
    Vignette("age-adjusted D-dimer at 75", {
        "age_years": 75, "sex": "male", "symptom_duration_days": 3, "site": "femoral",
        "d_dimer": {"value": 600, "unit": "ug/L FEU"}}, None,
        extra={"d_dimer_result": "normal", "d_dimer_cutoff": 750.0}),
    Vignette("female, acute provoked DVT, raised D-dimer", {
        "age_years": 34, "sex": "female", "symptom_duration_days": 4, "unprovoked": False, "site": "femoral",
        "d_dimer": {"value": 1800, "unit": "ug/L FEU"},
        "wells": {"bedridden_or_major_surgery": True, "entire_leg_swollen": True}}, None,
        top1="ddx-bland-dvt", no_recs=_fs("rec-sarcoma-team", "rec-biopsy")),
    Vignette("female sex alone lifts no tumour", {"sex": "female"}, None, top1="ddx-bland-dvt",
             above=(("ddx-bland-dvt", "ddx-venous-leiomyosarcoma"),
                    ("ddx-bland-dvt", "ddx-intravascular-leiomyomatosis"))),
    Vignette("unchanged after 60 days without a mass is not refractory", {
        "symptom_duration_days": 70, "anticoagulation": {"duration_days": 60, "response": "unchanged"},
        "ultrasound": {"mass": False, "extraluminal_component": False}}, None,
        no_flags=_fs("clin-refractory-anticoagulation")),
    Vignette("unchanged after 60 days with a mass is refractory", {
        "symptom_duration_days": 70, "anticoagulation": {"duration_days": 60, "response": "unchanged"},
        "ultrasound": {"mass": True}}, None, min_level="intermediate",
        flags=_fs("clin-refractory-anticoagulation", "us-extraluminal-mass")),
    Vignette("chronic case: no Wells request", {
        "age_years": 45, "symptom_duration_days": 730, "d_dimer": {"result": "normal"}}, None,
        no_recs=_fs("rec-complete-wells")),
    Vignette("known cancer but non-enhancing thrombus", {
        "age_years": 70, "sex": "male", "site": "femoral", "symptom_duration_days": 5,
        "known_cancer": {"present": True, "site": "renal", "status": "treated"},
        "ultrasound": {"thrombus_seen": True, "mass": False, "extraluminal_component": False}},
        non_enhancing_findings(), levels=("low",), top1="ddx-bland-dvt", no_recs=_fs("rec-sarcoma-team")),
    Vignette("acute provoked bland DVT", example_case("acute_bland_dvt").model_dump(exclude_none=True),
             non_enhancing_findings(), levels=("low",), top1="ddx-bland-dvt",
             recs=_fs("rec-anticoagulation-bland"), no_recs=_fs("rec-sarcoma-team", "rec-biopsy")),
    Vignette("compression by an artery is no mass flag, bland lumen", {
        "site": "common-iliac", "side": "left", "ultrasound": {"compressing_structure": "artery"}},
        non_enhancing_findings(), levels=("low",), no_flags=_fs("us-extraluminal-mass"),
        top3=_fs("ddx-may-thurner")),
)


def _texts(a: dict[str, Any]) -> str:
    parts = [r["text"] + " " + r["reason"] for r in a["recommendations"]] + list(a["d_dimer"]["notes"])
    return " ".join(parts).lower()


@pytest.mark.parametrize("v", VIGNETTES, ids=[v.name for v in VIGNETTES])
def test_vignette(v: Vignette) -> None:
    case = None if v.case is None else parse_case(v.case, v.name)
    a = assess(v.ceus, case)
    level = a["level"]
    if v.levels:
        assert level in v.levels, (level, a["reasons"])
    if v.min_level:
        assert LEVELS.index(level) >= LEVELS.index(v.min_level), (level, a["reasons"])
    if v.max_level:
        assert LEVELS.index(level) <= LEVELS.index(v.max_level), (level, a["reasons"])
    flags = {f["id"] for f in a["red_flags"]}
    assert v.flags <= flags, flags
    assert not v.no_flags & flags, flags
    ranked = [d["id"] for d in a["differential"]]
    if v.top1:
        assert ranked[0] == v.top1, ranked[:3]
    assert v.top3 <= set(ranked[:3]), ranked[:3]
    assert not v.not_top3 & set(ranked[:3]), ranked[:3]
    for first, second in v.above:
        assert ranked.index(first) < ranked.index(second), ranked
    recs = {r["id"] for r in a["recommendations"]}
    assert v.recs <= recs, recs
    assert not v.no_recs & recs, recs
    for needle in v.text:
        assert needle.lower() in _texts(a), needle
    if "d_dimer_result" in v.extra:
        assert a["d_dimer"]["result"] == v.extra["d_dimer_result"]
        assert a["d_dimer"]["cutoff_ug_l_feu"] == pytest.approx(v.extra["d_dimer_cutoff"])
    if "pregnancy" in v.text:
        for r in a["recommendations"]:
            if "contrast" in r["text"].lower() or "ceus" in r["text"].lower():
                assert "pregnan" in r["text"].lower(), r["id"]


def test_there_are_at_least_twenty_vignettes() -> None:
    assert len(VIGNETTES) >= 20


def test_pregnancy_d_dimer_note() -> None:
    case = parse_case({"pregnant": True, "sex": "female", "age_years": 30,
                       "d_dimer": {"value": 900, "unit": "ug/L FEU"}}, "t")
    notes = " ".join(assess(None, case)["d_dimer"]["notes"]).lower()
    assert "pregnan" in notes


def test_wells_category_only_when_determined() -> None:
    part = assess(None, parse_case({"symptom_duration_days": 3, "wells": {"entire_leg_swollen": True}}, "t"))
    w = part["wells"]
    assert w["determined"] is False and w["category"] is None
    assert "undetermined" in w["display"] and str(w["points_range"][0]) in w["display"]
    full = assess(None, example_case("acute_bland_dvt"))["wells"]
    assert full["category"] == "high" and "53" in full["prevalence_note"]


def test_sources_corrected() -> None:
    from ceuskit.clinical import rules, scores
    assert "JAMA 2006;295:199" in assess(None, example_case("acute_bland_dvt"))["wells"]["prevalence_source"]
    enh = rules.RED_FLAG_RULES["ceus-enhancement"].source.lower()
    assert "portal" in enh and "liver" in enh
    assert "pulmonary embolism" in scores.D_DIMER_SOURCE.lower()
    avena = {"anticoagulation": {"response": "worse"},
             "ultrasound": {"vein_expansion": True, "extraluminal_component": True}}
    a = assess(None, parse_case(avena, "t"))
    assert "93.6" not in a["avena_adapted"]["source"] and "0.936" not in a["avena_adapted"]["source"]
    assert "published case report" in rules.SRC_INDEX


def test_disclaimer_is_strong() -> None:
    text = DISCLAIMER.lower()
    for needle in ("not a medical device", "not clinically validated", "does not exclude", "images",
                   "whole clinical picture"):
        assert needle in text, needle
