"""Read a DICOM ultrasound cine into a `Cine`.

Frames are decoded one at a time through pydicom's pixel backends (native,
RLE, JPEG baseline/lossless, JPEG-LS and JPEG 2000 via the pylibjpeg,
pyjpegls and pillow plugins) into one preallocated float32 array, so a long
cine is never held twice in memory.  Everything that can be checked from the
header -- pixel data present and complete, decoder available, at least two
frames, usable timing -- is checked before any frame is decoded.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from os import PathLike
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, get_decoder, iter_pixels
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, MPEGTransferSyntaxes

from ceuskit.cine import Cine, Panel, check_times
from ceuskit.errors import AnalysisWarning, InputError
from ceuskit.io.frames import rgb_to_grey, times_from_fps

DISPLAY_MAX = 255.0

_GREY = frozenset({"MONOCHROME1", "MONOCHROME2"})
# pydicom hands these over as RGB: YBR_FULL(_422) are converted by pydicom,
# YBR_RCT/ICT by the JPEG 2000 decoder's inverse colour transform.
_COLOUR = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"})
_PALETTE = "PALETTE COLOR"

_PIXEL_DATA = (0x7FE0, 0x0010)
_ITEM = (0xFFFE, 0xE000)
_SEQ_DELIM = (0xFFFE, 0xE0DD)
_UNDEFINED = 0xFFFFFFFF
# Explicit VRs whose element header has a 4-byte length after 2 reserved bytes.
_LONG_VRS = frozenset({b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"UN", b"UT", b"SQ"})

_TAG_FRAME_TIME = 0x00181063
_TAG_FRAME_TIME_VECTOR = 0x00181065

# RegionSpatialFormat (0018,6012) 1 = 2-D image; M-mode, spectral and
# waveform regions have no pixel geometry to analyse.
_SPATIAL_2D = 1
# RegionDataType (0018,6014): colour flow, PW/CW spectral and Doppler traces.
_DOPPLER_TYPES = frozenset({2, 3, 4, 5, 6, 7})
# Grey and colour bars are legends, not images.
_BAR_TYPES = frozenset({13, 14})
_UNITS_CM = 3

_CONVERT_FIX = (
    "convert it to uncompressed or JPEG baseline DICOM (e.g. `gdcmconv --raw` or "
    "`dcmdjpeg`) and try again"
)


@dataclass(frozen=True)
class _Header:
    """What the reader needs from a file's header, pixel data not loaded."""

    ds: Dataset
    transfer_syntax: UID
    photometric: str
    n_frames: int
    rows: int
    cols: int
    bits_stored: int


def _src(path: Path) -> str:
    return str(path)


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int | None:
    """An integer attribute, or `default` when absent, empty or malformed."""
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _values(value: Any) -> list[Any]:
    """A possibly multi-valued element value as a list (empty when absent)."""
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def _floats(value: Any) -> list[float]:
    """A DS/FD/IS value (single or multi-valued) as floats; NaN where malformed."""
    out = []
    for v in _values(value):
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            out.append(math.nan)
    return out


# ---------------------------------------------------------------------------
# Header and pixel-data structure
# ---------------------------------------------------------------------------


def _check_pixel_extent(
    fh: BinaryIO, path: Path, hdr: _Header, file_size: int
) -> None:
    """Check that the pixel data element is present and complete.

    `fh` is positioned where pydicom stopped, just before (7FE0,0010).  Only
    element and item headers are read: for native data the declared length
    must cover every frame and fit in the file; for encapsulated data the
    items must run to the sequence delimiter with one fragment per frame or
    more.  A file cut short is then reported as such, instead of as a decoder
    failure on its last frame or, worse, a silently short cine.
    """
    src = _src(path)
    little = hdr.ds.original_encoding[1] is not False
    implicit = hdr.ds.original_encoding[0] is True
    end = "<" if little else ">"
    head = fh.read(12)
    if len(head) < 8 or struct.unpack(end + "HH", head[:4]) != _PIXEL_DATA:
        raise InputError(src, "holds no pixel data (no image frames)",
                         "export the cine loop itself, not a report or structured object")
    if implicit:
        (length,) = struct.unpack(end + "L", head[4:8])
        value_pos = fh.tell() - len(head) + 8
    elif head[4:6] in _LONG_VRS:
        (length,) = struct.unpack(end + "L", head[8:12]) if len(head) == 12 else (0,)
        value_pos = fh.tell() - len(head) + 12
    else:
        (length,) = struct.unpack(end + "H", head[6:8])
        value_pos = fh.tell() - len(head) + 8

    truncated_fix = "the file was cut short (interrupted copy or export?); copy or export it again"
    if length != _UNDEFINED:
        expected = get_expected_length(hdr.ds, "bytes")
        have = min(length, max(0, file_size - value_pos))
        if have < expected:
            raise InputError(src, f"pixel data is truncated ({have} of {expected} bytes)",
                             truncated_fix)
        return

    # Encapsulated: walk the item headers without reading the fragments.
    fh.seek(value_pos)
    items = 0
    while True:
        raw = fh.read(8)
        if len(raw) < 8:
            fragments = max(0, items - 1)
            detail = (
                f"only {fragments} fragment(s) for {hdr.n_frames} frame(s)"
                if fragments < hdr.n_frames
                else "its closing delimiter is missing"
            )
            raise InputError(src, f"pixel data is truncated ({detail})", truncated_fix)
        group, elem, item_len = struct.unpack("<HHL", raw)
        if (group, elem) == _SEQ_DELIM:
            break
        if (group, elem) != _ITEM or item_len == _UNDEFINED:
            raise InputError(src, "pixel data is damaged (malformed fragment item)",
                             "export the cine again")
        if fh.tell() + item_len > file_size:
            raise InputError(src, "pixel data is truncated (last fragment cut short)",
                             truncated_fix)
        fh.seek(item_len, os.SEEK_CUR)
        items += 1
    # The first item is the Basic Offset Table; every frame starts a fragment.
    if items - 1 < hdr.n_frames:
        raise InputError(
            src,
            f"pixel data is truncated ({max(0, items - 1)} fragment(s) for "
            f"{hdr.n_frames} frame(s))",
            truncated_fix,
        )


def _read_header(path: Path) -> _Header:
    """Parse everything up to the pixel data and check it can be decoded."""
    src = _src(path)
    try:
        file_size = path.stat().st_size
        with path.open("rb") as fh:
            ds = dcmread(fh, stop_before_pixels=True)
            ts = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
            if not ts:
                raise InputError(src, "has no transfer syntax in its file meta information",
                                 "export it again as a standard DICOM file")
            if ts == DeflatedExplicitVRLittleEndian:
                raise InputError(src, "uses the Deflated transfer syntax, which is not "
                                 "supported here", _CONVERT_FIX)
            hdr = _image_header(ds, ts, path)
            _check_pixel_extent(fh, path, hdr, file_size)
    except InvalidDicomError:
        raise InputError(src, "is not a DICOM file (no 'DICM' marker)",
                         "give a DICOM Part 10 file, or a video / NPZ cine") from None
    except FileNotFoundError:
        raise InputError(src, "no such file", "check the path") from None
    except PermissionError:
        raise InputError(src, "cannot be read (permission denied)",
                         "check the file's permissions") from None
    except InputError:
        raise
    except Exception as exc:  # pydicom raises many types on a damaged header
        raise InputError(src, f"DICOM header cannot be parsed ({_short(exc)})",
                         "the file is damaged or truncated; export it again") from None
    _check_decoder(hdr, path)
    return hdr


def _image_header(ds: Dataset, ts: UID, path: Path) -> _Header:
    src = _src(path)
    missing = [k for k in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored",
                           "PhotometricInterpretation") if ds.get(k) in (None, "")]
    if missing:
        raise InputError(src, f"has no image description ({', '.join(missing)} missing)",
                         "the file may be truncated, or not an image; export the cine loop "
                         "itself, not a report or structured object")
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    if photometric not in _GREY | _COLOUR | {_PALETTE}:
        raise InputError(src, f"photometric interpretation {photometric} is not supported",
                         "export as MONOCHROME2, RGB, YBR_FULL or PALETTE COLOR")
    samples = int(ds.SamplesPerPixel)
    if samples != (3 if photometric in _COLOUR else 1):
        raise InputError(src, f"declares {samples} samples per pixel for {photometric}",
                         "the header is inconsistent; export the cine again")
    n_frames = _int(ds, "NumberOfFrames", 1)
    if n_frames is None or n_frames < 1:
        raise InputError(src, f"declares {ds.get('NumberOfFrames')!r} frames",
                         "export the cine again")
    bits_stored = int(ds.BitsStored)
    if not 1 <= bits_stored <= 16:
        raise InputError(src, f"has {bits_stored} bits per sample; 1 to 16 are supported",
                         _CONVERT_FIX)
    return _Header(
        ds=ds,
        transfer_syntax=ts,
        photometric=photometric,
        n_frames=n_frames,
        rows=int(ds.Rows),
        cols=int(ds.Columns),
        bits_stored=bits_stored,
    )


def _short(exc: BaseException) -> str:
    """An exception's message on one line, short enough for a CLI error."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _check_decoder(hdr: _Header, path: Path) -> None:
    ts = hdr.transfer_syntax
    name = ts.name or str(ts)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        fix = _CONVERT_FIX
        if ts in MPEGTransferSyntaxes:
            fix = "export the cine as multi-frame images (uncompressed, RLE or JPEG) instead"
        raise InputError(_src(path), f"transfer syntax {name} cannot be decoded here",
                         fix) from None
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
        raise InputError(
            _src(path),
            f"transfer syntax {name} cannot be decoded here (missing: {needs})",
            "install the missing plugin, or " + _CONVERT_FIX,
        )


# ---------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------


def dicom_time_of_day_s(value: str | None) -> float | None:
    """Seconds since midnight of a DICOM TM (HHMMSS.FFFFFF, or the time part of a DT)."""
    if not value:
        return None
    text = str(value).strip()
    if len(text) >= 14 and text[:8].isdigit():  # a DT: YYYYMMDDHHMMSS...
        text = text[8:]
    text = text.split("+")[0].split("-")[0]
    try:
        hh = int(text[0:2])
        mm = int(text[2:4]) if len(text) >= 4 else 0
        ss = float(text[4:]) if len(text) > 4 else 0.0
    except ValueError:
        return None
    if not (0 <= hh < 24 and 0 <= mm < 60 and 0 <= ss < 61):
        return None
    return hh * 3600.0 + mm * 60.0 + ss


def _palette_rgb(hdr: _Header, path: Path) -> NDArray[np.float32]:
    """RGB (0..255) of every possible palette index (see `_palette_tables`)."""
    bits = hdr.bits_stored
    ramp = np.arange(2**bits, dtype=np.uint16 if bits > 8 else np.uint8)
    try:
        rgb = apply_color_lut(ramp, hdr.ds)
    except Exception as exc:  # missing or inconsistent LUT elements
        raise InputError(_src(path), f"palette colour lookup table is unusable ({_short(exc)})",
                         "export the cine as RGB or MONOCHROME2") from None
    scale = 1.0
    if rgb.dtype.itemsize > 1 and int(rgb.max()) > 255:
        scale = 1.0 / 256.0 if not np.any(rgb % 256) else DISPLAY_MAX / 65535.0
    return np.asarray(rgb.astype(np.float32) * np.float32(scale))


def _iter_rgb(path: Path, hdr: _Header, only: frozenset[int] | None = None
              ) -> Iterator[tuple[int, NDArray[np.uint8]]]:
    """The colour frames once more, as (index, (rows, cols, 3) uint8 RGB); only
    the indices in `only` when given."""
    palette = (np.clip(np.rint(_palette_rgb(hdr, path)), 0, 255).astype(np.uint8)
               if hdr.photometric == _PALETTE else None)
    scale = DISPLAY_MAX / float(2**hdr.bits_stored - 1) if hdr.bits_stored > 8 else 1.0
    for i, arr in enumerate(_iter_decoded(path, hdr)):
        if only is not None and i not in only:
            continue
        if palette is not None:
            yield i, palette[np.clip(arr, 0, palette.shape[0] - 1)]
        elif scale == 1.0:
            yield i, np.asarray(arr, dtype=np.uint8)
        else:
            yield i, np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)


def _palette_tables(hdr: _Header, path: Path) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Grey and chroma for every possible palette index, in display units.

    pydicom expands the palette (plain or segmented) once over all indices;
    frames are then converted by a table look-up.  16-bit palette entries
    are brought to 0..255: entries that are all multiples of 256 are 8-bit
    values shifted into the high byte (0xFF00 -> 255); entries that all fit
    in 8 bits are 8-bit values in a 16-bit container (some exporters write
    those, and as true 16-bit values they would be black); any other table
    is scaled by 255 / 65535.
    """
    grey, chroma = rgb_to_grey(_palette_rgb(hdr, path))
    return grey, chroma


def _iter_decoded(path: Path, hdr: _Header) -> Iterator[NDArray[Any]]:
    """Decoded frames in file order; decoder failures become InputError."""
    src = _src(path)
    frames = iter_pixels(path)
    index = 0
    while True:
        try:
            arr = next(frames)
        except StopIteration:
            break
        except Exception as exc:  # the plugins raise RuntimeError, ValueError, ...
            raise InputError(
                src,
                f"frame {index} of {hdr.n_frames} cannot be decoded "
                f"({hdr.transfer_syntax.name}: {_short(exc)})",
                "the file may be damaged; export it again, or " + _CONVERT_FIX,
            ) from None
        yield arr
        index += 1
    if index < hdr.n_frames:
        raise InputError(src, f"pixel data is truncated ({index} of {hdr.n_frames} frames)",
                         "copy or export the file again")


def _decode(
    path: Path, hdr: _Header,
) -> tuple[NDArray[np.float32] | NDArray[np.uint8], NDArray[np.float32] | None]:
    """Decode all frames into display values 0..255 (and chroma for colour).

    Unsigned grey of at most 8 bits stays uint8 (see `Cine.frames`); every
    other source becomes float32.
    """
    src = _src(path)
    full_scale = float(2**hdr.bits_stored - 1)
    scale = np.float32(DISPLAY_MAX / full_scale) if hdr.bits_stored > 8 else np.float32(1.0)
    signed = _int(hdr.ds, "PixelRepresentation", 0) == 1
    grey8 = hdr.photometric in ("MONOCHROME1", "MONOCHROME2") and hdr.bits_stored <= 8 and not signed
    out: NDArray[Any] = np.empty((hdr.n_frames, hdr.rows, hdr.cols),
                                 dtype=np.uint8 if grey8 else np.float32)
    chroma: NDArray[np.float32] | None = None

    palette = _palette_tables(hdr, path) if hdr.photometric == _PALETTE else None

    for i, arr in enumerate(_iter_decoded(path, hdr)):
        if arr.shape[:2] != (hdr.rows, hdr.cols):
            raise InputError(src, f"frame {i} decodes to shape {arr.shape}, the header says "
                             f"{hdr.rows}x{hdr.cols}", "export the cine again")
        if palette is not None or arr.ndim == 3:
            if palette is not None:
                # Indices past the table take its last entry, like a LUT.
                idx = np.clip(arr, 0, palette[0].size - 1)
                out[i] = palette[0][idx]
                frame_chroma = palette[1][idx]
            elif arr.shape[2] == 3:
                values = arr if scale == 1.0 else arr.astype(np.float32) * scale
                out[i], frame_chroma = rgb_to_grey(values)
            else:
                raise InputError(src, f"frames with {arr.shape[2]} samples per pixel are "
                                 "not supported", "export as MONOCHROME2 or RGB")
            if chroma is None:
                chroma = frame_chroma
            else:
                np.maximum(chroma, frame_chroma, out=chroma)
        else:
            frame = out[i]
            frame[...] = arr
            if signed:
                # Shift two's-complement samples so the range starts at 0.
                frame += np.float32(2 ** (hdr.bits_stored - 1))
            if scale != 1.0:
                frame *= scale
            if hdr.photometric == "MONOCHROME1":
                # MONOCHROME1: the lowest value is displayed white.
                np.subtract(frame.dtype.type(DISPLAY_MAX), frame, out=frame)
    return out, chroma


def read_dicom_frames(
    path: str | PathLike[str],
) -> tuple[NDArray[np.float32] | NDArray[np.uint8], NDArray[np.float32] | None]:
    """Decode every frame of a DICOM image to grey display values.

    The lower-level half of `read_dicom`: no timing, and single images are
    accepted.

    Parameters
    ----------
    path : path-like
        A DICOM Part 10 file with pixel data.

    Returns
    -------
    frames : uint8 or float32 array, shape (T, H, W)
        Grey display values, 0 .. 255: uint8 for unsigned grey of at most 8
        bits, else float32 (luma for colour sources; higher bit
        depths scaled so that the largest storable value is 255; MONOCHROME1
        inverted).
    chroma : float32 array, shape (H, W), or None
        For colour and palette sources, per-pixel max - min over RGB in
        display units, maximum over frames; None for grey sources.

    Raises
    ------
    InputError
        If the file is not DICOM, has no or truncated pixel data, or cannot
        be decoded here.
    """
    p = Path(path)
    hdr = _read_header(p)
    return _decode(p, hdr)


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Timing:
    times_s: NDArray[np.float64]
    source: str
    frame_time_ms: float | None
    warnings: tuple[AnalysisWarning, ...] = ()


def _file_timing(
    ds: Dataset, n: int, src: str
) -> tuple[NDArray[np.float64], str, float | None] | None:
    """Frame times from Frame Time Vector or Frame Time, or None if neither.

    Returns
    -------
    times_s : array, shape (n,)
        Frame times in s, not yet validated.
    keyword : str
        The element they came from.
    frame_time_ms : float or None
        The constant interval in ms, when there is one.

    Raises
    ------
    InputError
        When the file's timing is present but malformed.
    """
    candidates = ["FrameTimeVector", "FrameTime"]
    # Honour the Frame Increment Pointer when it names Frame Time explicitly.
    pointers = [int(p) for p in _values(ds.get("FrameIncrementPointer"))]
    if _TAG_FRAME_TIME in pointers and _TAG_FRAME_TIME_VECTOR not in pointers:
        candidates.reverse()
    for keyword in candidates:
        values = _floats(ds.get(keyword))
        if not values:
            continue
        if keyword == "FrameTime":
            ms = values[0]
            if not (math.isfinite(ms) and ms > 0):
                raise InputError(src, f"FrameTime is {ms} ms (not a positive interval)",
                                 "re-export the cine with its frame timing, or pass --fps")
            return np.arange(n, dtype=np.float64) * (ms / 1e3), keyword, ms
        # Frame Time Vector: the first entry is 0 and each later one is the
        # interval from the previous frame (PS3.3 C.7.6.5.1.2), so times are
        # the running sum.  A vector one short has left the leading 0 out.
        vec = np.asarray(values, dtype=np.float64)
        if vec.size == n - 1:
            vec = np.concatenate([[0.0], vec])
        if vec.size != n:
            raise InputError(src, f"FrameTimeVector has {vec.size} entries for {n} frames",
                             "re-export the cine with its frame timing, or pass --fps")
        steps = vec[1:]
        constant = float(steps[0]) if np.all(steps == steps[0]) else None
        return np.cumsum(vec) / 1e3, keyword, constant
    return None


def _timing(ds: Dataset, n: int, fps: float | None, src: str) -> _Timing:
    """Frame times, where they came from, and any warning about them."""
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise InputError("--fps", f"{fps} is not a frame rate",
                         "give frames per second as a positive number, e.g. --fps 15")
    found: tuple[NDArray[np.float64], str, float | None] | None = None
    times: NDArray[np.float64] | None = None
    try:
        found = _file_timing(ds, n, src)
        if found is not None:
            times = check_times(found[0], src)
    except InputError as exc:
        if fps is None:
            raise
        # The user imposed a rate on a file whose own timing is unusable.
        times = check_times(times_from_fps(n, fps), src)
        return _Timing(times, "fps", 1e3 / fps, (AnalysisWarning(
            "file-timing-unusable",
            f"The file's frame timing is unusable: {exc.problem}. Frame times use "
            f"--fps {fps:g} instead.",
        ),))
    if found is not None and times is not None:
        warns: tuple[AnalysisWarning, ...] = ()
        if fps is not None:
            warns = (AnalysisWarning(
                "fps-ignored",
                f"--fps {fps:g} was ignored: the file's {found[1]} gives the frame times.",
            ),)
        return _Timing(times, found[1], found[2], warns)

    if fps is not None:
        return _Timing(check_times(times_from_fps(n, fps), src), "fps", 1e3 / fps)

    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rates = _floats(ds.get(keyword))
        if rates and math.isfinite(rates[0]) and rates[0] > 0:
            rate = rates[0]
            return _Timing(
                check_times(times_from_fps(n, rate), src), keyword, 1e3 / rate,
                (AnalysisWarning(
                    "timing-from-cine-rate",
                    f"The file has no frame times; they assume its {keyword} of {rate:g} "
                    "frames/s, a display rate that may differ from the acquisition rate. "
                    "Time parameters are only as good as that assumption; pass --fps "
                    "with the real acquisition rate if known.",
                ),),
            )
    raise InputError(src, "has no frame timing (no FrameTime, FrameTimeVector or CineRate)",
                     "pass --fps with the acquisition frame rate")


# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------


def _positive_pair(a: float, b: float) -> tuple[float, float] | None:
    if all(math.isfinite(v) and v > 0 for v in (a, b)):
        return (a, b)
    return None


def _regions(ds: Dataset, rows: int, cols: int) -> tuple[tuple[Panel, ...], bool]:
    """Panels from the Sequence of Ultrasound Regions, clipped to the frame.

    Returns the panels and whether any region reached outside the frame.
    """
    panels: list[Panel] = []
    clipped = False
    for item in ds.get("SequenceOfUltrasoundRegions", None) or []:
        if _int(item, "RegionSpatialFormat") != _SPATIAL_2D:
            continue
        data_type = _int(item, "RegionDataType", 0)
        if data_type in _BAR_TYPES:
            continue
        bounds = [_int(item, k) for k in ("RegionLocationMinX0", "RegionLocationMinY0",
                                          "RegionLocationMaxX1", "RegionLocationMaxY1")]
        if any(b is None for b in bounds):
            continue
        x0, y0, x1_incl, y1_incl = (int(b) for b in bounds if b is not None)
        # DICOM bounds are inclusive; Panel's x1/y1 are exclusive.
        box = (max(0, x0), max(0, y0), min(cols, x1_incl + 1), min(rows, y1_incl + 1))
        if box != (x0, y0, x1_incl + 1, y1_incl + 1):
            clipped = True
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        spacing = None
        if (_int(item, "PhysicalUnitsXDirection") == _UNITS_CM
                and _int(item, "PhysicalUnitsYDirection") == _UNITS_CM):
            dx = _floats(item.get("PhysicalDeltaX"))
            dy = _floats(item.get("PhysicalDeltaY"))
            if dx and dy:
                # (row, col) order: Y is down the rows, X along the columns.
                spacing = _positive_pair(abs(dy[0]) * 10.0, abs(dx[0]) * 10.0)
        panels.append(Panel(*box, spacing_mm=spacing,
                            kind="doppler" if data_type in _DOPPLER_TYPES else "unknown",
                            source="dicom-region"))
    return tuple(panels), clipped


def frame_spacing_mm(ds: Dataset, panels: tuple[Panel, ...] = ()) -> tuple[float, float] | None:
    """Pixel size (row, col) in mm, or None.

    Pixel Spacing when declared and valid, else that of the largest region
    with one.
    """
    ps = _floats(ds.get("PixelSpacing"))
    if len(ps) == 2 and (pair := _positive_pair(ps[0], ps[1])) is not None:
        return pair
    scaled = [p for p in panels if p.spacing_mm is not None]
    if not scaled:
        return None
    best = max(scaled, key=lambda p: p.shape[0] * p.shape[1])
    return best.spacing_mm


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return None if value in (None, "") else str(value).strip()


#: Transfer syntaxes that always discard information: JPEG baseline and
#: extended, and the MPEG-2, MPEG-4 (H.264) and HEVC video syntaxes.
_LOSSY_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
    *(f"1.2.840.10008.1.2.4.{k}" for k in range(100, 109)),
})
#: Transfer syntaxes that may (JPEG-LS near-lossless, JPEG 2000, HTJ2K, JPEG
#: XL): Lossy Image Compression (0028,2110) decides, lossy when absent.
_MAYBE_LOSSY_SYNTAXES = frozenset({
    "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.93",
    "1.2.840.10008.1.2.4.203", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112",
})


def lossy_compression(transfer_syntax: UID, ds: Dataset) -> str | None:
    """How the file says its pixels were lossy-compressed, or None.

    Parameters
    ----------
    transfer_syntax : UID
        The file's transfer syntax.
    ds : Dataset
        Its data set: Lossy Image Compression (0028,2110) ``"01"`` marks
        pixels that were lossy-compressed at some point, even when stored
        uncompressed now; Lossy Image Compression Method (0028,2114) names how.

    Returns
    -------
    str or None
        A short description for messages (the speckle's statistics, and so
        the dynamic-range estimate, do not survive lossy compression).
    """
    flag = str(ds.get("LossyImageCompression", "") or "").strip()
    method = ds.get("LossyImageCompressionMethod")
    how = ", ".join(str(m) for m in method) if isinstance(method, MultiValue) else str(method or "")
    ts = str(transfer_syntax)
    name = transfer_syntax.name or ts
    if ts in _LOSSY_SYNTAXES or (ts in _MAYBE_LOSSY_SYNTAXES and flag != "00"):
        return f"stored as {name}"
    if flag == "01":
        return "Lossy Image Compression (0028,2110) is 01" + (f" ({how})" if how else "")
    return None


def read_dicom(path: str | PathLike[str], *, fps: float | None = None) -> Cine:
    """Read a DICOM ultrasound cine loop.

    Parameters
    ----------
    path : path-like
        A DICOM Part 10 file: US (Multi-frame) Image Storage or any image
        with pixel data; MONOCHROME1/2, RGB, YBR_FULL(_422), YBR_RCT/ICT or
        PALETTE COLOR; uncompressed, RLE, JPEG baseline, JPEG lossless,
        JPEG-LS or JPEG 2000.
    fps : float, optional
        Frame rate in frames/s for a file without Frame Time (Vector); with
        such timing present the file wins (warning ``"fps-ignored"``), unless
        that timing is unusable (warning ``"file-timing-unusable"``).

    Returns
    -------
    Cine
        Frames in display values 0..255 (``display_max`` 255), times in s
        from Frame Time Vector, Frame Time, `fps` or -- with the warning
        ``"timing-from-cine-rate"`` -- Cine Rate / Recommended Display Frame
        Rate; regions from the Sequence of Ultrasound Regions (2-D only,
        clipped to the frame, spacing in mm as (row, col)); spacing_mm from
        Pixel Spacing or the largest region; meta without patient
        identifiers.

    Raises
    ------
    InputError
        Not DICOM, no or truncated pixel data, undecodable transfer syntax,
        a single frame, or no usable timing and no `fps`.
    """
    p = Path(path)
    src = _src(p)
    hdr = _read_header(p)
    if hdr.n_frames < 2:
        check_times(np.zeros(hdr.n_frames), src)  # raises: single frame
    timing = _timing(hdr.ds, hdr.n_frames, fps, src)
    frames, chroma = _decode(p, hdr)

    panels, clipped = _regions(hdr.ds, hdr.rows, hdr.cols)
    warnings = list(timing.warnings)
    if clipped:
        warnings.append(AnalysisWarning(
            "region-clipped",
            "The file's ultrasound regions reach outside the stored frame (was the image "
            "resized after export?); they were clipped, and their pixel spacing may not "
            "match the stored pixels.",
        ))

    ds = hdr.ds
    meta: dict[str, Any] = {
        "format": "dicom",
        "source_name": p.name,
        "sop_class": UID(str(ds.get("SOPClassUID", ""))).name or None,
        "transfer_syntax": hdr.transfer_syntax.name,
        "photometric": hdr.photometric,
        "bits_stored": hdr.bits_stored,
        "manufacturer": _text(ds, "Manufacturer"),
        "model": _text(ds, "ManufacturerModelName"),
        "n_frames": hdr.n_frames,
        "rows": hdr.rows,
        "cols": hdr.cols,
        "timing_source": timing.source,
        "modality": _text(ds, "Modality"),
        "lossy_compression": lossy_compression(hdr.transfer_syntax, ds),
    }
    modality = meta["modality"]
    if modality and modality.upper() != "US":
        warnings.append(AnalysisWarning(
            "not-ultrasound",
            f"The file's modality is {modality}, not ultrasound (US): it cannot be a "
            "contrast-enhanced ultrasound cine, so no enhancement verdict is given; the curves "
            "are measured as for any cine.",
        ))
    if timing.frame_time_ms is not None:
        meta["frame_time_ms"] = timing.frame_time_ms
    # Time of day only (no date): enough to put an exam's clips on one clock.
    for key in ("AcquisitionDateTime", "AcquisitionTime", "ContentTime", "SeriesTime"):
        tod = dicom_time_of_day_s(_text(ds, key))
        if tod is not None:
            meta["acquisition_time_of_day_s"] = tod
            break

    return Cine(
        frames=frames,
        times_s=timing.times_s,
        spacing_mm=frame_spacing_mm(ds, panels),
        regions=panels,
        chroma=chroma,
        meta=meta,
        warnings=tuple(warnings),
        display_max=DISPLAY_MAX,
        rgb_frames=partial(_iter_rgb, p, hdr) if chroma is not None else None,
    )


__all__ = ["DISPLAY_MAX", "read_dicom", "read_dicom_frames"]
