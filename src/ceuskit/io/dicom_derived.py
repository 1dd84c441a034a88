"""DICOM objects a PACS can file beside the source cine: a Segmentation, Parametric Maps, an SR.

`write_dicom_derived` writes, for an analysis of a DICOM cine,

* ``seg.dcm`` -- a binary DICOM Segmentation with one segment per ROI
  (label = ROI name) and, when parametric maps were computed, one
  "necrosis (non-enhancing)" segment per lesion ROI (the maps' pixel test);
* ``pmap_<parameter>.dcm`` -- one float32 DICOM Parametric Map per
  parameter in `PMAP_PARAMETERS`, with a Real World Value Mapping (slope 1,
  intercept 0) that carries the UCUM unit and a coded quantity;
* ``sr.dcm`` -- a Comprehensive 3D SR, TID 1500 "Imaging Measurement
  Report", written with or without the maps (see `SR_MEASUREMENTS`).

Structured Report
-----------------
One TID 1410 measurement group per ROI: tracking identifier = ROI name and a
new UID; the region is the ROI's segment of ``seg.dcm`` (a Referenced
Segmentation Frame, which names the analysed source frame); finding type =
the segment's property type (lesion / muscle / vein), finding site "Vein"
for lesion and vessel ROIs.  Measurements are the ROI's ``perfusion`` values
of results.json (None values skipped) with UCUM units, and for a lesion its
necrosis share in percent (``100 x necrosis_fraction``).  The findings of
results.json (intraluminal enhancement, wash-in, enhancement, wash-out)
are qualitative evaluations of the lesion's group.  Parameters with no
standard concept use private codes, coding scheme ``99CEUSKIT``.  The
observer is the device "ceuskit"; a root TEXT "Comment" carries the
disclaimer (`SERIES_DESCRIPTION`).

Every object lies in the full stored frame (Rows x Columns of the source):
the panel-space masks and maps are placed at the contrast panel's position,
and pixels outside the ROIs (and non-enhancing or unfitted pixels) of a
parametric map are NaN.  The objects copy the source's patient and study
attributes (so that a PACS files them in the same study), get new Series and
SOP Instance UIDs, say "ceuskit" as manufacturer and content creator, and
are marked RESEARCH content: decision support, not a diagnosis.

What is synthesised
-------------------
An ultrasound cine has no patient coordinate system, but highdicom (and the
SEG / Parametric Map IODs) need a Frame of Reference, a plane position and
orientation and a pixel spacing.  These are added to an **in-memory copy of
the source header only**; the user's file is read, never written:

* Frame of Reference UID: the source's when it has one, else a new UID;
* Image Position (Patient) (0, 0, 0) mm and Image Orientation (Patient)
  (1, 0, 0, 0, 1, 0) -- an arbitrary plane: the coordinates place the
  derived objects pixel-on-pixel over the source frame, and mean nothing
  anatomically;
* Pixel Spacing: the contrast panel's spacing (from the Sequence of
  Ultrasound Regions' physical deltas), else the source's Pixel Spacing,
  else a nominal 1 mm (then distances read from the objects are in pixels);
* Slice Thickness: a nominal 1 mm (the elevation beam width is not known);
* shared and per-frame functional groups stating that every cine frame lies
  in that same plane (true of a 2-D cine).

Single-frame geometry: each object has one plane and references **one**
source frame, the frame its masks and maps belong to (`derived_frame_index`;
DICOM Referenced Frame Number = index + 1): with motion correction the motion
reference frame (the frame the ROIs were drawn on, in whose coordinates the
masks and maps are), else the lesion's peak frame.

Series
------
Each kind of object has its own series (SEG 9101, Parametric Maps 9102, SR
9103; `SERIES_KINDS`), new Series Instance UIDs per run, Series Date/Time =
the run's time, and a Series Description saying what it holds and when, e.g.
"ceuskit SEG: ROIs, necrosis, 2026-12-02 07:10; not a diagnosis"
(`series_description`).

Conformance
-----------
Checked with dicom3tools' ``dciodvfy`` (tests/io/test_dicom_conformance.py):
no errors; the warnings that remain, and why they are acceptable, are listed
in docs/dicom.md.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ceuskit.errors import InputError
from ceuskit.outputs import atomic_path, make_out_dir

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from ceuskit.pipeline import Analysis

__all__ = ["PMAP_PARAMETERS", "PRIVATE_SCHEME", "SEG_FILE", "SERIES_DESCRIPTION", "SERIES_KINDS",
           "SR_FILE", "SR_MEASUREMENTS", "check_dicom_source", "derived_frame_index", "pmap_file",
           "series_description", "write_dicom_derived"]

#: What every derived object's Series Description ends with (the SR's comment
#: says it in full: decision support, not a diagnosis).
SERIES_DESCRIPTION = "not a diagnosis"
#: Series Number and what the series holds, per kind of object: a PACS lists
#: them apart, and the run time in the description tells reruns apart.
SERIES_KINDS = {
    "seg": (9101, "SEG: ROIs, necrosis"),
    "pmap": (9102, "PM: perfusion maps"),
    "sr": (9103, "SR: measurements"),
}
SEG_FILE = "seg.dcm"
SR_FILE = "sr.dcm"
#: Coding scheme designator of ceuskit's private concepts in the SR ("99" prefix:
#: a private scheme, PS3.16 8.2), registered in each SR's Coding Scheme
#: Identification Sequence (`PRIVATE_SCHEME_NAME`).
PRIVATE_SCHEME = "99CEUSKIT"
PRIVATE_SCHEME_NAME = "ceuskit private concepts (CEUS descriptors without a standard code)"
#: ``perfusion`` values of results.json written as SR measurements, in this order.
SR_MEASUREMENTS = ("arrival_time_s", "time_to_peak_s", "rise_time_s", "mean_transit_time_s",
                   "fall_time_s", "peak_enhancement", "auc")
#: Parameters written as Parametric Maps (names of `ceuskit.maps.MAP_PARAMETERS`).
PMAP_PARAMETERS = ("peak_enhancement", "time_to_peak_s", "arrival_time_s", "mean_transit_time_s")
# Nominal values for what an ultrasound cine does not declare (see module docstring).
_NOMINAL_SLICE_THICKNESS_MM = 1.0
_NOMINAL_SPACING_MM = 1.0
_ORIGIN_MM = (0.0, 0.0, 0.0)
_ROW_COL_COSINES = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def pmap_file(param: str) -> str:
    """File name of a parameter's Parametric Map (``pmap_<param>.dcm``)."""
    return f"pmap_{param}.dcm"


def series_description(kind: str, run_time: datetime) -> str:
    """Series Description of a derived object: what it holds, the run's time, the disclaimer.

    At most 64 characters (the LO limit), e.g. ``"ceuskit SEG: ROIs,
    necrosis, 2026-12-02 07:10; not a diagnosis"``.
    """
    what = SERIES_KINDS[kind][1]
    text = f"ceuskit {what}, {run_time:%Y-%m-%d %H:%M}; {SERIES_DESCRIPTION}"
    # Validators count the LO limit in bytes of the character set (UTF-8 here).
    if len(text.encode("utf-8")) > 64:
        text = f"ceuskit {what}, {run_time:%Y-%m-%d %H:%M}"
    return text


def derived_frame_index(analysis: Analysis) -> int:
    """The source frame (0-based) the derived objects' masks and maps belong to.

    With motion correction the ROIs, masks and maps are in the coordinates
    of the motion reference frame (the frame the ROIs were drawn on);
    without it every frame shares the ROIs' coordinates and the lesion's
    peak frame is the one shown.
    """
    if analysis.roi_frame is not None:  # the frame the report's ROI figure shows, too
        return int(analysis.roi_frame[0])
    return int(analysis.peak_frame_index)


def check_dicom_source(source_path: str | PathLike[str]) -> None:
    """Refuse, before any work, a source that cannot carry DICOM outputs.

    Raises
    ------
    InputError
        The file is not DICOM (a video or NPZ cine has no study to file into).
    """
    from ceuskit.io import sniff_format

    if sniff_format(source_path) != "dicom":
        raise InputError("--dicom", f"{Path(source_path).name} is not a DICOM file, so there is no "
                         "study to file DICOM outputs into",
                         "drop --dicom, or analyse the DICOM export of this cine")


# ---------------------------------------------------------------------------
# Codes
# ---------------------------------------------------------------------------


def _codes() -> Any:
    from pydicom.sr.codedict import codes

    return codes


def _segment_codes(role: str) -> tuple[Any, Any]:
    """(category, type) of an ROI role: SNOMED CT codes of CID 7150 / 7151."""
    sct = _codes().SCT
    return {
        "lesion": (sct.MorphologicallyAbnormalStructure, sct.Lesion),
        "reference": (sct.Tissue, sct.Muscle),
        "vessel": (sct.AnatomicalStructure, sct.Vein),
    }.get(role, (sct.Tissue, sct.Tissue))


def _quantity(param: str) -> tuple[Any, Any, str]:
    """(quantity code, UCUM unit code, LUT label <= 16 chars) of a mapped parameter."""
    c = _codes()
    seconds = c.UCUM.Second
    return {
        # Peak of the fitted bolus above baseline, linear echo power (a.u.).
        "peak_enhancement": (c.DCM.SignalChange, c.UCUM.ArbitraryUnit, "PE_AU"),
        "time_to_peak_s": (c.DCM.TimeToPeak, seconds, "TTP_S"),
        "arrival_time_s": (c.DCM.BolusArrivalTime, seconds, "AT_S"),
        "mean_transit_time_s": (c.DCM.MeanTransitTime, seconds, "MTT_S"),
    }[param]


def _private(value: str, meaning: str) -> Any:
    """A ceuskit private coded concept (scheme `PRIVATE_SCHEME`)."""
    import highdicom as hd

    return hd.sr.CodedConcept(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning)


def _sr_measurement(param: str) -> tuple[Any, Any]:
    """(concept name, UCUM unit) of an SR measurement: standard codes where they exist."""
    import highdicom as hd

    c = _codes()
    if param in PMAP_PARAMETERS:
        quantity, unit, _label = _quantity(param)
        return quantity, unit
    return {
        "rise_time_s": (_private("CK-RISE-TIME", "ceuskit rise_time_s (arrival to peak)"),
                        c.UCUM.Second),
        "fall_time_s": (_private("CK-FALL-TIME", "ceuskit fall_time_s (peak to end of fall)"),
                        c.UCUM.Second),
        "auc": (_private("CK-AUC", "ceuskit auc (area under the fitted bolus)"),
                hd.sr.CodedConcept(value="[arb'U].s", scheme_designator="UCUM",
                                   meaning="arbitrary unit second")),
    }[param]


# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------


def _spacing_mm(analysis: Analysis, ds: Dataset) -> tuple[tuple[float, float], str]:
    """Pixel spacing (row, col) in mm for the derived objects, and where it came from."""
    panel = analysis.panels.contrast.spacing_mm
    if panel is not None:
        return (float(panel[0]), float(panel[1])), "ultrasound-region"
    from ceuskit.io.dicom import frame_spacing_mm

    declared = frame_spacing_mm(ds)  # the reader's own reading of Pixel Spacing
    if declared is not None:
        return declared, "pixel-spacing"
    return (_NOMINAL_SPACING_MM, _NOMINAL_SPACING_MM), "nominal"


def _geometry_copy(ds: Dataset, spacing_mm: tuple[float, float]) -> tuple[Dataset, Any]:
    """An in-memory copy of the source header with the geometry highdicom needs.

    Returns the copy and the one PlanePositionSequence of the derived objects.
    """
    import highdicom as hd
    from pydicom.dataset import Dataset as PdDataset
    from pydicom.uid import generate_uid

    g = copy.deepcopy(ds)  # never alter the caller's dataset (or the file behind it)
    if not g.get("FrameOfReferenceUID"):
        g.FrameOfReferenceUID = generate_uid()
    g.ImagePositionPatient = list(_ORIGIN_MM)
    g.ImageOrientationPatient = list(_ROW_COL_COSINES)
    g.PixelSpacing = [spacing_mm[0], spacing_mm[1]]
    g.SliceThickness = _NOMINAL_SLICE_THICKNESS_MM
    patient = hd.CoordinateSystemNames.PATIENT
    position = hd.PlanePositionSequence(patient, _ORIGIN_MM)
    shared = PdDataset()
    shared.PixelMeasuresSequence = hd.PixelMeasuresSequence(
        pixel_spacing=spacing_mm, slice_thickness=_NOMINAL_SLICE_THICKNESS_MM)
    shared.PlaneOrientationSequence = hd.PlaneOrientationSequence(patient, _ROW_COL_COSINES)
    g.SharedFunctionalGroupsSequence = [shared]
    n_frames = int(g.get("NumberOfFrames", 1) or 1)
    per_frame = []
    for _ in range(n_frames):
        item = PdDataset()
        item.PlanePositionSequence = position
        per_frame.append(item)
    # A 2-D cine: every frame lies in the same plane.  highdicom matches the
    # derived plane to all of them; `_keep_frame_reference` then keeps one.
    g.PerFrameFunctionalGroupsSequence = per_frame
    return g, position


def _keep_frame_reference(obj: Dataset, source: Dataset, frame_number: int) -> None:
    """Reference only the analysed source frame (1-based) in a derived object."""
    uid = source.SOPInstanceUID
    for frame in obj.PerFrameFunctionalGroupsSequence:
        for derivation in frame.get("DerivationImageSequence", []):
            kept = [s for s in derivation.SourceImageSequence
                    if s.ReferencedSOPInstanceUID == uid and int(s.get("ReferencedFrameNumber", 0))
                    == frame_number]
            if not kept:
                raise RuntimeError("highdicom did not reference the analysed source frame")
            derivation.SourceImageSequence = kept
    for item in obj.get("SourceImageSequence", []):
        if item.ReferencedSOPInstanceUID == uid:
            item.ReferencedFrameNumber = frame_number
    # The Common Instance Reference module names instances, not frames (PS3.3
    # C.12.2): a frame number there is not part of the IOD.
    for series in obj.get("ReferencedSeriesSequence", []):
        items = []
        for ref in series.ReferencedInstanceSequence:
            ref = copy.deepcopy(ref)
            if "ReferencedFrameNumber" in ref:
                del ref.ReferencedFrameNumber
            items.append(ref)
        series.ReferencedInstanceSequence = items


def _in_frame(panel_array: NDArray[Any], frame_shape: tuple[int, int], slices: tuple[slice, slice],
              fill: Any) -> NDArray[Any]:
    """A panel-space array placed at the panel's position in a full stored frame."""
    full = np.full(frame_shape, fill, dtype=panel_array.dtype)
    full[slices] = panel_array
    return full


def _finish(obj: Dataset, source: Dataset, kind: str, run_time: datetime) -> None:
    """Descriptions every derived object carries (UTF-8: ROI names may need it)."""
    obj.SpecificCharacterSet = "ISO_IR 192"
    obj.SeriesDescription = series_description(kind, run_time)
    obj.SeriesDate = f"{run_time:%Y%m%d}"
    obj.SeriesTime = f"{run_time:%H%M%S}"
    # Type 2, and a program is not a person: empty (the equipment module names ceuskit).
    obj.ContentCreatorName = ""
    obj.Manufacturer = "ceuskit"
    # General Series Laterality is Type 2C for images of paired body parts (a leg):
    # the source's value, else empty ("not known").
    if obj.SOPClassUID == _PMAP_SOP_CLASS:
        obj.Laterality = source.get("Laterality", "") or ""


#: Parametric Map Storage: its General Series module asks for Laterality (Type
#: 2C); the SEG's does not (it has none of the image modules that condition reads).
_PMAP_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.30"


def _save(obj: Dataset, path: Path) -> Path:
    with atomic_path(path) as tmp:
        obj.save_as(tmp, enforce_file_format=True)
    return path


# ---------------------------------------------------------------------------
# The objects
# ---------------------------------------------------------------------------


def _segments(analysis: Analysis, frame_shape: tuple[int, int]) -> tuple[list[Any], NDArray[np.uint8]]:
    """Segment descriptions and the stacked (1, rows, cols, S) binary masks."""
    import highdicom as hd

    from ceuskit import __version__

    panel = analysis.panels.contrast
    algorithm = hd.AlgorithmIdentificationSequence(
        name="ceuskit pixel enhancement test", version=__version__,
        family=_codes().DCM.ImageProcessing)
    necrosis = analysis.maps.result.necrosis if analysis.maps is not None else None
    descriptions: list[Any] = []
    masks: list[NDArray[np.bool_]] = []

    def add(label: str, category: Any, kind: Any, mask: NDArray[np.bool_], automatic: bool) -> None:
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=len(descriptions) + 1, segment_label=label[:64],
            segmented_property_category=category, segmented_property_type=kind,
            # ROIs are drawn by the user; necrosis comes from ceuskit's pixel test.
            algorithm_type="AUTOMATIC" if automatic else "MANUAL",
            algorithm_identification=algorithm if automatic else None))
        masks.append(_in_frame(np.asarray(mask, dtype=bool), frame_shape, panel.slices, False))

    sct = _codes().SCT
    for r in analysis.rois:
        category, kind = _segment_codes(r.roi.role)
        add(r.roi.name, category, kind, r.roi.mask, automatic=False)
    if necrosis is not None:
        for r in analysis.rois:
            if r.roi.role == "lesion":
                add(f"{r.roi.name} necrosis (non-enhancing)", sct.MorphologicallyAbnormalStructure,
                    sct.Necrosis, necrosis & r.roi.mask, automatic=True)
    stacked = np.stack(masks, axis=-1)[np.newaxis].astype(np.uint8)
    return descriptions, stacked


def write_dicom_derived(
    analysis: Analysis,
    source_path: str | PathLike[str],
    out_dir: str | PathLike[str],
    *,
    progress: Callable[[str], None] | None = None,
    results: Mapping[str, Any] | None = None,
    frame_index: int | None = None,
) -> dict[str, Path]:
    """Write a DICOM SEG of the ROIs (and necrosis) and Parametric Maps for a DICOM source.

    Parameters
    ----------
    analysis : Analysis
        The analysis of the cine in `source_path` (`ceuskit.pipeline.analyze`).
    source_path : path-like
        The DICOM cine that was analysed; only read.
    out_dir : path-like
        Directory for the files (created if missing); existing files of the
        same names are replaced (the caller checks for earlier output).
    progress : callable, optional
        Receives a short message per object.
    results : mapping, optional
        The results.json document of `analysis` (``analysis.results()`` when
        not given): the SR's measurements and findings come from it.
    frame_index : int, optional
        The frame of `source_path` (0-based) the objects belong to; default
        `derived_frame_index`.  An exam of several clips passes the clip that
        holds that frame as `source_path` and the frame's index within it
        (`ceuskit.clips.clip_frame`).

    Returns
    -------
    dict of str to Path
        ``"seg"``, ``"sr"`` and, when the analysis has parametric maps,
        ``"pmap_<param>"`` for each of `PMAP_PARAMETERS`.

    Raises
    ------
    InputError
        The source is not DICOM, or its frame size differs from the analysis'.
    """
    import highdicom as hd
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    from ceuskit import __version__

    say = progress or (lambda _msg: None)
    check_dicom_source(source_path)
    src = Path(source_path)
    with src.open("rb") as fh:  # read-only: the user's file is never written
        source = dcmread(fh, stop_before_pixels=True)
    rows, cols = int(source.Rows), int(source.Columns)
    panel = analysis.panels.contrast
    if panel.y1 > rows or panel.x1 > cols:
        raise InputError(src, f"frame is {rows} x {cols} px but the analysed panel reaches "
                         f"{panel.y1} x {panel.x1}", "give the DICOM file that was analysed")
    spacing, _spacing_source = _spacing_mm(analysis, source)
    geometry, position = _geometry_copy(source, spacing)
    frame_number = (derived_frame_index(analysis) if frame_index is None else int(frame_index)) + 1
    n_source = int(getattr(source, "NumberOfFrames", 1) or 1)
    if not 1 <= frame_number <= n_source:
        raise InputError(src, f"has {n_source} frame(s), not frame {frame_number}",
                         "give the DICOM file that was analysed")
    run_time = datetime.now().replace(microsecond=0)
    common: dict[str, Any] = {
        "manufacturer": "ceuskit", "manufacturer_model_name": "ceuskit",
        "software_versions": __version__, "device_serial_number": "0",
        "plane_positions": [position],
    }
    out = make_out_dir(out_dir)
    paths: dict[str, Path] = {}

    say("writing the DICOM segmentation")
    descriptions, stacked = _segments(analysis, (rows, cols))
    seg = hd.seg.Segmentation(
        source_images=[geometry], pixel_array=stacked,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(),
        series_number=SERIES_KINDS["seg"][0], sop_instance_uid=generate_uid(), instance_number=1,
        content_label="CEUSKIT_ROIS", content_description="ceuskit ROIs and necrosis",
        # Keep empty segments (an ROI-free necrosis) so segment numbers stay stable.
        omit_empty_frames=False, **common)
    _keep_frame_reference(seg, source, frame_number)
    _finish(seg, source, "seg", run_time)
    paths["seg"] = _save(seg, out / SEG_FILE)

    say("writing the DICOM structured report")
    doc = results if results is not None else analysis.results()
    sr = _structured_report(analysis, doc, source, seg, frame_number)
    _frames_not_segments(sr.ContentSequence, seg.SOPInstanceUID)
    _finish(sr, source, "sr", run_time)
    _register_private_scheme(sr)
    paths["sr"] = _save(sr, out / SR_FILE)

    if analysis.maps is None:
        return paths
    say("writing the DICOM parametric maps")
    pmap_series = generate_uid()
    params = analysis.maps.result.params
    for number, param in enumerate(PMAP_PARAMETERS, start=1):
        values = _in_frame(np.asarray(params[param], dtype=np.float32), (rows, cols), panel.slices,
                           np.float32(np.nan))
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        quantity, unit, label = _quantity(param)
        mapping = hd.pm.RealWorldValueMapping(
            lut_label=label, lut_explanation=f"ceuskit {param} ({unit.value})"[:64], unit=unit,
            value_range=(lo, hi), slope=1.0, intercept=0.0, quantity_definition=quantity)
        pmap = hd.pm.ParametricMap(
            source_images=[geometry], pixel_array=values[np.newaxis],
            series_instance_uid=pmap_series, series_number=SERIES_KINDS["pmap"][0],
            sop_instance_uid=generate_uid(), instance_number=number,
            contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
            # LINEAR_EXACT: a window narrower than 1 (peak enhancement in a.u.) is
            # allowed only with it (PS3.3 C.11.2.1.3), and it maps floats exactly.
            voi_lut_transformations=[hd.VOILUTTransformation(
                window_center=(lo + hi) / 2.0, window_width=max(hi - lo, 1e-6),
                voi_lut_function=hd.VOILUTFunctionValues.LINEAR_EXACT)],
            image_flavor=hd.pm.ImageFlavorValues.PERFUSION,
            content_label=label.replace("_", ""), content_description=f"ceuskit {param}"[:64],
            **common)
        _keep_frame_reference(pmap, source, frame_number)
        _finish(pmap, source, "pmap", run_time)
        paths[f"pmap_{param}"] = _save(pmap, out / pmap_file(param))
    return paths


def _register_private_scheme(obj: Dataset) -> None:
    """Name ceuskit's private coding scheme in the SR (SOP Common module, PS3.3 C.12.1)."""
    from pydicom.dataset import Dataset as PdDataset

    from ceuskit import __version__

    if "ContentCreatorName" in obj:
        del obj.ContentCreatorName  # not in the SR IODs
    item = PdDataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = PRIVATE_SCHEME_NAME
    item.CodingSchemeVersion = __version__
    item.CodingSchemeResponsibleOrganization = "the ceuskit project (see docs/dicom.md)"
    obj.CodingSchemeIdentificationSequence = [item]


def _qualitative(findings: Mapping[str, Any]) -> list[Any]:
    """TID 1410 qualitative evaluations of the lesion from results.json ``findings``."""
    import highdicom as hd

    sct = _codes().SCT
    out: list[Any] = []
    enhancing = findings.get("intraluminal_enhancement")
    if isinstance(enhancing, bool):
        out.append(hd.sr.QualitativeEvaluation(
            _private("CK-ILE", "ceuskit intraluminal enhancement"), sct.Yes if enhancing else sct.No))
    for key, code, meaning in (("wash_in", "CK-WASH-IN", "ceuskit wash-in"),
                               ("enhancement", "CK-ENH", "ceuskit enhancement")):
        value = findings.get(key)
        if isinstance(value, str) and value:
            out.append(hd.sr.QualitativeEvaluation(
                _private(code, meaning), _private(f"{code}-{value.upper()}"[:16], f"{meaning} {value}")))
    wash_out = findings.get("wash_out")
    if isinstance(wash_out, Mapping):
        present = wash_out.get("present")
        if isinstance(present, bool):
            out.append(hd.sr.QualitativeEvaluation(
                _private("CK-WASH-OUT", "ceuskit wash-out"), sct.Yes if present else sct.No))
        for key, code in (("timing", "CK-WO-TIMING"), ("degree", "CK-WO-DEGREE")):
            value = wash_out.get(key)
            if isinstance(value, str) and value:
                meaning = f"ceuskit wash-out {key}"
                out.append(hd.sr.QualitativeEvaluation(
                    _private(code, meaning),
                    _private(f"CK-WO-{value.upper()}"[:16], f"{meaning} {value}")))
    return out


def _segment_reference(seg: Dataset, segment_number: int, source: Dataset, frame_number: int) -> Any:
    """The SEG frame of a segment, and the analysed source frame (1-based) it was derived from.

    Built here, not with ``ReferencedSegmentationFrame.from_segmentation``,
    which (highdicom 0.28.2) gives the SEG frame number as the source's.
    `_frames_not_segments` then drops the segment number the IMAGE item
    may not carry beside the frame number.
    """
    import highdicom as hd

    frames = [i for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1)
              if int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == segment_number]
    if len(frames) != 1:
        raise RuntimeError(f"segment {segment_number} has {len(frames)} frames in the SEG, not 1")
    return hd.sr.ReferencedSegmentationFrame(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, frame_number=frames[0],
        segment_number=segment_number,
        source_image=hd.sr.SourceImageForSegmentation(
            source.SOPClassUID, source.SOPInstanceUID, referenced_frame_numbers=[frame_number]))


def _frames_not_segments(items: Any, seg_uid: str) -> None:
    """Drop Referenced Segment Number where a SEG frame is referenced (PS3.3 C.18.3.1).

    An IMAGE item names a segmentation's segments or its frames, not both;
    ceuskit's SEG has one frame per segment, so the frame names the segment
    (the SEG's Segment Identification Sequence of that frame).
    """
    for item in items or []:
        for ref in item.get("ReferencedSOPSequence", []):
            if (ref.get("ReferencedSOPInstanceUID") == seg_uid and "ReferencedFrameNumber" in ref
                    and "ReferencedSegmentNumber" in ref):
                del ref.ReferencedSegmentNumber
        _frames_not_segments(item.get("ContentSequence"), seg_uid)


def _structured_report(analysis: Analysis, doc: Mapping[str, Any], source: Dataset,
                       seg: Dataset, frame_number: int) -> Any:
    """The TID 1500 Measurement Report of the ROIs (see the module docstring)."""
    import math

    import highdicom as hd
    from pydicom.uid import generate_uid

    from ceuskit import __version__

    c = _codes()
    rois_doc: Mapping[str, Any] = doc.get("rois") or {}
    findings_any = doc.get("findings")
    findings: Mapping[str, Any] = findings_any if isinstance(findings_any, Mapping) else {}
    groups = []
    for number, r in enumerate(analysis.rois, start=1):  # ROI segments come first in the SEG
        name, role = r.roi.name, r.roi.role
        roi_doc: Mapping[str, Any] = rois_doc.get(name) or {}
        perfusion: Mapping[str, Any] = roi_doc.get("perfusion") or {}
        measurements = []
        for param in SR_MEASUREMENTS:
            value = perfusion.get(param)
            if value is None or not math.isfinite(float(value)):
                continue
            concept, unit = _sr_measurement(param)
            measurements.append(hd.sr.Measurement(name=concept, value=float(value), unit=unit))
        fraction = roi_doc.get("necrosis_fraction")
        if role == "lesion" and fraction is not None and math.isfinite(float(fraction)):
            measurements.append(hd.sr.Measurement(
                name=_private("CK-NECROSIS", "ceuskit necrosis_fraction (non-enhancing share)"),
                value=100.0 * float(fraction), unit=c.UCUM.Percent))
        evaluations = _qualitative(findings) if name == findings.get("lesion_roi") else []
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=name[:64]),
            referenced_segment=_segment_reference(seg, number, source, frame_number),
            finding_type=_segment_codes(role)[1],
            finding_sites=[hd.sr.FindingSite(c.SCT.Vein)] if role in ("lesion", "vessel") else None,
            measurements=measurements or None, qualitative_evaluations=evaluations or None))
    observer = hd.sr.ObserverContext(
        observer_type=c.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name="ceuskit", manufacturer_name="ceuskit", model_name="ceuskit"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=c.SCT.DiagnosticUltrasonography, imaging_measurements=groups,
        title=c.DCM.ImagingMeasurementReport)
    report[0].ContentSequence.append(hd.sr.TextContentItem(
        name=c.DCM.Comment, value="ceuskit: decision support, not a diagnosis",
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    return hd.sr.Comprehensive3DSR(
        evidence=[source, seg], content=report[0], series_instance_uid=generate_uid(),
        series_number=SERIES_KINDS["sr"][0], sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer="ceuskit", software_versions=__version__, is_complete=True)
