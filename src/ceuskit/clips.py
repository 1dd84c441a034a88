"""Exams split into clips: several cines of one probe position on one clock.

Long CEUS exams are recorded as several loops -- a 60 s wash-in loop, then
short late-phase loops at 2-3 min.  `join_clips` puts them on one clock: each
clip's frames keep their own timing and are shifted by the clip's start
(s after the first clip's first frame), from ``--clip-start-s`` or, for
DICOM, from the files' acquisition times.  Between clips there is no data:
the joined cine simply has no frames there, so fits use only what was
recorded and the curves are drawn with breaks (`gaps`).

Clips must share the frame size (refused otherwise); different ultrasound
regions, pixel spacing, scanner or colour are warned about, because gain,
depth or dynamic range changed between clips change the amplitudes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ceuskit.cine import Cine
from ceuskit.errors import AnalysisWarning, InputError

#: A step between frames longer than this many median frame intervals is a gap.
GAP_INTERVALS = 3.0
#: Metadata compared between clips (a difference is warned about).
_SETTINGS = ("manufacturer", "model", "photometric", "bits_stored")


def acquisition_time_s(meta: dict[str, Any]) -> float | None:
    """Seconds since midnight of the clip's acquisition (from its DICOM header), or None."""
    v = meta.get("acquisition_time_of_day_s")
    return float(v) if isinstance(v, int | float) else None


def clip_starts_s(cines: Sequence[Cine], names: Sequence[str],
                  given: Sequence[float] | None) -> list[float]:
    """Start of each clip (s from the first clip's first frame).

    From `given` (one value per clip, the first 0 or any reference) when
    passed, else from the clips' acquisition times.

    Raises
    ------
    InputError
        Wrong number of values, clips without acquisition times, or clips that
        overlap on the joined clock.
    """
    if given is not None:
        if len(given) != len(cines):
            raise InputError("--clip-start-s", f"{len(given)} start time(s) for {len(cines)} clips",
                             "give one start time (s) per clip, in the order of the clips")
        if not all(math.isfinite(float(v)) for v in given):
            raise InputError("--clip-start-s", f"{', '.join(f'{float(v):g}' for v in given)} are "
                             "not all finite numbers", "give each clip's start in s, e.g. 0 120 180")
        starts = [float(v) - float(given[0]) for v in given]
    else:
        times = [acquisition_time_s(dict(c.meta)) for c in cines]
        missing = [n for n, t in zip(names, times, strict=True) if t is None]
        if missing:
            raise InputError(missing[0], "carries no acquisition time to put the clips on one clock",
                             "pass --clip-start-s with each clip's start in s (e.g. "
                             "--clip-start-s 0 120 180)")
        known = [t for t in times if t is not None]
        # A day boundary between clips: later clips are later in the exam.
        starts = [(t - known[0]) % 86400.0 for t in known]
    for k in range(1, len(cines)):
        prev_end = starts[k - 1] + cines[k - 1].duration_s
        if starts[k] <= prev_end:
            raise InputError(
                names[k], f"starts at {starts[k]:.3f} s, before the previous clip ends "
                f"({prev_end:.3f} s on the joined clock)",
                "give the clips in the order they were recorded, with start times (--clip-start-s) "
                "that do not overlap")
    return starts


def join_clips(cines: Sequence[Cine], names: Sequence[str],
               starts_s: Sequence[float] | None = None) -> tuple[Cine, list[AnalysisWarning]]:
    """One cine of several clips on one clock.

    Parameters
    ----------
    cines : sequence of Cine
        The clips, in recording order.
    names : sequence of str
        Their file names (for messages and results.json).
    starts_s : sequence of float, optional
        Each clip's start (s); default from the acquisition times (`clip_starts_s`).

    Returns
    -------
    (Cine, warnings)
        The joined cine: frames in order, ``times_s`` on the joined clock,
        the first clip's geometry, ``meta["clips"]`` the clips' names, starts,
        frame counts and durations, and ``meta["gaps_s"]`` the gaps.

    Raises
    ------
    InputError
        Different frame sizes, or the start times of `clip_starts_s`.
    """
    if len(cines) == 1 and starts_s is None:
        return cines[0], []
    first = cines[0]
    for c, n in zip(cines[1:], names[1:], strict=True):
        if c.frame_shape != first.frame_shape:
            raise InputError(n, f"has {c.frame_shape[1]} x {c.frame_shape[0]} px frames, the first "
                             f"clip {first.frame_shape[1]} x {first.frame_shape[0]}",
                             "join only clips of one probe position exported at one size")
    starts = clip_starts_s(cines, names, starts_s)
    warnings: list[AnalysisWarning] = []
    differ = []
    for c, n in zip(cines[1:], names[1:], strict=True):
        what = [k for k in _SETTINGS if c.meta.get(k) != first.meta.get(k)]
        if c.regions != first.regions:
            what.append("ultrasound regions (panel layout or depth)")
        if c.spacing_mm != first.spacing_mm:
            what.append("pixel spacing")
        if (c.chroma is None) != (first.chroma is None):
            what.append("colour")
        if what:
            differ.append(f"{n}: {', '.join(what)}")
    if differ:
        warnings.append(AnalysisWarning(
            "clip-settings-differ",
            "the clips' settings differ from the first clip's (" + "; ".join(differ) + "); gain, "
            "depth or dynamic range changed between clips change the amplitudes, so curves are "
            "only comparable across clips recorded with the same settings",
        ))
    dtype = np.uint8 if all(c.frames.dtype == np.uint8 for c in cines) else np.float32
    frames = np.concatenate([np.asarray(c.frames, dtype=dtype) for c in cines])
    times = np.concatenate([s + np.asarray(c.times_s) for c, s in zip(cines, starts, strict=True)])
    chroma = None
    if any(c.chroma is not None for c in cines):
        chroma = np.zeros(first.frame_shape, dtype=np.float32)
        for c in cines:
            if c.chroma is not None:
                np.maximum(chroma, c.chroma, out=chroma)
    clips = [{"file": n, "start_s": round(s, 6), "n_frames": c.n_frames,
              "duration_s": round(c.duration_s, 6)}
             for c, n, s in zip(cines, names, starts, strict=True)]
    gap_list = [[round(a, 6), round(b, 6)] for a, b in gaps(times)]
    lossy = [f"{n}: {c.meta['lossy_compression']}" for c, n in zip(cines, names, strict=True)
             if c.meta.get("lossy_compression")]
    meta = {**dict(first.meta), "clips": clips, "gaps_s": gap_list,
            "n_frames": int(frames.shape[0]), "lossy_compression": "; ".join(lossy) or None}
    offsets = np.cumsum([0] + [c.n_frames for c in cines[:-1]])
    rgb = None
    if all(c.rgb_frames is not None for c in cines):
        def rgb(only: frozenset[int] | None = None) -> Iterator[tuple[int, NDArray[np.uint8]]]:
            for c, off in zip(cines, offsets, strict=True):
                assert c.rgb_frames is not None
                local = None if only is None else frozenset(
                    i - int(off) for i in only if off <= i < off + c.n_frames)
                if local is not None and not local:
                    continue
                for i, fr in c.rgb_frames(local):
                    yield int(off) + i, fr
    warns = [w for c in cines for w in c.warnings]
    joined = Cine(frames=frames, times_s=times, spacing_mm=first.spacing_mm,
                  regions=first.regions, chroma=chroma, meta=meta,
                  warnings=tuple(dict.fromkeys(warns)), display_max=first.display_max,
                  rgb_frames=rgb)
    return joined, warnings


def gaps(times_s: NDArray[Any]) -> list[tuple[float, float]]:
    """(last frame before, first frame after) of each gap: a step longer than
    `GAP_INTERVALS` median frame intervals (s)."""
    t = np.asarray(times_s, dtype=np.float64)
    if t.size < 3:
        return []
    dt = np.diff(t)
    limit = GAP_INTERVALS * float(np.median(dt))
    return [(float(t[i]), float(t[i + 1])) for i in np.flatnonzero(dt > limit)]


def source_name(names: Sequence[str]) -> str:
    """How a joined exam is named in messages and results.json."""
    return names[0] if len(names) == 1 else f"{names[0]} + {len(names) - 1} more clip(s)"


def clip_frame(meta: Mapping[str, Any], index: int) -> tuple[int, int]:
    """Which clip holds frame `index` of a joined exam, and the frame's index in it.

    Parameters
    ----------
    meta : mapping
        The joined cine's metadata (``meta["clips"]``: each clip's
        ``n_frames``, in order); without clips the cine is one clip.
    index : int
        Frame of the joined cine (0-based).

    Returns
    -------
    (clip, local) : (int, int)
        0-based clip number and frame index within that clip.
    """
    clips = meta.get("clips") or []
    local = int(index)
    for k, clip in enumerate(clips):
        n = int(clip["n_frames"])
        if local < n:
            return k, local
        local -= n
    if clips:
        raise ValueError(f"frame {index} is beyond the exam's {sum(int(c['n_frames']) for c in clips)} "
                         "frames")
    return 0, local


__all__ = ["GAP_INTERVALS", "clip_frame", "clip_starts_s", "gaps", "join_clips", "source_name"]
