"""Wells DVT score and D-dimer interpretation against the published rules."""

from __future__ import annotations

from typing import Any

import pytest

from ceuskit.clinical.case import ClinicalCase, parse_case
from ceuskit.clinical.scores import (
    WELLS_ITEMS,
    d_dimer_assessment,
    d_dimer_cutoff_ug_l_feu,
    wells_score,
)

ITEM_IDS = [item for item, _, _ in WELLS_ITEMS]
# Wells et al. 1997/2003: +1 for each of nine items, -2 for an alternative diagnosis
PUBLISHED_POINTS = {item: 1 for item in ITEM_IDS} | {"alternative_diagnosis_as_likely": -2}


def _wells_case(**items: bool) -> ClinicalCase:
    base = dict.fromkeys(ITEM_IDS, False)
    base.update(items)
    return parse_case({"wells": base}, "t")


def test_the_ten_items_and_their_points() -> None:
    assert {item: pts for item, pts, _ in WELLS_ITEMS} == PUBLISHED_POINTS


@pytest.mark.parametrize("item", ITEM_IDS)
def test_each_item_adds_exactly_its_points(item: str) -> None:
    without = wells_score(_wells_case())
    with_item = wells_score(_wells_case(**{item: True}))
    assert with_item["points"] - without["points"] == PUBLISHED_POINTS[item]
    assert [i["id"] for i in with_item["items"]] == [item]
    assert with_item["items"][0]["points"] == PUBLISHED_POINTS[item]
    assert with_item["complete"] and with_item["missing"] == []


@pytest.mark.parametrize(("n_positive", "alternative", "points", "three", "two"), [
    (0, True, -2, "low", "unlikely"),
    (0, False, 0, "low", "unlikely"),
    (1, False, 1, "moderate", "unlikely"),
    (2, False, 2, "moderate", "likely"),
    (3, False, 3, "high", "likely"),
    (2, True, 0, "low", "unlikely"),
    (4, True, 2, "moderate", "likely"),
    (5, True, 3, "high", "likely"),
    (9, False, 9, "high", "likely"),
])
def test_category_boundaries(n_positive: int, alternative: bool, points: int, three: str, two: str) -> None:
    positives = {item: True for item in ITEM_IDS[:n_positive]}
    w = wells_score(_wells_case(alternative_diagnosis_as_likely=alternative, **positives))
    assert (w["points"], w["three_level"], w["two_level"]) == (points, three, two)
    assert w["determined"]


def test_missing_items_count_zero_and_are_reported() -> None:
    case = parse_case({"wells": {"entire_leg_swollen": True, "previous_dvt": True}}, "t")
    w = wells_score(case)
    assert w["points"] == 2 and w["two_level"] == "likely"
    assert set(w["missing"]) == set(ITEM_IDS) - {"entire_leg_swollen", "previous_dvt"}
    # 7 missing +1 items could add 7, the missing -2 item could subtract 2
    assert w["points_range"] == [0, 9]
    assert not w["complete"] and not w["determined"]
    assert "Lancet 1997" in w["source"]


def test_no_case_lists_every_item_missing() -> None:
    w = wells_score(None)
    assert w["points"] == 0 and w["missing"] == ITEM_IDS and w["points_range"] == [-2, 9]


@pytest.mark.parametrize(("age", "cutoff"), [
    (None, 500.0), (30, 500.0), (50, 500.0), (50.5, 505.0), (51, 510.0), (80, 800.0), (95, 950.0),
])
def test_age_adjusted_cutoff(age: float | None, cutoff: float) -> None:
    got, rule = d_dimer_cutoff_ug_l_feu(age)
    assert got == pytest.approx(cutoff)
    assert ("age-adjusted" in rule) == (age is not None and age > 50)


def _dd_case(value: float, unit: str, age: float | None = None, **extra: Any) -> ClinicalCase:
    data: dict[str, Any] = {"d_dimer": {"value": value, "unit": unit}, **extra}
    if age is not None:
        data["age_years"] = age
    return parse_case(data, "t")


@pytest.mark.parametrize(("value", "unit", "age", "result"), [
    (500.0, "ug/L FEU", 40, "normal"),       # at the cut-off is not above it
    (501.0, "ug/L FEU", 40, "raised"),
    (0.6, "mg/L FEU", 50, "raised"),         # 600 > 500 at 50 (no adjustment)
    (0.6, "mg/L FEU", 61, "normal"),         # 600 <= 610
    (0.6, "mg/L FEU", 59, "raised"),         # 600 > 590
    (260.0, "ng/mL DDU", 45, "raised"),      # 520 ug/L FEU
    (240.0, "ng/mL DDU", 45, "normal"),      # 480 ug/L FEU
    (0.39, "ug/mL DDU", 80, "normal"),       # 780 <= 800
    (0.41, "ug/mL DDU", 80, "raised"),       # 820 > 800
])
def test_d_dimer_against_the_cutoff(value: float, unit: str, age: float, result: str) -> None:
    dd = d_dimer_assessment(_dd_case(value, unit, age))
    assert dd["result"] == result and dd["result_basis"] == "value"
    assert ("DDU" in (dd["conversion"] or "")) == unit.endswith("DDU")


def test_conversion_recorded_in_ug_l_feu() -> None:
    dd = d_dimer_assessment(_dd_case(0.25, "mg/L DDU", 70))
    assert dd["value_ug_l_feu"] == pytest.approx(500.0)
    assert dd["cutoff_ug_l_feu"] == pytest.approx(700.0)
    assert dd["age_adjusted_cutoff_ug_l_feu"] == pytest.approx(700.0)
    assert dd["conventional_cutoff_ug_l_feu"] == 500.0
    assert "approximat" in dd["conversion"]


def test_normal_d_dimer_cannot_rule_out_when_wells_high() -> None:
    high = {item: True for item in ITEM_IDS[:3]} | {"alternative_diagnosis_as_likely": False}
    dd = d_dimer_assessment(_dd_case(300, "ug/L FEU", 40, wells=high))
    assert dd["result"] == "normal" and dd["can_rule_out"] is False
    assert any("cannot rule out" in n for n in dd["notes"])


def test_normal_d_dimer_rules_out_when_wells_unlikely_and_complete() -> None:
    unlikely = dict.fromkeys(ITEM_IDS, False) | {"previous_dvt": True}
    dd = d_dimer_assessment(_dd_case(300, "ug/L FEU", 40, wells=unlikely))
    assert dd["can_rule_out"] is True


def test_incomplete_wells_leaves_rule_out_undetermined() -> None:
    dd = d_dimer_assessment(_dd_case(300, "ug/L FEU", 40))
    assert dd["result"] == "normal" and dd["can_rule_out"] is None


def test_qualitative_result_and_missing_d_dimer() -> None:
    dd = d_dimer_assessment(parse_case({"d_dimer": {"result": "normal"}}, "t"))
    assert dd["given"] and dd["result"] == "normal" and dd["result_basis"] == "laboratory report"
    assert dd["value_ug_l_feu"] is None
    none = d_dimer_assessment(None)
    assert not none["given"] and none["result"] is None and "D-dimer not given" in none["notes"]
    assert "BMJ 2013" in none["source"]


def test_lab_cutoff_disagreement_is_noted() -> None:
    dd_data = {"value": 0.45, "unit": "mg/L FEU", "lab_cutoff": 0.4}
    case = parse_case({"age_years": 40, "d_dimer": dd_data}, "t")
    dd = d_dimer_assessment(case)
    assert dd["lab_cutoff_ug_l_feu"] == pytest.approx(400.0)
    assert dd["result"] == "normal"
    assert any("laboratory's own cut-off" in n for n in dd["notes"])
