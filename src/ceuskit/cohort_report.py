"""The cohort report of a batch: counts, failures, distributions, ratios, ROC.

`write_cohort_report` takes the rows of ``summary.csv`` (dicts of strings,
as `csv.DictReader` gives them) and writes ``cohort.html`` (and
``cohort.pdf``).  It knows nothing of how the batch ran; the statistics are
pure NumPy functions (`roc_curve`, `roc_auc`, `auc_with_ci`,
`confusion_counts`) so that they can be checked on their own.

ROC convention: a higher score means "tumour" (label ``tumor`` is the
positive class, ``bland`` the negative; ``other`` and empty labels are left
out).  An AUC below 0.5 means that lower values point to a tumour.  The
95 % confidence interval of the AUC is DeLong's (DeLong, DeLong and
Clarke-Pearson, Biometrics 44:837, 1988): the variance of the Mann-Whitney
estimate from its structural components, with a normal approximation,
clipped to 0..1; it is deterministic (no resampling, no seed).
"""

from __future__ import annotations

import base64
import html
import math
import warnings
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ceuskit import DISCLAIMER
from ceuskit.batch_summary import cell_bool, cell_number

#: Label of the positive class (tumour) and of the negative class (bland thrombus).
POSITIVE_LABEL = "tumor"
NEGATIVE_LABEL = "bland"
#: Perfusion columns of summary.csv shown as distributions (lesion ROIs).
DISTRIBUTION_COLUMNS = (
    "peak_enhancement_au", "auc_au_s", "wash_in_rate_au_per_s", "wash_out_rate_au_per_s",
    "arrival_time_s", "time_to_peak_s", "rise_time_s", "mean_transit_time_s", "fall_time_s",
    "wash_in_auc_au_s", "wash_out_auc_au_s", "wash_in_perfusion_index_au", "qof", "necrosis_percent",
)
#: The parameters given ROC curves (``pe_ratio`` = lesion / reference peak enhancement).
ROC_COLUMNS = ("peak_enhancement_au", "wash_in_rate_au_per_s", "time_to_peak_s", "pe_ratio",
               "necrosis_percent")
#: Confidence level of the AUC intervals.
CI_LEVEL = 0.95

_LABELS = {
    "peak_enhancement_au": "Peak enhancement", "auc_au_s": "AUC", "wash_in_rate_au_per_s": "Wash-in rate",
    "wash_out_rate_au_per_s": "Wash-out rate", "arrival_time_s": "Arrival time",
    "time_to_peak_s": "Time to peak", "rise_time_s": "Rise time",
    "mean_transit_time_s": "Mean transit time", "fall_time_s": "Fall time",
    "wash_in_auc_au_s": "Wash-in AUC", "wash_out_auc_au_s": "Wash-out AUC",
    "wash_in_perfusion_index_au": "Wash-in perfusion index", "qof": "Quality of fit",
    "necrosis_percent": "Necrosis", "pe_ratio": "Peak enhancement ratio (lesion / reference)",
    "auc_ratio": "AUC ratio (lesion / reference)",
}


def column_unit(column: str) -> str:
    """The unit of a summary.csv column, read from its name's suffix."""
    if column in ("pe_ratio", "auc_ratio") or column.endswith("_ratio"):
        return "1"  # the label already says ratio
    if column == "qof":
        return "1 (0 to 1)"
    if column.endswith("_percent"):
        return "%"
    for suffix, unit in (("_au_per_s", "a.u./s"), ("_au_s", "a.u.·s"), ("_au", "a.u."), ("_s", "s")):
        if column.endswith(suffix):
            return unit
    return ""


def _axis_label(column: str) -> str:
    unit = column_unit(column)
    return f"{_LABELS.get(column, column)} ({unit})" if unit else _LABELS.get(column, column)


# ---------------------------------------------------------------------------
# ROC statistics (pure NumPy)
# ---------------------------------------------------------------------------

def _scores_labels(scores: ArrayLike, labels: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError("scores and labels must have the same length")
    keep = np.isfinite(s)
    return s[keep], y[keep].astype(bool)


def roc_curve(scores: ArrayLike, labels: ArrayLike,
              ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """The empirical ROC curve ("positive when score >= threshold").

    Parameters
    ----------
    scores : array_like, shape (N,)
        Higher means more likely positive; non-finite scores are left out.
    labels : array_like of bool, shape (N,)
        True for positives.

    Returns
    -------
    (fpr, tpr, thresholds)
        False- and true-positive rates (0..1) from (0, 0) to (1, 1), one
        point per distinct score (tied scores move the curve diagonally),
        and the thresholds (``+inf`` first).

    Raises
    ------
    ValueError
        No positive or no negative case.
    """
    s, y = _scores_labels(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("an ROC curve needs at least one positive and one negative case")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tp = np.cumsum(y)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    fpr = np.r_[0.0, fp / n_neg]
    tpr = np.r_[0.0, tp / n_pos]
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


def _placements(s: NDArray[np.float64], y: NDArray[np.bool_],
                ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """DeLong's structural components (ties count 1/2).

    Per positive, the share of negatives it scores above; per negative, the
    share of positives that score above it.
    """
    pos, neg = s[y], s[~y]
    psi = (pos[:, None] > neg[None, :]).astype(np.float64) + 0.5 * (pos[:, None] == neg[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


def roc_auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting 1/2.

    Equal to the trapezoidal area under `roc_curve` (the Mann-Whitney U / (n_pos n_neg)).

    Raises
    ------
    ValueError
        No positive or no negative case.
    """
    s, y = _scores_labels(scores, labels)
    if y.all() or not y.any():
        raise ValueError("an AUC needs at least one positive and one negative case")
    v10, _ = _placements(s, y)
    return float(v10.mean())


def auc_with_ci(scores: ArrayLike, labels: ArrayLike, level: float = CI_LEVEL,
                ) -> tuple[float, float | None, float | None]:
    """The AUC with DeLong's confidence interval.

    Parameters
    ----------
    scores, labels : array_like
        As for `roc_curve`.
    level : float
        Confidence level (0..1), default 0.95.

    Returns
    -------
    (auc, low, high)
        ``low`` and ``high`` are None with fewer than two positives or two
        negatives (no variance estimate); otherwise ``auc +- z * se``
        clipped to 0..1 (``se`` = 0 for a perfectly separated cohort).
    """
    s, y = _scores_labels(scores, labels)
    auc = roc_auc(s, y)
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        return auc, None, None
    v10, v01 = _placements(s, y)
    var = float(np.var(v10, ddof=1)) / m + float(np.var(v01, ddof=1)) / n
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    half = z * math.sqrt(max(var, 0.0))
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def confusion_counts(predicted: Sequence[bool | None], labels: Sequence[str | None]) -> dict[str, Any]:
    """Confusion table of a yes/no call against tumour / bland labels.

    Parameters
    ----------
    predicted : sequence of bool or None
        The call per case (True = positive); None (not assessable) is left out.
    labels : sequence of str or None
        ``tumor`` (positive), ``bland`` (negative); others are left out.

    Returns
    -------
    dict
        ``tp``, ``fp``, ``tn``, ``fn``, ``excluded_label`` (other or empty
        label), ``excluded_call`` (labelled but no call), ``sensitivity``
        and ``specificity`` (None when undefined).
    """
    out: dict[str, Any] = {"tp": 0, "fp": 0, "tn": 0, "fn": 0, "excluded_label": 0, "excluded_call": 0}
    for p, lab in zip(predicted, labels, strict=True):
        if lab not in (POSITIVE_LABEL, NEGATIVE_LABEL):
            out["excluded_label"] += 1
        elif p is None:
            out["excluded_call"] += 1
        elif lab == POSITIVE_LABEL:
            out["tp" if p else "fn"] += 1
        else:
            out["fp" if p else "tn"] += 1
    pos, neg = out["tp"] + out["fn"], out["tn"] + out["fp"]
    out["sensitivity"] = out["tp"] / pos if pos else None
    out["specificity"] = out["tn"] / neg if neg else None
    return out


# ---------------------------------------------------------------------------
# summary.csv rows -> cases
# ---------------------------------------------------------------------------

def _text(row: Mapping[str, Any], key: str) -> str:
    v = row.get(key)
    return "" if v is None else str(v).strip()


def _ratio_range(case: Mapping[str, Any]) -> str:
    """The lesion's peak-enhancement ratio range over the DR's span, as summary.csv gives it."""
    lesion = case.get("lesion")
    if lesion is None:
        return "—"
    lo, hi = (cell_number(lesion.get(k)) for k in ("peak_enhancement_ratio_low",
                                                    "peak_enhancement_ratio_high"))
    return "—" if lo is None or hi is None else f"{_f(lo)}–{_f(hi)}"


def _dynamic_range(case: Mapping[str, Any]) -> str:
    """``42.6 (estimated, 35.4–80; lossy-compressed)``: the DR behind a case's amplitudes."""
    row = case.get("lesion") or (case.get("rows") or [{}])[0]
    dr = cell_number(row.get("dynamic_range_db"))
    if dr is None:
        return "—"
    lo, hi = (cell_number(row.get(k)) for k in ("dynamic_range_low_db", "dynamic_range_high_db"))
    notes = [_text(row, "dynamic_range_source") or "?"]
    if lo is not None and hi is not None:
        notes.append(f"{_f(lo)}–{_f(hi)}")
    text = f"{_f(dr)} ({', '.join(notes)}"
    return text + ("; lossy-compressed)" if cell_bool(row.get("lossy_compression")) else ")")


def cohort_cases(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per case id (in first-seen order) from the rows of summary.csv.

    Returns
    -------
    list of dict
        ``id``, ``status``, ``error``, ``label``, ``suspect_neoplasm`` (bool
        or None), ``lesion`` (the first lesion row or None), ``reference``
        (the first reference row or None), ``pe_ratio`` and ``auc_ratio``
        (lesion / reference, None when either is missing or the reference is 0).
    """
    cases: dict[str, dict[str, Any]] = {}
    for row in rows:
        cid = _text(row, "id")
        case = cases.setdefault(cid, {"id": cid, "status": "", "error": "", "label": "",
                                      "suspect_neoplasm": None, "lesion": None, "reference": None,
                                      "rows": []})
        case["rows"].append(row)
        status = _text(row, "status").lower()
        # A case is ok only when every row is; the first failure's reason is kept.
        if status and (case["status"] in ("", "ok")):
            case["status"] = status
        if _text(row, "error") and not case["error"]:
            case["error"] = _text(row, "error")
        if _text(row, "label") and not case["label"]:
            case["label"] = _text(row, "label").lower()
        role = _text(row, "role").lower()
        if role == "lesion" and case["lesion"] is None:
            case["lesion"] = row
        elif role == "reference" and case["reference"] is None:
            case["reference"] = row
    out = []
    for case in cases.values():
        lesion, ref = case["lesion"], case["reference"]
        first = lesion if lesion is not None else case["rows"][0]
        case["suspect_neoplasm"] = cell_bool(first.get("suspect_neoplasm"))
        if case["suspect_neoplasm"] is None:
            case["suspect_neoplasm"] = next((b for b in (cell_bool(r.get("suspect_neoplasm"))
                                                         for r in case["rows"]) if b is not None), None)
        for key, col in (("pe_ratio", "peak_enhancement_au"), ("auc_ratio", "auc_au_s")):
            a = None if lesion is None else cell_number(lesion.get(col))
            b = None if ref is None else cell_number(ref.get(col))
            case[key] = a / b if a is not None and b not in (None, 0.0) else None
        out.append(case)
    return out


#: Amplitude parameters: zero for a lesion that does not enhance (no curve was fitted, so
#: summary.csv leaves them empty); timing parameters do not exist for such a lesion.
AMPLITUDE_COLUMNS = frozenset({"peak_enhancement_au", "auc_au_s", "wash_in_rate_au_per_s",
                               "wash_in_auc_au_s", "wash_out_auc_au_s",
                               "wash_in_perfusion_index_au", "pe_ratio", "auc_ratio"})


def _case_value(case: Mapping[str, Any], column: str) -> float | None:
    lesion = case["lesion"]
    if column in ("pe_ratio", "auc_ratio"):
        v = case[column]
        value = None if v is None else float(v)
    else:
        value = None if lesion is None else cell_number(lesion.get(column))
    if value is None and column in AMPLITUDE_COLUMNS and lesion is not None \
            and cell_bool(lesion.get("enhancing")) is False:
        # Leaving non-enhancing lesions out would drop the bland clots from every
        # amplitude ROC: they count as no enhancement at all.
        return 0.0
    return value


def cohort_statistics(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Everything the cohort report states, as plain numbers (see `write_cohort_report`).

    Returns
    -------
    dict
        ``counts`` (cases, ok, failed, timeout, by_label), ``failures``
        (id, status, error), ``cases``, ``labelled`` (any tumour or bland
        label), ``confusion`` (`confusion_counts` of ``suspect_neoplasm``,
        ok cases only), ``roc`` (column -> n_pos, n_neg, auc, ci_low,
        ci_high, fpr, tpr; None where it cannot be computed).
    """
    cases = cohort_cases(rows)
    counts: dict[str, Any] = {"cases": len(cases)}
    for s in ("ok", "failed", "timeout"):
        counts[s] = sum(1 for c in cases if c["status"] == s)
    by_label: dict[str, int] = {}
    for c in cases:
        key = c["label"] or "unlabelled"
        by_label[key] = by_label.get(key, 0) + 1
    counts["by_label"] = by_label
    failures = [{"id": c["id"], "status": c["status"], "error": c["error"]}
                for c in cases if c["status"] != "ok"]
    ok = [c for c in cases if c["status"] == "ok"]
    labelled = any(c["label"] in (POSITIVE_LABEL, NEGATIVE_LABEL) for c in ok)
    confusion = confusion_counts([c["suspect_neoplasm"] for c in ok], [c["label"] for c in ok]) \
        if labelled else None
    roc: dict[str, Any] = {}
    if labelled:
        for col in ROC_COLUMNS:
            pairs = [(v, c["label"] == POSITIVE_LABEL) for c in ok
                     if c["label"] in (POSITIVE_LABEL, NEGATIVE_LABEL)
                     and (v := _case_value(c, col)) is not None]
            n_pos = sum(1 for _, y in pairs if y)
            n_neg = len(pairs) - n_pos
            entry: dict[str, Any] = {"n_pos": n_pos, "n_neg": n_neg, "auc": None, "ci_low": None,
                                     "ci_high": None, "fpr": None, "tpr": None}
            if n_pos and n_neg:
                sc = np.array([v for v, _ in pairs])
                yy = np.array([b for _, b in pairs])
                entry["auc"], entry["ci_low"], entry["ci_high"] = auc_with_ci(sc, yy)
                fpr, tpr, _ = roc_curve(sc, yy)
                entry["fpr"], entry["tpr"] = fpr.tolist(), tpr.tolist()
            roc[col] = entry
    return {"counts": counts, "failures": failures, "cases": cases, "labelled": labelled,
            "confusion": confusion, "roc": roc}


# ---------------------------------------------------------------------------
# Figures and HTML
# ---------------------------------------------------------------------------

_LABEL_ORDER = (POSITIVE_LABEL, NEGATIVE_LABEL, "other", "unlabelled")
_LABEL_COLOURS = {POSITIVE_LABEL: "#d62728", NEGATIVE_LABEL: "#1f77b4", "other": "#7f7f7f",
                  "unlabelled": "#bcbd22"}


def _distribution_png(cases: Sequence[Mapping[str, Any]], column: str) -> bytes | None:
    from ceuskit.report.figures import _png, plt

    groups = []
    for lab in _LABEL_ORDER:
        vals = [v for c in cases if (c["label"] or "unlabelled") == lab
                and (v := _case_value(c, column)) is not None]
        if vals:
            groups.append((lab, vals))
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(3.6, 2.8))
    ax.boxplot([g[1] for g in groups], widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)  # fixed jitter: the same figure every run
    for k, (lab, vals) in enumerate(groups, start=1):
        x = k + rng.uniform(-0.12, 0.12, len(vals))
        ax.plot(x, vals, "o", ms=3.5, alpha=0.7, color=_LABEL_COLOURS.get(lab, "k"))
    ax.set_xticks(range(1, len(groups) + 1), [f"{lab}\n(n={len(v)})" for lab, v in groups])
    ax.set_xlabel("label")
    ax.set_ylabel(_axis_label(column), fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def _roc_png(roc: Mapping[str, Any]) -> bytes | None:
    from ceuskit.report.figures import _png, plt

    drawn = [(col, e) for col, e in roc.items() if e["fpr"] is not None]
    if not drawn:
        return None
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    for col, e in drawn:
        ax.plot(e["fpr"], e["tpr"], lw=1.5,
                label=f"{_LABELS.get(col, col)}: AUC {e['auc']:.2f}")
    ax.set_xlabel("1 - specificity (false-positive rate, 0 to 1)")
    ax.set_ylabel("sensitivity (true-positive rate, 0 to 1)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=6.5, loc="lower right")
    ax.grid(alpha=0.3)
    return _png(fig)


def _f(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "—"
    from ceuskit.fmt import fmt_number

    return fmt_number(float(v), digits)


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    return (f'<img alt="{html.escape(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(png).decode("ascii")}">')


def render_cohort_html(rows: Sequence[Mapping[str, Any]], *, note: str | None = None) -> str:
    """The self-contained cohort.html of the rows of summary.csv (every value HTML-escaped)."""
    e = html.escape
    st = cohort_statistics(rows)
    counts, cases = st["counts"], st["cases"]
    parts = [f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ceuskit cohort report</title>
<style>body{{font-family:sans-serif;max-width:64em;margin:1em auto;}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}
.disclaimer{{background:#fff4e0;padding:.5em;border:1px solid #e0b060}}
.figs img{{max-width:31%;margin:2px}}@page{{size:A4;margin:1.5cm}}</style></head><body>
<h1>Cohort report</h1>
<p class="disclaimer">For research: cohort statistics of ceuskit measurements, not a diagnosis of any
case. {e(DISCLAIMER)}</p>"""]
    if note:
        parts.append(f"<p><strong>Note:</strong> {e(note)}</p>")
    by_label = ", ".join(f"{e(k)}: {v}" for k, v in counts["by_label"].items()) or "—"
    parts.append(f"""<h2>Counts</h2><table id="counts">
<tr><th>cases</th><td>{counts['cases']}</td></tr><tr><th>ok</th><td>{counts['ok']}</td></tr>
<tr><th>failed</th><td>{counts['failed']}</td></tr><tr><th>timeout</th><td>{counts['timeout']}</td></tr>
<tr><th>by label</th><td>{by_label}</td></tr></table>""")
    parts.append("<h2>Failures</h2>")
    if st["failures"]:
        body = "".join(f"<tr><td>{e(f['id'])}</td><td>{e(f['status'])}</td><td>{e(f['error'])}</td></tr>"
                       for f in st["failures"])
        parts.append(f'<table id="failures"><tr><th>id</th><th>status</th><th>reason</th></tr>{body}</table>')
    else:
        parts.append("<p>No case failed.</p>")
    ok = [c for c in cases if c["status"] == "ok"]
    parts.append("<h2>Lesion parameters by label</h2><p>Lesion ROI of each analysed case (the first "
                 "lesion ROI where a case has several); box: quartiles and median, whiskers 1.5 IQR, "
                 "dots: cases; a lesion that does not enhance is at 0 for the amplitude "
                 "parameters and absent from the timing ones.</p><div class=\"figs\">")
    for col in (*DISTRIBUTION_COLUMNS, "pe_ratio", "auc_ratio"):
        parts.append(_img(_distribution_png(ok, col), _axis_label(col)))
    parts.append("</div>")
    ranges = [_ratio_range(c) for c in ok]
    ratio_rows = "".join(
        f"<tr><td>{e(c['id'])}</td><td>{e(c['label'] or '—')}</td><td>{_f(c['pe_ratio'])}</td>"
        f"<td>{e(rng)}</td><td>{_f(c['auc_ratio'])}</td>"
        f"<td>{e(_dynamic_range(c))}</td></tr>" for c, rng in zip(ok, ranges, strict=True))
    uncertain = sum(1 for rng in ranges if rng != "—")
    parts.append("<h2>Lesion / reference ratios</h2><table id=\"ratios\"><tr><th>id</th><th>label</th>"
                 "<th>peak enhancement ratio (1)</th><th>its range over the dynamic range's span (1)"
                 "</th><th>AUC ratio (1)</th><th>dynamic range (dB)</th></tr>"
                 f"{ratio_rows}</table><p>— : no reference ROI, or a parameter missing; no range: "
                 "the dynamic range was given. Amplitude ratios scale with the dynamic range used "
                 f"to linearise: {uncertain} of {len(ok)} case(s) rest on an estimated or default "
                 "one whose span changes them as shown (the distributions and ROC curves use the "
                 "ratio at the value used; summary.csv has every range).</p>")
    if st["labelled"]:
        cf = st["confusion"]
        parts.append(f"""<h2>Suspect neoplasm vs label</h2>
<p>Positive = label tumor, negative = label bland; {cf['excluded_label']} case(s) with label other or
empty and {cf['excluded_call']} labelled case(s) without a call are excluded; ok cases only.</p>
<table id="confusion"><tr><th></th><th>label tumor</th><th>label bland</th></tr>
<tr><th>suspect neoplasm: true</th><td>TP {cf['tp']}</td><td>FP {cf['fp']}</td></tr>
<tr><th>suspect neoplasm: false</th><td>FN {cf['fn']}</td><td>TN {cf['tn']}</td></tr></table>
<p>Sensitivity {_f(cf['sensitivity'])} ({cf['tp']}/{cf['tp'] + cf['fn']}); specificity
{_f(cf['specificity'])} ({cf['tn']}/{cf['tn'] + cf['fp']}).</p>""")
        roc_rows = "".join(
            f"<tr><td>{e(_axis_label(col))}</td><td>{r['n_pos']}</td><td>{r['n_neg']}</td>"
            f"<td>{_f(r['auc'])}</td><td>{_f(r['ci_low'])} to {_f(r['ci_high'])}</td></tr>"
            for col, r in st["roc"].items())
        parts.append(f"""<h2>ROC curves</h2>
<p>Higher values taken as pointing to a tumour (an AUC below 0.5: lower values do); a lesion
that does not enhance counts as 0 for the amplitude parameters and ratios, and is left out of
the timing parameters; AUC with its
{CI_LEVEL:.0%} confidence interval by DeLong's method (normal approximation, no resampling; — with
fewer than two cases of a class).</p>
<table id="roc"><tr><th>parameter</th><th>tumour cases</th><th>bland cases</th><th>AUC</th>
<th>{CI_LEVEL:.0%} CI</th></tr>{roc_rows}</table>{_img(_roc_png(st['roc']), 'ROC curves')}""")
    else:
        parts.append("<p>No case is labelled tumor or bland: no confusion table or ROC curves.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_cohort_report(rows: Sequence[Mapping[str, Any]], out_dir: str | PathLike[str], *,
                        pdf: bool = True) -> dict[str, Path]:
    """Write DIR/cohort.html and, with WeasyPrint, DIR/cohort.pdf.

    Parameters
    ----------
    rows : sequence of mappings
        The rows of summary.csv as `csv.DictReader` reads them (strings;
        empty where not applicable).  Extra columns are ignored.
    out_dir : path
        Created when missing; files are written atomically.
    pdf : bool
        Also print cohort.pdf; when the PDF engine cannot run, a
        `UserWarning` says why and only the HTML is written (the HTML says
        so too).

    Returns
    -------
    dict
        ``"html"`` and, when printed, ``"pdf"`` paths.
    """
    from ceuskit.outputs import make_out_dir, write_bytes_atomic, write_text_atomic
    from ceuskit.report.pdf import PdfUnavailableError, pdf_unavailable_reason, render_pdf

    out = make_out_dir(out_dir)
    problem = pdf_unavailable_reason() if pdf else None
    note = None if problem is None else f"cohort.pdf was not written: {problem}"
    text = render_cohort_html(rows, note=note)
    paths = {"html": write_text_atomic(out / "cohort.html", text)}
    if pdf and problem is None:
        try:
            paths["pdf"] = write_bytes_atomic(out / "cohort.pdf", render_pdf(text))
        except PdfUnavailableError as exc:
            problem = str(exc)
            paths["html"] = write_text_atomic(out / "cohort.html", render_cohort_html(
                rows, note=f"cohort.pdf was not written: {problem}"))
    if problem is not None:
        warnings.warn(f"cohort.pdf was not written: {problem}", UserWarning, stacklevel=2)
    return paths
