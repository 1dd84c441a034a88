"""FHIR R4 results: a Bundle with a DiagnosticReport and one Observation per reported value.

`results_bundle` turns a results.json document into a FHIR R4 ``Bundle``
(type ``collection``) that a hospital's record system can file:

* one ``DiagnosticReport`` — status ``preliminary`` (decision support, never
  a final report), category radiology, code LOINC 18748-4 "Diagnostic imaging
  study", ``conclusion`` = the assessment's summary followed by the
  disclaimer, ``result`` = every Observation of the bundle, and
  ``imagingStudy`` = a logical reference to the analysed DICOM study by its
  Study Instance UID (``urn:dicom:uid`` identifier; the ImagingStudy resource
  itself is the PACS's to publish: it needs the patient);
* one ``Observation`` per reported perfusion parameter and ROI (value with
  its UCUM unit; DICOM DCM codes where the concept has one — bolus arrival
  time, time to peak, mean transit time, signal change — else a code of
  ceuskit's own system `LOCAL_SYSTEM`), the ROI in ``bodySite.text``;
* one ``Observation`` per CEUS finding (intraluminal enhancement, wash-in,
  enhancement, homogeneity, wash-out and its timing and degree, necrosis
  percent) and one for the assessment level; a finding that could not be
  assessed is an Observation with a ``dataAbsentReason`` and the reason as
  its text — never left out silently, never a guessed value.

No patient identifiers: results.json holds none, and the Bundle names a
subject only when the caller passes one explicitly (``subject``, e.g.
``"Patient/123"``). Every resource carries the disclaimer as a note.
Validated in the tests with the ``fhir.resources`` package.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ceuskit import DISCLAIMER, __version__

__all__ = ["FHIR_FILE", "LOCAL_SYSTEM", "results_bundle"]

#: Where ``analyze --fhir`` writes the bundle, relative to the output directory.
FHIR_FILE = "fhir/bundle.json"
#: Code system of ceuskit's own concepts (no standard code exists for them).
LOCAL_SYSTEM = "urn:ceuskit:concepts"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
_OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
_REPORT_CATEGORY = "http://terminology.hl7.org/CodeSystem/v2-0074"
_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"

#: Perfusion parameters: (code system, code, display, UCUM code).  DCM codes are
#: those the DICOM SR and Parametric Maps use (`ceuskit.io.dicom_derived`).
PARAMETER_CODES: dict[str, tuple[str, str, str, str]] = {
    "arrival_time_s": (DCM, "126371", "Bolus Arrival Time", "s"),
    "time_to_peak_s": (DCM, "113069", "Time To Peak", "s"),
    "mean_transit_time_s": (DCM, "113052", "Mean Transit Time", "s"),
    "peak_enhancement": (DCM, "113059", "Signal change", "[arb'U]"),
    "rise_time_s": (LOCAL_SYSTEM, "rise_time_s", "Rise time (arrival to peak)", "s"),
    "fall_time_s": (LOCAL_SYSTEM, "fall_time_s", "Fall time (peak to end of fall)", "s"),
    "auc": (LOCAL_SYSTEM, "auc", "Area under the fitted curve", "[arb'U].s"),
    "wash_in_rate": (LOCAL_SYSTEM, "wash_in_rate", "Wash-in rate", "[arb'U]/s"),
    "wash_out_rate": (LOCAL_SYSTEM, "wash_out_rate", "Wash-out rate", "[arb'U]/s"),
    "wash_in_auc": (LOCAL_SYSTEM, "wash_in_auc", "Wash-in area under the curve", "[arb'U].s"),
    "wash_out_auc": (LOCAL_SYSTEM, "wash_out_auc", "Wash-out area under the curve", "[arb'U].s"),
    "wash_in_perfusion_index": (LOCAL_SYSTEM, "wash_in_perfusion_index", "Wash-in perfusion index",
                                "[arb'U]"),
}
#: Human-readable units for the Quantity's ``unit`` (the UCUM code is ``code``).
_UNIT_TEXT = {"s": "s", "[arb'U]": "a.u.", "[arb'U].s": "a.u.·s", "[arb'U]/s": "a.u./s", "%": "%"}

#: CEUS findings: (results.json path, code, display).
FINDING_CODES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("intraluminal_enhancement",), "intraluminal_enhancement", "Intraluminal enhancement (CEUS)"),
    (("wash_in",), "wash_in", "Wash-in relative to the reference (CEUS)"),
    (("enhancement",), "enhancement", "Enhancement degree of the viable part relative to the reference"),
    (("homogeneity",), "homogeneity", "Enhancement homogeneity (CEUS)"),
    (("wash_out", "present"), "wash_out", "Wash-out (CEUS)"),
    (("wash_out", "timing"), "wash_out_timing", "Wash-out timing (CEUS)"),
    (("wash_out", "degree"), "wash_out_degree", "Wash-out degree (CEUS)"),
    (("necrosis_percent",), "necrosis_percent", "Non-enhancing share of the lesion (necrosis estimate)"),
)
_YES_NO = {True: ("373066001", "Yes"), False: ("373067005", "No")}


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _concept(system: str, code: str, display: str, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [{"system": system, "code": code, "display": display}]}
    if text:
        out["text"] = text
    return out


def _note() -> list[dict[str, str]]:
    return [{"text": f"Decision support, not a diagnosis. {DISCLAIMER}"}]


def _observation(code: dict[str, Any], issued: str, subject: str | None) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "preliminary",
        "category": [_concept(_OBS_CATEGORY, "imaging", "Imaging")],
        "code": code,
        "issued": issued,
        "device": {"display": f"ceuskit {__version__}"},
        "note": _note(),
    }
    if subject:
        obs["subject"] = {"reference": subject}
    return obs


def _absent(obs: dict[str, Any], reason: str) -> dict[str, Any]:
    obs["dataAbsentReason"] = {"coding": [{"system": _ABSENT, "code": "unknown", "display": "Unknown"}],
                               "text": reason}
    return obs


def _lookup(doc: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = doc
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _finding_value(obs: dict[str, Any], value: Any) -> None:
    if isinstance(value, bool):
        code, display = _YES_NO[value]
        obs["valueCodeableConcept"] = _concept(SNOMED, code, display, "yes" if value else "no")
    elif isinstance(value, (int, float)):
        obs["valueQuantity"] = {"value": float(value), "unit": "%", "system": UCUM, "code": "%"}
    else:
        obs["valueCodeableConcept"] = {"text": str(value)}


def _reason_not_assessable(findings: Mapping[str, Any], code: str, key: str) -> str:
    """Why a finding is null: ``not_assessable`` (by finding), else the matching ``missing`` line."""
    absent = findings.get("not_assessable") or {}
    if isinstance(absent, Mapping):
        for k in (code, key):
            if absent.get(k):
                return str(absent[k])
    words = code.replace("wash_out", "wash-out").replace("wash_in", "wash-in").replace("_", " ")
    for line in findings.get("missing") or []:
        if str(line).startswith(words):
            return str(line)
    return "not assessable from this cine and these ROIs"


def results_bundle(results: Mapping[str, Any], *, study_instance_uid: str | None = None,
                   subject: str | None = None, issued: datetime | None = None) -> dict[str, Any]:
    """A FHIR R4 Bundle (JSON-ready dict) of an analysis' results.

    Parameters
    ----------
    results : mapping
        The results.json document (`ceuskit.pipeline.Analysis.results`, with
        ``findings`` and ``assessment`` when they were derived).
    study_instance_uid : str, optional
        The analysed DICOM study, referenced from the DiagnosticReport
        (``imagingStudy``); None for a video or NPZ cine.
    subject : str, optional
        A FHIR reference to the patient (e.g. ``"Patient/123"``), written only
        when given: ceuskit never puts patient identifiers in a bundle itself.
    issued : datetime, optional
        When the results were made (default: now, UTC).

    Returns
    -------
    dict
        ``{"resourceType": "Bundle", "type": "collection", "entry": [...]}``:
        the DiagnosticReport first, then its Observations.
    """
    when = (issued or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    stamp = when.isoformat().replace("+00:00", "Z")
    entries: list[dict[str, Any]] = []

    def add(resource: dict[str, Any]) -> str:
        url = _urn()
        entries.append({"fullUrl": url, "resource": resource})
        return url

    units = results.get("units") or {}
    rois: Mapping[str, Any] = results.get("rois") or {}
    for name, roi in rois.items():
        perfusion: Mapping[str, Any] = roi.get("perfusion") or {}
        where = f"ROI {name!r} ({roi.get('role', 'other')})"
        for param, (system, code, display, ucum) in PARAMETER_CODES.items():
            if param not in perfusion:
                continue
            obs = _observation(_concept(system, code, display, f"{display}, {where}"), stamp, subject)
            obs["bodySite"] = {"text": where}
            value = perfusion.get(param)
            if value is None or not math.isfinite(float(value)):
                reason = ("not enhancing: no curve was fitted" if roi.get("fit") in (None, {})
                          or roi.get("enhancing") is False else "not estimated from this curve")
                _absent(obs, reason)
            else:
                unit = _UNIT_TEXT.get(ucum, units.get(param, ""))
                obs["valueQuantity"] = {"value": float(value), "unit": unit, "system": UCUM, "code": ucum}
            add(obs)

    findings: Mapping[str, Any] | None = results.get("findings")
    if isinstance(findings, Mapping):
        lesion = findings.get("lesion_roi")
        for path, code, display in FINDING_CODES:
            obs = _observation(_concept(LOCAL_SYSTEM, code, display), stamp, subject)
            if lesion:
                obs["bodySite"] = {"text": f"ROI {lesion!r} (lesion)"}
            value = _lookup(findings, path)
            if value is None:
                _absent(obs, _reason_not_assessable(findings, code, path[0]))
            else:
                _finding_value(obs, value)
            add(obs)

    assessment: Mapping[str, Any] | None = results.get("assessment")
    summary = ""
    if isinstance(assessment, Mapping):
        obs = _observation(_concept(LOCAL_SYSTEM, "assessment_level",
                                    "Suspicion of a venous neoplasm (ceuskit decision support level)"),
                           stamp, subject)
        obs["valueCodeableConcept"] = {"text": str(assessment.get("level"))}
        add(obs)
        summary = str(assessment.get("summary") or "")

    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "status": "preliminary",
        "category": [_concept(_REPORT_CATEGORY, "RAD", "Radiology")],
        "code": _concept(LOINC, "18748-4", "Diagnostic imaging study",
                         "Contrast-enhanced ultrasound quantification (ceuskit)"),
        "issued": stamp,
        "result": [{"reference": e["fullUrl"]} for e in entries],
        "conclusion": (summary + " " if summary else "") + f"Decision support, not a diagnosis. {DISCLAIMER}",
    }
    if subject:
        report["subject"] = {"reference": subject}
    if study_instance_uid:
        report["imagingStudy"] = [{"type": "ImagingStudy", "identifier": {
            "system": "urn:dicom:uid", "value": f"urn:oid:{study_instance_uid}"}}]
    entries.insert(0, {"fullUrl": _urn(), "resource": report})
    return {"resourceType": "Bundle", "type": "collection", "timestamp": stamp, "entry": entries}
