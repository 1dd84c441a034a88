"""The self-contained HTML report (Jinja2 template, figures embedded as PNG)."""

from __future__ import annotations

import base64
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from ceuskit import DISCLAIMER
from ceuskit.kinetics.descriptors import DESCRIPTOR_UNITS
from ceuskit.pipeline import ENHANCEMENT_TEST_TEXT, PERFUSION_KEYS, Analysis
from ceuskit.report.figures import motion_png, roi_overlay_png, tic_png

PARAMETER_LABELS = {
    "arrival_time_s": "Arrival time (TI)",
    "time_to_peak_s": "Time to peak (TTP)",
    "rise_time_s": "Rise time (RT)",
    "mean_transit_time_s": "Mean transit time from arrival (mTTl)",
    "fall_time_s": "Fall time (FT)",
    "peak_enhancement": "Peak enhancement (PE)",
    "auc": "Area under the curve (AUC, acquisition)",
    "wash_in_rate": "Wash-in rate (WiR)",
    "wash_out_rate": "Wash-out rate (WoR)",
    "wash_in_auc": "Wash-in AUC (WiAUC)",
    "wash_out_auc": "Wash-out AUC (WoAUC)",
    "wash_in_perfusion_index": "Wash-in perfusion index (WiPI)",
    "qof": "Quality of fit (QOF)",
}

_env = Environment(
    loader=PackageLoader("ceuskit.report", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        a = abs(value)
        if a != 0 and (a < 1e-3 or a >= 1e5):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


_env.filters["fmt"] = _fmt


def _b64(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _css_string(text: str) -> Markup:
    """``text`` as a quoted CSS string, safe inside a <style> element."""
    escaped = (text.replace("\\", "\\5C ").replace('"', "\\22 ").replace("<", "\\3C ")
               .replace("\n", " "))
    return Markup(f'"{escaped}"')


def _maps_context(analysis: Analysis, results: dict[str, Any]) -> dict[str, Any] | None:
    """What the "Parametric maps" section shows (None without maps)."""
    study = analysis.maps
    if study is None:
        return None
    from ceuskit.maps import DVP_CLASSES, MAP_UNITS
    from ceuskit.maps_io import TITLES
    from ceuskit.report.figures import REPORT_MAPS, map_images

    images = map_images(study, analysis.source_name, REPORT_MAPS)  # shared with maps/
    captions = {
        "peak_enhancement": "Peak enhancement of each block's fitted curve (linear echo power, a.u.)",
        "time_to_peak_s": "Time to peak of each block's fitted curve (s, cine clock)",
        "necrosis": "Necrosis mask: lesion pixels that fail the pixel enhancement test (red) and "
                    "those that pass (blue)",
    }

    def caption(name: str) -> str:
        text = captions.get(name, TITLES[name])
        statement = images[name].scale.get("statement")
        return f"{text}. {statement}" if statement else text

    figures = [{"name": n, "title": TITLES[n], "unit": MAP_UNITS.get(n, ""),
                "caption": caption(n), "src": _b64(image.png)} for n, image in images.items()]
    rois = []
    for r in analysis.rois:
        summary = results["rois"].get(r.roi.name, {}).get("map")
        if summary is not None:
            rois.append({"name": r.roi.name, "role": r.roi.role, "m": summary})
    has_dvp = any(x["m"]["dvp"]["pixel_shares"] is not None for x in rois)
    return {"figures": figures, "rois": rois, "info": results["maps"],
            "dvp_classes": [*DVP_CLASSES, "not-available"] if has_dvp else None}


def render_html(
    analysis: Analysis,
    results: dict[str, Any] | None = None,
    *,
    findings: dict[str, Any] | None = None,
    assessment: dict[str, Any] | None = None,
    summary: str | None = None,
) -> str:
    """Render the report for an analysis.

    Parameters
    ----------
    analysis : Analysis
    results : dict, optional
        The results.json document (built from `analysis` when omitted).
    findings, assessment : dict, optional
        The CEUS findings and the decision-support assessment; taken from
        ``results`` (``findings`` / ``assessment``) when not given, and shown
        right after the study section.
    summary : str, optional
        A one-paragraph summary shown with the assessment (default: the
        assessment's ``summary``).

    Returns
    -------
    str
        One self-contained HTML page (the PDF is printed from it).
    """
    results = results if results is not None else analysis.results()
    if assessment is None:
        assessment = results.get("assessment")
        findings = findings if findings is not None else results.get("findings")
    if summary is None and assessment is not None:
        summary = assessment.get("summary")
    units = {**DESCRIPTOR_UNITS, "qof": "0..1"}
    rows = [{"key": k, "label": PARAMETER_LABELS[k], "unit": units.get(k, ""),
             "cells": [r.perfusion.get(k) for r in analysis.rois]} for k in PERFUSION_KEYS]
    template = _env.get_template("report.html")
    motion = motion_png(analysis)
    return template.render(
        a=analysis,
        res=results,
        disclaimer=DISCLAIMER,
        enhancement_test=ENHANCEMENT_TEST_TEXT,
        rows=rows,
        roi_png=_b64(roi_overlay_png(analysis)),
        tic_png=_b64(tic_png(analysis)),
        motion_png=_b64(motion) if motion is not None else None,
        maps=_maps_context(analysis, results),
        findings=findings,
        assessment=assessment,
        summary=summary,
        disclaimer_css=_css_string("Decision support, not a diagnosis. " + DISCLAIMER),
    )


def render_assessment_html(document: dict[str, Any], *, source: str | None = None) -> str:
    """Render a stand-alone assessment page (``ceuskit assess``).

    Parameters
    ----------
    document : dict
        Has ``assessment`` and ``findings`` (None without CEUS), as made by
        `ceuskit.pipeline.with_assessment` or `ceuskit.api.assess_case`.
    source : str, optional
        Name of the results.json the findings came from.

    Returns
    -------
    str
        One self-contained HTML page.
    """
    from ceuskit import __version__

    assessment = document["assessment"]
    return _env.get_template("assessment.html").render(
        assessment=assessment,
        findings=document.get("findings"),
        summary=assessment.get("summary"),
        disclaimer=DISCLAIMER,
        disclaimer_css=_css_string("Decision support, not a diagnosis. " + DISCLAIMER),
        version=__version__,
        inputs=", ".join(assessment.get("inputs_used") or []) or "none",
        source=source,
    )
