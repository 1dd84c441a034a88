"""The command line's report outputs: report.pdf, maps/, --no-maps and --block."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ceuskit.cli import main
from ceuskit.simulate import SimulationSpec, simulate, write_phantom


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    ph = simulate(SimulationSpec(scenario="tumor", seed=5, fps=4.0, duration_s=60.0))
    return write_phantom(ph, tmp_path_factory.mktemp("phantom"), "npz")


def run(argv, capsys):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _printed(stdout, label):
    line = next(s for s in stdout.splitlines() if s.startswith(f"{label}: "))
    return Path(line.removeprefix(f"{label}: "))


def test_demo_writes_report_pdf_and_maps(tmp_path, capsys):
    code, stdout, err = run(["demo", "--out", tmp_path / "demo", "--quiet"], capsys)
    assert code == 0, err
    pdf = _printed(stdout, "report (PDF)")
    assert pdf.is_absolute() and pdf == (tmp_path / "demo" / "report.pdf").resolve()
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert _printed(stdout, "maps").is_dir()
    # Scripts read the HTML report's path from the last line.
    assert stdout.strip().splitlines()[-1].startswith("report: ")
    res = json.loads((tmp_path / "demo" / "results.json").read_text())
    truth = json.loads((tmp_path / "demo" / "phantom" / "truth.json").read_text())
    est = res["rois"]["lesion"]["necrosis_fraction"]
    assert abs(est - truth["rois"]["lesion"]["necrosis_fraction"]) <= 0.05
    assert f"necrosis {100 * est:.0f} %" in stdout


def test_analyze_no_maps(study, tmp_path, capsys):
    out = tmp_path / "res"
    code, stdout, err = run(["analyze", study["cine"], "--roi", study["rois"], "--out", out,
                             "--no-maps", "--quiet"], capsys)
    assert code == 0, err
    assert not (out / "maps").exists() and "maps: " not in stdout
    assert (out / "report.pdf").is_file() and _printed(stdout, "report (PDF)").is_file()
    res = json.loads((out / "results.json").read_text())
    assert res["maps"]["computed"] is False and "map" not in res["rois"]["lesion"]


def test_analyze_block_option(study, tmp_path, capsys):
    out = tmp_path / "res"
    code, _, err = run(["analyze", study["cine"], "--roi", study["rois"], "--out", out,
                        "--block", "8", "--quiet"], capsys)
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert res["maps"]["block_px"] == 8
    assert json.loads((out / "maps" / "maps.json").read_text())["block_px"] == 8
    assert "8 × 8 px blocks" in (out / "report.html").read_text()


@pytest.mark.parametrize("value", ["0", "65", "x"])
def test_bad_block_is_a_usage_error(study, tmp_path, capsys, value):
    code, _, err = run(["analyze", study["cine"], "--roi", study["rois"], "--out", tmp_path / "r",
                        "--block", value], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--block" in err
    assert not (tmp_path / "r").exists()
