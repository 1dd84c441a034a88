"""The assessment end to end: cine + ROIs + case file -> results.json, report, CLI.

The index case of the clinical reference (a leiomyosarcoma of the external
iliac vein treated as DVT for two years) with a simulated tumour cine must
come out as a suspected neoplasm at level high for the right reasons; a
typical acute bland DVT with a non-enhancing thrombus must not.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib.resources import files as package_files

import pytest

from ceuskit import DISCLAIMER
from ceuskit.api import analyze_to_dir, assess_to_dir
from ceuskit.cli import main
from ceuskit.clinical.case import example_case
from ceuskit.errors import InputError
from ceuskit.simulate import SimulationSpec, simulate, write_phantom

SIM = {"fps": 4.0, "duration_s": 60.0}
CASES = package_files("ceuskit.clinical") / "cases"


@pytest.fixture(scope="module")
def tumour_run(tmp_path_factory):
    files = write_phantom(simulate(SimulationSpec(scenario="tumor", seed=3, necrosis=0.3, **SIM)),
                          tmp_path_factory.mktemp("tumour"), "dicom")
    out = tmp_path_factory.mktemp("tumour-out") / "out"
    _, paths = analyze_to_dir(files["cine"], files["rois"], out, case=example_case("index_case"))
    return files, paths, json.loads(paths["results"].read_text())


@pytest.fixture(scope="module")
def bland_run(tmp_path_factory):
    files = write_phantom(simulate(SimulationSpec(scenario="bland", seed=3, **SIM)),
                          tmp_path_factory.mktemp("bland"), "dicom")
    out = tmp_path_factory.mktemp("bland-out") / "out"
    _, paths = analyze_to_dir(files["cine"], files["rois"], out, pdf=False,
                              case=example_case("acute_bland_dvt"))
    return files, paths, json.loads(paths["results"].read_text())


def test_index_case_with_tumour_cine_is_high_suspicion(tumour_run):
    _, _, res = tumour_run
    a = res["assessment"]
    assert a["suspect_neoplasm"] is True
    assert a["level"] == "high"
    ids = {f["id"] for f in a["red_flags"]}
    assert {"clin-refractory-anticoagulation", "lab-normal-d-dimer-chronic", "ceus-enhancement"} <= ids
    assert ids & {"us-extraluminal-mass", "us-heterogeneous-mass"}
    assert all(f["source"] for f in a["red_flags"])
    assert a["differential"][0]["name"].lower().startswith("primary venous leiomyosarcoma")
    assert a["disclaimer"] == DISCLAIMER
    f = res["findings"]
    assert f["intraluminal_enhancement"] is True
    assert f["wash_in"] == "rapid" and f["enhancement"] == "hyper"
    assert f["wash_out"]["present"] is True
    # The findings' necrosis is the lesion's measured necrosis fraction.
    assert f["necrosis_percent"] == pytest.approx(100 * res["rois"]["lesion"]["necrosis_fraction"])
    assert res["clinical_case"]["age_years"] == 37


def test_bland_dvt_case_with_non_enhancing_thrombus_is_not_suspect(bland_run):
    _, _, res = bland_run
    a = res["assessment"]
    assert res["findings"]["intraluminal_enhancement"] is False
    assert a["suspect_neoplasm"] is False
    assert a["level"] == "low"
    assert a["differential"][0]["name"].lower().startswith("bland")


def test_report_shows_the_assessment_first_and_the_pdf_has_it(tumour_run):
    _, paths, _ = tumour_run
    html = paths["report"].read_text()
    answer_at = html.find('<section id="answer"')
    assert 0 < answer_at < html.find('<section id="findings">') < html.find('<section id="parametric-maps">')
    assert "clin-refractory-anticoagulation" in html or "no response to anticoagulation" in html.lower()
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    text = subprocess.run(["pdftotext", str(paths["pdf"]), "-"], capture_output=True, text=True,
                          check=True).stdout
    assert "Suspicion of a venous neoplasm: HIGH" in text
    assert "leiomyosarcoma" in text.lower()


def test_assess_with_the_case_alone_and_with_results(tumour_run, tmp_path):
    _, paths, _ = tumour_run
    doc, written = assess_to_dir(tmp_path / "case-only", case_path=CASES / "index_case.yaml", pdf=False)
    assert doc["findings"] is None
    assert doc["assessment"]["suspect_neoplasm"] is True
    assert any("CEUS" in m or "ceus" in m for m in doc["assessment"]["missing"])
    assert json.loads(written["json"].read_text())["assessment"]["level"] == doc["assessment"]["level"]
    doc2, _ = assess_to_dir(tmp_path / "both", case_path=CASES / "index_case.yaml",
                            results_path=paths["results"], pdf=False)
    assert doc2["assessment"]["level"] == "high"
    assert doc2["findings"]["intraluminal_enhancement"] is True
    with pytest.raises(InputError, match="nothing to assess"):
        assess_to_dir(tmp_path / "none")


def test_cli_case_errors_are_one_line_and_write_nothing(tumour_run, tmp_path, capsys):
    files, _, _ = tumour_run
    bad = tmp_path / "case.yaml"
    bad.write_text("age_years: 37\nd_dimer:\n  value: 300\n  unit: ug/L\n")
    out = tmp_path / "out"
    code = main(["analyze", str(files["cine"]), "--roi", str(files["rois"]), "--out", str(out),
                 "--case", str(bad), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "case.yaml" in err and "d_dimer.unit" in err
    assert not out.exists()
    assert main(["assess", "--out", str(tmp_path / "a")]) == 2
    assert "nothing to assess" in capsys.readouterr().err


def test_cli_assess_writes_and_refuses_to_overwrite(tumour_run, tmp_path, capsys):
    _, paths, _ = tumour_run
    out = tmp_path / "assessment"
    argv = ["assess", "--case", str(CASES / "acute_bland_dvt.yaml"), "--results", str(paths["results"]),
            "--out", str(out)]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert stdout.splitlines()[-1].startswith("report: ")
    assert (out / "assessment.json").is_file() and (out / "assessment.html").is_file()
    before = (out / "assessment.json").read_bytes()
    assert main(argv) == 2
    assert (out / "assessment.json").read_bytes() == before


def test_cli_assess_without_pango_says_so(tmp_path, capsys, monkeypatch):
    """No PDF engine: the JSON and HTML are written, the missing PDF is a warning, never silent."""
    from ceuskit.report import pdf as pdf_module

    def no_pango():
        raise OSError("cannot load library 'libpango-1.0-0'")

    monkeypatch.setattr(pdf_module, "_load_weasyprint", no_pango)
    out = tmp_path / "a"
    assert main(["assess", "--case", str(CASES / "index_case.yaml"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "assessment.pdf was not written" in captured.err and "libpango-1.0-0" in captured.err
    assert not (out / "assessment.pdf").exists() and (out / "assessment.html").is_file()
    doc = json.loads((out / "assessment.json").read_text())
    assert [w["code"] for w in doc["warnings"]] == ["pdf-not-written"]


def test_cli_output_cut_short_by_its_reader_is_not_an_error(tmp_path):
    """`ceuskit assess ... | head -1`: no traceback, no 'internal error', files written."""
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", "from ceuskit.cli import main; raise SystemExit(main())", "assess",
         "--case", str(CASES / "index_case.yaml"), "--out", str(tmp_path / "a")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()  # the reader goes away before the rest is printed
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    assert "internal error" not in err and "Traceback" not in err
    assert code in (0, 141)
    assert (tmp_path / "a" / "assessment.json").is_file()


@pytest.mark.parametrize("content, problem", [
    ("{not json", "cannot be read as JSON"),
    ('{"rois": []}', "not a ceuskit results document"),
    ("[1, 2]", "not a ceuskit results document"),
])
def test_cli_assess_refuses_a_bad_results_file(tmp_path, capsys, content, problem):
    bad = tmp_path / "results.json"
    bad.write_text(content)
    out = tmp_path / "out"
    assert main(["assess", "--results", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "results.json" in err and problem in err
    assert not out.exists()
    assert main(["assess", "--results", str(tmp_path / "missing.json"), "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
