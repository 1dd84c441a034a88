"""The self-contained HTML report (Jinja2 template, figures embedded as PNG)."""

from __future__ import annotations

import base64
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

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


def render_html(analysis: Analysis, results: dict[str, Any] | None = None) -> str:
    """Render the report for an analysis.

    Parameters
    ----------
    analysis : Analysis
    results : dict, optional
        The results.json document (built from `analysis` when omitted).

    Returns
    -------
    str
        One self-contained HTML page.
    """
    results = results if results is not None else analysis.results()
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
    )
