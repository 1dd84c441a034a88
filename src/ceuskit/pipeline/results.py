"""The results.json document (stable keys: contract.md) from an `Analysis`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ceuskit import DISCLAIMER, __version__
from ceuskit.dynamic_range import DynamicRangeEstimate, level_scale
from ceuskit.kinetics.descriptors import DESCRIPTOR_UNITS
from ceuskit.outputs import finite_or_none, json_ready
from ceuskit.pipeline.values import Analysis, AnalysisOptions

if TYPE_CHECKING:  # the map module compiles numba kernels: imported only when mapping
    from ceuskit.clinical.case import ClinicalCase


def dynamic_range_check_record(est: DynamicRangeEstimate) -> dict[str, Any]:
    """results.json ``linearization.dynamic_range_check`` (the speckle estimate beside a given
    value) or ``linearization.dynamic_range_estimate`` (the estimate behind ``auto``)."""
    return {"estimate_db": est.dynamic_range_db,
            "ci_db": None if est.ci_db is None else list(est.ci_db),
            "effective_looks": est.effective_looks, "n_blocks": est.n_blocks, "method": est.method,
            **({"persistence": est.persistence.as_dict()} if est.persistence is not None else {}),
            **({"resampling": est.resampling.as_dict()} if est.resampling is not None else {}),
            **({"compression": est.compression.as_dict()} if est.compression is not None else {})}


def speckle_check_records(options: AnalysisOptions) -> dict[str, Any]:
    """``dynamic_range_check`` and ``dynamic_range_estimate`` records where the options hold them
    (results.json ``linearization``, maps.json ``source``)."""
    return {key: dynamic_range_check_record(est) for key, est in (
        ("dynamic_range_check", options.dynamic_range_check),
        ("dynamic_range_estimate", options.dynamic_range_estimate)) if est is not None}


def json_array(a: NDArray[Any], digits: int = 6) -> list[float | None]:
    """A curve for results.json: `digits` significant figures, non-finite values as None."""
    return [None if not math.isfinite(float(v)) else float(f"{float(v):.{digits}g}") for v in a]


def linearization_record(options: AnalysisOptions, cine_meta: Mapping[str, Any]) -> dict[str, Any]:
    """results.json ``linearization``: the dynamic range used, where it came from, its interval."""
    return {
        "dynamic_range_db": options.dynamic_range_db,
        "dynamic_range_source": options.dynamic_range_source,
        **({"dynamic_range_ci_db": list(options.dynamic_range_ci_db)}
           if options.dynamic_range_ci_db is not None else {}),
        **speckle_check_records(options),
        "formula": "P = 10 ** ((g / 255 - 1) * DR / 10); display 255 -> 1.0",
        **({"colour_map": json_ready(cine_meta["colour_map"])} if "colour_map" in cine_meta else {}),
    }


#: Definition of ``linearization.level_scale``.
LEVEL_SCALE_TEXT = ("every level in dB is proportional to the display dynamic range: over the DR's "
                    "interval a level E dB lies between E x low and E x high; findings that change "
                    "within it are not assessable")
#: Definition of ``relative_to_reference.peak_enhancement_ratio_interval``.
RATIO_INTERVAL_TEXT = ("the peak enhancement ratio's range over the dynamic range's interval: each "
                       "ROI's curve measured again at the interval's ends (the power there is this "
                       "power to the power DR' / DR, pixel by pixel) and fitted with its model, "
                       "widened by 0.2 % for the alignment's interpolation; null, with "
                       "peak_enhancement_ratio_interval_reason, where a fit there failed")


def _with_ratio_interval(relative: dict[str, Any], ratio_range: tuple[float, float] | None,
                         reason: str | None = None) -> dict[str, Any]:
    if "peak_enhancement_ratio" not in relative:
        return relative
    if ratio_range is None:
        return relative if reason is None else {
            **relative, "peak_enhancement_ratio_interval": None,
            "peak_enhancement_ratio_interval_reason": reason}
    return {**relative, "peak_enhancement_ratio_interval": [float(f"{v:.6g}") for v in ratio_range]}


def build_results(analysis: Analysis) -> dict[str, Any]:
    """Assemble the results.json document."""
    t = analysis.times_s
    dt = np.diff(t)
    linearization = linearization_record(analysis.options, analysis.cine_meta)
    scale = level_scale(linearization)
    rois: dict[str, Any] = {}
    for r in analysis.rois:
        entry: dict[str, Any] = dict(r.roi.as_dict())
        entry["enhancing"] = r.enhancing
        entry["enhancement_test"] = r.enhancement
        entry["model"] = r.fit.model.name if r.fit is not None else "none"
        entry["fit"] = None
        if r.fit is not None:
            entry["fit"] = {
                "status": r.fit_status,
                "parameters": {n: finite_or_none(v) for n, v in
                               zip(r.fit.model.param_names, np.asarray(r.fit.params).reshape(-1),
                                   strict=True)},
                "standard_errors": {n: finite_or_none(v) for n, v in
                                    zip(r.fit.model.param_names,
                                        np.asarray(r.fit.stderr).reshape(-1), strict=True)},
                "iterations": int(np.asarray(r.fit.n_iter).reshape(-1)[0]),
                "model_selection": r.selection,
            }
        entry["perfusion"] = r.perfusion
        if r.verdict is not None:
            entry["enhancement_verdict"] = r.verdict
        if r.viable is not None:
            entry["viable_part"] = r.viable
        if r.necrosis is not None:
            entry["necrosis_fraction"] = r.necrosis["necrosis_fraction"]
            entry["necrosis"] = r.necrosis
        if analysis.maps is not None and r.roi.name in analysis.maps.result.rois:
            entry["map"] = json_ready(analysis.maps.result.rois[r.roi.name])
        entry["relative_to_reference"] = _with_ratio_interval(dict(r.relative or {}), r.ratio_range,
                                                             r.ratio_range_reason) or None
        entry["tic"] = {
            "times_s": json_array(t, 8),
            "intensity": json_array(r.intensity),
            "fitted": json_array(np.asarray(r.fit.predict(t)).reshape(-1))
            if r.fit is not None else None,
        }
        rois[r.roi.name] = entry
    meta = {k: v for k, v in analysis.cine_meta.items() if isinstance(v, str | int | float | bool)}
    doc = {
        "ceuskit_version": __version__,
        "disclaimer": DISCLAIMER,
        "source": {"file": analysis.source_name, **meta},
        "acquisition": {
            "n_frames": int(t.size),
            "duration_s": float(t[-1]),
            "median_frame_interval_s": float(np.median(dt)),
            "frame_rate_hz": float(1.0 / np.median(dt)),
            "timing_source": analysis.cine_meta.get("timing_source"),
            "modality": analysis.cine_meta.get("modality"),
            "contrast_bolus_seen": analysis.bolus.get("contrast_bolus_seen"),
            "contrast_bolus_reason": analysis.bolus.get("contrast_bolus_reason"),
            "contrast_bolus_evidence": analysis.bolus.get("evidence"),
            **({"clips": json_ready(analysis.cine_meta["clips"]),
                "gaps_s": json_ready(analysis.cine_meta["gaps_s"])}
               if "clips" in analysis.cine_meta else {}),
        },
        "panels": analysis.panels.as_dict(),
        "linearization": {**linearization,
                          **({"level_scale": {"low": scale.low, "high": scale.high,
                                              "interval_db": list(scale.interval_db),
                                              "source": scale.source,
                                              "described": scale.describe(),
                                              "definition": LEVEL_SCALE_TEXT,
                                              "peak_enhancement_ratio_interval": RATIO_INTERVAL_TEXT}}
                             if scale is not None else {})},
        "analysis": {
            "model": analysis.options.model,
            "injection_time_s": float(analysis.options.injection_time_s),
            "peak_frame_index": analysis.peak_frame_index,
            "peak_frame_time_s": float(t[analysis.peak_frame_index]),
        },
        "units": {**DESCRIPTOR_UNITS, "qof": "1", "intensity": "a.u. (linear echo power)",
                  "area_mm2": "mm2"},
        "rois": rois,
        "motion": _motion_section(analysis),
        "maps": _maps_section(analysis),
        "warnings": [w.as_dict() for w in analysis.warnings],
    }
    return with_assessment(doc, analysis.case)


def with_assessment(results: dict[str, Any], case: ClinicalCase | None) -> dict[str, Any]:
    """Add ``findings``, ``assessment`` (with its one-paragraph ``summary``) and the case used.

    The findings are read off the quantification already in ``results``
    (`ceuskit.findings.derive_findings`).  Pure: returns a new document.
    """
    from ceuskit.findings import derive_findings

    return {**results, **assessment_sections(derive_findings(results), case)}


def assessment_sections(findings: dict[str, Any] | None, case: ClinicalCase | None) -> dict[str, Any]:
    """results.json's ``findings``, ``assessment`` (with ``summary``) and ``clinical_case``.

    The assessment combines the CEUS findings (None without CEUS) with the
    clinical case (None without one): `ceuskit.clinical.rules.assess`.
    """
    from ceuskit.clinical.rules import assess, summary_paragraph

    assessment = assess(findings, case)
    assessment["summary"] = summary_paragraph(findings, assessment)
    return {"findings": findings, "assessment": assessment,
            "clinical_case": None if case is None else case.model_dump(mode="json", exclude_none=True)}


def _maps_section(analysis: Analysis) -> dict[str, Any]:
    """results.json ``maps``: how the maps were made (per-ROI figures are under ``rois.<name>.map``).

    ``directory`` and ``files`` are filled in by the writer
    (`ceuskit.api.analyze_to_dir`); None when nothing was written.
    """
    study = analysis.maps
    if study is None:
        reason = ("turned off (--no-maps)" if not analysis.options.maps
                  else "the ROI file has no lesion ROI")
        return {"computed": False, "reason": reason, "directory": None, "files": None}
    from ceuskit.maps import MAP_PARAMETERS

    summary = study.result.summary()
    summary.pop("rois", None)  # per ROI under rois.<name>.map
    return json_ready({
        "computed": True,
        **summary,
        "parameters": list(MAP_PARAMETERS),
        "frame_shown_index": study.frame_index,
        "frame_shown_time_s": study.frame_time_s,
        "background": study.background_label,
        "fits_ran": study.scheduler_used,
        "directory": None,
        "files": None,
    })


def _motion_section(analysis: Analysis) -> dict[str, Any]:
    """results.json ``motion``: what was estimated and which frames were left out."""
    requested = analysis.options.motion
    m = analysis.motion
    if m is None:
        untrusted = any(w.code == "motion-untrusted" for w in analysis.warnings)
        return {"requested": requested,
                "mode": ("off" if requested == "off" else
                         "not-applied (untrusted)" if untrusted else "not-estimated"),
                "tracked_panel": None, "rejected_frames": {"count": 0, "indices": [], "times_s": []}}
    panel = analysis.panels.bmode if m.tracked_panel == "bmode" else analysis.panels.contrast
    spacing = (panel.spacing_mm if panel is not None and panel.spacing_mm is not None
               else analysis.panels.contrast.spacing_mm)
    return {"requested": requested, **m.as_dict(analysis.times_s, spacing)}
