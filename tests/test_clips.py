"""Exams in several clips on one clock (`ceuskit.clips`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ceuskit.cli import main
from ceuskit.clips import gaps
from ceuskit.errors import InputError
from ceuskit.io.arrays import write_npz
from ceuskit.io.dicom import dicom_time_of_day_s
from ceuskit.io.dicom_out import write_dicom_cine
from ceuskit.pipeline import AnalysisOptions, analyze
from ceuskit.simulate import SimulationSpec, simulate
from ceuskit.simulate_clips import write_clips

#: A 150 s exam recorded as three clips (s on the exam clock, ends included).
CLIPS_S = ((0.0, 60.0), (90.0, 110.0), (130.0, 150.0))
KEYS = ("peak_enhancement", "auc", "time_to_peak_s", "arrival_time_s", "mean_transit_time_s")


@pytest.fixture(scope="module")
def exam(tmp_path_factory):
    ph = simulate(SimulationSpec(seed=2, fps=2.0, duration_s=150.0))
    base = tmp_path_factory.mktemp("clips")
    regions = (ph.bmode_panel, ph.contrast_panel)
    t = ph.times_s
    parts = [np.flatnonzero((t >= a - 1e-9) & (t <= b + 1e-9)) for a, b in CLIPS_S]
    clips = []
    for k, idx in enumerate(parts):
        p = write_npz(base / f"clip{k}.npz", np.asarray(ph.frames[idx]), t[idx] - t[idx[0]],
                      regions=regions, spacing_mm=ph.spacing_mm)
        clips.append(p)
    kept = np.concatenate(parts)
    gapped = write_npz(base / "gapped.npz", np.asarray(ph.frames[kept]), t[kept], regions=regions,
                       spacing_mm=ph.spacing_mm)
    full = write_npz(base / "full.npz", np.asarray(ph.frames), t, regions=regions,
                     spacing_mm=ph.spacing_mm)
    rois = base / "rois.json"
    rois.write_text(json.dumps(ph.rois))
    return {"ph": ph, "clips": clips, "gapped": gapped, "full": full, "rois": rois,
            "parts": parts, "base": base}


def _numbers(res: dict) -> dict:
    return {(roi, k): res["rois"][roi]["perfusion"][k] for roi in res["rois"] for k in KEYS}


@pytest.fixture(scope="module")
def runs(exam):
    opts = AnalysisOptions(maps=False)
    starts = [a for a, _ in CLIPS_S]
    return {
        "clips": analyze(exam["clips"], exam["rois"], opts, clip_starts_s=starts).results(),
        "gapped": analyze(exam["gapped"], exam["rois"], opts).results(),
        "full": analyze(exam["full"], exam["rois"], opts).results(),
    }


def test_three_clips_are_the_single_cine_with_gaps(runs) -> None:
    clips, gapped = runs["clips"], runs["gapped"]
    acq = clips["acquisition"]
    assert [c["start_s"] for c in acq["clips"]] == [0.0, 90.0, 130.0]
    assert [c["n_frames"] for c in acq["clips"]] == [121, 41, 41]
    assert acq["gaps_s"] == [[60.0, 90.0], [110.0, 130.0]]
    assert acq["n_frames"] == 203 and acq["duration_s"] == 150.0
    assert clips["source"]["file"] == "clip0.npz + 2 more clip(s)"
    for key, value in _numbers(clips).items():
        assert value == pytest.approx(_numbers(gapped)[key], rel=1e-9, abs=1e-12), key
    assert clips["findings"] == gapped["findings"]


def test_fits_across_the_gaps_recover_the_full_cine(runs) -> None:
    # The gaps hold no data, so the fits see less; the lesion's and the
    # reference's parameters stay close to those of the uninterrupted cine.
    clips, full = _numbers(runs["clips"]), _numbers(runs["full"])
    for roi in ("lesion", "muscle"):
        for k in ("peak_enhancement", "time_to_peak_s", "auc"):
            assert clips[(roi, k)] == pytest.approx(full[(roi, k)], rel=0.05), (roi, k)
    assert runs["clips"]["findings"]["wash_out"] == runs["full"]["findings"]["wash_out"]


def test_clip_clock_from_dicom_acquisition_times(exam, tmp_path: Path) -> None:
    ph = exam["ph"]
    paths = []
    for k, (idx, (start, _)) in enumerate(zip(exam["parts"], CLIPS_S, strict=True)):
        p = write_dicom_cine(tmp_path / f"c{k}.dcm", np.asarray(ph.frames[idx]),
                             ph.times_s[idx] - ph.times_s[idx[0]],
                             regions=(ph.bmode_panel, ph.contrast_panel))
        ds = pydicom.dcmread(p)
        s = 10 * 3600 + 5 * 60 + start  # 10:05:00 + start
        ds.AcquisitionTime = f"{int(s // 3600):02d}{int(s % 3600 // 60):02d}{s % 60:09.6f}"
        ds.save_as(p)
        paths.append(p)
    res = analyze(paths, exam["rois"], AnalysisOptions(maps=False, motion="off")).results()
    assert [c["start_s"] for c in res["acquisition"]["clips"]] == [0.0, 90.0, 130.0]
    # Without acquisition times: refused, naming the fix.
    with pytest.raises(InputError, match="--clip-start-s"):
        analyze(exam["clips"], exam["rois"], AnalysisOptions(maps=False))


def test_bad_clip_sets_are_refused(exam) -> None:
    opts = AnalysisOptions(maps=False)
    with pytest.raises(InputError, match="2 start time"):
        analyze(exam["clips"], exam["rois"], opts, clip_starts_s=[0, 90])
    with pytest.raises(InputError, match="before the previous clip ends"):
        analyze(exam["clips"], exam["rois"], opts, clip_starts_s=[0, 30, 130])
    with pytest.raises(InputError, match="not all finite"):
        analyze(exam["clips"], exam["rois"], opts, clip_starts_s=[0, float("nan"), 130])
    # One clip with two start times is a mistake too, not ignored.
    with pytest.raises(InputError, match="2 start time"):
        analyze(exam["clips"][:1], exam["rois"], opts, clip_starts_s=[0, 90])


def test_differing_settings_are_warned(exam, tmp_path: Path) -> None:
    ph = exam["ph"]
    idx = exam["parts"][1]
    other = write_npz(tmp_path / "moved.npz", np.asarray(ph.frames[idx]),
                      ph.times_s[idx] - ph.times_s[idx[0]], regions=(ph.bmode_panel, ph.contrast_panel),
                      spacing_mm=(0.25, 0.25))
    res = analyze([exam["clips"][0], other], exam["rois"], AnalysisOptions(maps=False),
                  clip_starts_s=[0, 90]).results()
    (w,) = [w for w in res["warnings"] if w["code"] == "clip-settings-differ"]
    assert "pixel spacing" in w["message"]


def test_dicom_times_of_day() -> None:
    assert dicom_time_of_day_s("100530.25") == pytest.approx(36330.25)
    assert dicom_time_of_day_s("20261203100530") == pytest.approx(36330.0)
    assert dicom_time_of_day_s("1005") == pytest.approx(36300.0)
    assert dicom_time_of_day_s("") is None and dicom_time_of_day_s("99") is None
    assert gaps(np.array([0.0, 0.5, 1.0, 10.0, 10.5, 11.0])) == [(1.0, 10.0)]


def test_cli_analyzes_clips(exam, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    rc = main(["analyze", *map(str, exam["clips"]), "--roi", str(exam["rois"]), "--out", str(out),
               "--no-maps", "--clip-start-s", "0", "90", "130", "--quiet"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert len(res["acquisition"]["clips"]) == 3
    assert "finding:" in capsys.readouterr().out


def test_simulated_dicom_clips_round_trip(tmp_path: Path, capsys) -> None:
    ph_dir = tmp_path / "ph"
    assert main(["simulate", str(ph_dir), "--fps", "2", "--duration", "150",
                 "--clips", "0-60,90-110,130-150"]) == 0
    truth = json.loads((ph_dir / "truth.json").read_text())
    assert [c["start_s"] for c in truth["clips"]] == [0.0, 90.0, 130.0]
    out = tmp_path / "out"
    clips = [str(ph_dir / f"clip-{k}.dcm") for k in (1, 2, 3)]
    assert main(["analyze", *clips, "--roi", str(ph_dir / "rois.json"), "--out", str(out),
                 "--no-maps", "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [c["start_s"] for c in res["acquisition"]["clips"]] == [0.0, 90.0, 130.0]
    assert res["acquisition"]["gaps_s"] == [[60.0, 90.0], [110.0, 130.0]]
    # The declared gaps between clips are no dropped frames.
    assert not [w for w in res["warnings"] if w["code"] == "time-gap"]
    # The report names the clips and the gaps.
    report = (out / "report.html").read_text()
    assert "3 clips on one clock: clip-1.dcm from 0 s (121 frames, 60 s); clip-2.dcm from 90 s" in report
    assert "no data in the gaps 60–90 s, 110–130 s" in report
    capsys.readouterr()
    assert main(["simulate", str(tmp_path / "bad"), "--clips", "0-60,50-70"]) == 2
    assert "starts before the previous one ends" in capsys.readouterr().err
    # Clips past the simulated cine's end (default 90 s): refused before anything is written.
    assert main(["simulate", str(tmp_path / "short"), "--clips", "0-60,90-110,130-150"]) == 2
    assert "add --duration 150" in capsys.readouterr().err
    assert not (tmp_path / "short").exists()


def test_clip_starts_before_the_clips_are_explained(tmp_path: Path, capsys) -> None:
    rc = main(["analyze", "--clip-start-s", "0", "90", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"),
               "--roi", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "give it after the clips" in err and "a.npz" in err
    assert main(["analyze", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--roi",
                 str(tmp_path / "r.json"), "--clip-start-s", "0", "nan"]) == 2
    assert "not a finite start time" in capsys.readouterr().err


def test_write_clips_checks_every_span_before_writing(tmp_path: Path) -> None:
    ph = simulate(SimulationSpec(seed=1, fps=1.0, duration_s=60.0))
    with pytest.raises(ValueError, match="fewer than two frames"):
        write_clips(ph, tmp_path / "exam", [(0.0, 30.0), (70.0, 80.0)], "npz")
    assert not (tmp_path / "exam").exists() or not any((tmp_path / "exam").iterdir())


def test_dicom_objects_need_dicom_clips(exam, tmp_path: Path, capsys) -> None:
    rc = main(["analyze", *map(str, exam["clips"]), "--roi", str(exam["rois"]), "--out",
               str(tmp_path / "o"), "--clip-start-s", "0", "90", "130", "--dicom", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "clip0.npz" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "results.json").exists()


def test_dicom_objects_of_an_exam_reference_the_clip_of_their_frame(tmp_path: Path, capsys) -> None:
    """SEG, SR and Parametric Maps of a three-clip exam point at the clip holding the ROI frame
    (here frame 130 of the exam: clip 2's frame 9, number 10), and pass dciodvfy."""
    import highdicom as hd

    from ceuskit.cine import Panel
    from ceuskit.roi import load_roi_file
    from tests.io.test_dicom_derived import _dciodvfy

    ph_dir = tmp_path / "ph"
    assert main(["simulate", str(ph_dir), "--fps", "2", "--duration", "150",
                 "--clips", "0-60,90-110,130-150"]) == 0
    clips = [ph_dir / f"clip-{k}.dcm" for k in (1, 2, 3)]
    out = tmp_path / "out"
    assert main(["analyze", *map(str, clips), "--roi", str(ph_dir / "rois.json"), "--out", str(out),
                 "--reference-frame", "130", "--dicom", "--quiet"]) == 0
    capsys.readouterr()
    res = json.loads((out / "results.json").read_text())
    assert [c["n_frames"] for c in res["acquisition"]["clips"]] == [121, 41, 41]
    assert res["motion"]["reference_frame"]["index"] == 130
    source = pydicom.dcmread(clips[1], stop_before_pixels=True)
    seg = hd.seg.segread(out / "dicom" / "seg.dcm")
    # One exam: the simulated clips share the study and the frame of reference.
    heads = [pydicom.dcmread(c, stop_before_pixels=True) for c in clips]
    assert len({(h.StudyInstanceUID, h.FrameOfReferenceUID) for h in heads}) == 1
    assert len({h.SOPInstanceUID for h in heads}) == 3
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID \
        == source.SOPInstanceUID
    got = seg.get_pixels_by_source_frame(source.SOPInstanceUID, source_frame_numbers=[10],
                                         combine_segments=False)
    x0, y0, x1, y1 = res["panels"]["contrast"]["bounds_xyxy"]
    rois = load_roi_file(ph_dir / "rois.json", panel=Panel(x0=x0, y0=y0, x1=x1, y1=y1),
                         frame_shape=(int(source.Rows), int(source.Columns)))
    for i, r in enumerate(rois):
        np.testing.assert_array_equal(got[0, y0:y1, x0:x1, i].astype(bool), r.mask)
    files = sorted((out / "dicom").iterdir())
    assert any(f.name.startswith("pmap") for f in files) and (out / "dicom" / "sr.dcm").exists()
    if shutil.which("dciodvfy") is not None:
        report = {f.name: _dciodvfy(f) for f in files}
        assert all(e == [] and w == [] for e, w in report.values()), report


def test_a_lossy_clip_makes_the_joined_exam_lossy(exam) -> None:
    # Issue 17: one lossy clip is enough for the joined cine's speckle to read
    # low; the joined metadata names which clip and how.
    import dataclasses

    from ceuskit.clips import join_clips
    from ceuskit.io import load_cine

    a, b = (load_cine(p) for p in exam["clips"][:2])
    assert a.meta.get("lossy_compression") is None
    joined, _ = join_clips([a, b], ["a.npz", "b.npz"], [0.0, 90.0])
    assert joined.meta["lossy_compression"] is None
    lossy = dataclasses.replace(b, meta={**b.meta, "lossy_compression": "video codec h264"})
    joined, _ = join_clips([a, lossy], ["a.npz", "b.mp4"], [0.0, 90.0])
    assert joined.meta["lossy_compression"] == "b.mp4: video codec h264"
