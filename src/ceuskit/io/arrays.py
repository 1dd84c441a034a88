"""Cines as NumPy ``.npz`` archives.

The archive is the simplest lossless exchange format: the simulator writes it,
and anyone with NumPy can produce one from their own data.

Keys
----
frames : (T, H, W) uint8 or float, or (T, H, W, 3) uint8
    Display values 0..255 (grey, or RGB).  Required.
times_s : (T,) float
    Frame times in seconds, strictly increasing.  Optional when ``fps`` is
    passed to the reader.
spacing_mm : (2,) float
    Pixel size (row, col) in mm for the whole frame.  Optional.
regions : (N, 4) int
    Panels as ``x0, y0, x1, y1`` frame pixels, ends exclusive.  Optional.
region_spacing_mm : (N, 2) float
    Pixel size (row, col) in mm of each region, NaN where unknown.  Optional.
region_kinds : (N,) str
    ``"contrast"``, ``"bmode"``, ``"doppler"`` or ``"unknown"`` per region.
    Optional.

Archives are loaded with ``allow_pickle=False``: an archive holding Python
objects is refused rather than executed.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ceuskit.cine import Cine, Panel, check_times
from ceuskit.errors import AnalysisWarning, InputError
from ceuskit.io.frames import rgb_to_grey, times_from_fps, valid_fps
from ceuskit.outputs import atomic_path

__all__ = ["read_npz", "write_npz"]

_KINDS = frozenset({"contrast", "bmode", "doppler", "unknown"})

# RGB frames are converted this many at a time so the float32 temporaries of
# the colour conversion stay small next to the output cine.
_RGB_CHUNK = 16

_FORMAT_FIX = ("save the cine with numpy.savez(path, frames=..., times_s=...); "
               "see the ceuskit.io.arrays documentation for the keys")


# --------------------------------------------------------------------------- reading


def read_npz(path: str | PathLike[str], *, fps: float | None = None) -> Cine:
    """Read a cine from a NumPy ``.npz`` archive.

    Parameters
    ----------
    path : path-like
        The archive (keys in the module documentation).
    fps : float, optional
        Frame rate in frames per second, used when the archive has no
        ``times_s``.  Ignored, with the warning ``"fps-ignored"``, when it has.

    Returns
    -------
    Cine
        Grey display values 0..255 (uint8 when the archive's frames are
        8-bit grey, else float32), times in seconds from 0, the
        archive's spacing and regions (``source="file"``), and chroma for RGB
        frames (None for grey ones).

    Raises
    ------
    InputError
        If the file is not a readable archive, holds pickled objects, lacks
        ``frames``, or has malformed frames, times, spacing or regions.
    """
    p = Path(path)
    src = str(p)
    rate = valid_fps(fps)
    arrays = _load_arrays(p)

    if "frames" not in arrays:
        keys = ", ".join(sorted(arrays)) or "none"
        raise InputError(src, f"has no 'frames' array (keys: {keys})", _FORMAT_FIX)
    raw = arrays.pop("frames")
    frames, chroma, range_warning = _frames_to_grey(raw, src)
    del raw
    n, height, width = frames.shape
    warnings: list[AnalysisWarning] = [] if range_warning is None else [range_warning]

    if "times_s" in arrays:
        times = np.asarray(arrays["times_s"])
        if times.ndim != 1 or times.shape[0] != n:
            raise InputError(src, f"'times_s' has shape {times.shape} but there are {n} frames",
                             "store one time in seconds per frame")
        if not np.issubdtype(times.dtype, np.number) or times.dtype == np.bool_:
            raise InputError(src, f"'times_s' has dtype {times.dtype}, not numbers",
                             "store frame times as float seconds")
        timing_source = "file"
        if rate is not None:
            warnings.append(AnalysisWarning(
                "fps-ignored",
                f"--fps {rate:g} was ignored: the archive carries its own frame times",
            ))
    elif rate is not None:
        times = times_from_fps(n, rate)
        timing_source = "fps"
        warnings.append(AnalysisWarning(
            "timing-from-fps",
            f"the archive has no frame times, so they come from --fps {rate:g} "
            "(a constant frame rate is assumed)",
        ))
    else:
        raise InputError(src, "has no 'times_s' array", "store the frame times or pass --fps")
    times_s = check_times(times, src)

    spacing = _spacing(arrays.get("spacing_mm"), "spacing_mm", src)
    regions = _regions(arrays, width, height, src)
    meta: dict[str, Any] = {
        "format": "npz",
        "source_name": p.name,
        "n_frames": int(n),
        "width": int(width),
        "height": int(height),
        "colour": chroma is not None,
        "timing_source": timing_source,
    }
    return Cine(
        frames=frames,
        times_s=times_s,
        spacing_mm=spacing,
        regions=regions,
        chroma=chroma,
        meta=meta,
        warnings=tuple(warnings),
        display_max=255.0,
        rgb_frames=partial(_iter_rgb, p) if chroma is not None else None,
    )


def _iter_rgb(p: Path, only: frozenset[int] | None = None
              ) -> Iterator[tuple[int, NDArray[np.uint8]]]:
    """The archive's RGB frames once more (loaded again, one frame handed out at a time;
    only the indices in `only` when given)."""
    raw = _load_arrays(p)["frames"]
    for i in range(raw.shape[0]):
        if only is None or i in only:
            yield i, raw[i]


def _load_arrays(p: Path) -> dict[str, NDArray[Any]]:
    """All arrays of the archive, with every failure mapped to `InputError`."""
    src = str(p)
    try:
        with p.open("rb") as fh:
            head = fh.read(8)
    except FileNotFoundError:
        raise InputError(src, "no such file", "check the path") from None
    except OSError as exc:
        raise InputError(src, f"cannot be read ({exc.strerror})",
                         "check the path and the file's permissions") from None
    # Check the magic bytes first: np.load would try to unpickle anything that
    # is neither a zip nor a .npy file, and report that as a pickle problem.
    if head.startswith(b"\x93NUMPY"):
        raise InputError(src, "is a single NumPy array (.npy), not an .npz archive",
                         _FORMAT_FIX)
    if not head.startswith(b"PK\x03\x04"):
        raise InputError(src, "is not an .npz archive", _FORMAT_FIX)
    try:
        _check_member_sizes(p, src)
        with np.load(p, allow_pickle=False) as npz:
            mapped = _mapped_frames(p) if "frames" in npz.files else None
            out = {key: npz[key] for key in npz.files if not (key == "frames" and mapped is not None)}
            if mapped is not None:
                out["frames"] = mapped
            return out
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise InputError(
                src, "holds pickled Python objects, which ceuskit refuses to load for safety",
                "store plain numeric arrays (no object or ragged arrays)",
            ) from None
        raise InputError(src, f"is not a valid .npz archive ({exc})", _FORMAT_FIX) from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise InputError(src, f"is a damaged or truncated .npz archive ({exc})",
                         "save or copy the archive again") from None


def _check_member_sizes(p: Path, src: str) -> None:
    """Refuse members whose ``.npy`` header claims more data than the member holds.

    ``np.load`` allocates what a header declares before reading: a crafted
    header claiming 10^12 bytes would exhaust memory.  The declared size
    (shape x item size) must fit in the member's uncompressed size, read from
    the archive's directory, before anything is allocated.

    Raises
    ------
    InputError
        A member's header and size disagree, or a header cannot be read.
    """
    with zipfile.ZipFile(p) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as fh:
                try:
                    version = np.lib.format.read_magic(fh)
                    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                                   (2, 0): np.lib.format.read_array_header_2_0,
                                   (3, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if read_header is None:
                        raise ValueError(f"unknown .npy format version {version}")
                    shape, _fortran, dtype = read_header(fh, max_header_size=10_000)
                except ValueError as exc:
                    raise InputError(src, f"member {info.filename} has an unreadable array header "
                                          f"({exc})", "save the archive again with numpy.savez") from None
                header_len = fh.tell()
            declared = int(np.prod(shape, dtype=np.float64)) * int(dtype.itemsize) if dtype.itemsize \
                else 0
            if declared > info.file_size - header_len:
                raise InputError(src, f"member {info.filename} claims {declared} bytes of data "
                                      f"(shape {tuple(shape)}, {dtype}) but holds "
                                      f"{max(0, info.file_size - header_len)}: a damaged or forged "
                                      "archive", "save the archive again with numpy.savez")


def _mapped_frames(p: Path) -> NDArray[np.uint8] | None:
    """The archive's 8-bit grey frames memory-mapped, or None to read them normally.

    ``numpy.savez`` stores members uncompressed, so a (T, H, W) uint8
    ``frames.npy`` is one contiguous run of bytes in the file: mapping it
    read-only costs no copy (a 512 x 512 x 900 cine: ~0.05 s instead of
    ~0.4 s, and no second 236 MB in memory).  The member's CRC-32 is checked
    as reading it would.  Anything else (compressed, another dtype, Fortran
    order, a damaged header) returns None and takes the ordinary path, which
    reports the problem.
    """
    try:
        with zipfile.ZipFile(p) as zf:
            info = zf.getinfo("frames.npy")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            return None
        with p.open("rb") as fh:
            fh.seek(info.header_offset)
            local = fh.read(30)
            if len(local) != 30 or local[:4] != b"PK\x03\x04":
                return None
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            start = info.header_offset + 30 + name_len + extra_len
            fh.seek(start)
            version = np.lib.format.read_magic(fh)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                return None
            shape, fortran, dtype = read_header(fh)
            data_at = fh.tell()
        if dtype != np.uint8 or fortran or len(shape) != 3 or min(shape) < 1:
            return None
        n_bytes = int(np.prod(shape))
        if data_at - start + n_bytes != info.file_size \
                or data_at + n_bytes > p.stat().st_size:
            return None
        whole = np.memmap(p, dtype=np.uint8, mode="r", offset=start, shape=(info.file_size,))
        if zlib.crc32(whole.data) & 0xFFFFFFFF != info.CRC:
            return None
        return np.asarray(whole[data_at - start:]).reshape(shape)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, struct.error):
        return None


def _frames_to_grey(
    raw: NDArray[Any], src: str,
) -> tuple[NDArray[np.float32] | NDArray[np.uint8], NDArray[np.float32] | None, AnalysisWarning | None]:
    """Grey frames (uint8 for 8-bit grey, else float32), chroma for RGB, and a warning for odd ranges."""
    rgb = raw.ndim == 4 and raw.shape[-1] == 3
    if not (raw.ndim == 3 or rgb):
        raise InputError(src, f"'frames' has shape {raw.shape}; expected (T, H, W) grey or "
                         "(T, H, W, 3) RGB", _FORMAT_FIX)
    if min(raw.shape[:3]) < 1:
        raise InputError(src, f"'frames' is empty (shape {raw.shape})", _FORMAT_FIX)
    if raw.dtype == np.bool_ or not np.issubdtype(raw.dtype, np.number) \
            or np.issubdtype(raw.dtype, np.complexfloating):
        raise InputError(src, f"'frames' has dtype {raw.dtype}; expected uint8 or float "
                         "display values", _FORMAT_FIX)
    if rgb and raw.dtype != np.uint8:
        raise InputError(src, f"RGB 'frames' must be uint8, got {raw.dtype}", _FORMAT_FIX)

    warning = None
    if raw.dtype != np.uint8:
        if not np.all(np.isfinite(raw)):
            raise InputError(src, "'frames' holds NaN or infinite values",
                             "store finite display values 0..255")
        lo, hi = float(raw.min()), float(raw.max())
        if lo < 0 or hi > 255:
            raise InputError(src, f"'frames' values span {lo:g}..{hi:g}, outside the display "
                             "range 0..255", "scale the frames to display values 0..255")
        if 0 < hi <= 1:
            warning = AnalysisWarning(
                "display-range-suspect",
                "frame values all lie within 0..1 although display values 0..255 are "
                "expected; if the frames were normalised, intensities are wrong",
            )

    if not rgb:
        # 8-bit grey stays uint8 (see `Cine.frames`): converting a long cine
        # to float32 would quadruple its memory for no information.
        if raw.dtype == np.uint8:
            return np.ascontiguousarray(raw, dtype=np.uint8), None, warning
        return np.ascontiguousarray(raw, dtype=np.float32), None, warning
    n, height, width = raw.shape[:3]
    grey = np.empty((n, height, width), dtype=np.float32)
    chroma = np.zeros((height, width), dtype=np.float32)
    for start in range(0, n, _RGB_CHUNK):
        g, c = rgb_to_grey(raw[start:start + _RGB_CHUNK])
        grey[start:start + _RGB_CHUNK] = g
        np.maximum(chroma, c.max(axis=0), out=chroma)
    return grey, chroma, warning


def _spacing(value: NDArray[Any] | None, key: str, src: str) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        s = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        s = np.full(0, np.nan)
    if s.shape != (2,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise InputError(src, f"'{key}' must be two positive pixel sizes in mm (row, col), "
                         f"got {np.asarray(value).tolist()!r}", _FORMAT_FIX)
    return (float(s[0]), float(s[1]))


def _regions(arrays: dict[str, NDArray[Any]], width: int, height: int,
             src: str) -> tuple[Panel, ...]:
    if "regions" not in arrays:
        return ()
    boxes = np.asarray(arrays["regions"])
    if boxes.size == 0:
        return ()
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.issubdtype(boxes.dtype, np.number):
        raise InputError(src, f"'regions' has shape {boxes.shape}; expected (N, 4) integers "
                         "x0, y0, x1, y1", _FORMAT_FIX)
    if not np.all(np.isfinite(boxes)) or np.any(boxes != np.round(boxes)):
        raise InputError(src, "'regions' must hold whole pixel coordinates", _FORMAT_FIX)
    n = boxes.shape[0]

    spacings: list[tuple[float, float] | None] = [None] * n
    if "region_spacing_mm" in arrays:
        rs = np.asarray(arrays["region_spacing_mm"])
        if rs.shape != (n, 2) or not np.issubdtype(rs.dtype, np.number):
            raise InputError(src, f"'region_spacing_mm' has shape {rs.shape}; expected "
                             f"({n}, 2) with NaN where unknown", _FORMAT_FIX)
        spacings = [None if np.any(np.isnan(row)) else _spacing(row, "region_spacing_mm", src)
                    for row in rs.astype(np.float64)]

    kinds: Sequence[str] = ["unknown"] * n
    if "region_kinds" in arrays:
        rk = np.asarray(arrays["region_kinds"])
        if rk.shape != (n,) or rk.dtype.kind != "U" or not set(rk.tolist()) <= _KINDS:
            raise InputError(src, f"'region_kinds' must be {n} of "
                             f"{', '.join(sorted(_KINDS))}", _FORMAT_FIX)
        kinds = rk.tolist()

    panels = []
    for i, (x0, y0, x1, y1) in enumerate(boxes.astype(np.int64).tolist()):
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise InputError(src, f"region {i} ({x0}, {y0}, {x1}, {y1}) is empty or outside "
                             f"the {width}x{height} frame", "fix the region bounds (x1, y1 "
                             "exclusive)")
        panels.append(Panel(x0, y0, x1, y1, spacing_mm=spacings[i], kind=kinds[i],
                            source="file"))
    return tuple(panels)


# --------------------------------------------------------------------------- writing


def write_npz(
    path: str | PathLike[str],
    frames: ArrayLike,
    times_s: ArrayLike | None,
    *,
    regions: Iterable[Panel | Sequence[int]] = (),
    spacing_mm: tuple[float, float] | None = None,
) -> Path:
    """Write a cine as a compressed ``.npz`` archive that `read_npz` reads back.

    Parameters
    ----------
    path : path-like
        Output file; NumPy's habit of appending ``.npz`` is bypassed, the name
        is used as given.
    frames : array, shape (T, H, W) or (T, H, W, 3)
        Display values 0..255: grey as uint8 or float (stored as given), RGB
        as uint8.
    times_s : array, shape (T,), or None
        Frame times in seconds, stored as given (`read_npz` refuses times that
        are not finite and strictly increasing).  None stores no times (the
        reader then needs ``fps``).
    regions : iterable of Panel or (x0, y0, x1, y1)
        Panels in frame pixels, ends exclusive.  A Panel's spacing and kind are
        stored too.
    spacing_mm : (float, float), optional
        Whole-frame pixel size (row, col) in mm.

    Returns
    -------
    Path
        `path`, written atomically (temporary name in the same directory, then
        renamed).

    Raises
    ------
    ValueError
        If the arrays do not fit the format.
    """
    p = Path(path)
    data = np.asarray(frames)
    rgb = data.ndim == 4 and data.shape[-1] == 3
    if not (data.ndim == 3 or rgb) or min(data.shape[:3]) < 1:
        raise ValueError(f"frames must have shape (T, H, W) or (T, H, W, 3), got {data.shape}")
    if rgb and data.dtype != np.uint8:
        raise ValueError(f"RGB frames must be uint8, got {data.dtype}")
    if data.dtype != np.uint8 and not np.issubdtype(data.dtype, np.floating):
        raise ValueError(f"frames must be uint8 or float, got {data.dtype}")
    n, height, width = data.shape[:3]
    out: dict[str, NDArray[Any]] = {"frames": data}

    if times_s is not None:
        t = np.asarray(times_s, dtype=np.float64)
        if t.shape != (n,):
            raise ValueError(f"times_s must have shape ({n},), got {t.shape}")
        # Stored as given, even non-increasing: read_npz judges the timing,
        # and tests build refused archives with this writer.
        out["times_s"] = t
    if spacing_mm is not None:
        s = np.asarray(spacing_mm, dtype=np.float64)
        if s.shape != (2,) or not np.all(s > 0):
            raise ValueError(f"spacing_mm must be two positive numbers, got {spacing_mm!r}")
        out["spacing_mm"] = s

    panels = [r if isinstance(r, Panel) else _panel_from_box(r) for r in regions]
    for panel in panels:
        if panel.x1 > width or panel.y1 > height or panel.x0 < 0 or panel.y0 < 0:
            raise ValueError(f"region {panel.bounds} lies outside the {width}x{height} frame")
    if panels:
        out["regions"] = np.array([q.bounds for q in panels], dtype=np.int64)
        out["region_spacing_mm"] = np.array(
            [q.spacing_mm if q.spacing_mm is not None else (np.nan, np.nan) for q in panels],
            dtype=np.float64,
        )
        out["region_kinds"] = np.array([q.kind for q in panels], dtype=np.str_)

    with atomic_path(p) as tmp, tmp.open("xb") as fh:
        np.savez_compressed(fh, **out)  # type: ignore[arg-type]
    return p


def _panel_from_box(box: Sequence[int]) -> Panel:
    x0, y0, x1, y1 = (int(v) for v in box)
    return Panel(x0, y0, x1, y1, source="file")
