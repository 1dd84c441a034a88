"""Linear power of the contrast panel, streamed a chunk at a time for every pass.

ROI curves, the lesions' neighbour curves, the viable part, block curves
and maps all read the perfusion signal through `contrast_power_chunks`
(or `coded_power_chunks` for the compiled map kernels): the
linearisation and the motion alignment are defined once here, and a
motion-corrected cine's aligned power is kept between the passes of one
analysis when it fits in `ALIGNED_CACHE_BYTES`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ceuskit.cine import Cine
from ceuskit.linearize import CodedPower, linear_power_table, to_linear_power
from ceuskit.motion import VALID_TOLERANCE_PX, MotionEstimate, apply_motion
from ceuskit.panels import PanelChoice
from ceuskit.pipeline.values import AnalysisOptions
from ceuskit.tic import roi_means

#: Frames per chunk when the contrast panel is streamed (`contrast_power_chunks`):
#: bounds the float32 copy of the linear power (64 x 512 x 512 x 4 B = 64 MiB).
POWER_CHUNK_FRAMES = 64


def contrast_power_chunks(
    cine: Cine,
    panels: PanelChoice,
    options: AnalysisOptions,
    motion: MotionEstimate | None = None,
    *,
    chunk_frames: int = POWER_CHUNK_FRAMES,
    order: int = 1,
) -> Iterator[tuple[slice, NDArray[np.float32]]]:
    """Linear power of the contrast panel, aligned to the reference frame, a chunk at a time.

    Every stage that needs the perfusion signal (ROI curves, parametric maps)
    reads it through this generator, so the linearisation and the motion
    correction are defined once and the cine is never converted as a whole.

    Parameters
    ----------
    cine, panels, options
        The loaded cine, its panels and the settings (``dynamic_range_db``).
    motion : MotionEstimate, optional
        When given, every frame is aligned (`apply_motion`: bilinear, NaN
        where the aligned pixel comes from outside the panel).  Rejected
        frames are still yielded; ``motion.rejected`` says which they are.
    chunk_frames : int
        Frames per chunk.
    order : {1, 0, 3}
        Interpolation of the alignment: bilinear (default: keeps local means
        of linear power, for curves) or nearest (0: every value is one
        measured pixel's, for per-pixel tests that interpolation would blur).

    Yields
    ------
    (slice, ndarray)
        The frames' slice of the cine and their linear power, float32
        (frames, rows, cols) in a.u. (display maximum = 1.0), read-only.
        Every chunk is written into the same buffer (or is a view of the
        aligned power kept for the next pass), so a chunk is valid until the
        next one is asked for: copy it to keep it or change it.
    """
    n = cine.n_frames
    rows, cols = panels.contrast.shape
    buffer = np.empty((min(n, chunk_frames), rows, cols), dtype=np.float32)
    key = (panels.contrast.bounds, float(options.dynamic_range_db))
    cache = _aligned_cache(cine, key, motion) if motion is not None and order == 1 else None
    if cache is not None and cache.complete:
        for start in range(0, n, chunk_frames):
            sl = slice(start, min(n, start + chunk_frames))
            # A read-only view: no copy of the stack per pass.
            yield sl, _read_only(cache.power[sl])
        return
    fused = motion is not None and order == 1  # (always so when there is a cache)
    # 8-bit frames are looked up and aligned in one compiled pass
    # (`aligned_table_power`): no float32 copy of each chunk before alignment.
    table = (linear_power_table(options.dynamic_range_db, cine.display_max)
             if fused and cine.frames.dtype == np.uint8 else None)
    if fused:
        from ceuskit._motion_kernels import aligned_power, aligned_table_power

        mats = motion.matrices((rows, cols)) if motion is not None else None
        scratch = np.empty_like(buffer) if table is None else buffer
    for start in range(0, n, chunk_frames):
        sl = slice(start, min(n, start + chunk_frames))
        display = cine.frames[(sl, *panels.contrast.slices)]
        if table is not None and mats is not None:
            aligned = cache.power[sl] if cache is not None else buffer[:sl.stop - sl.start]
            aligned_table_power(display, table, mats[sl], VALID_TOLERANCE_PX, aligned)
            yield sl, _read_only(aligned)
            continue
        power = to_linear_power(display, options.dynamic_range_db, cine.display_max,
                                out=(scratch if fused else buffer)[:sl.stop - sl.start])
        if fused and mats is not None:
            # `apply_motion` (bilinear, NaN fill) in one compiled pass over the
            # chunk, straight into the kept stack when there is one: no copy,
            # and its fresh pages are first touched by the kernel's threads.
            aligned = cache.power[sl] if cache is not None else buffer[:sl.stop - sl.start]
            aligned_power(power, mats[sl], VALID_TOLERANCE_PX, aligned)
            power = aligned
        elif motion is not None:
            apply_motion(power, _motion_frames(motion, sl), order=order, out=power)
        yield sl, _read_only(power)
    if cache is not None:
        cache.complete = True


def _read_only(a: NDArray[np.float32]) -> NDArray[np.float32]:
    view = a.view()
    view.flags.writeable = False
    return view


#: Largest bilinear-aligned linear-power stack of a motion-corrected cine kept
#: in memory between the streaming passes of one analysis (bytes; 1 GiB holds
#: 900 frames of a 512 x 512 panel as float32).  Aligning every frame costs
#: ~1 s per pass for 900 frames of 480 x 248 px on 2 cores; the ROI curves,
#: the lesions' neighbour curves, the viable part and the block curves all
#: read the same aligned power.  Larger cines are aligned again for each pass.
ALIGNED_CACHE_BYTES = 1 << 30


@dataclass(eq=False)
class _AlignedPower:
    key: tuple[Any, ...]
    motion: MotionEstimate
    power: NDArray[np.float32]
    complete: bool = False


#: One aligned stack per live cine (cleared when the cine is collected).
_ALIGNED: dict[int, _AlignedPower] = {}


def _aligned_cache(cine: Cine, key: tuple[Any, ...], motion: MotionEstimate) -> _AlignedPower | None:
    """The aligned-power cache of `cine` for `key` (a fresh, empty one when the key changed)."""
    import weakref

    entry = _ALIGNED.get(id(cine))
    if entry is not None and entry.key == key and entry.motion is motion:
        return entry
    shape = (cine.n_frames, int(key[0][3] - key[0][1]), int(key[0][2] - key[0][0]))
    if 4 * shape[0] * shape[1] * shape[2] > ALIGNED_CACHE_BYTES:
        return None
    if entry is None:
        weakref.finalize(cine, _ALIGNED.pop, id(cine), None)
    entry = _AlignedPower(key, motion, np.empty(shape, dtype=np.float32))
    _ALIGNED[id(cine)] = entry
    return entry


def coded_power_chunks(
    cine: Cine,
    panels: PanelChoice,
    options: AnalysisOptions,
    motion: MotionEstimate | None = None,
    *,
    chunk_frames: int = POWER_CHUNK_FRAMES,
    order: int = 1,
) -> Iterator[tuple[slice, NDArray[np.float32] | CodedPower]]:
    """`contrast_power_chunks` for readers of `CodedPower` (the compiled kernels of `ceuskit.maps`).

    An 8-bit cine without motion correction is yielded as its display values
    and their table, which saves writing every chunk out as float32; an
    aligned or float cine yields `contrast_power_chunks`' float32 chunks.
    """
    if motion is not None or cine.frames.dtype != np.uint8:
        yield from contrast_power_chunks(cine, panels, options, motion, chunk_frames=chunk_frames,
                                         order=order)
        return
    n = cine.n_frames
    table = linear_power_table(options.dynamic_range_db, cine.display_max)
    for start in range(0, n, chunk_frames):
        sl = slice(start, min(n, start + chunk_frames))
        yield sl, CodedPower(np.asarray(cine.frames[(sl, *panels.contrast.slices)], dtype=np.uint8), table)


def mask_curves(cine: Cine, panels: PanelChoice, options: AnalysisOptions,
                motion: MotionEstimate | None, masks: list[NDArray[np.bool_]]) -> NDArray[np.float64]:
    """Mean linear power per frame in each mask (a.u.), shape (len(masks), T): one streaming pass."""
    return np.concatenate([roi_means(power, masks) for _, power in
                           contrast_power_chunks(cine, panels, options, motion)], axis=1)


def _motion_frames(motion: MotionEstimate, sl: slice) -> MotionEstimate:
    """The estimate restricted to frames ``sl`` (for aligning a chunk of frames)."""
    return replace(motion, **{name: getattr(motion, name)[sl] for name in (
        "dx_px", "dy_px", "rotation_deg", "quality", "rejected", "tracked", "quality_threshold",
        "confidence", "implausible", "estimated_displacement_px")})
