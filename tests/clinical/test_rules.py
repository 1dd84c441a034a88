"""Red flags, the combination rule, the differential and the recommendations."""

from __future__ import annotations

import copy
import itertools
import random
from typing import Any

import pytest

from ceuskit import DISCLAIMER
from ceuskit.clinical.case import ClinicalCase, example_case, parse_case
from ceuskit.clinical.rules import (
    DIFFERENTIAL,
    LEVELS,
    RED_FLAG_RULES,
    assess,
    combine_flags,
    summary_paragraph,
)
from tests.clinical.helpers import findings, malignant_findings, non_enhancing_findings

CONTRACT_KEYS = {"suspect_neoplasm", "level", "red_flags", "differential", "recommendations", "disclaimer",
                 "wells", "d_dimer", "combination_rule", "reasons", "missing", "inputs_used"}
CATEGORIES = {"ceus", "clinical", "ultrasound", "laboratory"}


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["id"] for i in items]


def _check_valid(a: dict[str, Any]) -> None:
    """Every assessment, whatever its inputs, honours the contract."""
    assert CONTRACT_KEYS <= set(a)
    assert a["level"] in LEVELS
    assert a["suspect_neoplasm"] == (a["level"] in ("high", "intermediate"))
    assert a["disclaimer"] == DISCLAIMER
    assert a["reasons"] and all(isinstance(r, str) and r for r in a["reasons"])
    assert a["combination_rule"]["proposed"] is True and "heuristic" in a["combination_rule"]["source"]
    for flag in a["red_flags"]:
        assert flag["id"] and flag["text"] and flag["source"] and flag["evidence"]
        assert flag["category"] in CATEGORIES and isinstance(flag["proposed"], bool)
        assert flag["proposed"] == RED_FLAG_RULES[flag["id"]].proposed
    for rec in a["recommendations"]:
        assert rec["id"] and rec["text"] and rec["reason"] and rec["source"]
        assert isinstance(rec["proposed"], bool)
        if rec["proposed"]:
            assert "heuristic" in rec["source"]
    assert len(set(_ids(a["recommendations"]))) == len(a["recommendations"])
    ranks = [d["rank"] for d in a["differential"]]
    assert ranks == list(range(1, len(DIFFERENTIAL) + 1))
    scores = [d["score"] for d in a["differential"]]
    assert scores == sorted(scores, reverse=True)
    for d in a["differential"]:
        assert d["id"] and d["name"] and d["source"]


# ----------------------------------------------------------------------------- the required scenarios


def test_index_case_with_enhancing_ceus_is_high() -> None:
    a = assess(malignant_findings(), example_case("index_case"))
    _check_valid(a)
    assert a["suspect_neoplasm"] is True and a["level"] == "high"
    ids = _ids(a["red_flags"])
    assert "clin-refractory-anticoagulation" in ids
    assert "lab-normal-d-dimer-chronic" in ids
    assert {"us-extraluminal-mass", "us-heterogeneous-mass"} <= set(ids)
    assert "ceus-enhancement" in ids
    normal_dd = next(f for f in a["red_flags"] if f["id"] == "lab-normal-d-dimer-chronic")
    assert normal_dd["proposed"] is True and normal_dd["category"] == "laboratory"
    assert a["differential"][0]["id"] == "ddx-venous-leiomyosarcoma"
    bland = next(d for d in a["differential"] if d["id"] == "ddx-bland-dvt")
    assert bland["against"] and bland["rank"] > 3
    recs = _ids(a["recommendations"])
    assert {"rec-cross-sectional-imaging", "rec-biopsy", "rec-sarcoma-team"} <= set(recs)
    assert "rec-ceus" not in recs
    assert a["inputs_used"] == ["ceus", "case"]
    # the CEUS numbers travel into the red flag's evidence
    enh = next(f for f in a["red_flags"] if f["id"] == "ceus-enhancement")
    assert "14.2" in enh["evidence"] and "dB" in enh["evidence"]


def test_index_case_without_ceus_suspects_and_asks_for_ceus() -> None:
    a = assess(None, example_case("index_case"))
    _check_valid(a)
    assert a["suspect_neoplasm"] is True and a["level"] in ("intermediate", "high")
    recs = _ids(a["recommendations"])
    assert "rec-ceus" in recs and "rec-cross-sectional-imaging" in recs
    assert "no CEUS analysis" in a["missing"]
    assert a["inputs_used"] == ["case"]


def test_acute_bland_dvt_with_non_enhancing_ceus_is_low() -> None:
    a = assess(non_enhancing_findings(), example_case("acute_bland_dvt"))
    _check_valid(a)
    assert a["suspect_neoplasm"] is False and a["level"] == "low"
    assert a["red_flags"] == []
    assert a["differential"][0]["id"] == "ddx-bland-dvt"
    assert a["differential"][0]["support"]
    recs = _ids(a["recommendations"])
    assert "rec-anticoagulation-bland" in recs
    assert not {"rec-biopsy", "rec-sarcoma-team"} & set(recs)
    assert a["wells"]["three_level"] == "high" and a["d_dimer"]["result"] == "raised"


def test_ceus_alone_enhancement_suspects_neoplasm() -> None:
    a = assess(findings(True), None)
    _check_valid(a)
    assert a["suspect_neoplasm"] is True and a["level"] == "intermediate"
    flag = next(f for f in a["red_flags"] if f["id"] == "ceus-enhancement")
    assert "0.94" in flag["source"] and "0.99" in flag["source"]
    assert "no case file" in a["missing"] and a["inputs_used"] == ["ceus"]


def test_ceus_alone_with_malignant_kinetics_is_high() -> None:
    a = assess(malignant_findings(), None)
    _check_valid(a)
    assert a["level"] == "high"
    assert {"ceus-rapid-wash-in", "ceus-hyperenhancement", "ceus-heterogeneous", "ceus-wash-out",
            "ceus-necrosis"} <= set(_ids(a["red_flags"]))
    est = a["fnclcc_necrosis_estimate"]
    assert est["component_score"] == 1 and est["proposed"] is True and "estimate" in est["label"]
    assert "rec-fnclcc-necrosis" in _ids(a["recommendations"])


def test_ceus_alone_non_enhancing_is_not_suspect() -> None:
    a = assess(non_enhancing_findings(), None)
    _check_valid(a)
    assert a["suspect_neoplasm"] is False and a["level"] == "low" and a["red_flags"] == []
    assert a["differential"][0]["id"] == "ddx-bland-dvt"


def test_neither_input_is_low_and_lists_everything_missing() -> None:
    a = assess(None, None)
    _check_valid(a)
    # Nothing assessed is never reassurance (contract: low needs an assessed CEUS or case).
    assert a["level"] == "indeterminate" and not a["suspect_neoplasm"]
    assert a["inputs_used"] == [] and a["red_flags"] == []
    assert a["missing"] == ["no CEUS analysis", "no case file"]
    assert _ids(a["recommendations"]) == ["rec-provide-inputs"]
    assert a["wells"]["missing"] and a["d_dimer"]["given"] is False


def test_unassessable_ceus_counts_as_no_ceus() -> None:
    f = findings(None, lesion_roi=None, missing=["lesion ROI: none with role 'lesion'"])
    a = assess(f, example_case("index_case"))
    _check_valid(a)
    assert a["ceus"] == "not assessed"
    assert "CEUS: intraluminal enhancement not assessable" in a["missing"]
    assert "CEUS: lesion ROI: none with role 'lesion'" in a["missing"]
    assert "rec-ceus" in _ids(a["recommendations"])
    assert a["inputs_used"] == ["ceus", "case"]


def test_kinetic_findings_without_enhancement_raise_no_flag() -> None:
    # a non-enhancing lesion cannot wash in or out; stray descriptors must not count
    f = findings(False, wash_in="rapid", homogeneity="heterogeneous", necrosis_percent=60.0,
                 wash_out={"present": True, "onset_s": 30.0, "timing": "early", "degree": "marked"})
    a = assess(f, None)
    assert a["red_flags"] == [] and a["fnclcc_necrosis_estimate"] is None


def test_non_enhancing_lesion_with_two_strong_flags_is_intermediate() -> None:
    case = parse_case({"anticoagulation": {"duration_days": 120, "response": "worse"},
                       "ultrasound": {"compression_of_vein": True}}, "t")
    a = assess(non_enhancing_findings(), case)
    _check_valid(a)
    assert a["level"] == "intermediate" and a["suspect_neoplasm"]
    assert any("compress" in r for r in a["reasons"])
    one = parse_case({"anticoagulation": {"response": "worse"}}, "t")
    assert assess(non_enhancing_findings(), one)["level"] == "low"


def test_two_weak_flags_without_ceus_are_intermediate_but_not_with_non_enhancing_ceus() -> None:
    case = parse_case({"recurrence": True, "site": "ivc"}, "t")
    assert assess(None, case)["level"] == "intermediate"
    assert assess(non_enhancing_findings(), case)["level"] == "low"


def test_three_avena_items_without_ceus_are_high() -> None:
    case = parse_case({"anticoagulation": {"response": "worse"},
                       "ultrasound": {"vein_expansion": True, "extraluminal_component": True}}, "t")
    a = assess(None, case)
    assert a["level"] == "high" and a["avena_adapted"]["count"] == 3


@pytest.mark.parametrize(("response", "days", "mass", "flag"), [
    ("worse", 3, False, True), ("unchanged", 7, True, False), ("unchanged", 14, True, True),
    ("unchanged", None, True, False), ("improved", 90, True, False),
    # unchanged is the usual course of a post-thrombotic vein: not refractory without a mass
    ("unchanged", 14, False, False), ("unchanged", 400, False, False),
])
def test_refractory_anticoagulation_window(response: str, days: float | None, mass: bool, flag: bool) -> None:
    case = parse_case({"anticoagulation": {"response": response, "duration_days": days},
                       "ultrasound": {"mass": mass}}, "t")
    assert ("clin-refractory-anticoagulation" in _ids(assess(None, case)["red_flags"])) is flag


@pytest.mark.parametrize(("duration", "dd", "flag"), [
    (730, {"result": "normal"}, True),
    (28, {"value": 300, "unit": "ug/L FEU"}, True),
    (27, {"value": 300, "unit": "ug/L FEU"}, False),
    (730, {"value": 0.9, "unit": "mg/L FEU"}, False),
    (730, None, False),
])
def test_chronic_thrombus_with_normal_d_dimer(duration: float, dd: dict | None, flag: bool) -> None:
    data: dict[str, Any] = {"symptom_duration_days": duration, "age_years": 40}
    if dd is not None:
        data["d_dimer"] = dd
    a = assess(None, parse_case(data, "t"))
    assert ("lab-normal-d-dimer-chronic" in _ids(a["red_flags"])) is flag


def test_every_case_flag_can_be_raised() -> None:
    case = parse_case({
        "age_years": 30, "unprovoked": True, "recurrence": True, "site": "ivc", "symptom_duration_days": 100,
        "d_dimer": {"result": "normal"}, "anticoagulation": {"response": "worse"},
        "ultrasound": {"mass": True, "vein_expansion": True, "heterogeneous_mass": True,
                       "arterial_waveform": True},
    }, "t")
    raised = set(_ids(assess(malignant_findings(), case)["red_flags"]))
    weak_doppler = parse_case({"ultrasound": {"internal_color_doppler_flow": True}}, "t")
    raised |= set(_ids(assess(None, weak_doppler)["red_flags"]))
    assert raised == set(RED_FLAG_RULES)


# ----------------------------------------------------------------------------- catalogue properties


def test_every_rule_has_id_text_source_and_marks_its_heuristics() -> None:
    for rule_id, rule in RED_FLAG_RULES.items():
        assert rule.id == rule_id and rule.text and rule.source and rule.short
        assert rule.category in CATEGORIES
        assert rule.proposed == ("heuristic" in rule.source), rule_id
    # marked *proposed* in the clinical reference
    assert RED_FLAG_RULES["lab-normal-d-dimer-chronic"].proposed
    assert RED_FLAG_RULES["ceus-necrosis"].proposed
    assert not RED_FLAG_RULES["ceus-enhancement"].proposed


def test_differential_covers_the_reference_entities() -> None:
    ids = {c.id for c in DIFFERENTIAL}
    assert ids == {"ddx-bland-dvt", "ddx-tumour-thrombus", "ddx-venous-leiomyosarcoma",
                   "ddx-intravascular-leiomyomatosis", "ddx-extrinsic-compression", "ddx-vascular-tumour",
                   "ddx-may-thurner", "ddx-baker-cyst", "ddx-venous-aneurysm"}


@pytest.mark.parametrize(("data", "top"), [
    ({"site": "popliteal", "side": "right", "ultrasound": {"mass": False, "extraluminal_component": False}},
     "ddx-baker-cyst"),
    ({"site": "iliac", "side": "left", "sex": "female"}, "ddx-may-thurner"),
    ({"ultrasound": {"compression_of_vein": True, "mass": True}}, "ddx-extrinsic-compression"),
])
def test_differential_follows_the_evidence(data: dict, top: str) -> None:
    # without CEUS and without bland-DVT evidence, the site or the mass decides the leader
    a = assess(None, parse_case(data, "t"))
    assert a["differential"][0]["id"] == top
    assert a["differential"][0]["support"]


def test_male_patient_argues_against_intravascular_leiomyomatosis() -> None:
    female = assess(findings(True), parse_case({"sex": "female", "site": "ivc"}, "t"))
    male = assess(findings(True), parse_case({"sex": "male", "site": "ivc"}, "t"))
    rank = {a: next(d for d in x["differential"] if d["id"] == "ddx-intravascular-leiomyomatosis")
            for a, x in (("f", female), ("m", male))}
    assert rank["m"]["score"] < rank["f"]["score"] and rank["m"]["against"]


# ----------------------------------------------------------------------------- monotonicity


def test_combine_flags_is_monotone_over_flag_sets() -> None:
    ids = sorted(RED_FLAG_RULES)
    rng = random.Random(7)
    subsets = [frozenset()] + [frozenset(s) for s in itertools.combinations(ids, 1)]
    subsets += [frozenset(rng.sample(ids, rng.randint(0, len(ids)))) for _ in range(1500)]
    for negative in (False, True):
        for base in subsets:
            level = LEVELS.index(combine_flags(base, ceus_non_enhancing=negative)[0])
            for extra in ids:
                bigger = LEVELS.index(combine_flags(base | {extra}, ceus_non_enhancing=negative)[0])
                assert bigger >= level, (sorted(base), extra, negative)


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in patch.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) else v
    return out


BASE_CASES: dict[str, dict[str, Any] | None] = {
    "no case": None,
    "empty": {},
    "index": example_case("index_case").model_dump(exclude_none=True),
    "bland": example_case("acute_bland_dvt").model_dump(exclude_none=True),
    "young": {"age_years": 30, "site": "femoral"},
}
BASE_FINDINGS: dict[str, dict[str, Any] | None] = {
    "no ceus": None, "not assessable": findings(None), "non-enhancing": non_enhancing_findings(),
    "enhancing": findings(True),
}
CASE_PATCHES: list[dict[str, Any]] = [
    {"ultrasound": {"mass": True}}, {"ultrasound": {"vein_expansion": True}},
    {"ultrasound": {"heterogeneous_mass": True}}, {"ultrasound": {"arterial_waveform": True}},
    {"ultrasound": {"internal_color_doppler_flow": True}}, {"ultrasound": {"compression_of_vein": True}},
    {"anticoagulation": {"response": "worse"}}, {"recurrence": True}, {"unprovoked": True}, {"site": "ivc"},
    {"symptom_duration_days": 400, "d_dimer": {"result": "normal"}},
]
FINDINGS_PATCHES: list[dict[str, Any]] = [
    {"intraluminal_enhancement": True}, {"wash_in": "rapid"}, {"enhancement": "hyper"},
    {"homogeneity": "heterogeneous"}, {"necrosis_percent": 40.0},
    {"wash_out": {"present": True, "onset_s": 40.0, "timing": "early", "degree": "mild"}},
]


@pytest.mark.parametrize("case_name", list(BASE_CASES))
@pytest.mark.parametrize("findings_name", list(BASE_FINDINGS))
def test_adding_a_red_flag_never_lowers_the_level(case_name: str, findings_name: str) -> None:
    case_data, f = BASE_CASES[case_name], BASE_FINDINGS[findings_name]
    case = None if case_data is None else parse_case(case_data, "t")
    before = assess(f, case)
    start = LEVELS.index(before["level"])
    flags_before = set(_ids(before["red_flags"]))
    variants: list[tuple[dict[str, Any] | None, ClinicalCase | None]] = [
        (f, parse_case(_merge(case_data or {}, p), "t")) for p in CASE_PATCHES]
    variants += [(_merge(f or findings(None), p), case) for p in FINDINGS_PATCHES]
    for vf, vc in variants:
        after = assess(vf, vc)
        assert set(_ids(after["red_flags"])) >= flags_before
        assert LEVELS.index(after["level"]) >= start, (case_name, findings_name, after["reasons"])


# ----------------------------------------------------------------------------- summary


@pytest.mark.parametrize(("f", "case_name", "level"), [
    (malignant_findings(), "index_case", "HIGH"),
    (None, "index_case", "INTERMEDIATE"),
    (non_enhancing_findings(), "acute_bland_dvt", "LOW"),
    (None, None, "INDETERMINATE"),
])
def test_summary_paragraph(f: dict[str, Any] | None, case_name: str | None, level: str) -> None:
    case = example_case(case_name) if case_name else None
    a = assess(f, case)
    text = summary_paragraph(f, a)
    assert "\n" not in text
    assert text.startswith("CEUS:" if f is not None else "No CEUS analysis")
    assert f"Suspicion of a venous neoplasm: {level}, because" in text
    assert text.endswith(DISCLAIMER)
    for reason in a["reasons"]:
        assert reason in text
    if f is not None and f["intraluminal_enhancement"]:
        assert "30 %" in text and "rapid wash-in" in text
    if case is not None:
        assert f"{case.age_years:g}-year-old" in text


def test_abnormal_thrombophilia_supports_bland_dvt() -> None:
    def bland(screen: str) -> dict[str, Any]:
        a = assess(None, parse_case({"thrombophilia_screen": screen}, "t"))
        return next(d for d in a["differential"] if d["id"] == "ddx-bland-dvt")
    assert bland("abnormal")["score"] - bland("normal")["score"] == pytest.approx(1.0)
    assert any("thrombophilia" in s for s in bland("abnormal")["support"])


# ----------------------------------------------------------------------------- the level table (issue 13)


def test_level_table_rows_are_readable_and_ordered() -> None:
    from ceuskit.clinical.rules import LEVEL_TABLE
    floors = [LEVELS.index(floor) for _, floor, _ in LEVEL_TABLE]
    assert all(a >= b for a, b in itertools.pairwise(floors[:-1]))  # the fallback row comes last
    assert LEVEL_TABLE[-1][1] == "indeterminate" and LEVEL_TABLE[-1][0] == "too-little-known"
    assert all(name and reason for name, _, reason in LEVEL_TABLE)


def test_mass_floor_holds_whatever_the_lumen_shows() -> None:
    ids = sorted(RED_FLAG_RULES)
    rng = random.Random(13)
    for _ in range(500):
        base = frozenset(rng.sample(ids, rng.randint(0, len(ids)))) | {"us-extraluminal-mass"}
        for negative in (False, True):
            for support in ((), ("improving on anticoagulation",)):
                level, _ = combine_flags(base, ceus_non_enhancing=negative, bland_support=support)
                assert LEVELS.index(level) >= LEVELS.index("intermediate"), (sorted(base), negative)


def test_low_needs_positive_support_and_is_monotone_with_it() -> None:
    assert combine_flags(set())[0] == "indeterminate"
    assert combine_flags(set(), bland_support=["improving on anticoagulation"])[0] == "low"
    assert combine_flags(set(), ceus_non_enhancing=True)[0] == "low"
    ids = sorted(RED_FLAG_RULES)
    rng = random.Random(5)
    subsets = [frozenset()] + [frozenset(rng.sample(ids, rng.randint(0, len(ids)))) for _ in range(400)]
    for support in ((), ("a cyst",)):
        for negative in (False, True):
            for base in subsets:
                level = LEVELS.index(combine_flags(base, negative, support)[0])
                for extra in ids:
                    assert LEVELS.index(combine_flags(base | {extra}, negative, support)[0]) >= level


@pytest.mark.parametrize(("on_ac", "flag"), [(True, False), (False, True), (None, True)])
def test_normal_d_dimer_on_anticoagulation_is_no_red_flag(on_ac: bool | None, flag: bool) -> None:
    dd: dict[str, Any] = {"result": "normal"}
    if on_ac is not None:
        dd["on_anticoagulation"] = on_ac
    a = assess(None, parse_case({"symptom_duration_days": 400, "d_dimer": dd}, "t"))
    assert ("lab-normal-d-dimer-chronic" in _ids(a["red_flags"])) is flag
    if on_ac:
        assert any("on anticoagulation" in n for n in a["d_dimer"]["notes"])
