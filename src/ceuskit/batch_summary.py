"""summary.csv of a cohort: one row per case and ROI, units in the column names.

A row holds the case's id, the ROI and its role, the case's status and
error, the label, the assessment level, the findings, and every perfusion
parameter of the ROI with its unit in the column name
(``peak_enhancement_au``, ``auc_au_s`` ...), the dynamic range behind the
amplitudes with its span and source (`DYNAMIC_RANGE_COLUMNS`), the ROI's
peak-enhancement ratio with its range over that span (`RATIO_COLUMNS`), then
the manifest's extra columns.  A case that failed (or has no ROI) is one row with an empty ROI
and its error.  The cohort report (`ceuskit.cohort_report`) and the results
database (`ceuskit.cohort_db`) read these rows.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from ceuskit.outputs import write_text_atomic

__all__ = ["PARAMETER_COLUMNS", "SUMMARY_COLUMNS", "cell_bool", "cell_number", "summary_rows",
           "write_summary"]

#: results.json perfusion key -> summary column (unit in the name: a.u. is linear echo power).
PARAMETER_COLUMNS: dict[str, str] = {
    "arrival_time_s": "arrival_time_s",
    "time_to_peak_s": "time_to_peak_s",
    "rise_time_s": "rise_time_s",
    "mean_transit_time_s": "mean_transit_time_s",
    "fall_time_s": "fall_time_s",
    "peak_enhancement": "peak_enhancement_au",
    "auc": "auc_au_s",
    "wash_in_rate": "wash_in_rate_au_per_s",
    "wash_out_rate": "wash_out_rate_au_per_s",
    "wash_in_auc": "wash_in_auc_au_s",
    "wash_out_auc": "wash_out_auc_au_s",
    "wash_in_perfusion_index": "wash_in_perfusion_index_au",
    "qof": "qof",
}
FINDING_COLUMNS = ("intraluminal_enhancement", "wash_in", "enhancement", "homogeneity",
                   "wash_out_present", "necrosis_percent")
#: How sure the amplitudes are: the dynamic range used (dB), where it came from
#: (user, default, estimated), the span its uncertainty covers (results.json
#: ``linearization.level_scale``; empty for a value the user gave), and
#: whether the cine was lossy-compressed (the speckle then reads it low).
DYNAMIC_RANGE_COLUMNS = ("dynamic_range_db", "dynamic_range_source", "dynamic_range_low_db",
                         "dynamic_range_high_db", "lossy_compression")
#: Each ROI's peak enhancement over the reference's, with its range over that span.
RATIO_COLUMNS = ("peak_enhancement_ratio", "peak_enhancement_ratio_low",
                 "peak_enhancement_ratio_high")
SUMMARY_COLUMNS: tuple[str, ...] = (
    "id", "roi", "role", "status", "error", "label", "level", "suspect_neoplasm",
    *FINDING_COLUMNS, "enhancing", "model", *PARAMETER_COLUMNS.values(), "necrosis_fraction",
    *DYNAMIC_RANGE_COLUMNS, *RATIO_COLUMNS)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def cell_number(text: Any) -> float | None:
    """A number cell of summary.csv read back (None when empty or not a finite number)."""
    try:
        v = float(str(text).strip())
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def cell_bool(text: Any) -> bool | None:
    """A boolean cell of summary.csv read back (``true``/``false``; None when empty)."""
    t = str(text or "").strip().lower()
    return True if t == "true" else False if t == "false" else None


def _dynamic_range_cells(results: Mapping[str, Any]) -> dict[str, str]:
    lin = results.get("linearization") or {}
    span = (lin.get("level_scale") or {}).get("interval_db")
    lo, hi = span if isinstance(span, list) and len(span) == 2 else (None, None)
    checks = [lin.get(k) for k in ("dynamic_range_estimate", "dynamic_range_check")]
    lossy = [bool((c.get("compression") or {}).get("lossy")) for c in checks
             if isinstance(c, Mapping) and isinstance(c.get("compression"), Mapping)]
    return {"dynamic_range_db": _cell(lin.get("dynamic_range_db")),
            "dynamic_range_source": _cell(lin.get("dynamic_range_source")),
            "dynamic_range_low_db": _cell(lo), "dynamic_range_high_db": _cell(hi),
            "lossy_compression": _cell(any(lossy)) if lossy else ""}


def _ratio_cells(roi: Mapping[str, Any]) -> dict[str, str]:
    rel = roi.get("relative_to_reference") or {}
    span = rel.get("peak_enhancement_ratio_interval")
    lo, hi = span if isinstance(span, list) and len(span) == 2 else (None, None)
    return {"peak_enhancement_ratio": _cell(rel.get("peak_enhancement_ratio")),
            "peak_enhancement_ratio_low": _cell(lo), "peak_enhancement_ratio_high": _cell(hi)}


def _case_cells(results: Mapping[str, Any]) -> dict[str, str]:
    findings = results.get("findings") or {}
    assessment = results.get("assessment") or {}
    wash_out = findings.get("wash_out") or {}
    return {**_dynamic_range_cells(results),
        "level": _cell(assessment.get("level")),
        "suspect_neoplasm": _cell(assessment.get("suspect_neoplasm")),
        "intraluminal_enhancement": _cell(findings.get("intraluminal_enhancement")),
        "wash_in": _cell(findings.get("wash_in")),
        "enhancement": _cell(findings.get("enhancement")),
        "homogeneity": _cell(findings.get("homogeneity")),
        "wash_out_present": _cell(wash_out.get("present") if isinstance(wash_out, Mapping) else None),
        "necrosis_percent": _cell(findings.get("necrosis_percent")),
    }


def summary_rows(cases: Sequence[Any], records: Mapping[str, Mapping[str, Any]],
                 cases_dir: str | PathLike[str]) -> list[dict[str, str]]:
    """The summary rows of a cohort, in manifest order.

    Parameters
    ----------
    cases : sequence of `ceuskit.batch.CaseSpec`
    records : mapping
        Case records by id (`ceuskit.batch.run_case`).
    cases_dir : path
        ``DIR/cases``: an ``ok`` case's results.json is read from there.

    Returns
    -------
    list of dict
        Strings by column (`SUMMARY_COLUMNS`, then the manifest's extra columns).
    """
    rows: list[dict[str, str]] = []
    for spec in cases:
        rec = records.get(spec.id) or {}
        status = str(rec.get("status") or "failed")
        error = rec.get("error") or ("" if rec else "not run (the batch was stopped before it)")
        base = {c: "" for c in SUMMARY_COLUMNS}
        base.update({"id": spec.id, "status": status, "error": _cell(error),
                     "label": spec.label or ""})
        extra = dict(spec.extra)
        results: dict[str, Any] | None = None
        if status == "ok":
            try:
                results = json.loads((Path(cases_dir) / spec.id / "results.json")
                                     .read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                base.update(status="failed", error=f"results.json cannot be read ({exc})")
        if results is None or not results.get("rois"):
            rows.append({**base, **extra})
            continue
        base.update(_case_cells(results))
        for name, roi in results["rois"].items():
            row = dict(base)
            perf = roi.get("perfusion") or {}
            row.update({"roi": str(name), "role": _cell(roi.get("role")),
                        "enhancing": _cell(roi.get("enhancing")), "model": _cell(roi.get("model")),
                        "necrosis_fraction": _cell(roi.get("necrosis_fraction"))})
            for key, col in PARAMETER_COLUMNS.items():
                row[col] = _cell(perf.get(key))
            row.update(_ratio_cells(roi))
            rows.append({**row, **extra})
    return rows


def write_summary(path: str | PathLike[str], rows: Sequence[Mapping[str, str]]) -> Path:
    """Write summary.csv atomically (the columns of `SUMMARY_COLUMNS`, then any extra ones)."""
    columns = list(SUMMARY_COLUMNS)
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buf.getvalue())
