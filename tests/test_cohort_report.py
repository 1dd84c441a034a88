"""Cohort report: ROC statistics (pure functions) and cohort.html content."""

import csv
import io

import numpy as np
import pytest

from ceuskit.cohort_report import (
    auc_with_ci,
    cohort_statistics,
    confusion_counts,
    render_cohort_html,
    roc_auc,
    roc_curve,
    write_cohort_report,
)

COLUMNS = ("id,roi,role,status,error,label,level,suspect_neoplasm,intraluminal_enhancement,wash_in,"
           "enhancement,homogeneity,wash_out_present,necrosis_percent,enhancing,model,arrival_time_s,"
           "time_to_peak_s,rise_time_s,mean_transit_time_s,fall_time_s,peak_enhancement_au,auc_au_s,"
           "wash_in_rate_au_per_s,wash_out_rate_au_per_s,wash_in_auc_au_s,wash_out_auc_au_s,"
           "wash_in_perfusion_index_au,qof,necrosis_fraction").split(",")


def test_perfectly_separable_cohort_gives_auc_one():
    scores = [5, 6, 7, 8, 1, 2, 3]
    labels = [1, 1, 1, 1, 0, 0, 0]
    auc, lo, hi = auc_with_ci(scores, labels)
    assert auc == 1.0 and lo == 1.0 and hi == 1.0
    assert roc_auc([-s for s in scores], labels) == 0.0
    fpr, tpr, thr = roc_curve(scores, labels)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1 and np.isinf(thr[0])


def test_shuffled_labels_average_one_half():
    rng = np.random.default_rng(12345)
    aucs = []
    for _ in range(400):
        s = rng.normal(size=40)
        y = rng.permutation(np.r_[np.ones(20, bool), np.zeros(20, bool)])
        aucs.append(roc_auc(s, y))
    assert abs(np.mean(aucs) - 0.5) < 0.02


def test_small_example_by_hand():
    # positives 0.9, 0.6, 0.4; negatives 0.7, 0.3.
    # pairs won: 0.9>0.7, 0.9>0.3, 0.6>0.3, 0.4>0.3 = 4 of 6 -> AUC 2/3.
    s = [0.9, 0.6, 0.4, 0.7, 0.3]
    y = [True, True, True, False, False]
    assert roc_auc(s, y) == pytest.approx(2 / 3)
    fpr, tpr, _ = roc_curve(s, y)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1 / 3, 2 / 3, 1, 1])
    assert np.trapezoid(tpr, fpr) == pytest.approx(2 / 3)
    # DeLong by hand: V10 = (1, 1/2, 1/2), V01 = (1/3, 1);
    # var = var(V10)/3 + var(V01)/2 = (1/12)/3 + (2/9)/2 = 1/36 + 1/9 = 5/36.
    _, lo, hi = auc_with_ci(s, y)
    half = 1.959963984540054 * np.sqrt(5 / 36)
    assert lo == pytest.approx(max(0.0, 2 / 3 - half)) and hi == pytest.approx(min(1.0, 2 / 3 + half))


def test_ties_count_one_half_and_move_the_curve_diagonally():
    s = [1.0, 1.0, 1.0, 1.0]
    y = [1, 1, 0, 0]
    assert roc_auc(s, y) == 0.5
    fpr, tpr, _ = roc_curve(s, y)
    np.testing.assert_allclose(fpr, [0, 1]) and np.testing.assert_allclose(tpr, [0, 1])
    # One tie between classes: 0.5 of a pair.
    assert roc_auc([2, 1, 1], [1, 1, 0]) == pytest.approx((1 + 0.5) / 2)
    fpr, tpr, _ = roc_curve([2, 1, 1], [1, 1, 0])
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75)


def test_nan_scores_are_left_out_and_one_class_is_an_error():
    assert roc_auc([1, np.nan, 0], [1, 0, 0]) == 1.0
    with pytest.raises(ValueError):
        roc_auc([1, 2], [1, 1])
    assert auc_with_ci([1, 0], [1, 0])[1:] == (None, None)


def test_confusion_counts():
    c = confusion_counts([True, True, False, False, None, True],
                         ["tumor", "bland", "bland", "tumor", "tumor", "other"])
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (1, 1, 1, 1)
    assert c["excluded_label"] == 1 and c["excluded_call"] == 1
    assert c["sensitivity"] == 0.5 and c["specificity"] == 0.5


def _row(**kw):
    row = dict.fromkeys(COLUMNS, "")
    row.update({k: str(v) for k, v in kw.items()})
    return row


def _cohort():
    rows = []
    for i in range(4):  # tumours: strong enhancement, suspect
        rows.append(_row(id=f"t{i}", roi="lesion", role="lesion", status="ok", label="tumor",
                         suspect_neoplasm="true" if i < 3 else "false", peak_enhancement_au=2.0 + i,
                         auc_au_s=40 + i, wash_in_rate_au_per_s=0.5, time_to_peak_s=12 - i,
                         necrosis_percent=20 + i, site="ivc"))
        rows.append(_row(id=f"t{i}", roi="muscle", role="reference", status="ok", label="tumor",
                         suspect_neoplasm="true" if i < 3 else "false", peak_enhancement_au=1.0,
                         auc_au_s=20))
    for i in range(3):  # bland: no enhancement
        rows.append(_row(id=f"b{i}", roi="lesion", role="lesion", status="ok", label="bland",
                         suspect_neoplasm="true" if i == 0 else "false", peak_enhancement_au=0.1 * i,
                         auc_au_s=1, wash_in_rate_au_per_s=0.01, time_to_peak_s=20, necrosis_percent=90))
        rows.append(_row(id=f"b{i}", roi="muscle", role="reference", status="ok", label="bland",
                         peak_enhancement_au=1.0, auc_au_s=20))
    rows.append(_row(id="o1", roi="lesion", role="lesion", status="ok", label="other",
                     suspect_neoplasm="true", peak_enhancement_au=3))
    rows.append(_row(id="f<1>", status="failed", label="tumor",
                     error="cine.dcm: <script>alert(1)</script> is not a cine. give a DICOM"))
    rows.append(_row(id="slow", status="timeout", error="timed out after 600 s"))
    # Through the CSV module, as the batch runner writes it.
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*COLUMNS, "site"])
    w.writeheader()
    w.writerows(rows)
    return list(csv.DictReader(io.StringIO(buf.getvalue())))


def test_cohort_statistics():
    st = cohort_statistics(_cohort())
    c = st["counts"]
    assert (c["cases"], c["ok"], c["failed"], c["timeout"]) == (10, 8, 1, 1)
    assert c["by_label"] == {"tumor": 5, "bland": 3, "other": 1, "unlabelled": 1}
    cf = st["confusion"]
    assert (cf["tp"], cf["fn"], cf["fp"], cf["tn"], cf["excluded_label"]) == (3, 1, 1, 2, 1)
    assert st["roc"]["peak_enhancement_au"]["auc"] == 1.0
    assert st["roc"]["pe_ratio"]["auc"] == 1.0
    assert st["roc"]["time_to_peak_s"]["auc"] == 0.0  # tumours peak earlier here
    case = next(x for x in st["cases"] if x["id"] == "t1")
    assert case["pe_ratio"] == pytest.approx(3.0) and case["auc_ratio"] == pytest.approx(41 / 20)


def test_cohort_html_content_and_escaping(tmp_path):
    rows = _cohort()
    paths = write_cohort_report(rows, tmp_path / "cohort", pdf=False)
    text = paths["html"].read_text()
    assert set(paths) == {"html"}
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "f&lt;1&gt;" in text and "timed out after 600 s" in text
    assert '<tr><th>cases</th><td>10</td></tr>' in text and '<tr><th>failed</th><td>1</td></tr>' in text
    assert "TP 3" in text and "FN 1" in text and "FP 1" in text and "TN 2" in text
    assert "1 case(s) with label other" in text
    assert "Sensitivity 0.750 (3/4)" in text and "specificity\n0.667 (2/3)" in text
    assert "DeLong" in text and "not a diagnosis" in text and "research" in text
    assert text.count("data:image/png;base64,") >= 8


def test_cohort_without_labels_has_no_roc(tmp_path):
    rows = [_row(id="a", roi="lesion", role="lesion", status="ok", peak_enhancement_au=1)]
    text = render_cohort_html(rows)
    assert "No case is labelled" in text and 'id="confusion"' not in text
    assert "No case failed" in text


def test_pdf_degrades_with_a_warning(tmp_path, monkeypatch):
    import ceuskit.report.pdf as pdf

    monkeypatch.setattr(pdf, "pdf_unavailable_reason", lambda: "no Pango")
    with pytest.warns(UserWarning, match="no Pango"):
        paths = write_cohort_report(_cohort(), tmp_path, pdf=True)
    assert "pdf" not in paths and "no Pango" in paths["html"].read_text()


def test_pdf_is_printed_when_weasyprint_runs(tmp_path):
    from ceuskit.report.pdf import pdf_unavailable_reason

    reason = pdf_unavailable_reason()
    if reason is not None:  # scripts/test.sh installs Pango; a bare machine may lack it
        pytest.skip(f"WeasyPrint cannot run here ({reason}): apt-get install libpango-1.0-0 "
                    "libpangoft2-1.0-0")
    paths = write_cohort_report(_cohort(), tmp_path, pdf=True)
    assert paths["pdf"].read_bytes()[:5] == b"%PDF-"
