"""The clinical case model: units, validation messages, file loading, example cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ceuskit.clinical.case import (
    D_DIMER_UNITS,
    FEU_PER_DDU,
    ClinicalCase,
    d_dimer_to_ug_l_feu,
    example_case,
    load_case,
    parse_case,
)
from ceuskit.errors import InputError


@pytest.mark.parametrize(("value", "unit", "expected_ug_l_feu"), [
    (640.0, "ug/L FEU", 640.0),
    (640.0, "ng/mL FEU", 640.0),
    (0.64, "mg/L FEU", 640.0),
    (0.64, "ug/mL FEU", 640.0),
    (320.0, "ug/L DDU", 640.0),
    (320.0, "ng/mL DDU", 640.0),
    (0.32, "mg/L DDU", 640.0),
    (0.32, "ug/mL DDU", 640.0),
])
def test_d_dimer_conversion_to_ug_l_feu(value: float, unit: str, expected_ug_l_feu: float) -> None:
    assert d_dimer_to_ug_l_feu(value, unit) == pytest.approx(expected_ug_l_feu)
    case = parse_case({"d_dimer": {"value": value, "unit": unit}}, "t")
    assert case.d_dimer is not None
    assert case.d_dimer.value_ug_l_feu() == pytest.approx(expected_ug_l_feu)


def test_ddu_factor_is_the_conventional_two() -> None:
    assert FEU_PER_DDU == 2.0
    feu = d_dimer_to_ug_l_feu(1.0, "ug/L FEU")
    assert d_dimer_to_ug_l_feu(1.0, "ug/L DDU") == pytest.approx(FEU_PER_DDU * feu)


def test_every_accepted_unit_is_listed_once() -> None:
    assert len(D_DIMER_UNITS) == len(set(D_DIMER_UNITS)) == 8
    assert all(u.endswith((" FEU", " DDU")) for u in D_DIMER_UNITS)


@pytest.mark.parametrize("typed", ["µg/L FEU", "mg/l feu", "  ng/mL   DDU "])
def test_unit_spelling_variants_are_canonicalised(typed: str) -> None:
    case = parse_case({"d_dimer": {"value": 1, "unit": typed}}, "t")
    assert case.d_dimer is not None and case.d_dimer.unit in D_DIMER_UNITS


@pytest.mark.parametrize("unit", ["ug/L", "mg/L", "ng/mL", "ug/mL"])
def test_unit_without_feu_or_ddu_is_refused_as_ambiguous(unit: str) -> None:
    with pytest.raises(InputError) as info:
        parse_case({"d_dimer": {"value": 500, "unit": unit}}, "case.yaml")
    msg = str(info.value)
    assert "field 'd_dimer.unit'" in msg and "ambiguous" in msg and "FEU" in msg and "DDU" in msg
    assert msg.startswith("case.yaml: ") and "\n" not in msg


def test_unknown_unit_is_refused_with_the_accepted_list() -> None:
    with pytest.raises(InputError) as info:
        parse_case({"d_dimer": {"value": 1, "unit": "mmol/L"}}, "c.yaml")
    assert "field 'd_dimer.unit'" in str(info.value)
    assert all(u in str(info.value) for u in D_DIMER_UNITS)


def test_value_without_unit_is_refused() -> None:
    with pytest.raises(InputError, match=r"field 'd_dimer\.unit': a D-dimer value needs its unit"):
        parse_case({"d_dimer": {"value": 800}}, "c.yaml")


def test_qualitative_d_dimer_needs_no_unit() -> None:
    case = parse_case({"d_dimer": {"result": "normal"}}, "c")
    assert case.d_dimer is not None and case.d_dimer.value_ug_l_feu() is None


@pytest.mark.parametrize(("data", "field", "fix_word"), [
    ({"sex": "f"}, "sex", "female"),
    ({"age_years": -3}, "age_years", ""),
    ({"age_years": "old"}, "age_years", ""),
    ({"anticoagulation": {"response": "better"}}, "anticoagulation.response", "improved"),
    ({"d_dimer": {"result": "high"}}, "d_dimer.result", "raised"),
    ({"thrombophilia_screen": "ok"}, "thrombophilia_screen", "not-done"),
    ({"wells": {"active_cancer": "perhaps"}}, "wells.active_cancer", ""),
    ({"ultrasound": {"mass": [1]}}, "ultrasound.mass", ""),
    ({"site": "thigh"}, "site", "popliteal"),
    ({"side": "both"}, "side", "bilateral"),
    ({"wells": ["active_cancer"]}, "wells", "nested"),
])
def test_invalid_values_name_the_field(data: dict, field: str, fix_word: str) -> None:
    with pytest.raises(InputError) as info:
        parse_case(data, "case.yaml")
    msg = str(info.value)
    assert f"field '{field}'" in msg
    assert fix_word in msg
    assert "\n" not in msg


@pytest.mark.parametrize(("data", "field", "known"), [
    ({"agee_years": 40}, "agee_years", "age_years"),
    ({"d_dimer": {"value": 1, "unit": "ug/L FEU", "cutof": 500}}, "d_dimer.cutof", "lab_cutoff"),
    ({"wells": {"cancer": True}}, "wells.cancer", "active_cancer"),
    ({"ultrasound": {"doppler": True}}, "ultrasound.doppler", "arterial_waveform"),
])
def test_unknown_fields_are_named(data: dict, field: str, known: str) -> None:
    with pytest.raises(InputError) as info:
        parse_case(data, "case.yaml")
    msg = str(info.value)
    assert f"field '{field}': unknown field" in msg and known in msg


def test_several_problems_are_all_listed() -> None:
    with pytest.raises(InputError) as info:
        parse_case({"sex": "x", "side": "y", "age_years": -3}, "c")
    msg = str(info.value)
    assert msg.startswith("c: 3 problems: (1)") and "\n" not in msg
    assert all(f"field '{name}'" in msg for name in ("sex", "side", "age_years")), msg


def test_empty_case_is_valid_and_all_none() -> None:
    case = parse_case({}, "c")
    assert case == ClinicalCase()
    assert all(v is None for v in case.model_dump().values())


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_and_json_give_the_same_case(tmp_path: Path) -> None:
    data = {"age_years": 44, "sex": "female", "d_dimer": {"value": 0.3, "unit": "mg/L FEU"},
            "wells": {"previous_dvt": True}, "site": "femoral", "side": "left"}
    y = _write(tmp_path / "c.yaml", "age_years: 44\nsex: female\nd_dimer:\n  value: 0.3\n  unit: mg/L FEU\n"
               "wells:\n  previous_dvt: true\nsite: femoral\nside: left\n")
    yml = _write(tmp_path / "c.yml", y.read_text())
    j = _write(tmp_path / "c.json", json.dumps(data))
    cases = [load_case(p) for p in (y, yml, j)]
    assert cases[0] == cases[1] == cases[2]
    assert cases[0].d_dimer is not None and cases[0].d_dimer.value_ug_l_feu() == pytest.approx(300.0)


@pytest.mark.parametrize(("name", "text", "match"), [
    ("bad.yaml", "age_years: [1, 2\n", r"not valid YAML \(line \d+, column \d+\)"),
    ("bad.json", "{\"age_years\": }", r"not valid JSON \(line 1"),
    ("list.yaml", "- 1\n- 2\n", "must be a mapping"),
    ("empty.yaml", "", "empty"),
    ("case.txt", "age_years: 3", "unsupported case file type"),
    ("field.yaml", "sex: woman\n", r"field 'sex'"),
])
def test_bad_files_raise_input_error_naming_the_file(tmp_path: Path, name: str, text: str,
                                                     match: str) -> None:
    p = _write(tmp_path / name, text)
    with pytest.raises(InputError, match=match) as info:
        load_case(p)
    assert str(p) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_case(tmp_path / "nope.yaml")


def test_binary_file_is_unreadable(tmp_path: Path) -> None:
    p = tmp_path / "b.yaml"
    p.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(InputError, match="cannot read"):
        load_case(p)


def test_index_case_matches_the_reference() -> None:
    case = example_case("index_case")
    assert case.age_years == 37 and case.sex == "female"
    assert case.symptom_duration_days is not None and case.symptom_duration_days >= 365
    assert case.anticoagulation is not None and case.anticoagulation.response == "worse"
    assert case.d_dimer is not None and case.d_dimer.result == "normal"
    assert case.thrombophilia_screen == "normal" and case.coagulation_screen == "normal"
    assert case.ultrasound is not None
    assert case.ultrasound.heterogeneous_mass and case.ultrasound.compression_of_vein and case.ultrasound.mass
    assert (case.site, case.side) == ("external-iliac", "left")


def test_bland_dvt_case_is_acute_raised_and_improving() -> None:
    case = example_case("acute_bland_dvt")
    assert case.age_years == 68 and case.sex == "male"
    assert case.symptom_duration_days == 3
    assert case.d_dimer is not None and case.d_dimer.value_ug_l_feu() == pytest.approx(2400.0)
    assert case.anticoagulation is not None and case.anticoagulation.response == "improved"


def test_unknown_example_name() -> None:
    with pytest.raises(InputError, match="index_case"):
        example_case("nope")


def test_example_cases_are_package_data() -> None:
    # the files must be declared in pyproject so a wheel ships them
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    assert '"clinical/cases/*.yaml"' in pyproject.read_text()


def test_new_fields_of_issue_13() -> None:
    from typing import get_args

    from ceuskit.clinical.case import SITES, ClinicalCase
    case = parse_case({
        "pregnant": True, "site": "common-iliac",
        "known_cancer": {"present": True, "site": "renal", "status": "suspected"},
        "ultrasound": {"thrombus_seen": False, "lesion_content": "cystic", "compressing_structure": "artery",
                       "adjacent_organ_mass": "adrenal", "post_thrombotic_changes": True},
        "d_dimer": {"result": "normal", "on_anticoagulation": True},
    }, "t")
    assert case.pregnant and case.known_cancer is not None and case.known_cancer.site == "renal"
    assert case.ultrasound is not None and case.ultrasound.compressed_by() == "artery"
    annotation = ClinicalCase.model_fields["site"].annotation
    assert set(get_args(get_args(annotation)[0])) == set(SITES)


def test_compression_of_vein_means_a_compressing_mass() -> None:
    legacy = parse_case({"ultrasound": {"compression_of_vein": True}}, "t")
    assert legacy.ultrasound is not None and legacy.ultrasound.compressed_by() == "mass"
    assert parse_case({"ultrasound": {"compression_of_vein": True, "compressing_structure": "mass"}}, "t")
    with pytest.raises(InputError, match="compressing_structure"):
        parse_case({"ultrasound": {"compression_of_vein": True, "compressing_structure": "artery"}}, "t")
