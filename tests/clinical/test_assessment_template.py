"""The decision-support partial of the report renders every part of the assessment."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from jinja2 import ChoiceLoader, DictLoader, Environment, PackageLoader, StrictUndefined, select_autoescape

from ceuskit import DISCLAIMER
from ceuskit.clinical import assess, example_case, summary_paragraph
from tests.clinical.helpers import malignant_findings, non_enhancing_findings


@pytest.fixture(scope="module")
def env() -> Environment:
    return Environment(loader=PackageLoader("ceuskit.report", "templates"),
                       autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)


def _render(env: Environment, f: dict[str, Any] | None, case_name: str | None) -> tuple[str, dict[str, Any]]:
    case = example_case(case_name) if case_name else None
    a = assess(f, case)
    template = env.get_template("_assessment.html")
    out = template.render(assessment=a, findings=f, summary=summary_paragraph(f, a))
    return out, a


def _text(markup: str) -> str:
    # tags first, entities after, so an escaped "<=" in the text is not taken for a tag
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def test_index_case_renders_every_part(env: Environment) -> None:
    f = malignant_findings()
    out, a = _render(env, f, "index_case")
    text = _text(out)
    assert out.lstrip().startswith("<section class=\"cx-assessment\">")
    assert "<script" not in out and "http" not in out.replace("doi:", "")  # no external assets
    assert _text(summary_paragraph(f, a)) in text
    assert 'class="cx-level cx-level-high"' in out
    for reason in a["reasons"]:
        assert reason in text
    for flag in a["red_flags"]:
        assert flag["text"] in text and flag["id"] in text and flag["source"] in text
    assert text.count("ceuskit heuristic (proposed)") >= sum(fl["proposed"] for fl in a["red_flags"])
    # the numbers behind the findings
    assert "peak_to_baseline_db = 14.2 dB" in text and "<= -1.0 s before the reference" in text
    assert "present, early, marked, onset 38 s" in text and "30 %" in text
    for d in a["differential"]:
        assert d["name"] in text
        for s in d["support"] + d["against"]:
            assert s in text
    for r in a["recommendations"]:
        assert r["text"] in text and r["source"] in text and r["reason"] in text
    assert a["wells"]["source"] in text and a["d_dimer"]["source"] in text
    assert "FNCLCC necrosis component" in text
    # the index case's D-dimer is only the laboratory's verdict: no cut-off of ceuskit's is claimed
    assert "reported by the laboratory as normal" in text and "against conventional" not in text
    for m in a["missing"]:
        assert m in text
    assert DISCLAIMER in text


def test_bland_case_shows_the_d_dimer_conversion_and_wells(env: Environment) -> None:
    out, a = _render(env, non_enhancing_findings(), "acute_bland_dvt")
    text = _text(out)
    assert 'cx-level-low' in out
    assert "2400 ug/L FEU = 2400 ug/L FEU" in text
    assert "age-adjusted: age 68 y x 10 = 680 ug/L FEU" in text
    assert f"{a['wells']['points']} points: high" in text
    assert "No red flag among the inputs given." in text


def test_renders_without_any_input_and_with_strict_undefined(env: Environment) -> None:
    strict = env.overlay(undefined=StrictUndefined)
    a = assess(None, None)
    out = strict.get_template("_assessment.html").render(assessment=a, findings=None,
                                                         summary=summary_paragraph(None, a))
    text = _text(out)
    assert "No CEUS analysis was available." in text
    assert "no case file" in text and "cx-level-low" in out
    assert DISCLAIMER in text


def test_include_from_another_template(env: Environment) -> None:
    page = DictLoader({"page.html": "<main>{% include '_assessment.html' %}</main>"})
    env2 = env.overlay(loader=ChoiceLoader([page, env.loader]))
    a = assess(malignant_findings(), None)
    out = env2.get_template("page.html").render(assessment=a, findings=malignant_findings(),
                                                summary=summary_paragraph(malignant_findings(), a))
    assert out.startswith("<main>") and "cx-level-high" in out
