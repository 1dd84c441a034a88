"""Video cines through FFmpeg (PyAV): MP4, AVI, MOV, MKV and friends.

Timing comes from each decoded frame's presentation timestamp, never from the
container's nominal frame rate: scanners and screen recorders often write
variable-frame-rate files, and a constant-rate assumption would stretch or
squeeze the time axis of every time-intensity curve.

Videos carry no physical geometry, so the `Cine` has ``spacing_mm=None`` and
no declared regions.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from functools import partial
from os import PathLike
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
from av.container import InputContainer
from av.stream import Disposition
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from numpy.typing import ArrayLike, NDArray

from ceuskit.cine import Cine, check_times
from ceuskit.errors import AnalysisWarning, InputError
from ceuskit.io.frames import chroma, rgb_to_grey, times_from_fps, valid_fps
from ceuskit.outputs import atomic_path

__all__ = ["read_video", "write_video"]

# Demuxers of bare elementary streams or image sequences: FFmpeg invents their
# timestamps from a default rate (25 fps) or leaves them empty, so they say
# nothing about when the frames were acquired.
_UNTIMED_DEMUXERS = frozenset({
    "h264", "hevc", "vvc", "mjpeg", "image2", "image2pipe", "rawvideo",
})

# Frame rate counts as variable when the longest frame interval exceeds the
# shortest by more than 1 % (and by more than the clock's rounding, so that
# 30 fps stored on a millisecond clock, 33/34 ms, is not called variable).
_VFR_RATIO = 1.01

# First buffer allocation is capped so that a lying frame count in a header
# cannot reserve absurd memory up front; the buffer grows as frames arrive.
_INITIAL_BUFFER_BYTES = 1 << 30

# A file that decodes fewer frames than its header declares is refused when
# more than a couple of frames are missing: a cine cut short loses its wash-out
# phase, which would silently change the findings.  A frame or two can go
# missing legitimately (edit lists dropping encoder-delay frames).
_MISSING_FRAMES_TOLERATED = 2
_MISSING_FRACTION_TOLERATED = 0.02
_TRUNCATED_FIX = ("copy or export the video again; to analyse only the frames that decode, "
                  "trim it first, e.g. ffmpeg -i IN -frames:v {n} OUT.mp4")

_CONVERT_FIX = "export the cine as DICOM or as a video (MP4, AVI, MOV) and try again"

# Output time base of the writer.  90 kHz is the MPEG clock: fine enough for any
# ultrasound frame rate and exactly representable in MP4/MOV.  Matroska always
# stores milliseconds.
_TIME_BASE = Fraction(1, 90000)
_MKV_TIME_BASE = Fraction(1, 1000)

# Container chosen from the output suffix: (FFmpeg muxer, codecs it may hold).
_MUXERS: dict[str, tuple[str, frozenset[str]]] = {
    ".mp4": ("mp4", frozenset({"libx264"})),
    ".m4v": ("mp4", frozenset({"libx264"})),
    ".mov": ("mov", frozenset({"libx264"})),
    ".mkv": ("matroska", frozenset({"libx264", "ffv1"})),
}

# BT.601 matrix (FFmpeg's AVCOL_SPC_SMPTE170M) and full ("JPEG") range: libswscale
# converts with BT.601 by default, so tagging it lets other players decode the
# same colours; full range keeps all 256 grey levels instead of 16..235.
_AVCOL_SPC_SMPTE170M = 6
_AVCOL_RANGE_JPEG = 2


# --------------------------------------------------------------------------- reading


#: Decoders of lossless codecs; every other video codec discards detail (an
#: H.264 stream at crf 0 is lossless too, but nothing in the file says so).
_LOSSLESS_CODECS = frozenset({
    "ffv1", "rawvideo", "png", "apng", "huffyuv", "ffvhuff", "utvideo", "qtrle", "zlib",
    "zmbv", "tiff", "bmp", "v210", "v410", "r210", "lagarith", "magicyuv",
})


def read_video(path: str | PathLike[str], *, fps: float | None = None) -> Cine:
    """Read a video file into a `Cine`.

    Parameters
    ----------
    path : path-like
        Any video FFmpeg can open (MP4, AVI, MOV, MKV, ...).
    fps : float, optional
        Frame rate in frames per second.  Used only when the frames carry no
        usable presentation timestamps (bare H.264/MJPEG streams, duplicated
        timestamps).  When the timestamps are usable they win and the warning
        ``"fps-ignored"`` is attached.

    Returns
    -------
    Cine
        Frames as float32 grey display values 0..255 (colour is converted to
        luma; `Cine.chroma` holds the per-pixel maximum colour saturation for
        colour pixel formats, None for grey pixel formats), times in seconds
        from the presentation timestamps, shifted to start at 0.
        ``spacing_mm`` is None and ``regions`` is empty.

    Raises
    ------
    InputError
        If the file is not a video, has no video stream, holds a single frame,
        cannot be decoded to the end, or has no usable timing and `fps` is not
        given.

    Notes
    -----
    H.264 and most other codecs subsample and quantise colour (4:2:0), so
    grey pixels may decode with chroma of a few grey levels rather than
    exactly 0; callers threshold `Cine.chroma` rather than test it for zero.
    """
    p = Path(path)
    src = str(p)
    rate = valid_fps(fps)
    container = _open_input(p)
    with container:
        stream = _pick_video_stream(container, src)
        demuxer = container.format.name
        buffer = _FrameBuffer(_expected_frames(container, stream))
        _decode_all(container, stream, buffer, src)
        declared = int(stream.frames or 0)
        nominal = float(stream.average_rate) if stream.average_rate else None
        codec = stream.codec_context.name
        tick = float(stream.time_base) if stream.time_base else 0.0

    frames, chroma, pts = buffer.finish(src)
    n = frames.shape[0]
    warnings: list[AnalysisWarning] = []
    missing = declared - n
    if missing > max(_MISSING_FRAMES_TOLERATED, _MISSING_FRACTION_TOLERATED * declared):
        raise InputError(
            src, f"is truncated: its header declares {declared} frames but only {n} decode",
            _TRUNCATED_FIX.format(n=n),
        )
    if missing > 0:
        warnings.append(AnalysisWarning(
            "frame-count-mismatch",
            f"the video header declares {declared} frames but {n} decoded; the last "
            "frames of the cine may be missing",
        ))

    times, timing_source, timing_warning = _frame_times(pts, n, tick, demuxer, rate, src)
    if timing_warning is not None:
        warnings.append(timing_warning)
    position = np.arange(n)  # where each decoded frame ends up in the cine
    if pts is not None and timing_source == "pts":
        # Decoders emit frames in presentation order; sorting guards against
        # demuxers that hand B-frames back in decode order.
        order = np.argsort(pts, kind="stable")
        if np.any(order != np.arange(n)):
            frames = frames[order]
            times = times[order]
            position = np.argsort(order, kind="stable")
    times = check_times(times, src)

    steps = np.diff(times)
    # Rounding each timestamp to the stream clock moves an interval by up to
    # one tick, so a constant-rate stream shows interval spreads of two ticks.
    resolution = 2 * tick if timing_source == "pts" else 0.0
    spread = float(steps.max() - steps.min())
    variable = bool(steps.max() > steps.min() * _VFR_RATIO and spread > resolution * 1.001)
    height, width = frames.shape[1:]
    meta: dict[str, Any] = {
        "format": "video",
        "source_name": p.name,
        "container": demuxer,
        "codec": codec,
        "lossy_compression": None if codec in _LOSSLESS_CODECS else f"video codec {codec}",
        "pixel_format": buffer.pixel_format,
        "n_frames": int(n),
        "width": int(width),
        "height": int(height),
        "timing_source": timing_source,
        "nominal_fps": nominal if timing_source == "pts" else rate,
        "mean_fps": float((n - 1) / times[-1]),
        "variable_frame_rate": variable,
        "frame_interval_min_s": float(steps.min()),
        "frame_interval_max_s": float(steps.max()),
    }
    return Cine(
        frames=frames,
        times_s=times,
        spacing_mm=None,
        regions=(),
        chroma=chroma,
        meta=meta,
        warnings=tuple(warnings),
        display_max=255.0,
        rgb_frames=partial(_iter_rgb, p, position) if chroma is not None else None,
    )


def _iter_rgb(p: Path, position: NDArray[np.intp], only: frozenset[int] | None = None
              ) -> Iterator[tuple[int, NDArray[np.uint8]]]:
    """Decode the video once more: (cine index, (H, W, 3) uint8 RGB) per frame
    (only the cine indices in `only` when given)."""
    container = _open_input(p)
    with container:
        stream = _pick_video_stream(container, str(p))
        stream.thread_type = "AUTO"
        for k, frame in enumerate(container.decode(stream)):
            if k >= position.size:
                break
            i = int(position[k])
            if only is None or i in only:
                yield i, np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)


def _open_input(p: Path) -> InputContainer:
    """Open `p` with FFmpeg, turning every failure into an `InputError`."""
    src = str(p)
    try:
        return av.open(src, mode="r")
    except av.error.FFmpegError as exc:
        if isinstance(exc, OSError):
            # FileNotFoundError, IsADirectoryError, PermissionError, ...
            raise InputError(src, f"cannot be read ({exc.strerror})",
                             "check the path and the file's permissions") from None
        head = _head(p)
        if head[4:8] == b"ftyp":
            # An MP4/MOV whose index ("moov" atom) is missing: the usual result
            # of an export or copy that stopped before the end.
            raise InputError(
                src, "looks like an MP4/MOV video but cannot be opened; it is probably "
                "truncated (the export or copy did not finish)",
                "copy or export the video again",
            ) from None
        if head[:4] == b"PK\x03\x04":
            raise InputError(
                src, "is a ZIP archive, not a video",
                "if it is a NumPy cine archive, give it the .npz suffix",
            ) from None
        raise InputError(src, "is not a DICOM or video file (FFmpeg cannot read it)",
                         _CONVERT_FIX) from None


def _head(p: Path, size: int = 16) -> bytes:
    try:
        with p.open("rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


def _pick_video_stream(container: InputContainer, src: str) -> VideoStream:
    """First video stream that is a moving picture, not embedded cover art."""
    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            return stream
    raise InputError(src, "has no video stream", _CONVERT_FIX)


def _expected_frames(container: InputContainer, stream: VideoStream) -> int:
    """Best guess of the frame count from the headers, for the first allocation."""
    if stream.frames:
        return int(stream.frames)
    if container.duration and stream.average_rate:
        # container.duration is in FFmpeg's AV_TIME_BASE (microseconds).
        return int(container.duration / 1e6 * float(stream.average_rate)) + 1
    return 0


def _decode_all(
    container: InputContainer, stream: VideoStream, buffer: _FrameBuffer, src: str,
) -> None:
    stream.thread_type = "AUTO"
    try:
        for frame in container.decode(stream):
            buffer.add(frame, src)
    except av.error.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        if buffer.n == 0:
            raise InputError(src, f"has a video stream that cannot be decoded ({reason})",
                             _CONVERT_FIX) from None
        # Refused rather than analysed, as for a short frame count below.
        raise InputError(
            src,
            f"is truncated or corrupt: decoding failed after frame {buffer.n} ({reason})",
            _TRUNCATED_FIX.format(n=buffer.n),
        ) from None


class _FrameBuffer:
    """Collects decoded frames into one growing float32 array.

    Keeps memory to about one float32 copy of the cine: the buffer grows in
    place (``ndarray.resize``, a realloc) instead of stacking a list of frames.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.n = 0
        self.buf: NDArray[np.float32] | None = None
        self.chroma: NDArray[np.float32] | None = None
        self.pts: list[int | None] = []
        self.pixel_format = ""

    def add(self, frame: VideoFrame, src: str) -> None:
        fmt = frame.format.name
        if fmt.startswith("gray"):
            # Grey pixel formats go straight to 8-bit luma: exact, and no
            # chroma to record.
            grey: NDArray[Any] = frame.to_ndarray(format="gray")
            colour = None
        elif fmt.startswith(("yuv", "nv")):
            # The decoded luma plane, not the luma of the RGB conversion:
            # with subsampled chroma (4:2:0), saturated colours (a tinted
            # contrast panel) clip in RGB and their luma would be off by
            # several grey levels; the plane is what was encoded.
            grey = frame.to_ndarray(format="gray")
            colour = chroma(frame.to_ndarray(format="rgb24"))
        else:
            grey, colour = rgb_to_grey(frame.to_ndarray(format="rgb24"))
        if self.buf is None:
            self._allocate(grey.shape, src)
            self.pixel_format = fmt
        assert self.buf is not None
        if grey.shape != self.buf.shape[1:]:
            h, w = self.buf.shape[1:]
            raise InputError(
                src, f"changes frame size from {w}x{h} to {grey.shape[1]}x{grey.shape[0]} "
                f"at frame {self.n + 1}",
                "export the cine at a single resolution",
            )
        if self.n == self.buf.shape[0]:
            self._grow(src)
        self.buf[self.n] = grey
        if colour is not None:
            if self.chroma is None:
                self.chroma = np.zeros(grey.shape, dtype=np.float32)
            np.maximum(self.chroma, colour, out=self.chroma)
        self.pts.append(frame.pts)
        self.n += 1

    def _allocate(self, shape: tuple[int, ...], src: str) -> None:
        frame_bytes = 4 * int(np.prod(shape))
        cap = min(max(self.expected, 16), max(1, _INITIAL_BUFFER_BYTES // frame_bytes))
        try:
            self.buf = np.empty((cap, *shape), dtype=np.float32)
        except MemoryError:
            raise InputError(src, "is too large to load into memory",
                             "shorten the cine or lower its resolution") from None

    def _grow(self, src: str) -> None:
        assert self.buf is not None
        try:
            # Grows by half: few reallocations, and a large realloc moves
            # pages (mremap) rather than copying them.
            self.buf.resize((self.n + max(16, self.n // 2), *self.buf.shape[1:]),
                            refcheck=False)
        except MemoryError:
            raise InputError(src, f"is too large to load into memory ({self.n} frames so far)",
                             "shorten the cine or lower its resolution") from None

    def finish(
        self, src: str,
    ) -> tuple[NDArray[np.float32], NDArray[np.float32] | None, NDArray[np.int64] | None]:
        """Trimmed frames, chroma, and integer PTS (None if any frame lacks one)."""
        if self.buf is None or self.n == 0:
            raise InputError(src, "has a video stream but no decodable frames", _CONVERT_FIX)
        self.buf.resize((self.n, *self.buf.shape[1:]), refcheck=False)
        pts = None
        if all(t is not None for t in self.pts):
            pts = np.asarray(self.pts, dtype=np.int64)
        return self.buf, self.chroma, pts


def _frame_times(
    pts: NDArray[np.int64] | None, n: int, tick: float, demuxer: str, fps: float | None,
    src: str,
) -> tuple[NDArray[np.float64], str, AnalysisWarning | None]:
    """Frame times in seconds (in decode order, unshifted), their source and a warning."""
    if pts is None or tick <= 0 or demuxer in _UNTIMED_DEMUXERS:
        if fps is None:
            raise InputError(
                src, "has no frame timestamps (a bare video stream without a container "
                "clock)", "pass --fps with the acquisition frame rate",
            )
        return times_from_fps(n, fps), "fps", AnalysisWarning(
            "timing-from-fps",
            f"the video carries no frame timestamps, so frame times come from --fps "
            f"{fps:g} (a constant frame rate is assumed)",
        )
    times = pts.astype(np.float64) * tick
    if fps is None:
        # Duplicated timestamps fall through to check_times, whose message
        # suggests --fps.
        return times, "pts", None
    if np.all(np.diff(np.sort(times)) > 0):
        return times, "pts", AnalysisWarning(
            "fps-ignored",
            f"--fps {fps:g} was ignored: the video carries its own frame timestamps",
        )
    return times_from_fps(n, fps), "fps", AnalysisWarning(
        "timing-from-fps",
        f"the video's frame timestamps repeat, so frame times come from --fps {fps:g} "
        "(a constant frame rate is assumed)",
    )


# --------------------------------------------------------------------------- writing


def write_video(
    path: str | PathLike[str],
    frames: ArrayLike,
    times_s: ArrayLike,
    *,
    codec: str = "libx264",
    crf: int = 4,
) -> Path:
    """Write a cine as a video whose frame timestamps follow `times_s`.

    Parameters
    ----------
    path : path-like
        Output file.  The suffix picks the container: ``.mp4``, ``.m4v``,
        ``.mov`` (H.264 only) or ``.mkv`` (H.264 or FFV1).
    frames : array, shape (T, H, W) or (T, H, W, 3)
        Grey or RGB display values 0..255.  uint8 is written as is; other
        numeric types are rounded (values must lie in 0..255).
    times_s : array, shape (T,)
        Frame times in seconds, strictly increasing.  Stored relative to the
        first frame, rounded to the container clock: 1/90000 s for MP4/MOV,
        1 ms for MKV (Matroska has no finer clock).
    codec : {"libx264", "ffv1"}
        ``"libx264"``: H.264, yuv420p, full range, BT.601, near-lossless at
        ``crf=4`` (mean error below 0.1 grey level on textured test cines).
        ``"ffv1"``: lossless FFV1 in Matroska (grey as 8-bit grey, RGB as BGR0),
        for exact round trips.
    crf : int
        H.264 constant rate factor, 0 (lossless luma) to 51; ignored for FFV1.

    Returns
    -------
    Path
        `path`.  The file appears atomically: it is written under a temporary
        name in the same directory and renamed into place.

    Raises
    ------
    ValueError
        For malformed frames or times, an unknown codec, or a codec the
        container cannot hold.

    Notes
    -----
    H.264 4:2:0 needs an even width and height.  Odd sizes are padded by one
    row at the bottom and/or one column at the right, replicating the edge
    pixels; existing pixels keep their coordinates, so ROIs stay valid, but
    the video reads back one pixel larger.  FFV1 stores odd sizes as they are.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in _MUXERS:
        raise ValueError(f"{p}: unsupported video suffix {p.suffix!r}; use "
                         + ", ".join(sorted(_MUXERS)))
    muxer, codecs = _MUXERS[suffix]
    if codec not in codecs:
        raise ValueError(f"{p}: codec {codec!r} cannot be written to {suffix} "
                         f"(allowed: {', '.join(sorted(codecs))})")
    if not 0 <= int(crf) <= 51:
        raise ValueError(f"crf must be 0..51, got {crf}")
    data = _as_uint8_frames(frames)
    n, height, width = data.shape[:3]
    rgb = data.ndim == 4
    time_base = _MKV_TIME_BASE if muxer == "matroska" else _TIME_BASE
    pts = _pts_from_times(times_s, n, time_base)

    pad_h = pad_w = 0
    if codec == "libx264":
        pix_fmt = "yuv420p"
        pad_h, pad_w = height % 2, width % 2
    else:
        pix_fmt = "bgr0" if rgb else "gray"
    in_fmt = "rgb24" if rgb else "gray"
    pad = ((0, pad_h), (0, pad_w)) + (((0, 0),) if rgb else ())

    with atomic_path(p) as tmp:
        with av.open(str(tmp), mode="w", format=muxer) as out:
            stream = out.add_stream(codec, rate=_nominal_rate(pts, time_base))
            if not isinstance(stream, VideoStream):  # narrows the type for mypy
                raise ValueError(f"{codec!r} is not a video codec")
            stream.width = width + pad_w
            stream.height = height + pad_h
            stream.pix_fmt = pix_fmt
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
            if codec == "libx264":
                stream.options = {"crf": str(int(crf))}
                stream.codec_context.color_range = _AVCOL_RANGE_JPEG
                stream.codec_context.colorspace = _AVCOL_SPC_SMPTE170M
            for i in range(n):
                image = np.pad(data[i], pad, mode="edge") if pad_h or pad_w else data[i]
                frame = VideoFrame.from_ndarray(np.ascontiguousarray(image), format=in_fmt)
                if codec == "libx264":
                    frame = frame.reformat(format=pix_fmt, dst_color_range="JPEG")
                    frame.color_range = _AVCOL_RANGE_JPEG
                    frame.colorspace = _AVCOL_SPC_SMPTE170M
                elif rgb:
                    frame = frame.reformat(format=pix_fmt)
                frame.pts = int(pts[i])
                frame.time_base = time_base
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
    return p


def _as_uint8_frames(frames: ArrayLike) -> NDArray[np.uint8]:
    data = np.asarray(frames)
    if not (data.ndim == 3 or (data.ndim == 4 and data.shape[-1] == 3)):
        raise ValueError(f"frames must have shape (T, H, W) or (T, H, W, 3), got {data.shape}")
    if min(data.shape[:3]) < 1:
        raise ValueError(f"frames must not be empty, got shape {data.shape}")
    if data.dtype == np.uint8:
        return data
    if data.dtype == np.bool_ or not np.issubdtype(data.dtype, np.number):
        raise ValueError(f"frames must be numeric display values, got dtype {data.dtype}")
    if not np.all(np.isfinite(data)) or data.min() < 0 or data.max() > 255:
        raise ValueError("frames must hold finite display values within 0..255")
    return np.rint(data).astype(np.uint8)


def _pts_from_times(times_s: ArrayLike, n: int, time_base: Fraction) -> NDArray[np.int64]:
    t = np.asarray(times_s, dtype=np.float64)
    if t.shape != (n,):
        raise ValueError(f"times_s must have shape ({n},), got {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("times_s must be finite")
    pts = np.rint((t - t[0]) / float(time_base)).astype(np.int64)
    if np.any(np.diff(pts) <= 0):
        raise ValueError(
            f"times_s must increase strictly by at least one clock tick ({float(time_base):g} s)"
        )
    return pts


def _nominal_rate(pts: NDArray[np.int64], time_base: Fraction) -> Fraction:
    """Mean frame rate, stored as the stream's nominal rate (timing uses PTS)."""
    if pts.size < 2:
        return Fraction(25)
    mean_step = float(pts[-1] - pts[0]) / (pts.size - 1) * float(time_base)
    return Fraction(1.0 / mean_step).limit_denominator(1001)
