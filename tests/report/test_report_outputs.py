"""analyze_to_dir's outputs: parametric maps in results.json, maps/, report.html and report.pdf.

One short tumour phantom (known necrotic share) is analysed once per module
with maps and once without; the PDF is checked as a user would see it,
rasterised by poppler's pdftoppm and read back by pdftotext.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import socket
import subprocess

import numpy as np
import pytest
from PIL import Image

from ceuskit import DISCLAIMER
from ceuskit.api import RESULT_FILES, analyze_to_dir
from ceuskit.errors import InputError
from ceuskit.pipeline import AnalysisOptions
from ceuskit.simulate import SimulationSpec, simulate, write_phantom

NECROSIS_TOL = 0.05  # the maps' tolerance (tests/test_maps.py)
SIM = {"fps": 4.0, "duration_s": 60.0}


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory):
    ph = simulate(SimulationSpec(scenario="tumor", seed=11, necrosis=0.3, **SIM))
    files = write_phantom(ph, tmp_path_factory.mktemp("phantom"), "dicom")
    return ph, files


@pytest.fixture(scope="module")
def with_maps(phantom_files, tmp_path_factory):
    _, files = phantom_files
    out = tmp_path_factory.mktemp("with-maps") / "out"
    analysis, paths = analyze_to_dir(files["cine"], files["rois"], out)
    return analysis, paths, out


@pytest.fixture(scope="module")
def without_maps(phantom_files, tmp_path_factory):
    _, files = phantom_files
    out = tmp_path_factory.mktemp("no-maps") / "out"
    analysis, paths = analyze_to_dir(files["cine"], files["rois"], out, AnalysisOptions(maps=False))
    return analysis, paths, out


def _maps_section(html: str) -> str:
    m = re.search(r'<section id="parametric-maps">(.*?)</section>', html, re.S)
    assert m is not None, "no parametric-maps section in the report"
    return m.group(1)


def test_results_json_has_map_summaries_that_match_truth(phantom_files, with_maps):
    ph, _ = phantom_files
    _analysis, paths, out = with_maps
    res = json.loads(paths["results"].read_text())
    lesion = res["rois"]["lesion"]
    summary = lesion["map"]
    assert summary["role"] == "lesion"
    assert set(summary["heterogeneity"]) >= {"index", "heterogeneous", "threshold_cv",
                                             "threshold_necrosis"}
    assert set(summary["pixel_medians"]) >= {"peak_enhancement", "time_to_peak_s"}
    assert summary["test_window"]["post_arrival_s"][0] > summary["test_window"]["baseline_s"][1]
    # One pixel test: the contract key and the map's figure are the same number.
    assert lesion["necrosis_fraction"] == summary["necrosis_fraction"]
    assert lesion["necrosis"]["tested_px"] == summary["tested_px"]
    truth = ph.truth["rois"]["lesion"]["necrosis_fraction"]
    assert abs(lesion["necrosis_fraction"] - truth) <= NECROSIS_TOL, (lesion["necrosis_fraction"], truth)
    # The simulator's tumour is heterogeneous (lognormal perfusion field plus necrosis); muscle is not.
    assert summary["heterogeneity"]["heterogeneous"] is True
    assert res["rois"]["muscle"]["map"]["heterogeneity"]["heterogeneous"] is False
    # DVP shares exist (there is an enhancing reference) and add up to one.
    shares = summary["dvp"]["pixel_shares"]
    assert sum(shares.values()) == pytest.approx(1.0)
    maps = res["maps"]
    assert maps["computed"] is True and maps["block_px"] == 4 and maps["model"] == "lognormal"
    assert "peak_enhancement" in maps["parameters"] and maps["units"]["time_to_peak_s"] == "s"
    assert maps["directory"] == "maps"
    for name in ("maps/peak_enhancement.png", "maps/time_to_peak_s.npy", "maps/necrosis.nii.gz",
                 "maps/necrosis.png", "maps/maps.json"):
        assert name in maps["files"], name
    assert all((out / f).is_file() for f in maps["files"])
    assert paths["maps"] == out / "maps"


def test_maps_dir_holds_the_analysis_maps(with_maps):
    analysis, _, out = with_maps
    result = analysis.maps.result
    np.testing.assert_array_equal(np.load(out / "maps" / "peak_enhancement.npy"),
                                  result.params["peak_enhancement"])
    necrosis = np.load(out / "maps" / "necrosis.npy")
    np.testing.assert_array_equal(necrosis, result.necrosis.astype(np.uint8))
    # The necrosis mask is the fraction's numerator: same test, same pixels.
    lesion = next(r for r in analysis.rois if r.roi.role == "lesion")
    tested = np.count_nonzero(result.tested & lesion.roi.mask)
    assert np.count_nonzero(necrosis) / tested == pytest.approx(lesion.necrosis["necrosis_fraction"])
    doc = json.loads((out / "maps" / "maps.json").read_text())
    assert doc["source"]["frame_shown_index"] == analysis.peak_frame_index
    assert "not a diagnosis" in doc["disclaimer"]
    assert not list(out.rglob(".*part*")), "no temporary file left behind"


def test_report_html_has_the_maps_section(with_maps):
    analysis, paths, _ = with_maps
    html = paths["report"].read_text()
    section = _maps_section(html)
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', section)
    assert len(images) == 3  # PE, TTP, necrosis mask
    for b64 in images:
        img = Image.open(io.BytesIO(base64.b64decode(b64)))
        assert img.width > 300 and np.asarray(img.convert("L"), dtype=float).std() > 5
    assert "Peak enhancement" in section and "(a.u.)" in section
    assert "Time to peak" in section and "(s)" in section
    assert "Necrosis" in section and "threshold 0.25" in section and "heterogeneous" in section
    nf = next(r for r in analysis.rois if r.roi.role == "lesion").necrosis["necrosis_fraction"]
    assert f"{100 * nf:.1f} %" in section
    assert "single imaging plane" in section  # the plane is stated; the pixel test's rule ...
    assert "Student" in html.partition('<section id="appendix"')[2]  # ... is in the appendix
    assert "Dynamic vascular pattern" in section and "unipolar +" in section
    assert "not a diagnosis" in html


def _pdf_pages(pdf, tmp_path):
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed: cannot rasterise the PDF")
    subprocess.run(["pdftoppm", "-r", "50", "-png", str(pdf), str(tmp_path / "page")], check=True,
                   capture_output=True)
    return sorted(tmp_path.glob("page*.png"))


def test_report_pdf_is_a_readable_pdf(with_maps, tmp_path):
    _, paths, out = with_maps
    pdf = out / "report.pdf"
    assert paths["pdf"] == pdf and pdf.read_bytes()[:5] == b"%PDF-"
    pages = _pdf_pages(pdf, tmp_path)
    assert len(pages) >= 1
    for page in pages:
        grey = np.asarray(Image.open(page).convert("L"), dtype=float)
        # A4 at 50 dpi is about 413 x 585 px: the page size came through.
        assert abs(grey.shape[1] / grey.shape[0] - 210 / 297) < 0.02
        assert grey.std() > 5, f"{page.name} is blank"
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed: text of the PDF not checked")
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True,
                          text=True).stdout
    flat = " ".join(text.split())
    assert DISCLAIMER.split(".")[0] in flat
    assert "Time to peak" in flat and "Peak enhancement" in flat and "Parametric maps" in flat
    # The footer: the disclaimer and the page number on every page.
    n = len(pages)
    for i in range(1, n + 1):
        page_text = subprocess.run(["pdftotext", "-f", str(i), "-l", str(i), str(pdf), "-"],
                                   check=True, capture_output=True, text=True).stdout
        page_flat = " ".join(page_text.split())
        assert "not a diagnosis" in page_flat and f"page {i} of {n}" in page_flat, i


def test_no_maps_gives_no_map_section_and_no_maps_dir(phantom_files, without_maps):
    ph, _ = phantom_files
    analysis, paths, out = without_maps
    assert analysis.maps is None and "maps" not in paths
    assert not (out / "maps").exists()
    html = paths["report"].read_text()
    assert 'id="parametric-maps"' not in html and "--no-maps" in html
    res = json.loads(paths["results"].read_text())
    assert res["maps"] == {"computed": False, "reason": "turned off (--no-maps)", "directory": None,
                           "files": None}
    lesion = res["rois"]["lesion"]
    assert "map" not in lesion
    # The necrosis fraction is still measured (the same pixel test, run on its own).
    truth = ph.truth["rois"]["lesion"]["necrosis_fraction"]
    assert abs(lesion["necrosis_fraction"] - truth) <= NECROSIS_TOL
    assert (out / "report.pdf").is_file()


def test_necrosis_agrees_with_and_without_maps(with_maps, without_maps):
    # Two runs of the same test (ROI fits made separately): the figures must agree.
    a = next(r for r in with_maps[0].rois if r.roi.role == "lesion").necrosis
    b = next(r for r in without_maps[0].rois if r.roi.role == "lesion").necrosis
    assert abs(a["necrosis_fraction"] - b["necrosis_fraction"]) <= 0.01, (a, b)
    assert a["tested_px"] == b["tested_px"]
    assert a["post_arrival_window_s"] == pytest.approx(b["post_arrival_window_s"], abs=0.5)


@pytest.mark.parametrize("earlier", ["report.pdf", "maps"])
def test_refuses_to_overwrite_an_earlier_pdf_or_maps(phantom_files, tmp_path, earlier):
    _, files = phantom_files
    out = tmp_path / "out"
    out.mkdir()
    if earlier == "maps":
        (out / "maps").mkdir()
        (out / "maps" / "peak_enhancement.npy").write_bytes(b"earlier")
        kept = out / "maps" / "peak_enhancement.npy"
    else:
        kept = out / "report.pdf"
        kept.write_bytes(b"%PDF-earlier")
    before = kept.read_bytes()
    with pytest.raises(InputError, match=f"already holds {earlier}.*--overwrite"):
        analyze_to_dir(files["cine"], files["rois"], out, AnalysisOptions(maps=False))
    assert kept.read_bytes() == before
    assert {"report.pdf", "maps"} <= set(RESULT_FILES)


def test_missing_pango_is_a_warning_not_a_failure(phantom_files, tmp_path, monkeypatch):
    from ceuskit.report import pdf as pdf_module
    from ceuskit.report import pdf_printer

    def no_pango():
        raise OSError("cannot load library 'libpango-1.0-0': libpango-1.0-0: cannot open shared "
                      "object file: No such file or directory")

    monkeypatch.setattr(pdf_module, "_load_weasyprint", no_pango)
    # Printed here, where the loader is patched (the child's own case is in test_pdf_printer).
    monkeypatch.setattr(pdf_printer, "_start_child", lambda: None)
    _, files = phantom_files
    out = tmp_path / "out"
    analysis, paths = analyze_to_dir(files["cine"], files["rois"], out, AnalysisOptions(maps=False))
    assert "pdf" not in paths and not (out / "report.pdf").exists()
    warning = next(w for w in analysis.warnings if w.code == "pdf-not-written")
    assert "libpango-1.0-0" in warning.message and "apt-get install" in warning.message
    res = json.loads(paths["results"].read_text())
    assert "pdf-not-written" in {w["code"] for w in res["warnings"]}
    assert "pdf-not-written" in paths["report"].read_text()


def test_pdf_fetches_nothing_but_data_urls():
    """A report that names outside resources prints without them: no connection is made."""
    from ceuskit.report.pdf import render_pdf

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        server.setblocking(False)
        port = server.getsockname()[1]
        dot = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5E"
               "rkJggg==")
        html = (f'<html><head><link rel="stylesheet" href="http://127.0.0.1:{port}/x.css"></head>'
                f'<body><p>offline</p><img src="http://127.0.0.1:{port}/a.png">'
                f'<img src="file:///etc/hostname"><img src="data:image/png;base64,{dot}"></body></html>')
        pdf = render_pdf(html)
        with pytest.raises(BlockingIOError):
            server.accept()
    assert pdf[:5] == b"%PDF-"


def test_report_reads_answer_first_then_lesion_findings_details(with_maps):
    """The report's sections in reading order; an explicit assessment replaces the document's."""
    from ceuskit.report import html as html_module

    analysis = with_maps[0]
    results = analysis.results()
    page = html_module.render_html(analysis, results)
    order = [page.index(f'<section id="{s}"') for s in
             ("answer", "lesion", "findings", "clinical", "details", "technical", "appendix")]
    assert order == sorted(order)
    assert results["assessment"]["level"].upper() in page
    # A document without an assessment has no answer box and no clinical sections.
    bare = {k: v for k, v in results.items() if k not in ("assessment", "findings")}
    plain = html_module.render_html(analysis, bare)
    assert 'id="answer"' not in plain and 'id="clinical"' not in plain and 'id="lesion"' in plain
    forced = dict(results["assessment"], level="indeterminate")
    assert "Suspicion of a venous neoplasm: INDETERMINATE" in html_module.render_html(
        analysis, results, assessment=forced, findings=results["findings"])


def test_report_states_the_enhancement_verdict_and_its_margins(with_maps):
    from ceuskit.enhancement import CORE_MARGIN_PX

    _, paths, _ = with_maps
    html = paths["report"].read_text()
    results = json.loads(paths["results"].read_text())
    assert results["findings"]["intraluminal_enhancement"] is True
    assert "Contrast bolus seen: yes" in html
    assert "Margin of the enhancement verdict" in html and "Core margin inside the lesion" in html
    assert "core margin px" not in html
    assert f"{CORE_MARGIN_PX:g} px" in html or f"{CORE_MARGIN_PX:.0f} px" in html
    assert "Enhancement degree (enhancing part)" in html and "Enhancement degree (whole ROI)" in html


def test_report_gives_the_reason_a_finding_cannot_be_assessed(tmp_path):
    ph = simulate(SimulationSpec(scenario="tumor", seed=12, fps=4.0, duration_s=30.0, mode="fundamental"))
    files = write_phantom(ph, tmp_path / "phantom", "npz")
    _, paths = analyze_to_dir(files["cine"], files["rois"], tmp_path / "out", AnalysisOptions(maps=False))
    html = paths["report"].read_text()
    results = json.loads(paths["results"].read_text())
    reason = results["findings"]["not_assessable"]["intraluminal_enhancement"]
    assert results["findings"]["intraluminal_enhancement"] is None and "no contrast bolus" in reason
    assert "Contrast bolus seen: no" in html and "not assessable" in html
    assert results["assessment"]["level"] == "indeterminate"
    assert "INDETERMINATE" in html.upper()


def test_overwrite_replaces_the_whole_set(phantom_files, tmp_path):
    """--overwrite --no-maps after a run with maps leaves no stale maps/ beside the new results."""
    _, files = phantom_files
    out = tmp_path / "out"
    analyze_to_dir(files["cine"], files["rois"], out, pdf=False)
    assert (out / "maps").is_dir()
    analyze_to_dir(files["cine"], files["rois"], out, AnalysisOptions(maps=False), overwrite=True,
                   pdf=False)
    results = json.loads((out / "results.json").read_text())
    assert results["maps"]["computed"] is False
    assert not (out / "maps").exists() and not (out / "report.pdf").exists()
    assert (out / "report.html").exists()
