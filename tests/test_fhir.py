"""The FHIR R4 bundle of ``analyze --fhir``, validated with the fhir.resources models."""

import json
import math

import pydicom
import pytest
from pydicom.sr.codedict import codes

from ceuskit import DISCLAIMER
from ceuskit.cli import main
from ceuskit.fhir import DCM, FHIR_FILE, LOCAL_SYSTEM, PARAMETER_CODES, UCUM, results_bundle
from ceuskit.simulate import SimulationSpec, simulate, write_phantom

fhir_r4b = pytest.importorskip("fhir.resources.R4B", reason="fhir.resources (test extra) is not installed")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tumour phantom (DICOM) analysed with --fhir: (cine file, results.json, bundle)."""
    base = tmp_path_factory.mktemp("fhir")
    files = write_phantom(simulate(SimulationSpec(seed=4, fps=4.0, duration_s=40.0)), base / "ph", "dicom")
    out = base / "out"
    code = main(["analyze", str(files["cine"]), "--roi", str(files["rois"]), "--out", str(out), "--fhir",
                 "--no-maps", "--quiet"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    bundle = json.loads((out / FHIR_FILE).read_text())
    return files["cine"], results, bundle


def _resources(bundle, kind):
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def test_every_resource_validates_as_fhir(run):
    _cine, _results, bundle = run
    fhir_r4b.get_fhir_model_class("Bundle").model_validate(bundle)
    kinds = set()
    for entry in bundle["entry"]:
        resource = entry["resource"]
        kinds.add(resource["resourceType"])
        # Each resource against its own model (the Bundle's entry is typed as any Resource).
        fhir_r4b.get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        assert entry["fullUrl"].startswith("urn:uuid:")
    assert kinds == {"DiagnosticReport", "Observation"}


def test_report_is_preliminary_with_summary_disclaimer_and_study(run):
    cine, results, bundle = run
    (report,) = _resources(bundle, "DiagnosticReport")
    assert bundle["entry"][0]["resource"] is report
    assert report["status"] == "preliminary"
    assert report["code"]["coding"][0] == {"system": "http://loinc.org", "code": "18748-4",
                                          "display": "Diagnostic imaging study"}
    assert report["conclusion"].startswith(results["assessment"]["summary"])
    assert DISCLAIMER in report["conclusion"]
    uid = pydicom.dcmread(cine, stop_before_pixels=True).StudyInstanceUID
    assert report["imagingStudy"][0]["identifier"] == {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}
    urls = {e["fullUrl"] for e in bundle["entry"][1:]}
    assert {r["reference"] for r in report["result"]} == urls


def test_parameters_carry_the_results_values_with_ucum_units(run):
    _cine, results, bundle = run
    obs = _resources(bundle, "Observation")
    lesion = results["rois"]["lesion"]["perfusion"]
    by_text = {o["code"].get("text"): o for o in obs}
    ttp = by_text["Time To Peak, ROI 'lesion' (lesion)"]
    assert ttp["code"]["coding"][0]["system"] == DCM
    assert math.isclose(ttp["valueQuantity"]["value"], lesion["time_to_peak_s"], rel_tol=1e-12)
    assert ttp["valueQuantity"]["system"] == UCUM and ttp["valueQuantity"]["code"] == "s"
    pe = by_text["Signal change, ROI 'lesion' (lesion)"]
    assert pe["valueQuantity"]["code"] == "[arb'U]"
    assert math.isclose(pe["valueQuantity"]["value"], lesion["peak_enhancement"], rel_tol=1e-12)
    n_rois = len(results["rois"])
    assert sum(o["code"]["coding"][0]["code"] in {c[1] for c in PARAMETER_CODES.values()}
               for o in obs) == n_rois * len(PARAMETER_CODES)
    for o in obs:
        assert o["status"] == "preliminary" and DISCLAIMER in o["note"][0]["text"]
        assert ("valueQuantity" in o or "valueCodeableConcept" in o) != ("dataAbsentReason" in o)


def test_dcm_codes_are_the_standard_ones():
    """The DICOM codes the bundle uses are those of PS3.16 (pydicom's code dictionary)."""
    want = {"arrival_time_s": codes.DCM.BolusArrivalTime, "time_to_peak_s": codes.DCM.TimeToPeak,
            "mean_transit_time_s": codes.DCM.MeanTransitTime, "peak_enhancement": codes.DCM.SignalChange}
    for param, code in want.items():
        system, value, display, _unit = PARAMETER_CODES[param]
        assert (system, value, display) == (DCM, code.value, code.meaning)


def test_findings_and_the_null_ones_with_their_reason(run):
    _cine, results, bundle = run
    obs = {o["code"]["coding"][0]["code"]: o for o in _resources(bundle, "Observation")
           if o["code"]["coding"][0]["system"] == LOCAL_SYSTEM}
    f = results["findings"]
    ile = obs["intraluminal_enhancement"]["valueCodeableConcept"]["coding"][0]
    assert ile["system"] == "http://snomed.info/sct"
    assert ile["display"] == ("Yes" if f["intraluminal_enhancement"] else "No")
    assert obs["wash_in"]["valueCodeableConcept"]["text"] == f["wash_in"]
    assert math.isclose(obs["necrosis_percent"]["valueQuantity"]["value"], f["necrosis_percent"])
    assert obs["assessment_level"]["valueCodeableConcept"]["text"] == results["assessment"]["level"]
    # The 40-s cine cannot tell the wash-out degree: absent, with the reason, not guessed.
    assert f["wash_out"]["degree"] is None
    degree = obs["wash_out_degree"]
    assert "valueCodeableConcept" not in degree
    assert degree["dataAbsentReason"]["text"].startswith("wash-out degree")


def test_no_patient_identifiers_unless_given(run):
    cine, results, bundle = run
    source = pydicom.dcmread(cine, stop_before_pixels=True)
    text = json.dumps(bundle)
    assert str(source.PatientID) not in text and str(source.PatientName) not in text
    assert '"subject"' not in text
    named = results_bundle(results, subject="Patient/abc-1")
    for entry in named["entry"]:
        assert entry["resource"]["subject"] == {"reference": "Patient/abc-1"}
    # A video has no study to point at.
    assert "imagingStudy" not in named["entry"][0]["resource"]


def test_cli_refuses_a_bad_subject_before_any_work(run, tmp_path, capsys):
    cine = run[0]
    rois = cine.with_name("rois.json")
    out = tmp_path / "x"
    code = main(["analyze", str(cine), "--roi", str(rois), "--out", str(out), "--fhir",
                 "--fhir-subject", "Robert Smith 1960"])
    err = capsys.readouterr().err
    assert code == 2 and "--fhir-subject" in err and "Patient/123" in err
    assert not out.exists()
    code = main(["analyze", str(cine), "--roi", str(rois), "--out", str(out), "--fhir-subject", "Patient/1"])
    assert code == 2 and "--fhir" in capsys.readouterr().err
    assert not out.exists()
