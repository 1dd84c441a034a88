"""ceuskit batch: a simulated cohort, isolated failures, resumption, Dask, the database."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ceuskit.batch import CASE_RECORD, read_manifest, run_batch
from ceuskit.cli import main
from ceuskit.errors import InputError
from ceuskit.params import Parameters, load_params, parse_params
from ceuskit.simulate import SimulationSpec, simulate, write_phantom

#: (scenario, format) of the cohort's ten good cases: tumour and bland, three formats.
GOOD = [("tumor", "dicom"), ("bland", "npz"), ("tumor", "npz"), ("bland", "dicom"),
        ("tumor", "mp4"), ("bland", "npz"), ("tumor", "dicom"), ("bland", "mp4"),
        ("tumor", "npz"), ("bland", "dicom")]
FAST = "maps: false\npdf: false\nmotion: off\n"


def _write_cohort(root: Path) -> Path:
    rows = ["id,cine,roi,label,site"]
    for i, (scenario, fmt) in enumerate(GOOD):
        files = write_phantom(simulate(SimulationSpec(scenario=scenario, seed=i, fps=4.0,
                                                      duration_s=60.0)), root / f"c{i}", fmt)
        rows.append(f"P{i:02d},{files['cine'].relative_to(root)},{files['rois'].relative_to(root)},"
                    f"{'tumor' if scenario == 'tumor' else 'bland'},site{i}")
    (root / "broken.dcm").write_bytes(b"DICM" + b"\x00" * 300)  # not a readable cine
    rows.append("BROKEN,broken.dcm,c0/rois.json,tumor,x")
    rows.append("NOROI,c1/cine.npz,nowhere/rois.json,bland,y")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root / "manifest.csv"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """The 12-case cohort run once (2 at a time), as the tests below read it."""
    root = tmp_path_factory.mktemp("cohort")
    manifest = _write_cohort(root)
    (root / "fast.yaml").write_text(FAST)
    out = root / "out"
    result = run_batch(manifest, out, params_path=root / "fast.yaml", jobs=2)
    return root, manifest, out, result


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "summary.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_cohort_summary_and_isolated_failures(cohort):
    _root, _manifest, out, result = cohort
    assert len(result.records) == 12 and len(result.ran) == 12
    status = {cid: r["status"] for cid, r in result.records.items()}
    assert status.pop("BROKEN") == "failed" and status.pop("NOROI") == "failed"
    assert set(status.values()) == {"ok"}
    rows = _rows(out)
    by_case: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_case.setdefault(row["id"], []).append(row)
    assert list(by_case) == [*(f"P{i:02d}" for i in range(10)), "BROKEN", "NOROI"]  # manifest order
    broken, = by_case["BROKEN"]
    assert broken["status"] == "failed" and broken["roi"] == "" and "broken.dcm" in broken["error"]
    noroi, = by_case["NOROI"]
    assert "rois.json" in noroi["error"] and "\n" not in noroi["error"]
    lesion = next(r for r in by_case["P00"] if r["role"] == "lesion")
    assert lesion["site"] == "site0" and lesion["label"] == "tumor"  # extra columns copied
    assert float(lesion["peak_enhancement_au"]) > 0 and float(lesion["time_to_peak_s"]) > 0
    assert {"auc_au_s", "wash_in_rate_au_per_s", "necrosis_fraction"} <= set(lesion)
    # How sure the amplitudes are: the DR behind them and the ratio's range (the
    # cohort runs at the default, which the speckle checks: a span, not exact).
    assert lesion["dynamic_range_db"] == "60.0" and lesion["dynamic_range_source"] == "default"
    assert float(lesion["dynamic_range_low_db"]) <= 60.0 <= float(lesion["dynamic_range_high_db"])
    assert lesion["lossy_compression"] == "false"
    ratio = float(lesion["peak_enhancement_ratio"])
    assert float(lesion["peak_enhancement_ratio_low"]) <= ratio <= float(
        lesion["peak_enhancement_ratio_high"])
    # The simulator's tumours enhance and bland clots do not: the level follows.
    levels = {cid: rs[0]["level"] for cid, rs in by_case.items() if rs[0]["status"] == "ok"}
    for i, (scenario, _fmt) in enumerate(GOOD):
        assert (levels[f"P{i:02d}"] == "high") == (scenario == "tumor"), (i, levels)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["parameters"]["maps"] is False and prov["scheduler"].startswith("none")
    assert prov["cases"]["P00"]["inputs"]["cine"] == _sha(out.parent / "c0" / "cine.dcm")
    assert {"numpy", "scipy", "dask", "pydicom"} <= set(prov["versions"])
    # The cohort report: the failures with their reasons, and ROC on the labelled cases.
    html = (out / "cohort.html").read_text()
    assert "BROKEN" in html and "broken.dcm" in html and "AUC" in html
    assert "its range over the dynamic range's span" in html and "60.0 (default, " in html
    assert result.paths["cohort_html"] == out / "cohort.html"
    from ceuskit.cohort_report import cohort_statistics

    roc = cohort_statistics(_rows(out))["roc"]["peak_enhancement_au"]
    # Simulated tumours enhance and bland clots do not: perfectly separable.
    assert (roc["n_pos"], roc["n_neg"], roc["auc"]) == (5, 5, 1.0)


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_case_equals_a_single_analyze_run(cohort, tmp_path, capsys):
    root, _manifest, out, _result = cohort
    single = tmp_path / "single"
    code = main(["analyze", str(root / "c6" / "cine.dcm"), "--roi", str(root / "c6" / "rois.json"),
                 "--out", str(single), "--params", str(root / "fast.yaml"), "--quiet"])
    capsys.readouterr()
    assert code == 0
    assert (single / "results.json").read_bytes() == (out / "cases" / "P06" / "results.json").read_bytes()
    res = json.loads((single / "results.json").read_text())
    assert res["parameters"]["maps"] is False and res["parameters"]["motion"] == "off"
    row = next(r for r in _rows(out) if r["id"] == "P06" and r["roi"] == "lesion")
    assert float(row["peak_enhancement_au"]) == res["rois"]["lesion"]["perfusion"]["peak_enhancement"]


def test_rerun_recomputes_nothing_and_the_database_has_the_cohort(cohort):
    root, manifest, out, _result = cohort
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "cases").glob("P*/results.json")}
    again = run_batch(manifest, out, params_path=root / "fast.yaml", jobs=2, report=False)
    assert sorted(again.ran) == ["BROKEN", "NOROI"]  # failed cases are tried again
    assert len(again.skipped) == 10
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    db = sqlite3.connect(out / "ceuskit.db")
    try:
        cases = dict(db.execute("SELECT case_id, status FROM cohort_cases").fetchall())
        assert len(cases) == 12 and cases["BROKEN"] == "failed" and cases["P04"] == "ok"
        pe = db.execute("SELECT p.peak_enhancement_au FROM cohort_cases c JOIN cohort_roi_parameters p "
                        "ON p.cohort_case_id = c.id WHERE c.case_id = 'P00' AND p.role = 'lesion'"
                        ).fetchone()[0]
        row = next(r for r in _rows(out) if r["id"] == "P00" and r["role"] == "lesion")
        assert pe == pytest.approx(float(row["peak_enhancement_au"]), rel=1e-12)
        # Each good case is a web study whose analysis is the case's directory.
        n_studies = db.execute("SELECT count(*) FROM studies").fetchone()[0]
        dirs = [d for (d,) in db.execute("SELECT result_dir FROM analyses WHERE status = 'done'")]
    finally:
        db.close()
    assert n_studies == 10  # a rerun does not file the unchanged cases again
    assert sorted(dirs) == sorted(f"cases/P{i:02d}" for i in range(10))


def test_cohort_case_opens_in_the_web_app(cohort):
    from fastapi.testclient import TestClient

    from ceuskit.web.app import WebConfig, create_app

    _root, _manifest, out, _result = cohort
    app = create_app(WebConfig(data_dir=out, job_mode="thread"))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        names = {s["display_name"]: s for s in client.get("/api/studies").json()}
        assert "P02" in names and "BROKEN" not in names
        sid = names["P02"]["id"]
        assert names["P02"]["current_analysis_id"]
        res = client.get(f"/api/studies/{sid}/results")
        assert res.status_code == 200
        assert res.json()["rois"]["lesion"]["perfusion"]["peak_enhancement"] > 0
        frame = client.get(f"/api/studies/{sid}/frames/0.png")
        assert frame.status_code == 200 and frame.content[:4] == b"\x89PNG"


def test_changed_parameter_recomputes_and_timeout(tmp_path):
    root = tmp_path
    files = write_phantom(simulate(SimulationSpec(scenario="tumor", seed=5, fps=4.0, duration_s=60.0)),
                          root / "c", "npz")
    (root / "m.csv").write_text(f"id,cine,roi\nA,{files['cine']},{files['rois']}\n")
    (root / "p.yaml").write_text(FAST)
    first = run_batch(root / "m.csv", root / "out", params_path=root / "p.yaml", report=False)
    assert first.ran == ["A"] and first.records["A"]["status"] == "ok"
    local = run_batch(root / "m.csv", root / "local", params_path=root / "p.yaml", report=False,
                      scheduler="local", jobs=1)
    assert local.records["A"]["status"] == "ok"
    assert "LocalCluster" in json.loads((root / "local" / "provenance.json").read_text())["scheduler"]
    assert (root / "local" / "cases" / "A" / "results.json").read_bytes() == \
        (root / "out" / "cases" / "A" / "results.json").read_bytes()
    (root / "p.yaml").write_text(FAST + "injection_time_s: -5\n")
    second = run_batch(root / "m.csv", root / "out", params_path=root / "p.yaml", report=False)
    assert second.ran == ["A"]
    res = json.loads((root / "out" / "cases" / "A" / "results.json").read_text())
    assert res["parameters"]["injection_time_s"] == -5.0
    (root / "t.yaml").write_text(FAST + "case_timeout_s: 1\n")
    third = run_batch(root / "m.csv", root / "out2", params_path=root / "t.yaml", report=False)
    assert third.records["A"]["status"] == "timeout" and "1 s" in third.records["A"]["error"]
    assert not (root / "out2" / "cases" / "A" / "results.json").exists()


def test_a_killed_run_resumes(tmp_path):
    root = tmp_path
    rows = ["id,cine,roi"]
    for i in range(3):
        f = write_phantom(simulate(SimulationSpec(scenario="bland", seed=20 + i, fps=4.0,
                                                  duration_s=60.0)), root / f"c{i}", "npz")
        rows.append(f"K{i},{f['cine']},{f['rois']}")
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    (root / "p.yaml").write_text(FAST)
    out = root / "out"
    proc = subprocess.Popen([sys.executable, "-m", "ceuskit.cli", "batch", str(root / "m.csv"),
                             "--out", str(out), "--params", str(root / "p.yaml"), "--quiet"],
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (out / "cases" / "K0" / CASE_RECORD).exists():
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the batch and the case it is running
    proc.wait()
    assert (out / "cases" / "K0" / CASE_RECORD).exists()
    assert not (out / "summary.csv").exists()
    resumed = run_batch(root / "m.csv", out, params_path=root / "p.yaml", report=False)
    assert "K0" in resumed.skipped and "K2" in resumed.ran
    assert {r["status"] for r in resumed.records.values()} == {"ok"}
    assert not list((out / "cases").glob(".tmp-*"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_distributed_run_equals_in_process(tmp_path):
    # dask[distributed] is a pinned dependency: its command line is always installed.
    found = Path(sys.executable).with_name("dask")
    dask_bin = found if found.exists() else Path(shutil.which("dask") or found)
    assert dask_bin.exists(), "the dask command line is missing: pip install -e '.[test]'"
    root = tmp_path
    rows = ["id,cine,roi"]
    for i, (scenario, fmt) in enumerate([("tumor", "dicom"), ("bland", "npz"), ("tumor", "npz")]):
        f = write_phantom(simulate(SimulationSpec(scenario=scenario, seed=40 + i, fps=4.0,
                                                  duration_s=60.0)), root / f"c{i}", fmt)
        rows.append(f"D{i},{f['cine']},{f['rois']}")
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    (root / "p.yaml").write_text(FAST)
    port = _free_port()
    procs = [subprocess.Popen([str(dask_bin), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(2.0)
        for _ in range(2):
            procs.append(subprocess.Popen([str(dask_bin), "worker", f"tcp://127.0.0.1:{port}",
                                           "--nthreads", "1", "--no-dashboard"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from dask.distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        dist = run_batch(root / "m.csv", root / "dist", params_path=root / "p.yaml",
                         scheduler=f"tcp://127.0.0.1:{port}", report=False)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    run_batch(root / "m.csv", root / "none", params_path=root / "p.yaml", report=False)
    assert "Dask cluster" in json.loads((root / "dist" / "provenance.json").read_text())["scheduler"]
    assert {r["status"] for r in dist.records.values()} == {"ok"}
    for cid in ("D0", "D1", "D2"):
        assert (root / "dist" / "cases" / cid / "results.json").read_bytes() == \
            (root / "none" / "cases" / cid / "results.json").read_bytes()
    assert (root / "dist" / "summary.csv").read_text() == (root / "none" / "summary.csv").read_text()


# --- manifest and parameter-file errors: one line naming the file and the field ---

def test_manifest_errors(tmp_path):
    m = tmp_path / "m.csv"
    for text, needle in [("id,cine\nA,x.dcm\n", "'roi'"),
                         ("id,cine,roi\nA b,x,y\n", "line 2"),
                         ("id,cine,roi\nA,x,y\nA,x,y\n", "used again"),
                         ("id,cine,roi,label\nA,x,y,cancer\n", "label 'cancer'"),
                         ("id,cine,roi\nA,,y\n", "cine cell is empty"),
                         ("id,cine,roi\n", "lists no cases")]:
        m.write_text(text)
        with pytest.raises(InputError, match=needle) as info:
            read_manifest(m)
        assert str(m) in str(info.value) and "\n" not in str(info.value)
    m.write_text("id,cine,roi,label,cohort\nA,a/x.dcm,a/r.json,tumor,first\n")
    spec, = read_manifest(m)
    assert spec.cine == tmp_path / "a" / "x.dcm" and spec.extra == {"cohort": "first"}


def test_parameter_file_errors(tmp_path):
    p = tmp_path / "p.yaml"
    for text, needle in [("dynamic_range: 50\n", "unknown field 'dynamic_range'.*dynamic_range_db"),
                         ("dynamic_range_db: 500\n", "field 'dynamic_range_db'.*outside"),
                         ("model: spline\n", "field 'model'"),
                         ("maps: yes please\n", "field 'maps'"),
                         ("panel: [1, 2, 3]\n", "field 'panel'"),
                         ("- a\n- b\n", "not a mapping"),
                         ("model: [unclosed\n", "not valid YAML")]:
        p.write_text(text)
        with pytest.raises(InputError, match=needle) as info:
            load_params(p)
        assert str(p) in str(info.value)
    params = parse_params({"dynamic_range_db": 50, "panel": [0, 0, 10, 20], "maps": False})
    assert params.dynamic_range_db == 50.0 and params.panel == (0, 0, 10, 20)
    assert params.analysis_options().dynamic_range_db == 50.0
    assert params.analysis_options().dynamic_range_source == "user"
    auto = parse_params({"dynamic_range_db": "auto"})
    assert auto.analysis_options().dynamic_range_source == "auto"
    assert Parameters.from_options(auto.analysis_options()).dynamic_range_db == "auto"


def test_cli_batch_errors(tmp_path, capsys):
    (tmp_path / "m.csv").write_text("id,cine,roi\nA,x,y\n")
    (tmp_path / "p.yaml").write_text("modle: gamma\n")
    code = main(["batch", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o"),
                 "--params", str(tmp_path / "p.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean 'model'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing written for a bad parameter file
    code = main(["batch", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o"),
                 "--scheduler", "cluster9"])
    assert code == 2 and "tcp://HOST:PORT" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    code = main(["batch", str(tmp_path / "m.csv"), "--out", str(tmp_path / "busy")])
    assert code == 2 and "holds no earlier batch run" in capsys.readouterr().err


def test_analyze_params_file_and_command_line_override(tmp_path, capsys):
    files = write_phantom(simulate(SimulationSpec(scenario="bland", seed=7, fps=4.0, duration_s=60.0)),
                          tmp_path / "c", "npz")
    (tmp_path / "p.yaml").write_text(FAST + "model: gamma\ndynamic_range_db: 50\n")
    code = main(["analyze", str(files["cine"]), "--roi", str(files["rois"]), "--out",
                 str(tmp_path / "o"), "--params", str(tmp_path / "p.yaml"), "--dynamic-range", "55",
                 "--quiet"])
    capsys.readouterr()
    assert code == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["parameters"]["model"] == "gamma" and res["parameters"]["dynamic_range_db"] == 55.0
    assert res["linearization"]["dynamic_range_db"] == 55.0
    assert not (tmp_path / "o" / "report.pdf").exists() and not (tmp_path / "o" / "maps").exists()
    from ceuskit.cli import _explicit_options

    # An abbreviated option (argparse accepts them) overrides the file too.
    typed = _explicit_options(["analyze", "c.npz", "--roi", "r.json", "--params", "p.yaml",
                                       "--dyn", "55", "--model=gamma"])
    assert {"dynamic_range", "model"} <= typed and "fps" not in typed and "motion" not in typed


def test_bad_database_url_fails_before_anything_is_written(tmp_path, capsys):
    (tmp_path / "m.csv").write_text("id,cine,roi\nA,x,y\n")
    code = main(["batch", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o"),
                 "--db", "nosuchdialect://nowhere/db"])
    err = capsys.readouterr().err
    assert code == 2 and "--db" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_parameter_defaults_are_analyze_defaults():
    """The parameter file's defaults cannot drift from analyze's (they are written twice)."""
    from dataclasses import asdict

    from ceuskit.pipeline import AnalysisOptions

    assert asdict(Parameters().analysis_options()) == asdict(AnalysisOptions())


def test_an_exam_of_several_clips_is_one_case(tmp_path, capsys):
    """A manifest row of three clips (";"-separated) is `ceuskit analyze CLIP1 CLIP2 CLIP3`."""
    from ceuskit.simulate_clips import write_clips

    ph = simulate(SimulationSpec(seed=2, fps=2.0, duration_s=150.0))
    files = write_clips(ph, tmp_path / "exam", [(0.0, 60.0), (90.0, 110.0), (130.0, 150.0)], "npz")
    clips = [files[f"clip-{k}"] for k in (1, 2, 3)]
    cell = ";".join(str(c.relative_to(tmp_path)) for c in clips)
    (tmp_path / "m.csv").write_text(
        f"id,cine,roi,clip_start_s,site\nE1,{cell},exam/rois.json,0;90;130,s1\n"
        f"E2,exam/clip-1.npz,exam/rois.json,,s2\n")
    (tmp_path / "p.yaml").write_text(FAST)
    specs = {s.id: s for s in read_manifest(tmp_path / "m.csv")}
    assert specs["E1"].cines == tuple(clips) and specs["E1"].clip_starts_s == (0.0, 90.0, 130.0)
    assert set(specs["E1"].inputs()) == {"cine", "cine_2", "cine_3", "roi"}
    assert specs["E2"].cines == (clips[0],) and specs["E2"].clip_starts_s is None
    assert specs["E1"].extra == {"site": "s1"}
    result = run_batch(tmp_path / "m.csv", tmp_path / "out", params_path=tmp_path / "p.yaml",
                       report=False)
    assert result.records["E1"]["status"] == "ok", result.records["E1"]["error"]
    assert set(result.records["E1"]["inputs"]) == {"cine", "cine_2", "cine_3", "roi"}
    single = tmp_path / "single"
    assert main(["analyze", *map(str, clips), "--roi", str(files["rois"]), "--clip-start-s", "0", "90",
                 "130", "--out", str(single), "--params", str(tmp_path / "p.yaml"), "--quiet"]) == 0
    capsys.readouterr()
    case = tmp_path / "out" / "cases" / "E1" / "results.json"
    assert case.read_bytes() == (single / "results.json").read_bytes()
    # Same exam, other clip starts: another key, so the case runs again.
    (tmp_path / "m.csv").write_text(f"id,cine,roi,clip_start_s\nE1,{cell},exam/rois.json,0;95;130\n")
    again = run_batch(tmp_path / "m.csv", tmp_path / "out", params_path=tmp_path / "p.yaml",
                      report=False)
    assert again.ran == ["E1"]


@pytest.mark.parametrize(("cine", "starts", "needle"), [
    ("a.npz;;b.npz", "", "empty clip"),
    ("a.npz;b.npz", "0", "2 clips but 1 clip start"),
    ("a.npz;b.npz", "0;x", "not a finite number"),
    ("a.npz;b.npz;c.npz", "0;nan;130", "not a finite number"),
    ("a.npz;b.npz", "0;inf", "not a finite number"),
    ("a.npz", "0", "only with several clips"),
])
def test_manifest_clip_errors(tmp_path, cine, starts, needle):
    (tmp_path / "m.csv").write_text(f"id,cine,roi,clip_start_s\nA,{cine},r.json,{starts}\n")
    with pytest.raises(InputError, match=needle) as err:
        read_manifest(tmp_path / "m.csv")
    assert "line 2" in str(err.value)
