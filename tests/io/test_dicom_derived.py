"""DICOM SEG, Parametric Maps and SR written by ``analyze --dicom``, read back with pydicom and highdicom."""

import hashlib
import json
import math
import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest

from ceuskit.api import analyze_to_dir
from ceuskit.cli import main
from ceuskit.errors import InputError
from ceuskit.io.dicom_derived import (
    PMAP_PARAMETERS,
    PRIVATE_SCHEME,
    SERIES_DESCRIPTION,
    SERIES_KINDS,
    SR_FILE,
    derived_frame_index,
    pmap_file,
    write_dicom_derived,
)
from ceuskit.maps import MAP_UNITS
from ceuskit.simulate import SimulationSpec, simulate, write_phantom

SPEC = SimulationSpec(scenario="tumor", seed=11, necrosis=0.3, fps=4.0, duration_s=60.0)
UCUM = {"s": "s", "a.u.": "[arb'U]"}


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A necrotic tumour phantom as DICOM, analysed with ``dicom=True``."""
    base = tmp_path_factory.mktemp("derived")
    files = write_phantom(simulate(SPEC), base / "phantom", "dicom")
    before = _sha256(files["cine"])
    analysis, paths = analyze_to_dir(files["cine"], files["rois"], base / "out", pdf=False, dicom=True)
    return files, before, analysis, paths


def _in_frame(panel_array, shape, panel, fill):
    full = np.full(shape, fill, dtype=panel_array.dtype)
    full[panel.slices] = panel_array
    return full


def _rwv(ds):
    """The Real World Value Mapping item of a single-frame Parametric Map."""
    for groups in (ds.PerFrameFunctionalGroupsSequence[0], ds.SharedFunctionalGroupsSequence[0]):
        if "RealWorldValueMappingSequence" in groups:
            return groups.RealWorldValueMappingSequence[0]
    raise AssertionError("no Real World Value Mapping")


def test_files_written_and_listed(run):
    _files, _before, _analysis, paths = run
    out = paths["dicom"]
    names = {"seg.dcm", SR_FILE, *(pmap_file(p) for p in PMAP_PARAMETERS)}
    assert {p.name for p in out.iterdir()} == names  # no temporary files left
    res = json.loads(paths["results"].read_text())
    assert sorted(res["dicom"]["files"]) == sorted(f"dicom/{n}" for n in names)


def test_seg_segments_equal_roi_and_necrosis_masks(run):
    files, _before, analysis, paths = run
    source = pydicom.dcmread(files["cine"], stop_before_pixels=True)
    shape = (int(source.Rows), int(source.Columns))
    panel = analysis.panels.contrast
    seg = hd.seg.segread(paths["dicom"] / "seg.dcm")
    assert seg.SegmentationType == "BINARY"
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    lesions = [r.roi for r in analysis.rois if r.roi.role == "lesion"]
    assert labels == [r.roi.name for r in analysis.rois] + [
        f"{r.name} necrosis (non-enhancing)" for r in lesions]
    got = seg.get_pixels_by_source_frame(
        source.SOPInstanceUID, source_frame_numbers=[derived_frame_index(analysis) + 1],
        combine_segments=False)
    assert got.shape == (1, *shape, len(labels))
    for i, r in enumerate(analysis.rois):
        np.testing.assert_array_equal(got[0, ..., i].astype(bool),
                                      _in_frame(r.roi.mask, shape, panel, False))
    necrosis = analysis.maps.result.necrosis
    assert necrosis.any()  # the phantom has a necrotic core: the test is not vacuous
    for j, roi in enumerate(lesions):
        np.testing.assert_array_equal(got[0, ..., len(analysis.rois) + j].astype(bool),
                                      _in_frame(necrosis & roi.mask, shape, panel, False))
    codes = {s.SegmentLabel: (s.SegmentedPropertyCategoryCodeSequence[0].CodeValue,
                              s.SegmentedPropertyTypeCodeSequence[0].CodeValue)
             for s in seg.SegmentSequence}
    assert codes["lesion"] == ("49755003", "52988006")  # abnormal structure / lesion
    assert codes["muscle"] == ("85756007", "71616004")  # tissue / muscle
    assert codes["lumen"][1] == "29092000"  # vein
    assert codes["lesion necrosis (non-enhancing)"][1] == "6574001"  # necrosis


def test_parametric_maps_values_and_units(run):
    files, _before, analysis, paths = run
    source = pydicom.dcmread(files["cine"], stop_before_pixels=True)
    shape = (int(source.Rows), int(source.Columns))
    panel = analysis.panels.contrast
    in_rois = _in_frame(np.logical_or.reduce([r.roi.mask for r in analysis.rois]), shape, panel, False)
    for param in PMAP_PARAMETERS:
        ds = pydicom.dcmread(paths["dicom"] / pmap_file(param))
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
        assert ds.BitsAllocated == 32 and "FloatPixelData" in ds
        rwv = _rwv(ds)
        assert rwv.MeasurementUnitsCodeSequence[0].CodeValue == UCUM[MAP_UNITS[param]]
        assert rwv.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
        values = ds.pixel_array.astype(np.float64) * float(rwv.RealWorldValueSlope) + float(
            rwv.RealWorldValueIntercept)
        assert values.shape == shape
        want = _in_frame(analysis.maps.result.params[param], shape, panel, np.float32(np.nan))
        finite = np.isfinite(want)
        assert finite.any() and not (finite & ~in_rois).any()
        # NaN exactly where the in-memory map is NaN (everything outside the ROIs included).
        np.testing.assert_array_equal(np.isnan(values), ~finite)
        np.testing.assert_allclose(values[finite], want[finite].astype(np.float64), rtol=1e-7)


def test_references_uids_and_descriptions(run):
    files, _before, analysis, paths = run
    source = pydicom.dcmread(files["cine"], stop_before_pixels=True)
    # The image objects (the SR's references are checked in test_structured_report_*).
    objs = [pydicom.dcmread(p) for p in sorted(paths["dicom"].iterdir()) if p.name != SR_FILE]
    frame = derived_frame_index(analysis) + 1
    # The masks are in the motion reference frame's coordinates: that frame is referenced.
    assert analysis.motion is not None and frame == analysis.motion.reference_index + 1
    kinds = {"1.2.840.10008.5.1.4.1.1.66.4": "seg", "1.2.840.10008.5.1.4.1.1.30": "pmap"}
    for ds in objs:
        kind = kinds[ds.SOPClassUID]
        assert int(ds.SeriesNumber) == SERIES_KINDS[kind][0]
        assert ds.SeriesDescription.startswith(f"ceuskit {SERIES_KINDS[kind][1]}, ")
        assert ds.SeriesDescription.endswith(SERIES_DESCRIPTION) and len(ds.SeriesDescription) <= 64
        assert len(ds.SeriesDate) == 8 and len(ds.SeriesTime) == 6
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.PatientID == source.PatientID and ds.PatientName == source.PatientName
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        assert ds.SOPInstanceUID != source.SOPInstanceUID
        assert ds.Manufacturer == "ceuskit" and str(ds.ContentCreatorName) == ""
        assert "ReferencedFrameNumber" not in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
        ref = ds.SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert ref.ReferencedSOPClassUID == source.SOPClassUID
        assert int(ref.ReferencedFrameNumber) == frame
        for item in ds.PerFrameFunctionalGroupsSequence:
            refs = item.DerivationImageSequence[0].SourceImageSequence
            assert [int(r.ReferencedFrameNumber) for r in refs] == [frame]
    assert len({ds.SOPInstanceUID for ds in objs}) == len(objs)


def test_source_file_untouched(run):
    files, before, _analysis, _paths = run
    assert _sha256(files["cine"]) == before


def _cli(argv, capsys):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_no_maps_writes_seg_only_with_note(run, tmp_path, capsys):
    files = run[0]
    out = tmp_path / "res"
    code, stdout, err = _cli(["analyze", files["cine"], "--roi", files["rois"], "--out", out,
                              "--no-maps", "--dicom", "--quiet"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (out / "dicom").iterdir()) == ["seg.dcm", SR_FILE]
    lines = stdout.strip().splitlines()
    assert lines[-1].startswith("report: ")
    assert lines[-2] == f"dicom: {(out / 'dicom').resolve()}"
    assert "segmentation of the ROIs only" in err
    seg = hd.seg.segread(out / "dicom" / "seg.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["lesion", "muscle", "lumen"]
    # The SR is written from the ROI measurements without the maps too.
    res = json.loads((out / "results.json").read_text())
    assert f"dicom/{SR_FILE}" in res["dicom"]["files"]
    groups = _sr_groups(hd.sr.srread(out / "dicom" / SR_FILE))
    assert list(groups) == ["lesion", "muscle", "lumen"]
    for name, group in groups.items():
        got = _sr_values(group)
        assert got["Time To Peak"] == pytest.approx(
            (res["rois"][name]["perfusion"]["time_to_peak_s"], "s"), rel=1e-6)
    frac = res["rois"]["lesion"]["necrosis_fraction"]  # computed without the maps too
    value, unit = _sr_values(groups["lesion"])["ceuskit necrosis_fraction (non-enhancing share)"]
    assert unit == "%" and math.isclose(value, 100.0 * frac, rel_tol=1e-6)


def test_cli_dicom_needs_dicom_input(tmp_path, capsys):
    files = write_phantom(simulate(SimulationSpec(scenario="tumor", seed=2, fps=2.0, duration_s=20.0)),
                          tmp_path / "npz", "npz")
    out = tmp_path / "res"
    code, _stdout, err = _cli(["analyze", files["cine"], "--roi", files["rois"], "--out", out,
                               "--dicom"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert "--dicom" in lines[0] and "not a DICOM file" in lines[0] and "drop --dicom" in lines[0]
    assert not out.exists()


def test_existing_dicom_dir_needs_overwrite(run, tmp_path, capsys):
    files = run[0]
    out = tmp_path / "res"
    (out / "dicom").mkdir(parents=True)
    (out / "dicom" / "seg.dcm").write_bytes(b"earlier")
    with pytest.raises(InputError, match=r"already holds dicom.*--overwrite"):
        analyze_to_dir(files["cine"], files["rois"], out, pdf=False, dicom=True)
    code, _stdout, err = _cli(["analyze", files["cine"], "--roi", files["rois"], "--out", out,
                               "--dicom", "--no-maps", "--quiet"], capsys)
    assert code == 2 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (out / "dicom" / "seg.dcm").read_bytes() == b"earlier"
    code, _stdout, err = _cli(["analyze", files["cine"], "--roi", files["rois"], "--out", out,
                               "--dicom", "--no-maps", "--quiet", "--overwrite"], capsys)
    assert code == 0, err
    assert hd.seg.segread(out / "dicom" / "seg.dcm").number_of_segments == 3


def _sr_groups(sr):
    """ROI name (tracking identifier) -> TID 1410 measurement group of an SR."""
    groups = sr.content.get_planar_roi_measurement_groups()
    by_name = {g.tracking_identifier: g for g in groups}
    assert len(by_name) == len(groups)
    return by_name


def _sr_values(group):
    """Measurement meaning -> (value, UCUM unit) of a measurement group."""
    out = {}
    for m in group.get_measurements():
        assert m.unit.scheme_designator == "UCUM"
        out[m.name.meaning] = (m.value, m.unit.value)
    return out


def test_structured_report_measurements(run):
    _files, _before, analysis, paths = run
    res = json.loads(paths["results"].read_text())
    ds = pydicom.dcmread(paths["dicom"] / SR_FILE)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    sr = hd.sr.srread(paths["dicom"] / SR_FILE)
    assert sr.ContentSequence is not None
    title = sr.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning) == (
        "126000", "DCM", "Imaging Measurement Report")
    groups = _sr_groups(sr)
    assert list(groups) == [r.roi.name for r in analysis.rois]
    for name, group in groups.items():
        perf = res["rois"][name]["perfusion"]
        got = _sr_values(group)
        assert group.tracking_uid and group.tracking_uid.startswith(("1.", "2."))
        assert got["Time To Peak"][1] == "s" and math.isclose(
            got["Time To Peak"][0], perf["time_to_peak_s"], rel_tol=1e-6)
        # Peak enhancement: the parametric map's quantity (DCM "Signal change").
        assert got["Signal change"][1] == "[arb'U]" and math.isclose(
            got["Signal change"][0], perf["peak_enhancement"], rel_tol=1e-6)
        assert got["Bolus Arrival Time"][1] == "s" and got["Mean Transit Time"][1] == "s"
        assert got["ceuskit auc (area under the fitted bolus)"][1] == "[arb'U].s"
        assert math.isclose(got["ceuskit auc (area under the fitted bolus)"][0], perf["auc"],
                            rel_tol=1e-6)
        for m in group.get_measurements():
            assert m.name.scheme_designator in ("DCM", PRIVATE_SCHEME)
    lesion = res["findings"]["lesion_roi"]
    frac = res["rois"][lesion]["necrosis_fraction"]
    assert frac is not None and frac > 0
    value, unit = _sr_values(groups[lesion])["ceuskit necrosis_fraction (non-enhancing share)"]
    assert unit == "%" and math.isclose(value, 100.0 * frac, rel_tol=1e-6)
    for name in groups:
        if name != lesion:
            assert "ceuskit necrosis_fraction (non-enhancing share)" not in _sr_values(groups[name])
    evaluations = {q.name.meaning: q.value for q in groups[lesion].get_qualitative_evaluations()}
    findings = res["findings"]
    assert evaluations["ceuskit intraluminal enhancement"].meaning == (
        "Yes" if findings["intraluminal_enhancement"] else "No")
    assert evaluations["ceuskit wash-in"].meaning == f"ceuskit wash-in {findings['wash_in']}"
    assert evaluations["ceuskit wash-in"].scheme_designator == PRIVATE_SCHEME
    assert evaluations["ceuskit enhancement"].meaning == (
        f"ceuskit enhancement {findings['enhancement']}")
    assert evaluations["ceuskit wash-out"].meaning == (
        "Yes" if findings["wash_out"]["present"] else "No")


def test_structured_report_references_and_context(run):
    files, _before, analysis, paths = run
    source = pydicom.dcmread(files["cine"], stop_before_pixels=True)
    seg = pydicom.dcmread(paths["dicom"] / "seg.dcm", stop_before_pixels=True)
    sr = hd.sr.srread(paths["dicom"] / SR_FILE)
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.PatientID == source.PatientID and sr.PatientName == source.PatientName
    assert sr.SeriesInstanceUID not in (source.SeriesInstanceUID, seg.SeriesInstanceUID)
    assert sr.SOPInstanceUID not in (source.SOPInstanceUID, seg.SOPInstanceUID)
    assert sr.SeriesDescription.startswith(f"ceuskit {SERIES_KINDS['sr'][1]}, ")
    assert sr.Manufacturer == "ceuskit" and int(sr.SeriesNumber) == SERIES_KINDS["sr"][0]
    scheme = sr.CodingSchemeIdentificationSequence[0]
    assert scheme.CodingSchemeDesignator == PRIVATE_SCHEME and scheme.CodingSchemeName
    frame = derived_frame_index(analysis) + 1
    for number, r in enumerate(analysis.rois, start=1):
        ref = _sr_groups(sr)[r.roi.name].referenced_segmentation_frame
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert ref.referenced_sop_class_uid == seg.SOPClassUID
        # The SEG frame is referenced, not the segment number (PS3.3 C.18.3.1: not both);
        # that frame is the segment's.
        assert ref.referenced_segment_numbers is None
        (seg_frame,) = ref.referenced_frame_numbers
        item = seg.PerFrameFunctionalGroupsSequence[seg_frame - 1]
        assert int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == number
        assert seg.SegmentSequence[number - 1].SegmentLabel == r.roi.name
        src = ref.source_image_for_segmentation
        assert src.referenced_sop_instance_uid == source.SOPInstanceUID
        assert list(src.referenced_frame_numbers) == [frame]
    evidence = {item.ReferencedSOPInstanceUID
                for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence
                for item in series.ReferencedSOPSequence}
    assert evidence == {source.SOPInstanceUID, seg.SOPInstanceUID}
    root = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in sr.ContentSequence}
    assert root["Comment"].TextValue == "ceuskit: decision support, not a diagnosis"
    assert root["Device Observer Name"].TextValue == "ceuskit"


# --------------------------------------------------------------------------- conformance (dciodvfy)

#: dciodvfy warnings docs/dicom.md lists as acceptable, with the reason for each.
ACCEPTED_WARNINGS = (
    "would be needed to build DICOMDIR - Study Date",
    "would be needed to build DICOMDIR - Study Time",
    "would be needed to build DICOMDIR - Study ID",
    "is only permitted to be empty when actually unknown; should be absent (not empty) if an "
    "unpaired body part, and have a value if a paired body part - attribute <Laterality>",
    "Unrecognized defined term <QUANTITY> for value 4 of attribute <Frame Type>",
    "Unrecognized defined term <QUANTITY> for value 4 of attribute <Image Type>",
    f"Unrecognized defined term <{PRIVATE_SCHEME}> for value 1 of attribute <Coding Scheme Designator>",
)


def _dciodvfy(path):
    """(errors, warnings not accepted) of dicom3tools' validator on one file."""
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120,
                          check=False)
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines()]
    errors = [ln for ln in lines if ln.startswith("Error")]
    warnings = [ln for ln in lines if ln.startswith("Warning")
                and not any(ok in ln for ok in ACCEPTED_WARNINGS)]
    return errors, warnings


needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None,
                                    reason="dicom3tools' dciodvfy is not installed "
                                           "(apt-get install dicom3tools; scripts/test.sh does)")


@needs_dciodvfy
def test_every_object_passes_dciodvfy(run):
    files, _before, _analysis, paths = run
    objects = [files["cine"], *sorted(paths["dicom"].iterdir())]
    assert len(objects) == 1 + 2 + len(PMAP_PARAMETERS)  # cine, SEG, SR, the maps
    report = {p.name: _dciodvfy(p) for p in objects}
    assert all(errors == [] for errors, _w in report.values()), report
    assert all(warnings == [] for _e, warnings in report.values()), report


@needs_dciodvfy
def test_source_laterality_is_carried_and_validates(run, tmp_path):
    """A source that says which leg: the maps say it too (Type 2C, not empty)."""
    files, _before, analysis, _paths = run
    ds = pydicom.dcmread(files["cine"])
    ds.Laterality = "L"
    source = tmp_path / "left.dcm"
    ds.save_as(source, enforce_file_format=True)
    written = write_dicom_derived(analysis, source, tmp_path / "dicom")
    pm = pydicom.dcmread(written["pmap_time_to_peak_s"], stop_before_pixels=True)
    assert pm.Laterality == "L"
    for path in written.values():
        errors, warnings = _dciodvfy(path)
        assert errors == [] and not any("Laterality" in w for w in warnings), (path.name, errors)


def test_reruns_get_new_series(run, tmp_path):
    files, _before, analysis, paths = run
    again = write_dicom_derived(analysis, files["cine"], tmp_path / "again")
    for name in ("seg", "sr", "pmap_peak_enhancement"):
        first = pydicom.dcmread(paths["dicom"] / again[name].name, stop_before_pixels=True)
        second = pydicom.dcmread(again[name], stop_before_pixels=True)
        assert first.SeriesInstanceUID != second.SeriesInstanceUID
        assert first.SeriesNumber == second.SeriesNumber  # the kind of object, not the run
