"""The `Cine` value: a loaded ultrasound cine loop and what is known about it.

Every reader returns a `Cine`; every later stage takes one (or values derived
from it) and never goes back to the file -- except through
`Cine.rgb_frames`, the reader's own re-decoder of a colour source, which
colour-map inversion uses so that a colour cine is not held twice in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ceuskit.errors import AnalysisWarning, InputError

#: A re-readable source of colour frames: a callable returning an iterator of
#: (frame index, (H, W, 3) uint8 RGB frame) over the whole cine, or only over
#: the frame indices it is given (a set; the others are skipped).
RGBFrames = Callable[[frozenset[int] | None], Iterator[tuple[int, NDArray[np.uint8]]]]


@dataclass(frozen=True)
class Panel:
    """A rectangular region of the stored frame.

    Coordinates are frame pixels, x = column, y = row, origin top-left;
    ``x1`` and ``y1`` are exclusive.

    Attributes
    ----------
    x0, y0, x1, y1 : int
        Bounds in frame pixels.
    spacing_mm : tuple of float or None
        Physical pixel size (row, col) in mm, when the file declares it.
    kind : str
        ``"contrast"``, ``"bmode"``, ``"doppler"`` or ``"unknown"``.
    source : str
        Where the bounds came from: ``"dicom-region"``, ``"file"``,
        ``"image"``, ``"user"`` or ``"whole-frame"``.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    spacing_mm: tuple[float, float] | None = None
    kind: str = "unknown"
    source: str = "file"

    def __post_init__(self) -> None:
        if not (self.x1 > self.x0 and self.y1 > self.y0):
            raise ValueError(f"empty panel {self.bounds}")

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the panel in pixels."""
        return (self.y1 - self.y0, self.x1 - self.x0)

    @property
    def slices(self) -> tuple[slice, slice]:
        """Index expression selecting the panel from a (..., H, W) array."""
        return (slice(self.y0, self.y1), slice(self.x0, self.x1))

    def with_(self, **changes: Any) -> Panel:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "bounds_xyxy": list(self.bounds),
            "spacing_mm": None if self.spacing_mm is None else list(self.spacing_mm),
            "kind": self.kind,
            "source": self.source,
        }


def check_times(times_s: NDArray[np.floating[Any]], source: str) -> NDArray[np.float64]:
    """Validate frame times and shift them so the first frame is at t = 0.

    Parameters
    ----------
    times_s : array, shape (T,)
        Frame acquisition times in seconds.
    source : str
        File name used in the error message.

    Returns
    -------
    array, shape (T,)
        Float64 times in seconds, starting at 0.

    Raises
    ------
    InputError
        If there are fewer than two frames, or the times are not finite and
        strictly increasing.
    """
    t = np.asarray(times_s, dtype=np.float64).reshape(-1)
    if t.size < 2:
        raise InputError(
            source, "holds a single frame; a time-intensity analysis needs a cine",
            "export the whole contrast cine loop (all frames), not a still image",
        )
    if not np.all(np.isfinite(t)):
        raise InputError(source, "has missing or non-finite frame times",
                         "re-export the cine with its frame timing, or pass --fps")
    steps = np.diff(t)
    if np.any(steps <= 0):
        bad = int(np.argmax(steps <= 0)) + 1
        raise InputError(
            source,
            f"frame times are not strictly increasing (frame {bad} at {t[bad]:.4g} s "
            f"does not follow {t[bad - 1]:.4g} s; duplicate or out-of-order timestamps)",
            "re-export the cine without duplicated frames, or pass --fps to impose a "
            "constant frame rate",
        )
    return t - t[0]


@dataclass(frozen=True)
class Cine:
    """A cine loop in display values with its timing and geometry.

    Attributes
    ----------
    frames : ndarray, shape (T, H, W), uint8 or float32
        Grey display values, ``0 .. display_max``, read-only.  8-bit grey
        sources stay uint8 (a quarter of the memory, and the linearisation
        becomes a 256-entry table: `ceuskit.linearize.to_linear_power`);
        colour sources (converted to luma; `chroma` records where colour
        was) and deeper sources are float32.  Consumers must not do integer
        arithmetic on it: convert a chunk with ``np.asarray(x, np.float32)``
        first.
    times_s : ndarray, shape (T,), float64
        Acquisition time of each frame in seconds, strictly increasing, with
        ``times_s[0] == 0``.
    spacing_mm : tuple of float or None
        Default pixel size (row, col) in mm for the whole frame, or None.
    regions : tuple of Panel
        Regions the file declares (DICOM Sequence of Ultrasound Regions, or
        the panels stored in an NPZ).  Empty when the file says nothing.
    chroma : ndarray, shape (H, W), float32, or None
        Per-pixel colour saturation (max - min over RGB channels, in display
        units, maximum over frames).  None for grey sources.
    meta : mapping
        Non-identifying provenance: format, transfer syntax, photometric
        interpretation, timing source, manufacturer, frame count, ...
    warnings : tuple of AnalysisWarning
        Problems found while reading that affect the numbers.
    display_max : float
        Display value that means full brightness (255 for 8-bit displays).
    rgb_frames : callable, optional
        For colour sources: re-reads the source's colour frames, returning an
        iterator of (frame index, (H, W, 3) uint8 RGB) over the whole cine,
        or over the indices in the set it is passed (None: all).  Used to
        invert a tinted contrast panel (`ceuskit.colour_maps`); the frames
        are decoded again, not kept in memory.  None for grey sources.
    """

    frames: NDArray[np.float32] | NDArray[np.uint8]
    times_s: NDArray[np.float64]
    spacing_mm: tuple[float, float] | None = None
    regions: tuple[Panel, ...] = ()
    chroma: NDArray[np.float32] | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[AnalysisWarning, ...] = ()
    display_max: float = 255.0
    rgb_frames: RGBFrames | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        frames = self.frames
        if frames.ndim != 3 or frames.dtype not in (np.float32, np.uint8):
            raise ValueError("Cine.frames must be a (T, H, W) uint8 or float32 array")
        if frames.dtype == np.uint8 and self.display_max != 255.0:
            raise ValueError("uint8 Cine.frames need display_max 255")
        times = np.asarray(self.times_s, dtype=np.float64)
        if times.shape != (frames.shape[0],):
            raise ValueError("Cine.times_s must have one entry per frame")
        if frames.shape[0] < 2 or np.any(np.diff(times) <= 0) or times[0] != 0.0:
            raise ValueError("Cine.times_s must start at 0 and increase strictly")
        if self.chroma is not None and self.chroma.shape != frames.shape[1:]:
            raise ValueError("Cine.chroma must have the frame shape")
        frames.flags.writeable = False
        times.flags.writeable = False
        object.__setattr__(self, "times_s", times)
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        return (int(self.frames.shape[1]), int(self.frames.shape[2]))

    @property
    def duration_s(self) -> float:
        return float(self.times_s[-1])

    def whole_frame(self) -> Panel:
        """The whole stored frame as a panel."""
        h, w = self.frame_shape
        return Panel(0, 0, w, h, spacing_mm=self.spacing_mm, source="whole-frame")
