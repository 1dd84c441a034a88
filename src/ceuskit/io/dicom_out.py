"""Write a grey cine loop as a DICOM Ultrasound Multi-frame Image.

The files are synthetic (phantoms, test fixtures, exports of simulated
studies): every patient and study attribute is a fixed, non-identifying
placeholder, and every UID is freshly generated.
"""

from __future__ import annotations

from collections.abc import Iterable
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from ceuskit.cine import Panel
from ceuskit.outputs import atomic_path

# Frame times are regular when no frame lies further than this from the
# straight line through the first and last frame times; then a single
# FrameTime reproduces every timestamp to within this tolerance.
_REGULAR_TOL_S = 1e-6

# (0018,1063) Frame Time and (0018,1065) Frame Time Vector, the two values a
# Frame Increment Pointer may name for a cine.
_TAG_FRAME_TIME = 0x00181063
_TAG_FRAME_TIME_VECTOR = 0x00181065

#: Transfer syntaxes `write_dicom_cine` can produce (all lossless).
WRITABLE_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
)

# The openjpeg encoder behind pydicom uses 5 wavelet decomposition levels
# (not configurable there), which needs 2**5 pixels along each side.
_J2K_MIN_SIDE = 32

# RegionDataType (0018,6014) per panel kind: 1 = tissue, 2 = colour flow.
# Contrast and B-mode panels are both tissue images as far as DICOM knows.
_REGION_DATA_TYPE = {"doppler": 2}


def _ds(value: float) -> DSfloat:
    """A Decimal String that fits DICOM's 16-character limit."""
    return DSfloat(float(value), auto_format=True)


def _timing(times_s: NDArray[np.float64]) -> tuple[float | None, list[float] | None]:
    """Frame Time or Frame Time Vector, in ms, for the given frame times.

    Returns
    -------
    frame_time_ms : float or None
        The constant interval when the times are regular.
    vector_ms : list of float or None
        Otherwise 0 followed by each interval from the previous frame
        (PS3.3 C.7.6.5.1.2).
    """
    t = times_s - times_s[0]
    step = t[-1] / (t.size - 1)
    line = np.arange(t.size, dtype=np.float64) * step
    if np.max(np.abs(t - line)) <= _REGULAR_TOL_S:
        return step * 1e3, None
    return None, [0.0, *(np.diff(t) * 1e3).tolist()]


def _region_item(panel: Panel, spacing_mm: tuple[float, float] | None) -> Dataset:
    """One item of the Sequence of Ultrasound Regions for a panel."""
    item = Dataset()
    item.RegionSpatialFormat = 1  # 2-D tissue or flow image
    item.RegionDataType = _REGION_DATA_TYPE.get(panel.kind, 1)
    item.RegionFlags = 0
    # DICOM region bounds are inclusive; Panel's x1/y1 are exclusive.
    item.RegionLocationMinX0 = panel.x0
    item.RegionLocationMinY0 = panel.y0
    item.RegionLocationMaxX1 = panel.x1 - 1
    item.RegionLocationMaxY1 = panel.y1 - 1
    spacing = panel.spacing_mm if panel.spacing_mm is not None else spacing_mm
    if spacing is None:
        # Units 0 = "none": the region is still declared, with no scale.
        item.PhysicalUnitsXDirection = 0
        item.PhysicalUnitsYDirection = 0
        item.PhysicalDeltaX = 0.0
        item.PhysicalDeltaY = 0.0
    else:
        row_mm, col_mm = spacing
        item.PhysicalUnitsXDirection = 3  # cm
        item.PhysicalUnitsYDirection = 3
        item.PhysicalDeltaX = float(col_mm) / 10.0
        item.PhysicalDeltaY = float(row_mm) / 10.0
    item.ReferencePixelX0 = 0
    item.ReferencePixelY0 = 0
    return item


def _check_inputs(
    frames: NDArray[Any], times_s: ArrayLike, regions: Iterable[Panel]
) -> tuple[NDArray[np.uint8], NDArray[np.float64], tuple[Panel, ...]]:
    arr = np.asarray(frames)
    rgb = arr.ndim == 4 and arr.shape[-1] == 3
    if not (arr.ndim == 3 or rgb) or arr.dtype != np.uint8:
        raise ValueError(f"frames must be a (T, H, W) or (T, H, W, 3) uint8 array, got "
                         f"{arr.dtype} {arr.shape}")
    n, h, w = arr.shape[:3]
    if n < 1:
        raise ValueError("frames holds no frame")
    if h > 0xFFFF or w > 0xFFFF or h == 0 or w == 0:
        raise ValueError(f"frame size {h}x{w} cannot be stored in DICOM")
    t = np.asarray(times_s, dtype=np.float64).reshape(-1)
    if t.shape != (n,):
        raise ValueError(f"times_s has {t.size} entries for {n} frames")
    if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise ValueError("times_s must be finite and strictly increasing")
    panels = tuple(regions)
    for p in panels:
        if p.x1 > w or p.y1 > h or p.x0 < 0 or p.y0 < 0:
            raise ValueError(f"region {p.bounds} lies outside the {w}x{h} frame")
    return np.ascontiguousarray(arr), t, panels


def _build_dataset(
    frames: NDArray[np.uint8],
    times_s: NDArray[np.float64],
    panels: tuple[Panel, ...],
    spacing_mm: tuple[float, float] | None,
    description: str,
    study: tuple[str, str] | None = None,
) -> Dataset:
    n = frames.shape[0]
    sop_uid = generate_uid()
    # A lone frame is a still image: US Image Storage, which has no cine
    # timing to fill in.
    sop_class = UltrasoundMultiFrameImageStorage if n > 1 else UltrasoundImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid

    # Patient / study / series: fixed placeholders, never real identifiers.
    ds.PatientName = "PHANTOM^CEUSKIT"
    ds.PatientID = "PHANTOM"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = generate_uid() if study is None else study[0]
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "PHANTOM"
    ds.AccessionNumber = ""
    ds.Modality = "US"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.SeriesDescription = description
    # Type 2C (a leg is a paired body part): empty = not known for a phantom.
    ds.Laterality = ""
    # Not part of the US IOD, but later derived objects (segmentations,
    # parametric maps) need a frame of reference to point at.
    ds.FrameOfReferenceUID = generate_uid() if study is None else study[1]
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "ceuskit"
    ds.InstanceNumber = 1
    ds.PatientOrientation = ""
    ds.ContentDate = ""
    ds.ContentTime = ""
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.LossyImageCompression = "00"

    if n > 1:
        _add_cine_timing(ds, times_s)

    # The US IOD carries the pixel size in the ultrasound regions, not in Pixel
    # Spacing; a file without regions keeps Pixel Spacing (a non-standard
    # attribute some exporters write) so that its size is not lost.
    if spacing_mm is not None and not panels:
        ds.PixelSpacing = [_ds(spacing_mm[0]), _ds(spacing_mm[1])]
    if panels:
        ds.SequenceOfUltrasoundRegions = DicomSequence(
            [_region_item(p, spacing_mm) for p in panels]
        )

    photometric = "RGB" if frames.ndim == 4 else "MONOCHROME2"
    ds.set_pixel_data(frames if n > 1 else frames[0], photometric, 8,
                      generate_instance_uid=False)
    return ds


def _add_cine_timing(ds: Dataset, times_s: NDArray[np.float64]) -> None:
    """Multi-frame and Cine module timing: Frame Time if regular, else the vector."""
    n = times_s.size
    frame_time_ms, vector_ms = _timing(times_s)
    ds.NumberOfFrames = n
    if frame_time_ms is not None:
        ds.FrameTime = _ds(frame_time_ms)
        ds.FrameIncrementPointer = _TAG_FRAME_TIME
        rate = 1e3 / frame_time_ms
    else:
        assert vector_ms is not None
        ds.FrameTimeVector = [_ds(v) for v in vector_ms]
        ds.FrameIncrementPointer = _TAG_FRAME_TIME_VECTOR
        rate = (n - 1) / float(times_s[-1] - times_s[0])
    # Cine Rate is an integer display hint; never write 0 for slow loops.
    ds.CineRate = max(1, round(rate))


def write_dicom_cine(
    path: str | PathLike[str],
    frames: NDArray[np.uint8],
    times_s: ArrayLike,
    *,
    regions: Iterable[Panel] = (),
    spacing_mm: tuple[float, float] | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    description: str = "ceuskit phantom",
    acquisition_time_of_day_s: float | None = None,
    study: tuple[str, str] | None = None,
) -> Path:
    """Write grey or RGB frames as a DICOM Ultrasound Multi-frame Image.

    A single frame is written as an Ultrasound Image (a still, without cine
    timing); readers refuse it for analysis, which is what tests need.

    Parameters
    ----------
    path : path-like
        Output file; replaced atomically if it exists.
    frames : uint8 array, shape (T, H, W) or (T, H, W, 3)
        Grey display values (MONOCHROME2, 8 bits), or RGB (colour-by-pixel,
        8 bits per sample), T >= 1.
    times_s : array-like, shape (T,)
        Frame times in seconds, strictly increasing.  Regular times (every
        frame within 1 µs of a constant rate) are stored as Frame Time,
        others as Frame Time Vector; both in ms.
    regions : iterable of Panel
        Stored as the Sequence of Ultrasound Regions (2-D tissue regions,
        or colour flow for ``kind="doppler"``), with the physical pixel size
        in cm taken from each panel's ``spacing_mm`` (row, col), else from
        `spacing_mm`; a region with neither is written without units.
    spacing_mm : (float, float), optional
        Pixel size (row, col) in mm of the whole frame, used for regions that
        carry none of their own; written as Pixel Spacing only for a file
        without regions (the US IOD has no Pixel Spacing).
    transfer_syntax : str
        Explicit or Implicit VR Little Endian (uncompressed), RLE Lossless,
        JPEG-LS Lossless or JPEG 2000 Lossless.
    description : str
        Series Description.
    acquisition_time_of_day_s : float, optional
        Acquisition Time and Content Time (s after midnight; no date), which
        put the clips of one exam on one clock (`ceuskit.clips`).
    study : (str, str), optional
        Study Instance UID and Frame of Reference UID to write (the clips of
        one exam share both: one study, one probe position); new ones when
        not given.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ValueError
        For frames that are not (T, H, W) uint8 with T >= 1, times that do
        not match them, regions outside the frame, a transfer syntax not
        listed above, or JPEG 2000 for frames under 32 pixels on a side.
    RuntimeError
        If the encoder for a compressed transfer syntax is not installed.
    """
    ts = UID(str(transfer_syntax))
    if ts not in WRITABLE_TRANSFER_SYNTAXES:
        raise ValueError(f"cannot write transfer syntax {ts.name or ts}")
    arr, t, panels = _check_inputs(frames, times_s, regions)
    if ts == JPEG2000Lossless and min(arr.shape[1:]) < _J2K_MIN_SIDE:
        raise ValueError(
            f"JPEG 2000 needs frames of at least {_J2K_MIN_SIDE}x{_J2K_MIN_SIDE} pixels "
            f"(got {arr.shape[1]}x{arr.shape[2]}); use RLE or JPEG-LS"
        )
    ds = _build_dataset(arr, t, panels, spacing_mm, description, study)
    if acquisition_time_of_day_s is not None:
        sec = float(acquisition_time_of_day_s)
        if not 0.0 <= sec < 86400.0:
            raise ValueError("acquisition_time_of_day_s must lie within one day (0..86400 s)")
        tm = f"{int(sec // 3600):02d}{int(sec % 3600 // 60):02d}{sec % 60:09.6f}"
        ds.AcquisitionTime = tm
        ds.ContentTime = tm

    if ts == ImplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = ts
    elif ts != ExplicitVRLittleEndian:
        # The SOP Instance UID must stay the one already in the file meta.
        ds.compress(ts, arr, generate_instance_uid=False)

    out = Path(path)
    with atomic_path(out) as tmp, tmp.open("wb") as fh:
        ds.save_as(fh, enforce_file_format=True)
    return out


__all__ = ["WRITABLE_TRANSFER_SYNTAXES", "write_dicom_cine"]

