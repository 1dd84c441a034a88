"""``ceuskit fit``: TIC CSV import, its checks, and agreement with ``ceuskit analyze``."""

import json

import numpy as np
import pytest

from ceuskit.api import fit_tic_to_dir
from ceuskit.cli import main
from ceuskit.errors import InputError
from ceuskit.kinetics.models import get_model
from ceuskit.linearize import to_display
from ceuskit.tic_import import MIN_SAMPLES, fit_tic_curves, linear_curves, read_tic_csv

TRUE = np.array([50.0, np.log(8.0), 0.5, 10.0, 0.05])  # area, mu, sigma, t0, baseline


def _write(path, header, columns):
    lines = [",".join(header)]
    lines += [",".join(repr(float(v)) if not isinstance(v, str) else v for v in row)
              for row in zip(*columns, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _curves():
    t = np.arange(0.0, 90.0, 0.25)
    y = get_model("lognormal").predict(TRUE, t)
    return t, y


def test_noise_free_linear_curve_recovers_the_parameters(tmp_path):
    t, y = _curves()
    csv = _write(tmp_path / "tic.csv", ["time_s", "lesion", "half"], [t, y, 0.5 * y])
    _, paths = fit_tic_to_dir(csv, tmp_path / "out", linear=True)
    assert set(paths) == {"results", "report"}
    on_disk = json.loads(paths["results"].read_text())
    assert on_disk["disclaimer"] and on_disk["input"]["values"] == "linear"
    lesion = on_disk["rois"]["lesion"]
    assert lesion["model"] == "lognormal" and lesion["fit"]["status"] == "ok"
    got = [lesion["fit"]["parameters"][k] for k in ("area", "mu", "sigma", "t0", "baseline")]
    np.testing.assert_allclose(got, TRUE, rtol=1e-4)
    # Closed-form checks: time to peak = t0 + exp(mu - sigma^2) and the area.
    perf = lesion["perfusion"]
    assert perf["time_to_peak_s"] == pytest.approx(10.0 + np.exp(np.log(8.0) - 0.25), abs=0.05)
    assert perf["auc"] == pytest.approx(50.0, rel=1e-3)
    assert on_disk["rois"]["half"]["perfusion"]["peak_enhancement"] == pytest.approx(
        0.5 * perf["peak_enhancement"], rel=1e-3)
    assert len(lesion["tic"]["times_s"]) == t.size
    html = paths["report"].read_text()
    assert "Peak enhancement" in html and "a.u./s" in html and "data:image/png;base64," in html
    assert "not a diagnosis" in html


def test_display_values_are_linearised_as_cines_are(tmp_path):
    t, y = _curves()
    g = to_display(y / y.max(), 60.0)  # brightest sample at 255
    csv = _write(tmp_path / "tic.csv", ["time", "lesion"], [t, g])
    doc, _ = fit_tic_to_dir(csv, tmp_path / "out", dynamic_range_db=60.0)
    p = doc["rois"]["lesion"]["fit"]["parameters"]
    assert p["mu"] == pytest.approx(np.log(8.0), rel=1e-3)
    assert p["sigma"] == pytest.approx(0.5, rel=1e-3)
    assert p["t0"] == pytest.approx(10.0, abs=1e-2)
    assert doc["input"]["dynamic_range_db"] == 60.0


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    from ceuskit.pipeline import AnalysisOptions, analyze
    from ceuskit.simulate import SimulationSpec, simulate, write_phantom

    d = tmp_path_factory.mktemp("cine")
    phantom = simulate(SimulationSpec(scenario="tumor", seed=3, fps=6.0, duration_s=60.0))
    files = write_phantom(phantom, d, "npz")
    return analyze(files["cine"], files["rois"], AnalysisOptions(motion="off", maps=False)), phantom


def test_a_tic_exported_from_analyze_gives_the_same_parameters(analysed, tmp_path):
    analysis, phantom = analysed
    rois = analysis.rois
    csv = _write(tmp_path / "tic.csv", ["t", *(r.roi.name for r in rois)],
                 [analysis.times_s, *(r.intensity for r in rois)])
    doc, _ = fit_tic_to_dir(csv, tmp_path / "out", linear=True)
    for r in rois:
        entry = doc["rois"][r.roi.name]
        assert entry["enhancing"] is r.enhancing, r.roi.name
        if not r.enhancing:
            assert all(v is None for v in entry["perfusion"].values())
            continue
        for k, v in r.perfusion.items():
            assert entry["perfusion"][k] == pytest.approx(v, rel=1e-6, abs=1e-12), (r.roi.name, k)
    truth = phantom.truth["rois"]["lesion"]["perfusion"]
    assert doc["rois"]["lesion"]["perfusion"]["time_to_peak_s"] == pytest.approx(
        truth["time_to_peak_s"], abs=1.5)


def test_every_model_and_auto(tmp_path):
    t, y = _curves()
    out = fit_tic_curves(t, y[None], ("a",), "auto")
    assert out["rois"]["a"]["fit"]["model_selection"]["criterion"] == "aicc"
    for m in ("gamma", "ldrw"):
        assert fit_tic_curves(t, y[None], ("a",), m)["rois"]["a"]["model"] == m


def _good(tmp_path, name="tic.csv"):
    t, y = _curves()
    return t, y, tmp_path / name


@pytest.mark.parametrize(("edit", "says"), [
    (lambda rows: ["frame,lesion", *rows[1:]], "no time column"),
    (lambda rows: [rows[0], rows[1].split(",")[0] + ",abc", *rows[2:]],
     "'lesion', row 2: 'abc' is not a number"),
    (lambda rows: [rows[0], *rows[1:5], rows[5].split(",")[0] + ",", *rows[6:]],
     "column 'lesion', row 6 is empty"),
    (lambda rows: [rows[0], *rows[1:5], rows[5].split(",")[0] + ",nan", *rows[6:]],
     "column 'lesion', row 6 is 'nan'"),
    (lambda rows: [rows[0], *rows[1:4], rows[4], rows[4], *rows[5:]], "repeats"),
    (lambda rows: [rows[0], rows[2], rows[1], *rows[3:]], "is earlier than"),
    (lambda rows: rows[:MIN_SAMPLES], f"at least {MIN_SAMPLES}"),
    (lambda rows: ["time_s", *[r.split(",")[0] for r in rows[1:]]], "no ROI column"),
    (lambda rows: ["time_s,a,a", *[r + ",1" for r in rows[1:]]], "more than one column"),
])
def test_bad_csv_is_one_line_naming_the_file(tmp_path, edit, says):
    t, y, path = _good(tmp_path)
    rows = ["time_s,lesion", *(f"{float(a)!r},{float(b)!r}" for a, b in zip(t, y, strict=True))]
    path.write_text("\n".join(edit(rows)) + "\n")
    with pytest.raises(InputError) as exc:
        fit_tic_to_dir(path, tmp_path / "out", linear=True)
    msg = str(exc.value)
    assert says in msg and "tic.csv" in msg and "\n" not in msg
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_negative_linear_and_out_of_range_display_values(tmp_path):
    t, y = _curves()
    neg = _write(tmp_path / "neg.csv", ["time_s", "lesion"], [t, y - 1.0])
    with pytest.raises(InputError, match=r"neg\.csv.*is negative"):
        fit_tic_to_dir(neg, tmp_path / "out", linear=True)
    big = _write(tmp_path / "big.csv", ["time_s", "lesion"], [t, y * 100.0])
    with pytest.raises(InputError, match=r"big\.csv.*outside the display range 0\.\.255"):
        fit_tic_to_dir(big, tmp_path / "out", dynamic_range_db=60.0)
    table = read_tic_csv(big)
    with pytest.raises(InputError, match=r"--linear .* or --dynamic-range"):
        linear_curves(table)
    assert not (tmp_path / "out").exists()


def test_cli_exit_codes(tmp_path, capsys):
    t, y = _curves()
    csv = _write(tmp_path / "tic.csv", ["time_s", "lesion"], [t, y])
    out = tmp_path / "out"
    assert main(["fit", str(csv), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--linear" in err and "--dynamic-range" in err and len(err.splitlines()) == 1
    assert main(["fit", str(csv), "--out", str(out), "--linear", "--dynamic-range", "60"]) == 2
    assert main(["fit", str(csv), "--out", str(out), "--linear", "--model", "gamma"]) == 0
    assert json.loads((out / "results.json").read_text())["rois"]["lesion"]["model"] == "gamma"
    assert main(["fit", str(csv), "--out", str(out), "--linear"]) == 2  # earlier results
    assert "--overwrite" in capsys.readouterr().err
    assert main(["fit", str(csv), "--out", str(out), "--linear", "--overwrite"]) == 0
    assert main(["fit", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o2"), "--linear"]) == 2


def test_roi_names_are_escaped_and_semicolons_refused(tmp_path):
    t, y = _curves()
    csv = _write(tmp_path / "tic.csv", ["Time", "<b>x</b>"], [t, y])
    _, paths = fit_tic_to_dir(csv, tmp_path / "out", linear=True)
    html = paths["report"].read_text()
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    semi = tmp_path / "semi.csv"
    semi.write_text("time_s;lesion\n" + "".join(f"{a};{b}\n" for a, b in zip(t, y, strict=True)))
    with pytest.raises(InputError, match="separated by ';'"):
        read_tic_csv(semi)
