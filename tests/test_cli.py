"""The command line from the outside: exit codes, one-line errors, outputs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ceuskit.cli import main
from ceuskit.io.arrays import write_npz
from ceuskit.io.dicom_out import write_dicom_cine
from ceuskit.simulate import SimulationSpec, simulate, write_phantom

CONTRACT_PERFUSION = {
    "arrival_time_s", "time_to_peak_s", "rise_time_s", "mean_transit_time_s", "fall_time_s",
    "peak_enhancement", "auc", "wash_in_rate", "wash_out_rate", "wash_in_auc", "wash_out_auc",
    "wash_in_perfusion_index", "qof",
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A small tumour phantom written as DICOM, with its ROI file."""
    out = tmp_path_factory.mktemp("phantom")
    phantom = simulate(SimulationSpec(scenario="tumor", seed=3, fps=4.0, duration_s=60.0))
    files = write_phantom(phantom, out, "dicom")
    return phantom, files


def run(argv, capsys):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_usage_error(code, err, *needles):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def test_analyze_writes_contract_keys(study, tmp_path, capsys):
    phantom, files = study
    out = tmp_path / "res"
    code, stdout, err = run(["analyze", files["cine"], "--roi", files["rois"], "--out", out], capsys)
    assert code == 0, err
    assert (out / "report.html").is_file()
    res = json.loads((out / "results.json").read_text())
    assert "not a diagnosis" in res["disclaimer"]
    for name in ("lesion", "muscle", "lumen"):
        roi = res["rois"][name]
        assert set(roi["perfusion"]) == CONTRACT_PERFUSION
        assert roi["enhancing"] is True and roi["model"] == "lognormal"
        assert len(roi["tic"]["times_s"]) == len(roi["tic"]["intensity"]) == phantom.times_s.size
        assert roi["tic"]["times_s"][0] == 0.0
        assert 0.0 <= roi["perfusion"]["qof"] <= 1.0
    assert res["panels"]["contrast"]["bounds_xyxy"] == list(phantom.contrast_panel.bounds)
    assert res["rois"]["lesion"]["relative_to_reference"]["peak_enhancement_ratio"] > 1.0
    assert str(out / "report.html") in stdout
    # The answer and the disclaimer, before the paths; the report's path last.
    assert "finding: the lesion enhances on CEUS" in stdout and "level of suspicion" in stdout
    assert "not a diagnosis" in stdout and stdout.strip().splitlines()[-1].endswith("report.html")
    html = (out / "report.html").read_text()
    assert "not a diagnosis" in html and "Time to peak" in html and "data:image/png;base64" in html


def test_refuses_to_overwrite_then_overwrites(study, tmp_path, capsys):
    _, files = study
    out = tmp_path / "res"
    args = ["analyze", files["cine"], "--roi", files["rois"], "--out", out, "--quiet"]
    assert run(args, capsys)[0] == 0
    before = (out / "results.json").read_bytes()
    code, _, err = run(args, capsys)
    assert_usage_error(code, err, "already holds", "--overwrite")
    assert (out / "results.json").read_bytes() == before
    assert run([*args, "--overwrite"], capsys)[0] == 0
    assert (out / "maps").is_dir()
    # --overwrite replaces the whole set: no maps/ left beside results that say none were made.
    assert run([*args, "--overwrite", "--no-maps"], capsys)[0] == 0
    assert not (out / "maps").exists()
    assert json.loads((out / "results.json").read_text())["maps"]["computed"] is False


def test_simulate_cli_and_bland_is_not_enhancing(tmp_path, capsys):
    code, _stdout, err = run(["simulate", tmp_path / "b", "--scenario", "bland", "--seed", "1",
                             "--fps", "4", "--duration", "50", "--format", "npz"], capsys)
    assert code == 0, err
    assert {"cine.npz", "truth.json", "rois.json"} <= {p.name for p in (tmp_path / "b").iterdir()}
    code, _, err = run(["analyze", tmp_path / "b" / "cine.npz", "--roi", tmp_path / "b" / "rois.json",
                        "--out", tmp_path / "r", "--quiet"], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["rois"]["lesion"]["enhancing"] is False
    assert res["rois"]["lesion"]["model"] == "none"
    assert res["rois"]["lumen"]["enhancing"] is True


def test_simulate_bad_option(tmp_path, capsys):
    code, _, err = run(["simulate", tmp_path, "--necrosis", "1.5"], capsys)
    assert_usage_error(code, err, "necrosis")


def test_usage_errors_are_one_line(capsys):
    code, _, err = run(["analyze"], capsys)
    assert_usage_error(code, err)
    code, _, err = run(["frobnicate"], capsys)
    assert_usage_error(code, err)


# --- bad inputs: exit 2, one line naming the file, nothing written -----------------

def _small_dicom(path, n=12, times=None, **kw):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 200, size=(n, 40, 60), dtype=np.uint8)
    t = np.arange(n) * 0.1 if times is None else np.asarray(times)
    return write_dicom_cine(path, frames, t, **kw)


def _rois(tmp_path, doc=None):
    p = tmp_path / "rois.json"
    doc = doc or {"space": "panel", "rois": [{"name": "a", "role": "lesion", "ellipse": [30, 20, 8, 6]}]}
    p.write_text(json.dumps(doc))
    return p


def _expect_bad(tmp_path, capsys, cine, rois, *needles, extra=()):
    out = tmp_path / "out"
    code, _, err = run(["analyze", cine, "--roi", rois, "--out", out, *extra], capsys)
    assert_usage_error(code, err, *needles)
    assert not (out / "results.json").exists() and not (out / "report.html").exists()
    leftovers = [p.name for p in out.iterdir()] if out.exists() else []
    assert leftovers == [], leftovers


def test_not_a_cine(tmp_path, capsys):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n" * 50)
    _expect_bad(tmp_path, capsys, bad, _rois(tmp_path), "notes.mp4")


def test_single_frame(tmp_path, capsys):
    cine = _small_dicom(tmp_path / "one.dcm", n=1, times=[0.0])
    _expect_bad(tmp_path, capsys, cine, _rois(tmp_path), "one.dcm", "single frame")


def test_no_timing_without_fps_then_with_fps(tmp_path, capsys):
    path = _small_dicom(tmp_path / "untimed.dcm")
    ds = pydicom.dcmread(path)
    for kw in ("FrameTime", "FrameTimeVector", "CineRate", "RecommendedDisplayFrameRate",
               "FrameIncrementPointer"):
        if kw in ds:
            delattr(ds, kw)
    ds.save_as(path)
    _expect_bad(tmp_path, capsys, path, _rois(tmp_path), "untimed.dcm", "--fps")
    code, _, err = run(["analyze", path, "--roi", _rois(tmp_path), "--out", tmp_path / "ok",
                        "--fps", "10", "--quiet"], capsys)
    assert code == 0, err


def test_duplicate_timestamps(tmp_path, capsys):
    times = np.arange(12) * 0.1
    times[5] = times[4]
    path = write_npz(tmp_path / "dup.npz", np.zeros((12, 40, 60), np.uint8), times)
    _expect_bad(tmp_path, capsys, path, _rois(tmp_path), "dup.npz", "increasing")


def test_unsupported_transfer_syntax(tmp_path, capsys):
    path = _small_dicom(tmp_path / "hevc.dcm")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.HEVCMP51
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64] * 12)
    ds.save_as(path, enforce_file_format=True)
    _expect_bad(tmp_path, capsys, path, _rois(tmp_path), "hevc.dcm")


def test_truncated_pixel_data(tmp_path, capsys):
    path = _small_dicom(tmp_path / "cut.dcm")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 5000])
    _expect_bad(tmp_path, capsys, path, _rois(tmp_path), "cut.dcm")


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"space": "panel", "rois": [{"name": "a", "role": "lesion", "ellipse": [58, 20, 8, 6]}]},
         "outside"),
        ({"space": "panel", "rois": [{"name": "a", "role": "lesion",
                                      "polygon": [[5.1, 5.1], [5.3, 5.1], [5.2, 5.3]]}]}, "no pixel"),
        ({"space": "panel", "rois": [{"name": "a", "ellipse": [30, 20, 8, 6]}]}, "role"),
        ({"space": "panel", "rois": [{"name": "a", "role": "lesion", "mask": "m.npy"}]}, "shape"),
    ],
)
def test_bad_rois(tmp_path, capsys, doc, needle):
    np.save(tmp_path / "m.npy", np.ones((5, 5), bool))
    cine = _small_dicom(tmp_path / "c.dcm")
    _expect_bad(tmp_path, capsys, cine, _rois(tmp_path, doc), "rois.json", needle)


def test_roi_not_json(tmp_path, capsys):
    p = tmp_path / "rois.json"
    p.write_text("{'rois': oops")
    _expect_bad(tmp_path, capsys, _small_dicom(tmp_path / "c.dcm"), p, "rois.json", "JSON")


def test_output_not_writable(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cine = _small_dicom(tmp_path / "c.dcm")
    code, _, err = run(["analyze", cine, "--roi", _rois(tmp_path), "--out", blocker / "sub"], capsys)
    assert_usage_error(code, err, "file")


def test_colour_contrast_panel_refused(tmp_path, capsys):
    rgb = np.zeros((12, 40, 60, 3), np.uint8)
    rgb[..., 0] = 200  # a red-tinted colour map over the whole frame
    rgb[..., 1] = np.linspace(0, 150, 60, dtype=np.uint8)
    path = write_npz(tmp_path / "colour.npz", rgb, np.arange(12) * 0.1)
    _expect_bad(tmp_path, capsys, path, _rois(tmp_path), "colour.npz", "colour")


def test_bad_panel_and_dynamic_range(tmp_path, capsys):
    cine = _small_dicom(tmp_path / "c.dcm")
    _expect_bad(tmp_path, capsys, cine, _rois(tmp_path), "--panel", extra=["--panel", "0,0,999,10"])
    _expect_bad(tmp_path, capsys, cine, _rois(tmp_path), "--dynamic-range",
                extra=["--dynamic-range", "3"])
    code, _, err = run(["analyze", cine, "--roi", _rois(tmp_path), "--panel", "1,2,x"], capsys)
    assert_usage_error(code, err, "X0,Y0,X1,Y1")


def test_console_script_runs_as_a_subprocess(tmp_path):
    # The installed entry point, as a user runs it (no terminal: no progress output).
    proc = subprocess.run([sys.executable, "-m", "ceuskit.cli", "analyze", str(tmp_path / "none.dcm"),
                           "--roi", str(tmp_path / "r.json")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "none.dcm" in proc.stderr
    assert Path(sys.executable).exists()


def test_demo_end_to_end(tmp_path, capsys):
    code, stdout, err = run(["demo", "--out", tmp_path / "demo", "--quiet"], capsys)
    assert code == 0, err
    report = Path(stdout.strip().splitlines()[-1].removeprefix("report: "))
    assert report.is_absolute() and report.is_file()
    assert "not a diagnosis" in stdout
    res = json.loads((tmp_path / "demo" / "results.json").read_text())
    truth = json.loads((tmp_path / "demo" / "phantom" / "truth.json").read_text())
    assert res["rois"]["lesion"]["enhancing"] is True
    ttp = res["rois"]["lesion"]["perfusion"]["time_to_peak_s"]
    assert abs(ttp - truth["rois"]["lesion"]["perfusion"]["time_to_peak_s"]) < 1.5
    # A second demo into the same directory refuses rather than overwrite.
    code, _, err = run(["demo", "--out", tmp_path / "demo", "--quiet"], capsys)
    assert_usage_error(code, err, "already holds")


def test_installed_console_script(tmp_path):
    import shutil

    exe = shutil.which("ceuskit")
    assert exe is not None, "the ceuskit console script is not on PATH (pip install -e .)"
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("ceuskit ")


def test_two_references_say_which_is_used(study, tmp_path, capsys):
    _, files = study
    doc = json.loads(Path(files["rois"]).read_text())
    ref = next(r for r in doc["rois"] if r["role"] == "reference")
    doc["rois"].append({**ref, "name": "second muscle"})
    roi = tmp_path / "rois.json"
    roi.write_text(json.dumps(doc))
    code, _, err = run(["analyze", files["cine"], "--roi", roi, "--out", tmp_path / "r", "--quiet",
                        "--no-maps"], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    w = next(w for w in res["warnings"] if w["code"] == "several-reference-rois")
    assert f"'{ref['name']}', is used" in w["message"] and "second muscle" in w["message"]
    assert res["findings"]["reference_roi"] == ref["name"]


def test_every_option_of_every_command_has_help() -> None:
    import argparse

    from ceuskit.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {'/'.join(action.option_strings) or action.dest}"
               for name, command in sub.choices.items() for action in command._actions
               if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()]
    assert not missing, missing


def test_injection_time_moves_the_wash_out_clock(study, tmp_path, capsys):
    _, files = study
    base = ["analyze", files["cine"], "--roi", files["rois"], "--quiet", "--no-maps"]
    assert run([*base, "--out", tmp_path / "a"], capsys)[0] == 0
    code, _, err = run([*base, "--out", tmp_path / "b", "--injection-time", "-40"], capsys)
    assert code == 0, err
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert b["analysis"]["injection_time_s"] == -40.0
    assert b["findings"]["definitions"]["injection_time_s"] == -40.0
    wa, wb = a["findings"]["wash_out"], b["findings"]["wash_out"]
    assert wa["present"] is True and wa["onset_s"] == wb["onset_s"]
    # The same onset, 40 s later after the injection: early becomes late once past 60 s.
    assert wa["timing"] == ("early" if wa["onset_s"] < 60 else "late")
    assert wb["timing"] == ("early" if wb["onset_s"] + 40 < 60 else "late")
    assert (wa["timing"], wb["timing"]) == ("early", "late")  # this phantom: onset 22.5 s
    code, _, err = run([*base, "--out", tmp_path / "c", "--injection-time", "nan"], capsys)
    assert_usage_error(code, err, "--injection-time")


def test_dynamic_range_auto_is_parsed(tmp_path, capsys):
    from ceuskit.cli import build_parser

    args = build_parser().parse_args(["analyze", "c.dcm", "--roi", "r.json", "--dynamic-range", "AUTO"])
    assert args.dynamic_range == "auto"
    code, _, err = run(["analyze", "c.dcm", "--roi", "r.json", "--dynamic-range", "loud"], capsys)
    assert_usage_error(code, err, "neither a number of dB nor auto")


def test_simulate_dynamic_range_then_analyze_auto(tmp_path, capsys):
    # A new user's round trip: a cine made at 45 dB, analysed without knowing it.
    code, _, _ = run(["simulate", tmp_path / "sim", "--format", "npz", "--fps", "2", "--duration", "60",
                      "--dynamic-range", "45"], capsys)
    assert code == 0
    truth = json.loads((tmp_path / "sim" / "truth.json").read_text())
    assert truth["dynamic_range_db"] == 45.0
    code, _, err = run(["analyze", tmp_path / "sim" / "cine.npz", "--roi", tmp_path / "sim" / "rois.json",
                        "--out", tmp_path / "out", "--dynamic-range", "auto", "--no-maps"], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    lin = doc["linearization"]
    assert lin["dynamic_range_source"] == "estimated" and abs(lin["dynamic_range_db"] - 45.0) <= 3.0
    assert doc["parameters"]["dynamic_range_db"] == "auto"
    # 60 typed is the scanner's setting, given and exact, though it equals the default.
    code, _, err = run(["analyze", tmp_path / "sim" / "cine.npz", "--roi", tmp_path / "sim" / "rois.json",
                        "--out", tmp_path / "given", "--dynamic-range", "60", "--no-maps"], capsys)
    assert code == 0, err
    given = json.loads((tmp_path / "given" / "results.json").read_text())
    assert given["linearization"]["dynamic_range_source"] == "user"
    assert given["linearization"].get("level_scale") is None
    assert "dynamic-range-disagrees" in [w["code"] for w in given["warnings"]]
    assert "the value given" in next(w["message"] for w in given["warnings"]
                                     if w["code"] == "dynamic-range-disagrees")
    # The maps estimate it the same way and record it in maps.json.
    code, _, err = run(["map", tmp_path / "sim" / "cine.npz", "--roi", tmp_path / "sim" / "rois.json",
                        "--out", tmp_path / "maps", "--dynamic-range", "auto", "--quiet"], capsys)
    assert code == 0, err
    src = json.loads((tmp_path / "maps" / "maps.json").read_text())["source"]
    assert src["dynamic_range_source"] == "estimated"
    assert src["dynamic_range_db"] == pytest.approx(lin["dynamic_range_db"], abs=1e-9)
    # ... with the same record of what the speckle check looked for.
    assert src["dynamic_range_estimate"] == lin["dynamic_range_estimate"]
    assert src["dynamic_range_estimate"]["persistence"]["detected"] is False
    assert src["dynamic_range_estimate"]["resampling"]["detected"] is False
    code, _, err = run(["simulate", tmp_path / "bad", "--dynamic-range", "200"], capsys)
    assert_usage_error(code, err, "--dynamic-range")
