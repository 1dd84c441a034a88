"""The report in the order a clinician reads it (issue 14, item 2).

One tumour phantom with the index case's clinical picture is analysed once;
its report.html, report.pdf (read back with pdftotext) and the web app's
results fragment (`render_web_content`, from the stored results.json) are
checked for what a clinician reads first: a short answer, findings in words,
one number format, each reason once, the ROI figure on its frame, no motion
plot of noise, and no near-blank PDF page.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import subprocess
from typing import Any

import pytest

from ceuskit.api import analyze_to_dir
from ceuskit.clinical import example_case, parse_case
from ceuskit.fmt import fmt, fmt_days
from ceuskit.pipeline import AnalysisOptions
from ceuskit.report.content import MAX_ANSWER_LINES, MOTION_PLOT_THRESHOLD_PX, report_content
from ceuskit.report.html import render_web_content
from ceuskit.simulate import SimulationSpec, simulate, write_phantom

SIM = {"fps": 4.0, "duration_s": 60.0}
#: A page (other than the last) with fewer text lines than this counts as near blank.
MIN_PAGE_LINES = 5
SCI = re.compile(r"\b\d+(?:\.\d+)?[eE][+-]?\d+\b")


def _text(markup: str) -> str:
    """Visible text of an HTML page or fragment (styles and tags removed, entities decoded)."""
    markup = re.sub(r"<style.*?</style>", " ", markup, flags=re.S)
    markup = re.sub(r'src="data:[^"]*"', "", markup)
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def _clinician_part(markup: str) -> str:
    """Everything before the appendix of statistics."""
    head, sep, _ = markup.partition('<section id="appendix"')
    assert sep, "the report has no appendix section"
    return head


def _section(markup: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}"[^>]*>(.*?)</section>', markup, re.S)
    assert m is not None, f"no section {sid!r}"
    return m.group(1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ph = simulate(SimulationSpec(scenario="tumor", seed=11, necrosis=0.3, **SIM))
    base = tmp_path_factory.mktemp("reading-order")
    files = write_phantom(ph, base / "phantom", "npz")
    analysis, paths = analyze_to_dir(files["cine"], files["rois"], base / "out",
                                     case=example_case("index_case"))
    results = json.loads(paths["results"].read_text())
    page = paths["report"].read_text()
    web = render_web_content(results, "/api/analyses/x/files/",
                             [f"maps/{n}" for n in ("peak_enhancement.png", "necrosis.png")])
    return {"analysis": analysis, "paths": paths, "results": results, "html": page, "web": web}


def test_answer_box_has_at_most_five_lines_and_the_level(demo: dict[str, Any]) -> None:
    box = _section(demo["html"], "answer")
    lines = re.findall(r'<p class="answer-line[^"]*"[^>]*>(.*?)</p>', box, re.S)
    assert 1 <= len(lines) <= MAX_ANSWER_LINES == 5
    level = demo["results"]["assessment"]["level"]
    assert level == "high"
    assert f"Suspicion of a venous neoplasm: {level.upper()}" in _text(lines[0])
    assert any(_text(line).startswith("Missing:") for line in lines)
    # The answer comes first: before the curves, the findings and the details.
    page = demo["html"]
    order = [page.index(f'<section id="{s}"') for s in ("answer", "lesion", "findings", "clinical",
                                                          "details", "technical", "appendix")]
    assert order == sorted(order)


def test_no_statistics_or_exponents_in_the_clinician_part(demo: dict[str, Any]) -> None:
    for name in ("html", "web"):
        clinician = _text(_clinician_part(demo[name]))
        assert "z =" not in clinician and "z = " not in clinician, name
        assert not SCI.search(clinician), (name, SCI.search(clinician))
        assert "statistic" not in clinician.lower(), name
    appendix = _text(demo["html"].partition('<section id="appendix"')[2])
    assert "z = " in appendix  # the expert still finds the test statistic
    # ... with readable names and no six-digit statistic.
    assert "min cine s" not in appendix and "leak max share" not in appendix
    tests_table = demo["html"].partition("Enhancement test per ROI")[2].partition("<h3>")[0]
    assert "<td" in tests_table and not re.search(r">-?\d{4,}", tests_table)


def test_every_verdict_margin_has_a_readable_label() -> None:
    from ceuskit.enhancement import margins
    from ceuskit.report.content import _MARGIN_LABELS

    keys = {k for k, v in margins().items() if isinstance(v, dict)}
    assert keys == set(_MARGIN_LABELS)


def test_large_test_statistics_are_written_with_a_power_of_ten() -> None:
    from ceuskit.report.content import fmt_statistic

    assert fmt_statistic(116545.0) == "1.17 × 10⁵" and fmt_statistic(1747.2) == "1.75 × 10³"
    assert fmt_statistic(99960.0) == "1.00 × 10⁵" and fmt_statistic(-25000.0) == "-2.50 × 10⁴"
    assert fmt_statistic(930.4) == "930" and fmt_statistic(None) == "—"


def test_findings_are_in_words_with_the_reference_named(demo: dict[str, Any]) -> None:
    findings = _text(_section(demo["html"], "findings"))
    ref = demo["results"]["findings"]["reference_roi"]
    whole = demo["results"]["findings"]["evidence"]["enhancement_whole_roi"]
    # With its range over the dynamic range's interval, where the DR has one (the demo's
    # default, checked against the speckle, does).
    lo, hi = whole["value_range"]
    span = demo["results"]["linearization"]["level_scale"]["interval_db"]
    assert (f"peaks {fmt(abs(whole['value']), 'dB')} ({fmt(lo)} to {fmt(hi, 'dB')} over the "
            f"dynamic range's interval, {fmt(span[0])}–{fmt(span[1], 'dB')}) above") in findings
    assert f"above {ref}" in findings and "rapid wash-in" in findings


def test_ceus_enhancement_is_one_reason(demo: dict[str, Any]) -> None:
    a = demo["results"]["assessment"]
    ceus_flags = [f for f in a["red_flags"] if f["category"] == "ceus"]
    assert len(ceus_flags) >= 3  # the rules raise one flag per descriptor ...
    content = report_content(demo["results"])
    ceus_reasons = [r for r in content["reasons"] if r["category"] == "CEUS"]
    assert len(ceus_reasons) == 1  # ... the report counts one reason
    n_other = len(a["red_flags"]) - len(ceus_flags)
    assert len(content["reasons"]) == n_other + 1
    box = _text(_section(demo["html"], "answer"))
    assert f"Why ({n_other + 1} reasons)" in box and box.count("CEUS") == 1
    assert not re.search(r"\w\(s\)", _text(demo["html"])), "plural written as (s)"


def test_wells_missing_items_are_listed_once() -> None:
    case = parse_case({"age_years": 50, "symptom_duration_days": 5, "wells": {"entire_leg_swollen": True}},
                      "t")
    from ceuskit.clinical import assess

    a = assess(None, case)
    assert len(a["wells"]["missing"]) == 9
    content = report_content({"assessment": a, "clinical_case": case.model_dump(mode="json",
                                                                                 exclude_none=True)})
    assert any(r["id"] == "rec-complete-wells" for r in a["recommendations"])  # the rules ask for them
    text = " ".join([*content["clinical"], *content["missing"], *content["answer"],
                     *(r["text"] + " " + r["why"] for r in content["next_steps"])])
    wording = "collateral superficial"
    assert text.lower().count(wording) == 1, text
    # The Wells line does not claim a category it cannot know.
    wells_line = next(line for line in content["clinical"] if line.startswith("Wells"))
    assert "undetermined" in wells_line and "moderate" not in wells_line


@pytest.mark.parametrize(("days", "shown"), [(60, "60 days"), (3, "3 days"), (730, "2 years"),
                                             (548, "18 months"), (100, "100 days"), (1, "1 day")])
def test_durations_are_shown_as_entered(days: float, shown: str) -> None:
    assert fmt_days(days) == shown
    from ceuskit.clinical import assess

    case = parse_case({"age_years": 40, "symptom_duration_days": days}, "t")
    a = assess(None, case)
    assert f"symptoms for {shown}" in a["clinical_summary"]
    assert "months" not in a["clinical_summary"] or shown.endswith("months")


def test_numbers_have_significant_figures_and_no_exponent() -> None:
    assert fmt(117354.98735) == "117355" and fmt(5.75e-4, "a.u./s") == "0.000575 a.u./s"
    assert fmt(13.953605) == "14.0" and fmt(-4.686, "s") == "-4.69 s" and fmt(None) == "—"
    assert fmt(0.0) == "0" and fmt(True) == "yes" and fmt(33.876, "%", 2) == "34 %"
    # A failed fit's 2e-299 is not 300 characters of zeros.
    assert fmt(2.04e-299) == "2.04 × 10⁻²⁹⁹" and fmt(-3.1e14, "a.u.") == "-3.10 × 10¹⁴ a.u."
    assert fmt(1.2345e-6) == "0.00000123"


def test_roi_figure_caption_names_the_roi_frame(demo: dict[str, Any]) -> None:
    mo = demo["results"]["motion"]
    ref = mo["reference_frame"]["index"]
    caption = re.search(r'alt="The ROIs on the frame whose coordinates they are measured in">'
                        r"<figcaption>(.*?)</figcaption>", demo["html"], re.S)
    assert caption is not None
    assert f"frame {ref}" in caption.group(1) and "motion reference frame" in caption.group(1)
    assert demo["analysis"].roi_frame is not None and demo["analysis"].roi_frame[0] == ref


def test_no_motion_plot_below_the_threshold(demo: dict[str, Any]) -> None:
    mo = demo["results"]["motion"]
    assert mo["max_displacement_px"] < MOTION_PLOT_THRESHOLD_PX and mo["rejected_frames"]["count"] == 0
    technical = _section(demo["html"], "technical")
    assert 'alt="Estimated displacement over time"' not in technical
    assert "is below 1.0 px" in _text(technical) and "no plot" in _text(technical)
    assert 'id="motion-plot"' not in demo["web"]


def test_motion_plot_when_the_phantom_moves(tmp_path) -> None:
    ph = simulate(SimulationSpec(scenario="tumor", seed=5, motion_px=5.0, fps=4.0, duration_s=40.0))
    files = write_phantom(ph, tmp_path / "phantom", "npz")
    _, paths = analyze_to_dir(files["cine"], files["rois"], tmp_path / "out", AnalysisOptions(maps=False),
                              pdf=False)
    results = json.loads(paths["results"].read_text())
    assert results["motion"]["max_displacement_px"] >= MOTION_PLOT_THRESHOLD_PX
    page = paths["report"].read_text()
    assert 'alt="Estimated displacement over time"' in page
    web = render_web_content(results, "/api/analyses/x/files/", [])
    assert 'id="motion-plot"' in web


def _pdf_pages(pdf) -> list[str]:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True, capture_output=True,
                          text=True).stdout
    return text.split("\f")[:-1] if text.endswith("\f") else text.split("\f")


def _key_sentences(results: dict[str, Any]) -> list[str]:
    content = report_content(results)
    return content["answer"] + [f["sentence"] for f in content["findings"]]


def test_html_pdf_and_web_say_the_same(demo: dict[str, Any]) -> None:
    pages = _pdf_pages(demo["paths"]["pdf"])
    pdf_text = " ".join(" ".join(pages).split())
    page_text, web_text = _text(demo["html"]), _text(demo["web"])
    sentences = _key_sentences(demo["results"])
    assert len(sentences) >= 8
    for s in sentences:
        # pdftotext hyphenates nothing but may break a line inside a word pair: compare without spaces.
        assert s in page_text, s
        assert s in web_text, s
        assert s.replace(" ", "") in pdf_text.replace(" ", ""), s


def _ink_fractions(pdf, tmp_path) -> list[float]:
    """Share of non-white pixels of each page's body (footer excluded), from pdftoppm at 30 dpi."""
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed")
    import numpy as np
    from PIL import Image

    subprocess.run(["pdftoppm", "-r", "30", "-png", str(pdf), str(tmp_path / "p")], check=True,
                   capture_output=True)
    out = []
    for png in sorted(tmp_path.glob("p*.png")):
        grey = np.asarray(Image.open(png).convert("L"), dtype=float)
        body = grey[: int(grey.shape[0] * 0.9)]  # the footer (disclaimer, page number) is on every page
        out.append(float((body < 235).mean()))
    return out


def test_pdf_has_no_near_blank_page(demo: dict[str, Any], tmp_path) -> None:
    """Every page but the last carries text (>= MIN_PAGE_LINES lines besides the footer) or figures."""
    pages = _pdf_pages(demo["paths"]["pdf"])
    ink = _ink_fractions(demo["paths"]["pdf"], tmp_path)
    assert len(ink) == len(pages)
    footer_lines = 4  # the disclaimer and the page number in every footer
    for i, page in enumerate(pages[:-1], start=1):
        lines = [line for line in page.splitlines() if line.strip()]
        assert len(lines) - footer_lines >= MIN_PAGE_LINES or ink[i - 1] > 0.25, (i, ink[i - 1], lines)
        assert ink[i - 1] > 0.04, (i, ink[i - 1])  # not a page of white space with a few lines
    # No closing disclaimer box in print (it filled a page of its own): the disclaimer is
    # in every page's footer, once.
    assert all(page.count("Decision support, not a diagnosis") == 1 for page in pages), \
        [page.count("Decision support, not a diagnosis") for page in pages]


def test_peak_ratio_is_shown_with_its_range_over_the_dynamic_ranges_interval(
        demo: dict[str, Any]) -> None:
    # The demo uses the default DR, which the speckle check gives an interval: the ratio's
    # range over it is in results.json and in the report's table beside the ratio.
    rel = demo["results"]["rois"]["lesion"]["relative_to_reference"]
    r = rel["peak_enhancement_ratio"]
    lo, hi = rel["peak_enhancement_ratio_interval"]
    assert lo <= r * (1 + 1e-6) and r <= hi * (1 + 1e-6) and lo < hi
    content = report_content(demo["results"])
    (row,) = [x for x in content["parameters"]["relative"] if x["label"] == "Peak enhancement ratio"]
    columns = [c["name"] for c in content["parameters"]["relative_columns"]]
    cell = row["cells"][columns.index("lesion")]
    span = demo["results"]["linearization"]["level_scale"]["interval_db"]
    assert cell == (f"{fmt(r)} ({fmt(lo)}–{fmt(hi)} over the dynamic range's interval, "
                    f"{fmt(span[0])}–{fmt(span[1], 'dB')})")
    assert cell in _text(demo["html"])
