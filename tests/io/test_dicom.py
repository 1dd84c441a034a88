"""DICOM reader and writer: real ultrasound files, round trips, bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from pydicom.pixels import apply_color_lut
from pydicom.uid import (
    MPEG2MPML,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

import ceuskit.io.dicom as dicom_mod
from ceuskit.cine import Panel
from ceuskit.errors import InputError
from ceuskit.io.dicom import read_dicom, read_dicom_frames
from ceuskit.io.dicom_out import write_dicom_cine
from ceuskit.io.frames import rgb_to_grey

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _testdata(name: str) -> Path:
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    # pydicom-data is a pinned test dependency: a missing file is a broken
    # environment, which must fail rather than skip the real-data tests.
    assert found is not None, f"pydicom test file {name} not found: pip install -e '.[test]'"
    return Path(str(found))


def _frames(n: int = 6, h: int = 32, w: int = 48, seed: int = 0) -> NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)


PANELS = (
    Panel(0, 0, 24, 32, spacing_mm=(0.2, 0.25), kind="bmode"),
    Panel(24, 2, 48, 30, spacing_mm=(0.3, 0.35), kind="contrast"),
)


def _write(tmp_path: Path, name: str = "cine.dcm", **kwargs: object) -> tuple[Path, NDArray[np.uint8]]:
    frames = _frames()
    times = kwargs.pop("times", np.arange(frames.shape[0]) / 15.0)
    path = write_dicom_cine(tmp_path / name, frames, times, **kwargs)  # type: ignore[arg-type]
    return path, frames


def _edit(path: Path, out: Path, **changes: object) -> Path:
    """Copy a DICOM file with some attributes changed (None deletes)."""
    ds = pydicom.dcmread(path)
    for keyword, value in changes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(out)
    return out


def _raises_naming(path: Path, match: str, **kwargs: object) -> InputError:
    with pytest.raises(InputError, match=match) as info:
        read_dicom(path, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert path.name in message
    assert "\n" not in message
    return info.value


# --------------------------------------------------------------------------
# real ultrasound files from pydicom's test data
# --------------------------------------------------------------------------


def test_ybr_jpeg_baseline_cine() -> None:
    path = _testdata("examples_ybr_color.dcm")
    ds = pydicom.dcmread(path)
    cine = read_dicom(path)

    assert cine.frames.shape == (30, 240, 320)
    assert cine.frames.dtype == np.float32
    assert cine.display_max == 255.0
    np.testing.assert_allclose(np.diff(cine.times_s), 0.033333, atol=1e-9)
    assert cine.times_s[-1] == pytest.approx(29 * 0.033333)
    assert cine.meta["timing_source"] == "FrameTime"
    assert cine.meta["frame_time_ms"] == pytest.approx(33.333)
    assert cine.meta["photometric"] == "YBR_FULL_422"
    assert cine.meta["transfer_syntax"] == "JPEG Baseline (Process 1)"
    assert cine.meta["sop_class"] == "Ultrasound Multi-frame Image Storage"
    assert cine.meta["manufacturer"] == "SonoSite, Inc."
    assert cine.meta["model"] == "Turbo"
    assert cine.meta["n_frames"] == 30
    assert cine.meta["source_name"] == "examples_ybr_color.dcm"

    # Pixels: the luma of what pydicom decodes, frame by frame.
    grey0, _ = rgb_to_grey(ds.pixel_array[0])
    np.testing.assert_array_equal(cine.frames[0], grey0)
    assert cine.chroma is not None and cine.chroma.shape == (240, 320)
    assert cine.chroma.max() > 10  # colour annotations in the source

    # One 2-D tissue region; its bounds reach past this (downsized) frame.
    (item,) = ds.SequenceOfUltrasoundRegions
    (panel,) = cine.regions
    assert panel.bounds == (
        item.RegionLocationMinX0,
        item.RegionLocationMinY0,
        min(320, item.RegionLocationMaxX1 + 1),
        min(240, item.RegionLocationMaxY1 + 1),
    )
    expected_mm = (item.PhysicalDeltaY * 10, item.PhysicalDeltaX * 10)
    assert panel.spacing_mm == pytest.approx(expected_mm)
    assert panel.source == "dicom-region" and panel.kind == "unknown"
    assert cine.spacing_mm == pytest.approx(expected_mm)
    assert "region-clipped" in {w.code for w in cine.warnings}


def test_long_jpeg_baseline_cine() -> None:
    path = _testdata("color3d_jpeg_baseline.dcm")
    cine = read_dicom(path)
    assert cine.frames.shape == (120, 480, 640)
    assert cine.times_s[-1] == pytest.approx(119 * 0.033333)
    assert cine.frames.min() >= 0 and cine.frames.max() <= 255
    assert cine.chroma is not None
    (panel,) = cine.regions
    assert panel.bounds == (84, 31, 596, 415)  # inclusive 595/414 in the file
    assert not cine.warnings
    # Issue 17: a lossy file is known as such, and its JPEG blocks are found in
    # the pixels of a file nobody here wrote (the dynamic-range estimate
    # then widens its interval: the speckle reads low after compression).
    assert cine.meta["lossy_compression"] == "stored as JPEG Baseline (Process 1)"
    from ceuskit.dynamic_range import block_quantisation

    x0, y0, x1, y1 = panel.bounds
    found = block_quantisation(cine.frames[:4, y0:y1, x0:x1])
    assert found.detected and found.n_frequencies >= 10
    assert found.grid_offset_px == ((-y0) % 8, (-x0) % 8)


def test_lossy_compression_is_read_from_the_transfer_syntax_and_the_flag() -> None:
    from ceuskit.io.dicom import lossy_compression

    said = {}
    for name in ("US1_J2KR.dcm", "US1_J2KI.dcm", "US1_UNCR.dcm", "SC_rgb_jpeg_gdcm.dcm"):
        ds = pydicom.dcmread(_testdata(name), stop_before_pixels=True)
        said[name] = lossy_compression(ds.file_meta.TransferSyntaxUID, ds)
    # JPEG 2000 lossless-only, and uncompressed pixels never lossy-compressed: nothing to say.
    assert said["US1_J2KR.dcm"] is None and said["US1_UNCR.dcm"] is None
    assert said["US1_J2KI.dcm"] == "stored as JPEG 2000 Image Compression"
    assert said["SC_rgb_jpeg_gdcm.dcm"] is None  # JPEG lossless (process 14)
    # Stored uncompressed now, lossy once: the flag says so.
    ds = pydicom.dcmread(_testdata("US1_UNCR.dcm"), stop_before_pixels=True)
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    assert lossy_compression(ds.file_meta.TransferSyntaxUID, ds) == (
        "Lossy Image Compression (0028,2110) is 01 (ISO_10918_1)")


def test_rle_palette_needs_fps() -> None:
    path = _testdata("OBXXXX1A_rle_2frame.dcm")
    _raises_naming(path, "pass --fps")

    cine = read_dicom(path, fps=10.0)
    assert cine.frames.shape == (2, 600, 800)
    np.testing.assert_allclose(cine.times_s, [0.0, 0.1])
    assert cine.meta["timing_source"] == "fps"
    assert cine.meta["photometric"] == "PALETTE COLOR"

    # The palette holds 8-bit values in the high byte of 16-bit entries.
    ds = pydicom.dcmread(path)
    rgb = apply_color_lut(ds.pixel_array[1], ds)
    assert rgb.max() == 0xFF00
    grey, chroma = rgb_to_grey(rgb / 256.0)
    np.testing.assert_allclose(cine.frames[1], grey, atol=1e-4)
    assert cine.frames.max() == 255.0
    assert cine.chroma is not None
    assert cine.chroma.max() == pytest.approx(chroma.max())

    # Spectral (non 2-D) region skipped; the 2-D one kept with its spacing.
    assert len(ds.SequenceOfUltrasoundRegions) == 2
    (panel,) = cine.regions
    item = ds.SequenceOfUltrasoundRegions[0]
    assert panel.bounds == (120, 60, 800, 519)
    assert panel.spacing_mm == pytest.approx((item.PhysicalDeltaY * 10, item.PhysicalDeltaX * 10))


def test_big_endian_palette_matches_little_endian() -> None:
    le, le_chroma = read_dicom_frames(_testdata("OBXXXX1A_2frame.dcm"))
    be, be_chroma = read_dicom_frames(_testdata("OBXXXX1A_expb_2frame.dcm"))
    np.testing.assert_array_equal(le, be)
    assert le_chroma is not None and be_chroma is not None
    np.testing.assert_array_equal(le_chroma, be_chroma)
    assert le.max() == 255.0


def test_aloka_16bit_palette_scaled_to_display_range() -> None:
    path = _testdata("gdcm-US-ALOKA-16.dcm")
    frames, chroma = read_dicom_frames(path)
    assert frames.shape == (1, 480, 640)
    assert 0.0 <= frames.min() and frames.max() <= 255.0
    assert frames.max() > 200  # scaled from 16 bits, not left at 0..65535

    ds = pydicom.dcmread(path)
    rgb = apply_color_lut(ds.pixel_array, ds).astype(np.float32) * np.float32(255 / 65535)
    grey, _ = rgb_to_grey(rgb)
    np.testing.assert_allclose(frames[0], grey, atol=1e-3)
    assert chroma is not None

    _raises_naming(path, "single frame")


def test_jpeg2000_lossless_equals_uncompressed() -> None:
    ref, ref_chroma = read_dicom_frames(_testdata("US1_UNCR.dcm"))
    j2kr, j2kr_chroma = read_dicom_frames(_testdata("US1_J2KR.dcm"))
    assert ref.shape == (1, 480, 640)
    np.testing.assert_array_equal(j2kr, ref)
    assert ref_chroma is not None and j2kr_chroma is not None
    np.testing.assert_array_equal(j2kr_chroma, ref_chroma)

    j2ki, _ = read_dicom_frames(_testdata("US1_J2KI.dcm"))
    diff = np.abs(j2ki - ref)
    assert 0 < diff.mean() < 3  # lossy, but the same image

    for name in ("US1_J2KR.dcm", "US1_J2KI.dcm", "US1_UNCR.dcm"):
        _raises_naming(_testdata(name), "single frame")


def test_jpeg_lossless_sv1_grey() -> None:
    path = _testdata("JPGLosslessP14SV1_1s_1f_8b.dcm")
    frames, chroma = read_dicom_frames(path)
    ds = pydicom.dcmread(path)
    assert chroma is None
    np.testing.assert_array_equal(frames[0], ds.pixel_array.astype(np.float32))


def test_jpeg_ls_12bit_multiframe() -> None:
    jls = read_dicom(_testdata("emri_small_jpeg_ls_lossless.dcm"), fps=5.0)
    raw = read_dicom(_testdata("emri_small.dcm"), fps=5.0)
    assert jls.frames.shape == (10, 64, 64)
    np.testing.assert_array_equal(jls.frames, raw.frames)
    assert jls.chroma is None
    assert jls.meta["bits_stored"] == 12
    ds = pydicom.dcmread(_testdata("emri_small.dcm"))
    expected = ds.pixel_array.astype(np.float32) * np.float32(255 / 4095)
    np.testing.assert_allclose(jls.frames, expected, rtol=1e-6)
    np.testing.assert_allclose(jls.times_s, np.arange(10) / 5.0)


# --------------------------------------------------------------------------
# round trips through write_dicom_cine
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "syntax",
    [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, JPEGLSLossless,
     JPEG2000Lossless],
    ids=["explicit", "implicit", "rle", "jpeg-ls", "j2k"],
)
def test_round_trip_constant_rate(tmp_path: Path, syntax: str) -> None:
    path, frames = _write(tmp_path, regions=PANELS, transfer_syntax=syntax)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.SOPClassUID == UltrasoundMultiFrameImageStorage
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds.FrameIncrementPointer == 0x00181063
    assert "FrameTimeVector" not in ds
    assert ds.CineRate == 15

    cine = read_dicom(path)
    np.testing.assert_array_equal(cine.frames, frames.astype(np.float32))
    assert cine.frames.dtype == np.uint8  # 8-bit grey is kept as stored
    np.testing.assert_allclose(cine.times_s, np.arange(6) / 15.0, atol=1e-6)
    assert cine.meta["timing_source"] == "FrameTime"
    assert cine.meta["manufacturer"] == "ceuskit"
    assert cine.chroma is None
    assert [p.bounds for p in cine.regions] == [p.bounds for p in PANELS]
    for got, want in zip(cine.regions, PANELS, strict=True):
        assert got.spacing_mm == pytest.approx(want.spacing_mm)
        assert got.source == "dicom-region"
    # No Pixel Spacing: the largest region's spacing (24x32 against 24x28
    # pixels, so the first) is the frame default.
    assert cine.spacing_mm == pytest.approx((0.2, 0.25))
    assert not cine.warnings


def test_round_trip_variable_rate_and_pixel_spacing(tmp_path: Path) -> None:
    times = np.array([0.0, 0.05, 0.125, 0.2, 0.31, 0.4])
    path, frames = _write(tmp_path, times=times, spacing_mm=(0.4, 0.5),
                          regions=(Panel(5, 5, 30, 20),))
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert "FrameTime" not in ds
    assert ds.FrameIncrementPointer == 0x00181065
    assert [float(v) for v in ds.FrameTimeVector] == pytest.approx([0, 50, 75, 75, 110, 90])

    cine = read_dicom(path)
    np.testing.assert_array_equal(cine.frames, frames)
    np.testing.assert_allclose(cine.times_s, times, atol=1e-6)
    assert cine.meta["timing_source"] == "FrameTimeVector"
    assert "frame_time_ms" not in cine.meta
    assert cine.spacing_mm == pytest.approx((0.4, 0.5))  # Pixel Spacing
    (panel,) = cine.regions
    assert panel.bounds == (5, 5, 30, 20)
    assert panel.spacing_mm == pytest.approx((0.4, 0.5))  # from spacing_mm


def test_round_trip_offset_times_and_doppler_kind(tmp_path: Path) -> None:
    times = 12.5 + np.arange(6) * 0.04
    path, _ = _write(tmp_path, times=times, regions=(Panel(0, 0, 10, 10, kind="doppler"),))
    cine = read_dicom(path)
    np.testing.assert_allclose(cine.times_s, times - 12.5, atol=1e-6)
    assert cine.regions[0].kind == "doppler"
    assert cine.regions[0].spacing_mm is None
    assert cine.spacing_mm is None


def test_written_file_is_synthetic_and_meta_has_no_identifiers(tmp_path: Path) -> None:
    path, _ = _write(tmp_path, description="unit test")
    ds = pydicom.dcmread(path)
    assert ds.PatientName == "PHANTOM^CEUSKIT"
    assert ds.PatientID == "PHANTOM"
    assert ds.Modality == "US"
    assert ds.SeriesDescription == "unit test"
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert len({ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID}) == 3

    cine = read_dicom(path)
    text = repr(dict(cine.meta)).upper()
    for secret in ("PHANTOM", str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)):
        assert secret.upper() not in text
    assert cine.meta["source_name"] == "cine.dcm"


def test_writer_replaces_atomically_and_validates(tmp_path: Path) -> None:
    path, _ = _write(tmp_path)
    new = _frames(seed=1)
    write_dicom_cine(path, new, np.arange(6) / 10.0)
    np.testing.assert_array_equal(read_dicom(path).frames, new)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cine.dcm"]  # no temp left

    with pytest.raises(ValueError, match="uint8"):
        write_dicom_cine(tmp_path / "x.dcm", new.astype(np.float32), np.arange(6))
    with pytest.raises(ValueError, match="entries"):
        write_dicom_cine(tmp_path / "x.dcm", new, np.arange(5))
    with pytest.raises(ValueError, match="increasing"):
        write_dicom_cine(tmp_path / "x.dcm", new, [0, 1, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="no frame"):
        write_dicom_cine(tmp_path / "x.dcm", new[:0], [])
    with pytest.raises(ValueError, match="outside"):
        write_dicom_cine(tmp_path / "x.dcm", new, np.arange(6), regions=(Panel(0, 0, 49, 5),))
    with pytest.raises(ValueError, match="at least 32x32"):
        write_dicom_cine(tmp_path / "x.dcm", new[:, :20], np.arange(6),
                         transfer_syntax=JPEG2000Lossless)
    with pytest.raises(ValueError, match="transfer syntax"):
        write_dicom_cine(tmp_path / "x.dcm", new, np.arange(6), transfer_syntax=MPEG2MPML)
    assert not (tmp_path / "x.dcm").exists()


def test_icon_image_before_the_pixel_data_is_not_mistaken_for_it(tmp_path: Path) -> None:
    path, frames = _write(tmp_path)
    ds = pydicom.dcmread(path)
    icon = pydicom.Dataset()
    icon.set_pixel_data(frames[0, :8, :8].copy(), "MONOCHROME2", 8)
    ds.IconImageSequence = [icon]  # (0088,0200) sits before (7FE0,0010)
    ds.save_as(tmp_path / "icon.dcm")
    cine = read_dicom(tmp_path / "icon.dcm")
    np.testing.assert_array_equal(cine.frames, frames)


# --------------------------------------------------------------------------
# photometric handling
# --------------------------------------------------------------------------


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    path, frames = _write(tmp_path)
    mono1 = _edit(path, tmp_path / "mono1.dcm", PhotometricInterpretation="MONOCHROME1")
    cine = read_dicom(mono1)
    assert cine.frames.dtype == np.uint8
    np.testing.assert_array_equal(cine.frames, 255.0 - frames.astype(np.float32))


# --------------------------------------------------------------------------
# timing rules
# --------------------------------------------------------------------------


def test_fps_with_file_timing_is_ignored_with_warning(tmp_path: Path) -> None:
    path, _ = _write(tmp_path)
    cine = read_dicom(path, fps=30.0)
    np.testing.assert_allclose(cine.times_s, np.arange(6) / 15.0, atol=1e-6)
    (warning,) = cine.warnings
    assert warning.code == "fps-ignored"
    assert cine.meta["timing_source"] == "FrameTime"


def test_cine_rate_is_a_last_resort_with_warning(tmp_path: Path) -> None:
    path, _ = _write(tmp_path)
    bare = _edit(path, tmp_path / "rate.dcm", FrameTime=None, FrameIncrementPointer=None,
                 CineRate=25)
    cine = read_dicom(bare)
    np.testing.assert_allclose(cine.times_s, np.arange(6) / 25.0)
    assert [w.code for w in cine.warnings] == ["timing-from-cine-rate"]
    assert cine.meta["timing_source"] == "CineRate"

    # An explicit --fps beats the display rate, without a warning.
    cine = read_dicom(bare, fps=10.0)
    np.testing.assert_allclose(cine.times_s, np.arange(6) / 10.0)
    assert not cine.warnings


def test_recommended_display_rate_is_also_a_last_resort(tmp_path: Path) -> None:
    path, _ = _write(tmp_path)
    bare = _edit(path, tmp_path / "rdfr.dcm", FrameTime=None, FrameIncrementPointer=None,
                 CineRate=None, RecommendedDisplayFrameRate=20)
    cine = read_dicom(bare)
    np.testing.assert_allclose(cine.times_s, np.arange(6) / 20.0)
    assert [w.code for w in cine.warnings] == ["timing-from-cine-rate"]
    assert cine.meta["timing_source"] == "RecommendedDisplayFrameRate"


def test_load_cine_dispatches_to_the_dicom_reader(tmp_path: Path) -> None:
    from ceuskit.io import load_cine

    path, frames = _write(tmp_path)
    cine = load_cine(path)
    np.testing.assert_array_equal(cine.frames, frames)
    assert cine.meta["format"] == "dicom"


def test_no_timing_and_no_fps(tmp_path: Path) -> None:
    path, _ = _write(tmp_path)
    bare = _edit(path, tmp_path / "untimed.dcm", FrameTime=None, FrameIncrementPointer=None,
                 CineRate=None)
    _raises_naming(bare, "pass --fps")
    assert read_dicom(bare, fps=20.0).times_s[-1] == pytest.approx(0.25)


def test_duplicate_times_in_frame_time_vector(tmp_path: Path) -> None:
    path, _ = _write(tmp_path, times=[0.0, 0.1, 0.15, 0.3, 0.31, 0.4])
    dup = _edit(path, tmp_path / "dup.dcm", FrameTimeVector=[0, 100, 0, 100, 50, 50])
    _raises_naming(dup, "not strictly increasing")

    # With --fps the unusable file timing gives way, and says so.
    cine = read_dicom(dup, fps=10.0)
    np.testing.assert_allclose(cine.times_s, np.arange(6) / 10.0)
    assert [w.code for w in cine.warnings] == ["file-timing-unusable"]


def test_frame_time_vector_of_wrong_length(tmp_path: Path) -> None:
    path, _ = _write(tmp_path, times=[0.0, 0.1, 0.15, 0.3, 0.31, 0.4])
    bad = _edit(path, tmp_path / "short.dcm", FrameTimeVector=[0, 100, 50])
    _raises_naming(bad, "3 entries for 6 frames")


def test_bad_fps_value(tmp_path: Path) -> None:
    path, _ = _write(tmp_path)
    with pytest.raises(InputError, match="--fps"):
        read_dicom(path, fps=0.0)


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------


def test_not_dicom(tmp_path: Path) -> None:
    text = tmp_path / "notes.dcm"
    text.write_text("this is not an image\n" * 20)
    _raises_naming(text, "not a DICOM file")


def test_missing_file(tmp_path: Path) -> None:
    _raises_naming(tmp_path / "absent.dcm", "no such file")


def test_no_pixel_data(tmp_path: Path) -> None:
    path, _ = _write(tmp_path)
    empty = _edit(path, tmp_path / "nopixels.dcm", PixelData=None)
    _raises_naming(empty, "no pixel data")
    with pytest.raises(InputError, match="no pixel data"):
        read_dicom_frames(empty)


def test_single_frame(tmp_path: Path) -> None:
    frames = _frames(n=1)
    still = write_dicom_cine(tmp_path / "still.dcm", frames, [0.0])
    ds = pydicom.dcmread(still)
    assert ds.SOPClassUID == UltrasoundImageStorage
    assert "NumberOfFrames" not in ds and "FrameIncrementPointer" not in ds
    _raises_naming(still, "single frame")
    _raises_naming(still, "single frame", fps=10.0)
    np.testing.assert_array_equal(read_dicom_frames(still)[0], frames)

    # A multi-frame object that declares one frame is refused the same way.
    path, many = _write(tmp_path)
    one = _edit(path, tmp_path / "one.dcm", NumberOfFrames=1, PixelData=many[0].tobytes())
    _raises_naming(one, "single frame")


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless, JPEGLSLossless])
@pytest.mark.parametrize("cut", [7, 1500])
def test_truncated_pixel_data(tmp_path: Path, syntax: str, cut: int) -> None:
    path, _ = _write(tmp_path, transfer_syntax=syntax)
    data = path.read_bytes()
    short = tmp_path / "short.dcm"
    short.write_bytes(data[:-cut])
    _raises_naming(short, "truncated")


def test_truncated_header(tmp_path: Path) -> None:
    path, _ = _write(tmp_path)
    short = tmp_path / "stub.dcm"
    short.write_bytes(path.read_bytes()[:400])
    with pytest.raises(InputError) as info:
        read_dicom(short)
    assert "stub.dcm" in str(info.value)


@pytest.mark.parametrize("syntax", [MPEG2MPML, "1.2.840.10008.1.2.4.107", "1.2.3.4.5"])
def test_unsupported_transfer_syntax(tmp_path: Path, syntax: str) -> None:
    path, _ = _write(tmp_path, transfer_syntax=RLELossless)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.UID(syntax)
    odd = tmp_path / "video.dcm"
    ds.save_as(odd)
    _raises_naming(odd, "cannot be decoded here")


def test_missing_decoder_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class _Unavailable:
        is_available = False
        missing_dependencies = ("pylibjpeg-rle",)

    path, _ = _write(tmp_path, transfer_syntax=RLELossless)
    monkeypatch.setattr(dicom_mod, "get_decoder", lambda uid: _Unavailable())
    err = _raises_naming(path, "cannot be decoded here")
    assert "pylibjpeg-rle" in str(err)


def test_frame_decode_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, frames = _write(tmp_path)

    def _broken(src: object, **kwargs: object) -> Iterator[NDArray[np.uint8]]:
        yield frames[0]
        yield frames[1]
        raise RuntimeError("Unable to decode as exceptions were raised by all plugins")

    monkeypatch.setattr(dicom_mod, "iter_pixels", _broken)
    _raises_naming(path, "frame 2 of 6 cannot be decoded")


def test_corrupt_fragment_is_an_input_error(tmp_path: Path) -> None:
    path, _ = _write(tmp_path, transfer_syntax=JPEGLSLossless)
    data = bytearray(path.read_bytes())
    # Overwrite the middle of the encapsulated stream (keeping the item
    # headers' positions) so a JPEG-LS codestream loses its markers.
    start = data.rfind(b"\xff\xd8")  # SOI of the last frame
    data[start : start + 40] = b"\x00" * 40
    bad = tmp_path / "corrupt.dcm"
    bad.write_bytes(bytes(data))
    _raises_naming(bad, "cannot be decoded")
