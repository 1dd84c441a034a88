"""What the report says, in the order a clinician reads it, built once from results.json.

`report_content(results)` turns a results.json document into the report's
content: the answer (at most `MAX_ANSWER_LINES` lines: the level, the reasons
that matter, what is missing, the next step), the lesion's key numbers, the
findings in words, the clinical picture, the details (next steps,
differential, reasons with their sources, study, ROIs, parameters, quality
checks) and an appendix of statistics for the expert.  It reads nothing but
the document, so the HTML report, its PDF and the web app's results page
(which serves the same document of a stored analysis) say the same thing:
each renders this content with the one template ``_content.html``.

Every number goes through `ceuskit.fmt.fmt` (significant figures with their
unit, never an exponent); durations through `ceuskit.fmt.fmt_days`.  Test
statistics (z, margins, the findings' statistic = value) appear only in the
appendix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from ceuskit import DISCLAIMER
from ceuskit.clinical.rules import reason_groups
from ceuskit.fmt import fmt, fmt_days, fmt_scientific

#: The answer box holds at most this many lines.
MAX_ANSWER_LINES = 5
#: Missing inputs named in the answer box (the rest are counted and listed in the details).
MAX_MISSING_IN_ANSWER = 3
#: A motion estimate whose largest displacement stays below this (px), with no frame rejected,
#: does not matter for ROI means: the report says so in one line instead of plotting it.
MOTION_PLOT_THRESHOLD_PX = 1.0

LEVEL_WORDS = {
    "high": "suspect a venous neoplasm",
    "intermediate": "a venous neoplasm cannot be excluded: image further",
    "low": "no sign of a venous neoplasm in the inputs given (a low level does not exclude a tumour)",
    "indeterminate": "too little could be assessed to call the suspicion low",
}

PARAMETER_LABELS = {
    "arrival_time_s": "Arrival time",
    "time_to_peak_s": "Time to peak",
    "rise_time_s": "Rise time",
    "mean_transit_time_s": "Mean transit time (from arrival)",
    "fall_time_s": "Fall time",
    "peak_enhancement": "Peak enhancement",
    "auc": "Area under the curve (acquisition)",
    "wash_in_rate": "Wash-in rate",
    "wash_out_rate": "Wash-out rate",
    "wash_in_auc": "Wash-in area under the curve",
    "wash_out_auc": "Wash-out area under the curve",
    "wash_in_perfusion_index": "Wash-in perfusion index",
    "qof": "Quality of fit",
}
_PARAMETER_UNITS = {"arrival_time_s": "s", "time_to_peak_s": "s", "rise_time_s": "s",
                    "mean_transit_time_s": "s", "fall_time_s": "s", "peak_enhancement": "a.u.",
                    "auc": "a.u.·s", "wash_in_rate": "a.u./s", "wash_out_rate": "a.u./s",
                    "wash_in_auc": "a.u.·s", "wash_out_auc": "a.u.·s", "wash_in_perfusion_index": "a.u.",
                    "qof": "0 to 1"}
_RELATIVE = (("peak_enhancement_ratio", "Peak enhancement ratio", ""),
             ("auc_ratio", "Area under the curve ratio", ""),
             ("wash_in_rate_ratio", "Wash-in rate ratio", ""),
             ("arrival_time_s_difference", "Arrival time difference", "s"),
             ("time_to_peak_s_difference", "Time to peak difference", "s"),
             ("mean_transit_time_s_difference", "Mean transit time difference", "s"))
_ROLE_ORDER = {"lesion": 0, "reference": 1, "vessel": 2, "other": 3}
_CATEGORY_WORDS = {"ceus": "CEUS", "clinical": "clinical", "ultrasound": "ultrasound",
                   "laboratory": "laboratory"}


def _m(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    v = float(x)
    return v if v == v and abs(v) != float("inf") else None


def _sentence(text: str) -> str:
    text = " ".join(str(text).split()).strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _lower_first(text: str) -> str:
    """``Entire leg swollen`` -> ``entire leg swollen``; an acronym (``DVT``) keeps its capitals."""
    if len(text) > 1 and text[:2].isupper():
        return text
    return text[:1].lower() + text[1:]


def _join(words: list[str]) -> str:
    words = [w for w in words if w]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


# ----------------------------------------------------------------------------------------------
# answer


def _missing_items(assessment: Mapping[str, Any]) -> list[str]:
    """``assessment.missing`` with the Wells items folded into one entry (listed once)."""
    out: list[str] = []
    wells: list[str] = []
    for item in assessment.get("missing") or []:
        text = str(item)
        if text.startswith("Wells item not given: "):
            wells.append(_lower_first(text.removeprefix("Wells item not given: ").rstrip(".")))
        else:
            out.append(text)
    if wells:
        out.append(f"Wells items not given ({len(wells)}): " + "; ".join(wells))
    return out


def _short_missing(item: str) -> str:
    """A missing input in a few words for the answer box."""
    if item.startswith("Wells items not given ("):
        n = item.split("(", 1)[1].split(")", 1)[0]
        return f"{n} Wells items"
    text = item.removeprefix("CEUS: ")
    for sep in (": ", " (", "; "):
        text = text.split(sep, 1)[0]
    return text.removesuffix(" not given")


def _answer(results: Mapping[str, Any], assessment: Mapping[str, Any],
            groups: list[dict[str, Any]], missing: list[str]) -> list[str]:
    level = str(assessment.get("level") or "indeterminate")
    lines = [f"Suspicion of a venous neoplasm: {level.upper()} — {LEVEL_WORDS.get(level, level)}."]
    if groups:
        why = "; ".join(g["short"] for g in groups)
        lines.append(f"Why ({len(groups)} {'reason' if len(groups) == 1 else 'reasons'}): {why}.")
    else:
        reasons = [str(r) for r in assessment.get("reasons") or []]
        first = reasons[0].split(": needed:")[0] if reasons else "no red flag among the inputs given"
        lines.append(_sentence(f"Why: {first}"))
    if missing:
        named = [_short_missing(m) for m in missing[:MAX_MISSING_IN_ANSWER]]
        more = len(missing) - len(named)
        lines.append("Missing: " + "; ".join(named)
                     + (f"; and {more} more (see the details)" if more else "") + ".")
    else:
        lines.append("Missing: nothing the rules use.")
    recs = assessment.get("recommendations") or []
    if recs:
        first = str(_m(recs[0]).get("text") or "").split(" -- ")[0].split(":")[0].split(" (")[0]
        first = first.rstrip(".")
        lines.append(f"Next step: {first}.")
    return lines[:MAX_ANSWER_LINES]


# ----------------------------------------------------------------------------------------------
# lesion: key numbers and findings in words


def _rois_in_order(results: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    rois = _m(results.get("rois"))
    return sorted(((n, _m(r)) for n, r in rois.items()),
                  key=lambda nr: _ROLE_ORDER.get(str(nr[1].get("role")), 9))


def _key_numbers(results: Mapping[str, Any], findings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The few numbers of the lesion beside its reference (and any vessel)."""
    rois = _rois_in_order(results)
    if not rois:
        return None
    lesion = findings.get("lesion_roi")
    ev = _m(findings.get("evidence"))
    columns = [{"name": n, "role": str(r.get("role"))} for n, r in rois]
    rows = []

    def row(label: str, cells: list[str]) -> None:
        if any(c != "—" for c in cells):
            rows.append({"label": label, "cells": cells})

    row("Enhances", [fmt(r.get("enhancing")) for _, r in rois])
    for key, label in (("arrival_time_s", "Arrival (contrast reaches the ROI)"),
                       ("time_to_peak_s", "Time to peak")):
        row(label, [fmt(_num(_m(r.get("perfusion")).get(key)), "s") for _, r in rois])
    enh = _num(_m(ev.get("enhancement")).get("value"))
    whole = _num(_m(ev.get("enhancement_whole_roi")).get("value"))
    ref = findings.get("reference_roi")
    if enh is not None or whole is not None:
        cells = []
        for n, _ in rois:
            if n == lesion:
                parts = []
                words = _interval_words(results)
                if enh is not None:
                    parts.append(f"{fmt(enh, 'dB')}"
                                 f"{_range_words(_m(ev.get('enhancement')), words)} (enhancing part)")
                if whole is not None:
                    parts.append(f"{fmt(whole, 'dB')}"
                                 f"{_range_words(_m(ev.get('enhancement_whole_roi')), words)} "
                                 "(whole lesion)")
                cells.append("; ".join(parts))
            elif n == ref:
                cells.append("0 dB (reference)")
            else:
                cells.append("—")
        row(f"Peak enhancement relative to {ref}", cells)
    wo = _m(findings.get("wash_out"))
    if wo.get("present") is not None:
        onset = f"from {fmt(_num(wo.get('onset_s')), 's')}" if wo.get("present") else "none in the cine"
        row("Wash-out", [onset if n == lesion else "—" for n, _ in rois])
    nec = _num(findings.get("necrosis_percent"))
    if nec is not None:
        row("Non-enhancing (necrotic) share", [fmt(nec, "%", 2) if n == lesion else "—" for n, _ in rois])
    row("Area", [fmt(_num(r.get("area_mm2")), "mm²") if _num(r.get("area_mm2")) is not None
                 else fmt(r.get("area_px"), "px") for _, r in rois])
    return {"columns": columns, "rows": rows}


def _findings_in_words(results: Mapping[str, Any], findings: Mapping[str, Any]) -> list[dict[str, str]]:
    """One sentence per CEUS finding, with its numbers in words (no test statistic)."""
    ev = _m(findings.get("evidence"))
    na = _m(findings.get("not_assessable"))
    rois = _m(results.get("rois"))
    lesion_name = str(findings.get("lesion_roi") or "lesion")
    the_lesion = "The lesion" if lesion_name == "lesion" else f"The lesion ({lesion_name})"
    ref = str(findings.get("reference_roi") or "the reference")
    les = _m(rois.get(str(findings.get("lesion_roi"))))
    interval_words = _interval_words(results)
    out: list[dict[str, str]] = []

    def add(key: str, label: str, result: str, sentence: str) -> None:
        out.append({"key": key, "label": label, "result": result, "sentence": _sentence(sentence)})

    def not_assessable(key: str) -> str:
        return str(na.get(key) or "not assessable with the ROIs and curves given").removeprefix(
            "not assessable: ")

    value = findings.get("intraluminal_enhancement")
    if value is True:
        rise = _num(_m(les.get("enhancement_test")).get("peak_to_baseline_db"))
        by = f" its signal rises {fmt(rise, 'dB')} above its pre-contrast baseline, and" if rise else ""
        add("intraluminal_enhancement", "Intraluminal enhancement", "yes",
            f"{the_lesion} enhances:{by} the uptake is its own, not light from a brighter "
            "neighbour. Enhancing material in a vein suggests tumour rather than bland thrombus")
    elif value is False:
        add("intraluminal_enhancement", "Intraluminal enhancement", "no",
            f"{the_lesion} does not enhance, consistent with bland thrombus")
    else:
        add("intraluminal_enhancement", "Intraluminal enhancement", "not assessable",
            f"Whether the lesion enhances cannot be assessed: {not_assessable('intraluminal_enhancement')}")

    wash_in = findings.get("wash_in")
    if wash_in is not None:
        d = _num(_m(ev.get("wash_in")).get("value"))
        ta = _num(_m(les.get("perfusion")).get("arrival_time_s"))
        ref_roi = _m(rois.get(str(findings.get("reference_roi"))))
        tb = _num(_m(ref_roi.get("perfusion")).get("arrival_time_s"))
        if d is not None:
            when = "before" if d < 0 else "after"
            times = f" (at {fmt(ta, 's')} vs {fmt(tb, 's')})" if ta is not None and tb is not None else ""
            add("wash_in", "Wash-in", str(wash_in),
                f"Contrast reaches the lesion {fmt(abs(d), 's')} {when} {ref}{times}: {wash_in} wash-in")
        else:
            add("wash_in", "Wash-in", str(wash_in), f"{wash_in} wash-in")
    elif value is True:
        add("wash_in", "Wash-in", "not assessable", f"Wash-in cannot be graded: {not_assessable('wash_in')}")

    enhancement = findings.get("enhancement")
    if enhancement not in (None, "none"):
        e = _m(ev.get("enhancement"))
        v = _num(e.get("value"))
        whole = _num(_m(ev.get("enhancement_whole_roi")).get("value"))
        viable = _m(les.get("viable_part"))
        share = (_num(viable.get("viable_px")) or 0) / max(1.0, _num(viable.get("lesion_px")) or 1.0)
        if v is not None:
            part = (f"The lesion's enhancing part ({fmt(100 * share, '%', 2)} of it)"
                    if "viable" in str(e.get("statistic")) else "The lesion")
            side = "above" if v >= 0 else "below"
            tail = ""
            if whole is not None and "viable" in str(e.get("statistic")):
                tail = (f"; the whole lesion, necrosis included, peaks {fmt(abs(whole), 'dB')}"
                        f"{_range_words(_m(ev.get('enhancement_whole_roi')), interval_words)} "
                        f"{'above' if whole >= 0 else 'below'}")
            add("enhancement", "Enhancement degree", f"{enhancement}-enhancing",
                f"{part} peaks {fmt(abs(v), 'dB')}{_range_words(e, interval_words)} {side} {ref}: "
                f"{enhancement}-enhancing{tail}")
        else:
            add("enhancement", "Enhancement degree", f"{enhancement}-enhancing", f"{enhancement}-enhancing")
    elif value is True:
        add("enhancement", "Enhancement degree", "not assessable",
            f"The enhancement degree cannot be graded: {not_assessable('enhancement')}")

    homogeneity = findings.get("homogeneity")
    if homogeneity is not None:
        h = _m(ev.get("homogeneity"))
        idx = _num(h.get("value"))
        het = _m(_m(les.get("map")).get("heterogeneity"))
        thr = _num(het.get("threshold_cv"))
        spread = (f" (spread index {fmt(idx, sig=2)}; heterogeneous above {fmt(thr, sig=2)})"
                  if idx is not None and thr is not None else "")
        verb = "varies widely" if homogeneity == "heterogeneous" else "is even"
        add("homogeneity", "Homogeneity", str(homogeneity),
            f"Peak enhancement {verb} across the lesion{spread}: {homogeneity}")
    elif value is True:
        add("homogeneity", "Homogeneity", "not assessable",
            f"Homogeneity cannot be judged: {not_assessable('homogeneity')}")

    wo = _m(findings.get("wash_out"))
    if wo.get("present") is True:
        onset = _num(wo.get("onset_s"))
        after = _num(_m(ev.get("wash_out_timing")).get("value"))
        drop = _num(_m(ev.get("wash_out")).get("value"))
        words = " ".join(str(wo[k]) for k in ("timing", "degree") if wo.get(k))
        when = f" ({fmt(after, 's')} after the injection)" if after is not None else ""
        deep = f", at most {fmt(drop, 'dB')} lower" if drop is not None else ""
        if after is not None and onset is not None and abs(after - onset) < 0.05:
            when = ""
        add("wash_out", "Wash-out", f"{words} wash-out".strip(),
            f"From {fmt(onset, 's')}{when} the lesion falls below {ref} and stays there{deep}: "
            f"{words} wash-out".rstrip())
    elif wo.get("present") is False:
        add("wash_out", "Wash-out", "none in the cine",
            f"The lesion does not wash out relative to {ref} before the cine ends (a later wash-out "
            "cannot be excluded)")
    elif value is True:
        add("wash_out", "Wash-out", "not assessable",
            f"Wash-out cannot be assessed: {not_assessable('wash_out')}")

    nec = _num(findings.get("necrosis_percent"))
    if nec is not None:
        add("necrosis_percent", "Necrosis (imaging estimate)", fmt(nec, "%", 2),
            f"About {fmt(nec, '%', 2)} of the lesion does not enhance (estimated necrosis on this imaging "
            "plane; not the histological necrosis)")
    return out


# ----------------------------------------------------------------------------------------------
# clinical picture, details


def _wells_line(assessment: Mapping[str, Any], case: Mapping[str, Any] | None) -> str | None:
    """The Wells score in one line; the missing items named once."""
    w = _m(assessment.get("wells"))
    if not w or case is None:
        return None
    points = w.get("points")
    pts = f"{points} point{'' if points in (1, -1) else 's'}"
    counted = [_lower_first(str(_m(i).get("text") or "")) for i in w.get("items") or []]
    missing = [m.replace("_", " ") for m in w.get("missing") or []]
    if not counted and len(missing) == len(w.get("missing") or []) and not w.get("complete") \
            and len(missing) >= 9:
        text = "Wells score not recorded"
    elif w.get("determined"):
        text = (f"Wells score {pts}: {w.get('three_level')} ({w.get('prevalence_note')}); "
                f"DVT {w.get('two_level')}")
        if counted:
            text += " — counted: " + "; ".join(counted)
        if missing:
            text += f"; the {len(missing)} items not given could not change the category"
    else:
        lo, hi = (w.get("points_range") or [None, None])[:2]
        text = (f"Wells score {pts} from {10 - len(missing)} of 10 items"
                + (f" ({'; '.join(counted)})" if counted else "")
                + f"; with the items not given it could be anything from {lo} to {hi} points, so the "
                  "category is undetermined")
    duration = _num(_m(case).get("symptom_duration_days"))
    if duration is not None and duration >= 28:
        text += (f". Wells applies to a suspected acute DVT; symptoms for {fmt_days(duration)} make it "
                 "of little use here")
    return _sentence(text)


def _d_dimer_line(assessment: Mapping[str, Any], case: Mapping[str, Any] | None) -> str | None:
    dd = _m(assessment.get("d_dimer"))
    if case is None or not dd:
        return None
    if not dd.get("given"):
        return _sentence(f"D-dimer not given (the cut-off that would apply: {dd.get('cutoff_rule')})")
    if dd.get("value") is not None:
        converted = ("" if dd.get("unit") == "ug/L FEU"
                     else f" (= {fmt(_num(dd.get('value_ug_l_feu')))} ug/L FEU)")
        text = (f"D-dimer {fmt(_num(dd.get('value')))} {dd.get('unit')}{converted}: {dd.get('result')} "
                f"(cut-off: {dd.get('cutoff_rule')})")
    else:
        text = f"D-dimer reported by the laboratory as {dd.get('result')} (no value; its own cut-off)"
    return _sentence(text)


def _clinical(results: Mapping[str, Any], assessment: Mapping[str, Any]) -> list[str]:
    """The clinical picture as short sentences."""
    case = results.get("clinical_case")
    if not isinstance(case, Mapping):
        return ["No clinical case was given."]
    out = []
    summary = assessment.get("clinical_summary")
    if summary:
        # Wells has a line of its own below: the summary's short form would say it twice.
        summary = re.sub(r", Wells [^,(]*(?:\([^)]*\))?(?=,|$)", "", str(summary))
        out.append(_sentence(summary))
    for line in (_wells_line(assessment, case), _d_dimer_line(assessment, case)):
        if line:
            out.append(line)
    return out


def _next_steps(assessment: Mapping[str, Any], missing: list[str]) -> list[dict[str, Any]]:
    """The recommendations; the missing Wells items are named once, under "Not available"."""
    out = []
    wells_listed = any(m.startswith("Wells items not given") for m in missing)
    for r in assessment.get("recommendations") or []:
        r = _m(r)
        text = str(r.get("text") or "")
        if r.get("id") == "rec-complete-wells" and wells_listed:
            text = "Record the missing Wells items (listed under Not available)"
        out.append({"text": text, "why": str(r.get("reason") or ""), "source": str(r.get("source") or ""),
                    "proposed": bool(r.get("proposed"))})
    return out


def _reasons(groups: list[dict[str, Any]], words: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Each reason with its evidence in words: the CEUS reason points to the findings it groups."""
    out = []
    for g in groups:
        evidence = [e for e in g["evidence"] if e]
        if g["category"] == "ceus" and words:
            evidence = ["CEUS findings above: " + "; ".join(f"{f['label'].lower()} {f['result']}"
                                                            for f in words)]
        out.append({"category": _CATEGORY_WORDS.get(str(g["category"]), str(g["category"])),
                    "text": g["text"], "evidence": evidence, "sources": g["sources"], "ids": g["ids"]})
    return out



def _dr_check_text(check: Mapping[str, Any], *, asked_auto: bool = False) -> str:
    """"; speckle estimate 50.3 dB (95 % interval 45.5-55.2 dB)" for a checked dynamic range;
    why there is none where the speckle could not give one."""
    if not check:
        return ""
    ci = check.get("ci_db")
    if check.get("estimate_db") is None or not isinstance(ci, list | tuple) or len(ci) != 2:
        found = [what for key, what in (("persistence", "the display averages frames: persistence"),
                                        ("resampling", "the display was resampled or "
                                                       "block-compressed"))
                 if _m(check.get(key)).get("detected") is True]
        if _lossy(check):
            found.append("the cine was lossy-compressed")
        lead = ("; --dynamic-range auto was asked, but the speckle gave no estimate" if asked_auto
                else "; no speckle estimate to check it against")
        return lead + (f" ({'; '.join(found)})" if found else "")
    return (f"; speckle estimate {fmt(_num(check['estimate_db']), 'dB')} "
            f"({_interval_text(ci, _lossy(check))})")


def _interval_text(ci: Any, lossy: bool) -> str:
    """"95 % interval 45.5-55.2 dB", or what a lossy cine's interval is made of."""
    span = f"{fmt(_num(ci[0]))}–{fmt(_num(ci[1]), 'dB')}"
    if not lossy:
        return f"95 % interval {span}"
    # `dynamic_range.CompressionCheck`: the upper end is the presets' top, not a 95 % bound.
    return (f"interval {span}, from the speckle's 95 % lower bound to the contrast presets' "
            "top: the cine was lossy-compressed, which makes the speckle read low")


def _lossy(check: Any) -> bool:
    """Whether a speckle record says the cine was lossy-compressed."""
    return _m(_m(check).get("compression")).get("lossy") is True

def _dr_source_text(lin: Mapping[str, Any]) -> str:
    """" (estimated, 95 % interval 40.4-51.8 dB)" or " (user)": where the dynamic range came from."""
    source = lin.get("dynamic_range_source")
    if not source:
        return ""
    ci = lin.get("dynamic_range_ci_db")
    if isinstance(ci, list | tuple) and len(ci) == 2:
        return f" ({source}, {_interval_text(ci, _lossy(lin.get('dynamic_range_estimate')))})"
    return f" ({source})"


def _clips_text(clips: list[Mapping[str, Any]], gaps: Any) -> str:
    """The clips of an exam and the gaps between them, for the study table."""
    def sec(v: Any) -> str:  # one precision for every time on the row (0.1 s)
        x = _num(v)
        return "—" if x is None else f"{round(x, 1):g}"

    parts = [f"{c.get('file') or '—'} from {sec(c.get('start_s'))} s "
             f"({c.get('n_frames')} frames, {sec(c.get('duration_s'))} s)" for c in clips]
    spans = [f"{sec(g[0])}–{sec(g[1])} s" for g in gaps or []
             if isinstance(g, list | tuple) and len(g) == 2]
    text = f"{len(clips)} clips on one clock: " + "; ".join(parts)
    if spans:
        text += (f"; no data in the gap{'s' if len(spans) > 1 else ''} {', '.join(spans)} "
                 "(the fits use the recorded frames only)")
    return text


def _study(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    acq = _m(results.get("acquisition"))
    src = _m(results.get("source"))
    panels = _m(results.get("panels"))
    lin = _m(results.get("linearization"))
    analysis = _m(results.get("analysis"))
    contrast = _m(panels.get("contrast"))
    spacing = contrast.get("spacing_mm")
    clips = [c for c in acq.get("clips") or [] if isinstance(c, Mapping)]
    rows = [
        ("Cine", f"{src.get('source_name') or src.get('file') or '—'} ({src.get('format') or '—'})"),
        *([("Clips", _clips_text(clips, acq.get("gaps_s")))] if clips else []),
        ("Frames", f"{acq.get('n_frames')} {'recorded ' if clips else ''}over "
                   f"{fmt(_num(acq.get('duration_s')), 's')} "
                   f"({fmt(_num(acq.get('frame_rate_hz')), 'frames/s')}; timing from "
                   f"{acq.get('timing_source') or '—'})"),
        ("Contrast panel", f"{', '.join(str(v) for v in contrast.get('bounds_xyxy') or [])} px "
                           f"(x0, y0, x1, y1): {panels.get('reason') or '—'}"),
        ("Pixel size", f"{fmt(_num(spacing[0]))} × {fmt(_num(spacing[1]))} mm (row × column)"
         if isinstance(spacing, list | tuple) and len(spacing) == 2 else "unknown (areas in pixels)"),
        ("Linearisation", f"display dynamic range {fmt(_num(lin.get('dynamic_range_db')), 'dB')}"
                          + _dr_source_text(lin)
                          + (_dr_check_text(_m(lin.get("dynamic_range_check")))
                             # a refused `auto` (an accepted one is in the source text)
                             or (_dr_check_text(_m(lin.get("dynamic_range_estimate")),
                                                asked_auto=True)
                                 if lin.get("dynamic_range_source") == "default" else ""))
                          + "; linear power P = 10^((g / 255 − 1) × DR / 10) of display value g "
                            "(g = 255 gives P = 1)"),
        ("Model", f"{analysis.get('model') or '—'} bolus model fitted to each enhancing ROI's mean "
                  "linear power"),
        ("Injection", f"at {fmt(_num(analysis.get('injection_time_s')), 's')} on the cine clock "
                      "(t = 0 at the first frame)"),
    ]
    maps = _m(results.get("maps"))
    rows.append(("Parametric maps", f"{maps.get('block_px')} × {maps.get('block_px')} px blocks, "
                                    f"{maps.get('model')} model (see below)" if maps.get("computed")
                 else f"not computed: {maps.get('reason') or '—'}"))
    return rows


def _roi_rows(results: Mapping[str, Any]) -> list[dict[str, str]]:
    rows = []
    for name, r in _rois_in_order(results):
        area = (fmt(_num(r.get("area_mm2")), "mm²") if _num(r.get("area_mm2")) is not None
                else fmt(r.get("area_px"), "px"))
        fit = _m(r.get("fit"))
        rows.append({"name": name, "role": str(r.get("role")), "shape": str(r.get("shape") or "—"),
                     "area": area, "enhancing": fmt(r.get("enhancing")),
                     "fit": str(fit.get("status") or ("not fitted" if r.get("enhancing") is False else "—"))})
    return rows


#: What a relative value's range spans, unless the default dynamic range is unchecked.
_DR_INTERVAL_WORDS = "over the dynamic range's interval"


def _interval_words(results: Mapping[str, Any]) -> str:
    """What a relative value's range spans: the DR's interval, or the presets for an unchecked default."""
    scale = _m(_m(results.get("linearization")).get("level_scale"))
    span = scale.get("interval_db")
    if isinstance(span, list | tuple) and len(span) == 2:
        lo, hi = _num(span[0]), _num(span[1])
        if lo is not None and hi is not None:
            if scale.get("source") == "unchecked":
                return (f"over contrast presets' {lo:g}–{hi:g} dB: the default dynamic range is "
                        "unchecked")
            # The span itself: it may differ from the estimate's interval on the
            # Linearisation line (it always holds the DR used).
            return f"{_DR_INTERVAL_WORDS}, {fmt(lo)}–{fmt(hi, 'dB')}"
    return _DR_INTERVAL_WORDS


def _range_words(evidence: Mapping[str, Any], words: str) -> str:
    """`` (8.0 to 15.4 dB over the dynamic range's interval)`` for a level with a range."""
    rng = evidence.get("value_range")
    if not (isinstance(rng, list) and len(rng) == 2 and all(_num(v) is not None for v in rng)):
        return ""
    lo, hi = (_num(v) for v in rng)
    return f" ({fmt(lo)} to {fmt(hi, 'dB')} {words})"


def _relative_cell(relative: Mapping[str, Any], key: str, words: str = _DR_INTERVAL_WORDS) -> str:
    """A relative value, with its range over the dynamic range's interval where it has one."""
    text = fmt(_num(relative.get(key)))
    interval = relative.get(f"{key}_interval")
    if text != "—" and isinstance(interval, list) and len(interval) == 2:
        lo, hi = (_num(v) for v in interval)
        if lo is not None and hi is not None:
            text += f" ({fmt(lo)}–{fmt(hi)} {words})"
    elif text != "—" and relative.get(f"{key}_interval_reason"):
        # The dynamic range is uncertain and the range could not be measured: say so, not nothing.
        text += f" (range {words} not measured: a fit there failed)"
    return text


def _parameters(results: Mapping[str, Any]) -> dict[str, Any]:
    rois = _rois_in_order(results)
    rows = []
    for key, label in PARAMETER_LABELS.items():
        cells = [fmt(_num(_m(r.get("perfusion")).get(key))) for _, r in rois]
        if any(c != "—" for c in cells):
            rows.append({"key": key, "label": label, "unit": _PARAMETER_UNITS.get(key, ""), "cells": cells})
    relative = []
    ref = next((n for n, r in rois if r.get("role") == "reference"), None)
    if ref is not None:
        others = [(n, r) for n, r in rois if n != ref]
        for key, label, unit in _RELATIVE:
            words = _interval_words(results)
            cells = [_relative_cell(_m(r.get("relative_to_reference")), key, words) for _, r in others]
            if any(c != "—" for c in cells):
                relative.append({"label": label, "unit": unit, "cells": cells})
        return {"columns": [{"name": n, "role": str(r.get("role"))} for n, r in rois], "rows": rows,
                "reference": ref, "relative_columns": [{"name": n, "role": str(r.get("role"))}
                                                       for n, r in others], "relative": relative}
    return {"columns": [{"name": n, "role": str(r.get("role"))} for n, r in rois], "rows": rows,
            "reference": None, "relative_columns": [], "relative": []}


def motion_matters(motion: Mapping[str, Any]) -> bool:
    """Whether a motion estimate is worth a plot: it moved by `MOTION_PLOT_THRESHOLD_PX` or more,
    or frames were rejected."""
    largest = _num(motion.get("max_displacement_px"))
    rejected = _m(motion.get("rejected_frames")).get("count") or 0
    rotation = motion.get("rotation_deg")
    rotated = isinstance(rotation, list) and any(abs(_num(v) or 0.0) >= 0.5 for v in rotation)
    return bool(rejected) or rotated or (largest is not None and largest >= MOTION_PLOT_THRESHOLD_PX)


def _motion(results: Mapping[str, Any]) -> dict[str, Any]:
    mo = _m(results.get("motion"))
    mode = mo.get("mode")
    if not mo or mode == "off":
        return {"matters": False, "lines": ["Motion compensation was off: the curves are measured on the "
                                            "frames as recorded."], "roi_frame": None}
    if mode is None or mo.get("max_displacement_px") is None:
        return {"matters": False, "lines": ["Motion could not be estimated; the curves are measured on the "
                                            "frames as recorded (see the warnings)."], "roi_frame": None}
    ref = _m(mo.get("reference_frame"))
    largest = _num(mo.get("max_displacement_px"))
    rms = _num(mo.get("rms_displacement_px"))
    mm = _num(mo.get("max_displacement_mm"))
    rejected = _m(mo.get("rejected_frames"))
    panel = "B-mode" if mo.get("tracked_panel") == "bmode" else "contrast"
    matters = motion_matters(mo)
    size = f"{fmt(largest, 'px', 2)}" + (f" ({fmt(mm, 'mm', 2)})" if mm is not None else "")
    lines = []
    if matters:
        lines.append(f"Motion compensation ({mode}, tracked on the {panel} panel): largest displacement "
                     f"{size}, RMS {fmt(rms, 'px', 2)}; {rejected.get('count') or 0} frames rejected "
                     "and left out of the fits.")
    else:
        lines.append(f"Motion compensation ({mode}, tracked on the {panel} panel): the largest estimated "
                     f"displacement, {size}, is below {fmt(MOTION_PLOT_THRESHOLD_PX, 'px', 2)} and no frame "
                     "was rejected, so motion does not affect the ROI means (no plot).")
    lines.append(f"Reference frame {ref.get('index')} (t = {fmt(_num(ref.get('time_s')), 's')}): "
                 f"{ref.get('choice') or '—'}. The ROIs are measured in this frame's coordinates.")
    return {"matters": matters, "lines": lines, "roi_frame": ref.get("index"),
            "roi_frame_time_s": _num(ref.get("time_s")),
            "rejection_rule": mo.get("rejection_rule"),
            "rejected": rejected.get("indices") or []}


#: Readable names of the enhancement verdict's margins (results.json keys on the left).
_MARGIN_LABELS = {
    "min_cine_s": "Shortest cine judged",
    "bolus_smooth_s": "Bolus curve smoothing",
    "bolus_min_rise_db": "Least rise that counts as a bolus",
    "bolus_min_half_width_s": "Least bolus duration (half width)",
    "baseline_max_share": "Highest pre-arrival level (share of the rise)",
    "min_rise_vs_reference_db": "Least lesion rise against the reference",
    "core_margin_px": "Core margin inside the lesion",
    "neighbour_brighter_db": "Neighbour brighter than the lesion by",
    "leak_max_share": "Largest share of a neighbour's signal taken as leakage",
    "leak_min_r2": "Least fit (R²) of the neighbour's curve for leakage",
    "leak_max_lag_s": "Largest lag of a leaked copy",
    "earlier_margin_s": "Lesion filling earlier than its neighbour by",
    "core_decay_db": "Fall from rim to core that marks leakage",
    "faint_core_vs_reference_db": "Core level against the reference never called leakage",
}


def fmt_statistic(value: float | None) -> str:
    """A test statistic: 3 significant figures, large ones as ``1.17 × 10⁵`` (no 117355)."""
    if value is None or not math.isfinite(value) or abs(value) < 1000:
        return fmt(value)
    return fmt_scientific(value)


def _appendix(results: Mapping[str, Any], findings: Mapping[str, Any]) -> dict[str, Any]:
    """Test statistics and margins for the expert (raw statistics allowed here)."""
    tests = []
    for name, r in _rois_in_order(results):
        t = _m(r.get("enhancement_test"))
        if t:
            tests.append({"name": name, "role": str(r.get("role")),
                          "z": fmt_statistic(_num(t.get("statistic"))),
                          "z_threshold": fmt(_num(t.get("z_threshold"))),
                          "rise": fmt(_num(t.get("peak_to_baseline_db")), "dB"),
                          "min_rise": fmt(_num(t.get("min_rise_db")), "dB")})
    labels = {"intraluminal_enhancement": "Intraluminal enhancement", "wash_in": "Wash-in",
              "enhancement": "Enhancement degree (enhancing part)",
              "enhancement_whole_roi": "Enhancement degree (whole ROI)", "homogeneity": "Homogeneity",
              "wash_out": "Wash-out", "wash_out_timing": "Wash-out timing",
              "wash_out_degree": "Wash-out degree", "necrosis_percent": "Necrosis (imaging estimate)"}
    evidence = []
    for key, raw in _m(findings.get("evidence")).items():
        e = _m(raw)
        if not e:
            continue
        unit = e.get("unit")
        evidence.append({"label": labels.get(key, key.replace("_", " ").capitalize()),
                         "statistic": str(e.get("statistic") or ""),
                         "value": fmt(_num(e.get("value")), None if unit in ("1", "") else unit),
                         "threshold": str(e.get("threshold") or ""), "source": str(e.get("source") or ""),
                         "text": str(e.get("text") or "")})
    verdict = _m(findings.get("verdict"))
    margins = [{"name": _MARGIN_LABELS.get(k, k.replace("_", " ").capitalize()),
                "value": fmt(_num(_m(m).get("value")),
                                                            None if _m(m).get("unit") in ("1", "") else
                                                            _m(m).get("unit")),
                "reason": str(_m(m).get("reason") or "")}
               for k, m in _m(verdict.get("margins")).items() if isinstance(m, Mapping)]
    rules: list[tuple[str, str]] = []
    for _, r in _rois_in_order(results)[:1]:
        rule_text = _m(r.get("enhancement_test")).get("test")
        if rule_text:
            rules.append(("ROI enhancement test", str(rule_text).rstrip(".")))
    map_rules = _m(_m(results.get("maps")).get("rules"))
    for key, name in (("enhancement_test", "Pixel enhancement test (maps, necrosis)"),
                      ("heterogeneity", "Heterogeneity"), ("necrosis", "Necrosis"),
                      ("dvp", "Dynamic vascular pattern"), ("block_averaging", "Block averaging")):
        if map_rules.get(key):
            rules.append((name, str(map_rules[key]).rstrip(".")))
    mo = _m(results.get("motion"))
    for key, name in (("rejection_rule", "Motion: frame rejection"), ("trust_rule", "Motion: confidence"),
                      ("plausibility_rule", "Motion: plausibility")):
        if mo.get(key):
            rules.append((name, str(mo[key]).rstrip(".")))
    return {"tests": tests, "evidence": evidence, "margins": margins, "rules": rules,
            "margins_source": _m(verdict.get("margins")).get("source"),
            "verdict_reason": verdict.get("reason"),
            "bolus": (fmt(verdict["contrast_bolus_seen"]) if verdict.get("contrast_bolus_seen") is not None
                      else "not assessable", verdict.get("contrast_bolus_reason"))}


def _maps(results: Mapping[str, Any]) -> dict[str, Any]:
    """How the maps were made and each ROI's map summary (the figures come from the renderer)."""
    info = _m(results.get("maps"))
    if not info.get("computed"):
        return {"computed": False, "reason": info.get("reason")}
    rois: list[dict[str, Any]] = [{"name": n, "role": str(r.get("role")), "m": _m(r.get("map"))}
                                  for n, r in _rois_in_order(results) if isinstance(r.get("map"), Mapping)]
    has_dvp = any(_m(_m(x["m"]).get("dvp")).get("pixel_shares") is not None for x in rois)
    classes = list(_m(info.get("dvp_classes")).keys()) if has_dvp else None
    if classes is not None and "not-available" in classes:
        classes.remove("not-available")
        classes.append("not-available")
    return {"computed": True, "info": info, "rois": rois, "dvp_classes": classes}


def report_content(results: Mapping[str, Any]) -> dict[str, Any]:
    """The report's content from a results.json document (see the module docstring).

    Parameters
    ----------
    results : mapping
        A results.json document; ``findings`` and ``assessment`` may be
        missing or None (an analysis without decision support).

    Returns
    -------
    dict
        ``answer`` (list of at most `MAX_ANSWER_LINES` str), ``level``,
        ``key_numbers``, ``findings`` (label, result, sentence), ``clinical``
        (sentences), ``next_steps``, ``differential``, ``reasons`` (one per
        reason: the CEUS flags of one test grouped), ``missing``,
        ``combination_rule``, ``study``, ``rois``, ``parameters``, ``motion``,
        ``warnings``, ``appendix``, ``disclaimer``.
    """
    findings = _m(results.get("findings"))
    assessment = _m(results.get("assessment"))
    groups = reason_groups(list(assessment.get("red_flags") or []))
    missing = _missing_items(assessment)
    has_assessment = bool(assessment)
    rule = _m(assessment.get("combination_rule"))
    words = _findings_in_words(results, findings) if findings else []
    return {
        "has_assessment": has_assessment,
        "model": str(_m(results.get("analysis")).get("model") or "bolus"),
        "level": assessment.get("level"),
        "answer": _answer(results, assessment, groups, missing) if has_assessment else [],
        "key_numbers": _key_numbers(results, findings),
        "findings": words,
        "clinical": _clinical(results, assessment) if has_assessment else [],
        "next_steps": _next_steps(assessment, missing),
        "differential": [{"rank": _m(d).get("rank"), "name": str(_m(d).get("name") or ""),
                          "support": list(_m(d).get("support") or []),
                          "against": list(_m(d).get("against") or []),
                          "score": f"{_num(_m(d).get('score')) or 0.0:g}",
                          "source": str(_m(d).get("source") or "")}
                         for d in assessment.get("differential") or []],
        "differential_note": (_sentence(str(assessment["differential_note"]))
                              if assessment.get("differential_note") else None),
        "reasons": _reasons(groups, words),
        "level_reasons": [_sentence(str(r)) for r in assessment.get("reasons") or []],
        "avena": _m(assessment.get("avena_adapted")),
        "missing": missing,
        "combination_rule": rule.get("text"),
        "study": _study(results),
        "rois": _roi_rows(results),
        "parameters": _parameters(results),
        "motion": _motion(results),
        "maps": _maps(results),
        "warnings": [{"code": str(_m(w).get("code")), "message": str(_m(w).get("message"))}
                     for w in results.get("warnings") or []],
        "appendix": _appendix(results, findings),
        "fnclcc": _m(assessment.get("fnclcc_necrosis_estimate")),
        "disclaimer": str(assessment.get("disclaimer") or results.get("disclaimer") or DISCLAIMER),
    }
