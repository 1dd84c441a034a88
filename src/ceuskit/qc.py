"""Acquisition quality control: what in the cine makes the numbers less trustworthy.

Every check is a pure function over arrays (no I/O) that returns a list of
`AnalysisWarning` (``code`` + ``message``); each message says what was found,
where, and what it means for the perfusion numbers.  `acquisition_warnings`
runs them all on one analysed cine and is the pipeline's single entry point.

Checks and their codes (thresholds are the module-level names below, each with
the reason for its value):

================================  =========================================================
``short-cine``                    the cine covers less than `MIN_DURATION_S`
``time-gap``                      a frame interval above `GAP_FACTOR` x the median interval
``duplicate-frames``              consecutive frames with the same contrast image
``gain-change``                   a display-gain step (B-mode level, or all of the contrast
                                  panel at once) or a slow B-mode level drift
``saturation``                    ROI pixels at the display maximum around the ROI's peak
``floor-clipping``                ROI pixels at the display floor (0) over the cine
``arrival-not-captured``          an enhancing ROI already enhanced in the first frames
``ends-before-washout``           an enhancing ROI still high (or peaking) at the end
``overlay-in-panel``              bright pixels constant over time (burned-in graphics)
``colour-in-panel``               a few coloured pixels inside the contrast panel
================================  =========================================================

Conventions: ``contrast`` and ``bmode`` are the display values of one panel
over time, shape (T, rows, cols) (views such as
``cine.frames[:, *panel.slices]`` are fine, nothing is copied wholesale);
``curves`` are mean linear echo power per ROI and frame, shape (R, T);
``valid_frames`` marks the frames the analysis uses (None: all); display
values are converted to decibels with ``dB = grey * DR / display_max``, the
log compression of `ceuskit.linearize`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from ceuskit.cine import Cine
from ceuskit.errors import AnalysisWarning
from ceuskit.panels import PanelChoice
from ceuskit.roi import Roi

__all__ = [
    "ARRIVAL_NOT_CAPTURED",
    "COLOUR_IN_PANEL",
    "DUPLICATE_FRAMES",
    "ENDS_BEFORE_WASHOUT",
    "FLOOR_CLIPPING",
    "GAIN_CHANGE",
    "OVERLAY_IN_PANEL",
    "QC_CODES",
    "SATURATION",
    "SHORT_CINE",
    "TIME_GAP",
    "CurveShape",
    "GainEvent",
    "acquisition_warnings",
    "arrival_warnings",
    "colour_mask",
    "colour_warnings",
    "curve_shape",
    "duplicate_frame_indices",
    "duplicate_frame_warnings",
    "duration_warnings",
    "floor_clipping_warnings",
    "floor_shares",
    "gain_change_warnings",
    "gain_events",
    "level_drift_db",
    "live_pixels",
    "overlay_mask",
    "overlay_warnings",
    "panel_levels_db",
    "saturation_shares",
    "saturation_warnings",
    "time_gap_warnings",
    "washout_warnings",
]

# --------------------------------------------------------------------------- codes

SHORT_CINE = "short-cine"
TIME_GAP = "time-gap"
DUPLICATE_FRAMES = "duplicate-frames"
GAIN_CHANGE = "gain-change"
SATURATION = "saturation"
FLOOR_CLIPPING = "floor-clipping"
ARRIVAL_NOT_CAPTURED = "arrival-not-captured"
ENDS_BEFORE_WASHOUT = "ends-before-washout"
OVERLAY_IN_PANEL = "overlay-in-panel"
COLOUR_IN_PANEL = "colour-in-panel"
#: Every code this module can emit, in the order `acquisition_warnings` runs them.
QC_CODES = (SHORT_CINE, TIME_GAP, DUPLICATE_FRAMES, GAIN_CHANGE, SATURATION, FLOOR_CLIPPING,
            ARRIVAL_NOT_CAPTURED, ENDS_BEFORE_WASHOUT, OVERLAY_IN_PANEL, COLOUR_IN_PANEL)

# --------------------------------------------------------------------------- thresholds

# Duration.  A bolus CEUS acquisition should cover arrival, peak and wash-out
# (EFSUMB's DCE-US guidance asks for a long enough acquisition); 60 s is the
# project's minimum: in limb veins and muscle, contrast arrives 10-20 s after
# injection and washes out over tens of seconds more.
MIN_DURATION_S = 60.0

# Time gaps.  Variable-rate video and DICOM frame time vectors jitter by tens of
# percent around the median interval; an interval beyond 2.5x the median
# means at least one (usually several) frames are missing.
GAP_FACTOR = 2.5

# Duplicated frames.  Contrast speckle decorrelates completely between frames
# (fresh bubbles, receiver noise): consecutive live frames differ by about ten
# grey levels or more on average (>= 10 on every phantom frame).  A mean
# absolute difference under half a grey level is a repeat of the same image
# (exactly 0 for a lossless export; a lossy codec re-encoding a repeated frame
# stays well below 0.5).
DUPLICATE_MAX_MEAN_ABS_DIFF = 0.5
# A panel this dark (share of pixels above `_DARK_GREY`) shows nothing to
# repeat; identical blank frames (before any signal, with reject on) are not
# counted as duplicates.
DUPLICATE_MIN_LIVE_SHARE = 0.01

# Gain changes.  Levels are medians of display values in dB (grey x DR /
# display max): a gain step of G dB shifts every unclipped grey value by
# G x display_max / DR, so it shifts each median by G dB, while a median is
# insensitive to the few pixels the bolus (or a bright lumen) changes.
# Step size that counts as a gain change.  Scanner gain knobs move in 1-3 dB
# clicks.  On the phantoms the B-mode median moves by at most 0.5 dB between
# frames (with breathing motion), and the contrast block medians by at most
# 0.9 dB during the bolus at 8 frames/s.  At 60 dB on 8 bits one grey level is
# 0.235 dB, so the smallest step flagged is 7 grey levels (1.65 dB).
GAIN_STEP_DB = 1.5
# ... and the step must also stand out against the cine's own frame-to-frame
# jitter (robust sigma of the consecutive differences of the level).
GAIN_STEP_Z = 6.0
# Contrast panel alone (no B-mode step, e.g. the contrast gain knob): a gain
# step moves every region of the panel together, in one frame, by the same
# amount; a bolus arrives region by region and rises over several frames.
# The panel is cut into GAIN_GRID blocks; a step needs this share of the
# usable blocks to move the same way by >= GAIN_STEP_DB ...
GAIN_GRID = (4, 4)
GAIN_BLOCK_AGREEMENT = 0.9
# ... and the median block step must be this many times larger than the steps
# just before and after it (a bolus sampled at a low frame rate rises over
# several frames of similar size; a gain step is a single discontinuity).  On
# the phantoms the muscle bolus moves >= 90 % of the blocks together at 1 and
# 0.5 frames/s, with ratios up to 1.4 (1 frame/s) and 2.1 (0.5 frames/s).
GAIN_ABRUPT_RATIO = 4.0
# Blocks this dark or this bright (grey levels from either end of the display)
# cannot show a gain step (clipped) and are left out of the vote.
GAIN_BLOCK_MARGIN_GREY = 12.0
# At least this many usable blocks, or the contrast-panel vote is not taken.
GAIN_MIN_BLOCKS = 4
# When a B-mode step is seen, the contrast panel is said to follow it when its
# median block step has the same sign and at least this share of the size.
GAIN_FOLLOW_SHARE = 0.5
# Slow changes (autoscaling, time-gain drift): the B-mode level smoothed over
# GAIN_DRIFT_WINDOW_S (longer than a breath, so breathing motion averages
# out) may not move more than GAIN_DRIFT_DB from its start.  Tissue B-mode
# from one view is steady (the phantoms drift by <= 0.25 dB, with 8 px
# breathing motion); 3 dB is a doubling of displayed tissue power that the
# faint bubble trace in B-mode does not produce in a panel median.
GAIN_DRIFT_WINDOW_S = 6.0
GAIN_DRIFT_DB = 3.0
# Frames sampled to find the B-mode panel's live (non-black) pixels.
LIVE_SAMPLES = 16
# Pixel stride used for the panel medians: every second row and column keeps
# ~1/4 of the pixels, ample for a median over a panel or block (thousands of
# pixels), at a quarter of the cost.
LEVEL_PIXEL_STRIDE = 2

# Saturation.  For fully developed (exponential) speckle the share of pixels
# clipped at the display maximum equals the relative loss of the clipped
# pixels' mean power (E[min(X, c)] = m (1 - exp(-c / m)) and
# P(X > c) = exp(-c / m)); with heterogeneous perfusion the loss is larger
# than the share.  2 % saturated pixels at the peak therefore means the peak
# enhancement is underestimated by at least ~2 %, the first level at which
# clipping, rather than noise, sets the error of the peak; the clean phantoms
# (peaks 7-15 dB below full scale) stay below 0.5 %.
SATURATION_MAX_SHARE = 0.02
# A pixel counts as saturated from half a grey level under the maximum (an
# 8-bit 255 decoded through a lossy codec reads 254.6-255).
SATURATION_MARGIN_GREY = 0.5
# The "peak frames" are the valid frames within this half-window (s) of the
# maximum of the ROI's smoothed curve: clipping bites where the signal is
# highest, and is diluted away if the whole cine is counted.
PEAK_HALF_WINDOW_S = 1.0

# Floor clipping.  Exponential speckle whose mean is m display-floor units
# puts 1 - exp(-1/m) of its pixels at 0; 10 % at 0 means the ROI's signal
# (over the cine) sits within ~10 dB of the display floor, so its baseline and
# late wash-out are partly below what the display shows.  The clean phantoms'
# noise floor (15 dB above the display floor) puts ~3-4 % of noise-only pixels
# at 0 before the bolus, and at most 0.6 % of an ROI's pixel-frames over the
# cine.
FLOOR_MAX_SHARE = 0.10
# At most this many frames are sampled to count zeros (evenly over the cine):
# a share is known to < 0.5 % from far fewer.
FLOOR_MAX_SAMPLES = 128

# Curve-shape checks (arrival, wash-out) work on the ROI curve smoothed over
# CURVE_SMOOTH_S (a moving average): long enough to tame speckle noise,
# short against a bolus peak (several seconds wide).
CURVE_SMOOTH_S = 2.0
# Arrival not captured: the mean of the first EARLY_WINDOW_S of the curve is
# already this share of the peak enhancement above the pre-peak minimum...
EARLY_WINDOW_S = 2.0
EARLY_MAX_SHARE = 0.25
# ... or the curve crosses ARRIVAL_LEVEL_SHARE of its enhancement before
# MIN_BASELINE_S: the enhancement test and the fit need a few seconds of
# pre-contrast baseline (kinetics.fit uses at least 2 s).
ARRIVAL_LEVEL_SHARE = 0.10
MIN_BASELINE_S = 3.0
# Ends before wash-out: the mean over the last END_WINDOW_S is still this
# share of the peak enhancement above baseline (the simulator's definition of
# "washes out" is the complement: below half the peak enhancement at the end),
# or the peak lies in the last LATE_PEAK_SHARE of the cine.
END_WINDOW_S = 2.0
WASHOUT_MAX_RESIDUAL = 0.5
LATE_PEAK_SHARE = 0.10
# Noise guard of both curve-shape checks: an excess counts only when it is at
# least this many standard errors of the smoothed curve (the pre-peak minimum
# is itself biased ~2-3 standard errors low by noise).
CURVE_NOISE_Z = 5.0
# ... and a curve's shape is judged only when its whole enhancement is at
# least this many standard errors: the range (max - pre-peak min) of a flat,
# noisy 90 s curve smoothed over 2 s reaches 5-7 standard errors by chance.
CURVE_MIN_ENHANCEMENT_SE = 10.0

# Overlays.  Frames sampled evenly over the valid frames; a live contrast
# pixel (fresh bubble speckle and receiver noise every frame) is never
# constant over dozens of frames spanning a bolus.
OVERLAY_SAMPLES = 48
# Fewer sampled frames than this and a constant bright pixel could be chance.
OVERLAY_MIN_SAMPLES = 8
# Overlay pixels are at least this share of the display maximum (white or grey
# text, calipers, yellow/green markers in luma) ...
OVERLAY_MIN_LEVEL_SHARE = 0.4
# ... and vary by at most this many grey levels over the samples (a lossy
# codec moves burned-in text by a level or two).
OVERLAY_MAX_RANGE_GREY = 2.0
# One or two stuck pixels are not an overlay; a single small character is
# already ~20-40 pixels.
OVERLAY_MIN_PIXELS = 20
# The panel must be live (median temporal range of its pixels) for "constant"
# to mean "burned in"; a frozen image is a duplicate-frames problem instead.
OVERLAY_LIVE_RANGE_GREY = 10.0

# Colour.  Chroma (max - min over RGB) above this many grey levels is colour,
# as in `ceuskit.panels.colour_share`; grey images through a lossy video codec
# stay far below it.
COLOUR_CHROMA_MIN = 30.0
# A marker or colour-bar fragment has at least a few pixels; below this count
# colour is codec noise at edges, not a display element.
COLOUR_MIN_PIXELS = 10

# Display values this close to 0 count as dark (as ``panels.DARK_LEVEL``).
_DARK_GREY = 12.0
_MAD_TO_SIGMA = 1.4826
_CHUNK_FRAMES = 64


# --------------------------------------------------------------------------- helpers


def _valid(valid_frames: ArrayLike | None, n: int) -> NDArray[np.bool_]:
    """Boolean frame mask of length `n` (all True when None)."""
    if valid_frames is None:
        return np.ones(n, dtype=bool)
    v = np.asarray(valid_frames, dtype=bool).reshape(-1)
    if v.shape != (n,):
        raise ValueError(f"valid_frames has {v.size} entries for {n} frames")
    return v


def _even_sample(indices: NDArray[np.intp], n_max: int) -> NDArray[np.intp]:
    """At most `n_max` entries of `indices`, evenly spread, first and last kept."""
    if indices.size <= n_max:
        return indices
    pick = np.unique(np.linspace(0, indices.size - 1, n_max).round().astype(np.intp))
    return indices[pick]


def _window_samples(times_s: NDArray[np.float64], window_s: float) -> int:
    """Odd number of samples spanning about `window_s` at the median frame interval."""
    if times_s.size < 2:
        return 1
    dt = float(np.median(np.diff(times_s)))
    k = max(1, round(window_s / dt)) if dt > 0 else 1
    return k if k % 2 else k + 1


def _moving_average(y: NDArray[np.float64], k: int) -> NDArray[np.float64]:
    """Centred moving average over `k` samples; the window shrinks at the ends."""
    n = y.size
    if k <= 1 or n == 0:
        return y.astype(np.float64, copy=True)
    c = np.concatenate([[0.0], np.cumsum(y, dtype=np.float64)])
    h = k // 2
    i = np.arange(n)
    lo = np.clip(i - h, 0, n)
    hi = np.clip(i + h + 1, 0, n)
    return np.asarray((c[hi] - c[lo]) / (hi - lo), dtype=np.float64)


def _bbox_text(mask: NDArray[np.bool_]) -> str:
    rows, cols = np.nonzero(mask)
    return (f"x {int(cols.min())}-{int(cols.max())}, y {int(rows.min())}-{int(rows.max())} "
            "(contrast-panel pixels)")


def _roi_overlap_text(mask: NDArray[np.bool_], rois: Sequence[Roi], what: str) -> str:
    """Sentence on which ROIs overlap `mask` and what that means."""
    hits = []
    for roi in rois:
        if roi.mask.shape != mask.shape:
            continue
        n = int(np.count_nonzero(roi.mask & mask))
        if n:
            hits.append(f"'{roi.name}' ({n} px, {n / roi.area_px:.1%} of it)")
    if not hits:
        return f"no ROI overlaps the {what}, so the curves are not affected"
    return (f"ROI {', '.join(hits)} overlaps the {what}: those pixels show the {what}, not echo "
            "power, so the ROI's curve is contaminated: its baseline is raised by their constant "
            "brightness and its peak enhancement, AUC and slopes are scaled down by the share of "
            "the ROI they cover; redraw the ROI clear of them")


def _fmt_times(times: Sequence[float], limit: int = 5) -> str:
    shown = ", ".join(f"{t:.1f} s" for t in times[:limit])
    return shown + (f" and {len(times) - limit} more" if len(times) > limit else "")


# --------------------------------------------------------------------------- duration and timing


def duration_warnings(times_s: ArrayLike) -> list[AnalysisWarning]:
    """``short-cine``: the cine covers less than `MIN_DURATION_S`.

    The covered span is the last frame's time plus one median frame interval
    (a 60 s recording at 8 frames/s ends its last frame at 59.875 s).

    Parameters
    ----------
    times_s : array, shape (T,)
        Frame times in seconds.
    """
    t = np.asarray(times_s, dtype=np.float64).reshape(-1)
    if t.size < 2:
        return []
    span = float(t[-1] - t[0] + np.median(np.diff(t)))
    if span >= MIN_DURATION_S:
        return []
    return [AnalysisWarning(
        SHORT_CINE,
        f"the cine lasts {span:.1f} s, shorter than the {MIN_DURATION_S:.0f} s a bolus study "
        "needs to show arrival, peak and wash-out: late-phase parameters (mean transit time, "
        "fall time, wash-out rate, wash-out AUC, total AUC) rest on extrapolating the fitted "
        "model, and late wash-out cannot be assessed",
    )]


def time_gap_warnings(times_s: ArrayLike, declared_gaps_s: Sequence[Sequence[float]] = ()
                      ) -> list[AnalysisWarning]:
    """``time-gap``: frame intervals longer than `GAP_FACTOR` x the median interval.

    Parameters
    ----------
    times_s : array, shape (T,)
        Frame times in seconds (strictly increasing).
    declared_gaps_s : sequence of (start, end), optional
        Gaps (s) known to lie between the clips of an exam
        (`ceuskit.clips`): intervals that span one are not warned about,
        since nothing was dropped there.
    """
    t = np.asarray(times_s, dtype=np.float64).reshape(-1)
    if t.size < 3:
        return []
    dt = np.diff(t)
    med = float(np.median(dt))
    long = dt > GAP_FACTOR * med
    for a, b in declared_gaps_s:
        # The interval from the last frame before a declared gap to the first after it.
        long &= ~((t[:-1] <= float(a) + 1e-6) & (t[1:] >= float(b) - 1e-6))
    gaps = np.flatnonzero(long)
    if gaps.size == 0:
        return []
    worst = int(gaps[np.argmax(dt[gaps])])
    missing = float(np.sum(dt[gaps] / med - 1.0))
    return [AnalysisWarning(
        TIME_GAP,
        f"{gaps.size} gap(s) in the frame times (longest {dt[worst]:.2f} s after "
        f"{t[worst]:.1f} s; median interval {med:.3f} s; about {missing:.0f} frame(s) missing): "
        "the curve is interpolated across each gap, so an arrival, peak or steep slope inside "
        "a gap is timed only to within the gap and the fit has fewer samples there; check the "
        "export (dropped frames, a paused or frozen clip)",
    )]


def duplicate_frame_indices(contrast: NDArray[Any]) -> NDArray[np.intp]:
    """Frames whose contrast image repeats the frame before.

    A frame ``k >= 1`` is a duplicate when the mean absolute difference to
    frame ``k - 1`` is at most `DUPLICATE_MAX_MEAN_ABS_DIFF` grey levels and
    the panel is not blank (at least `DUPLICATE_MIN_LIVE_SHARE` of its pixels
    above the dark level).  One pass over the frames, in chunks.

    Parameters
    ----------
    contrast : array, shape (T, rows, cols)
        Contrast-panel display values.

    Returns
    -------
    ndarray of int
        Indices ``k`` of the repeated frames.
    """
    n = contrast.shape[0]
    out: list[NDArray[np.intp]] = []
    # 8-bit frames stay 8-bit: the sums of whole numbers are exact, so the
    # means equal the float path's.  One compiled pass over all the frames.
    byte = np.asarray(contrast[:0]).dtype == np.uint8
    if byte and n > 1:
        from ceuskit._lut import frame_differences

        total = np.empty(n, dtype=np.int64)
        above = np.empty(n, dtype=np.int64)
        frame_differences(contrast, _DARK_GREY, total, above)
        size = float(contrast.shape[1] * contrast.shape[2])
        mad = total[1:] / size
        live = above[1:] / size
        hit = (mad <= DUPLICATE_MAX_MEAN_ABS_DIFF) & (live >= DUPLICATE_MIN_LIVE_SHARE)
        return (np.flatnonzero(hit) + 1).astype(np.intp)
    for start in range(1, n, _CHUNK_FRAMES):
        stop = min(n, start + _CHUNK_FRAMES)
        cur = np.asarray(contrast[start:stop], dtype=np.float32)
        prev = np.asarray(contrast[start - 1:stop - 1], dtype=np.float32)
        mad = np.abs(cur - prev).mean(axis=(1, 2), dtype=np.float64)
        live = (cur > _DARK_GREY).mean(axis=(1, 2), dtype=np.float64)
        hit = (mad <= DUPLICATE_MAX_MEAN_ABS_DIFF) & (live >= DUPLICATE_MIN_LIVE_SHARE)
        out.append(np.flatnonzero(hit).astype(np.intp) + start)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.intp)


def duplicate_frame_warnings(contrast: NDArray[Any], times_s: ArrayLike) -> list[AnalysisWarning]:
    """``duplicate-frames``: consecutive frames with the same contrast image.

    Parameters
    ----------
    contrast : array, shape (T, rows, cols)
        Contrast-panel display values.
    times_s : array, shape (T,)
        Frame times in seconds.
    """
    t = np.asarray(times_s, dtype=np.float64).reshape(-1)
    dup = duplicate_frame_indices(contrast)
    if dup.size == 0:
        return []
    return [AnalysisWarning(
        DUPLICATE_FRAMES,
        f"{dup.size} frame(s) ({dup.size / t.size:.1%} of the cine) repeat the previous contrast "
        f"image pixel for pixel (at {_fmt_times([float(t[k]) for k in dup])}): the export repeats "
        "frames, so those samples are not new measurements and their time stamps are off by up "
        "to a frame interval; times and slopes are distorted and the noise estimate behind the "
        "enhancement test is too optimistic; export at the acquisition frame rate",
    )]


# --------------------------------------------------------------------------- gain


def panel_levels_db(
    panel: NDArray[Any],
    *,
    dynamic_range_db: float,
    display_max: float = 255.0,
    grid: tuple[int, int] = (1, 1),
    stride: int = LEVEL_PIXEL_STRIDE,
    pixels: NDArray[np.bool_] | None = None,
) -> NDArray[np.float64]:
    """Median display level of each frame (or each block of it), in dB.

    Parameters
    ----------
    panel : array, shape (T, rows, cols)
        Display values of one panel.
    dynamic_range_db : float
        Display dynamic range (dB); a grey level is ``DR / display_max`` dB.
    display_max : float
        Display value of full brightness.
    grid : (rows, cols)
        Blocks per panel (``(1, 1)``: one level per frame).
    stride : int
        Pixel stride along rows and columns.
    pixels : bool array, shape (rows, cols), optional
        Only these pixels count (e.g. `live_pixels`: the image sector, not
        the black surround); only with ``grid=(1, 1)``.

    Returns
    -------
    ndarray, shape (T, grid rows * grid cols)
        Median grey level times ``DR / display_max`` (dB above the display
        floor).  A block with no pixel gives NaN.
    """
    gy, gx = grid
    n = panel.shape[0]
    out = np.full((n, gy * gx), np.nan)
    scale = float(dynamic_range_db) / float(display_max)
    if pixels is not None:
        if grid != (1, 1):
            raise ValueError("a pixel selection needs grid=(1, 1)")
        sel = np.asarray(pixels, dtype=bool)[::stride, ::stride]
        if not sel.any():
            return out
    if panel.dtype == np.uint8:
        from ceuskit._lut import block_medians

        # An 8-bit median is the same whole or half number from a histogram.
        medians = np.empty((n, gy * gx))
        mask = (sel if pixels is not None else np.zeros((0, 0), dtype=bool))
        block_medians(panel, gy, gx, stride, np.ascontiguousarray(mask), medians)
        out[:] = medians.astype(np.float32) * scale
        return out
    for start in range(0, n, _CHUNK_FRAMES):
        sl = slice(start, min(n, start + _CHUNK_FRAMES))
        sub = np.asarray(panel[sl, ::stride, ::stride])
        # 8-bit frames are ranked as they are (partitioning bytes is ~3x
        # faster than float32); a median of whole numbers is exact in float32,
        # so the levels are the float32 path's bit for bit.
        if sub.dtype != np.uint8:
            sub = sub.astype(np.float32)
        if pixels is not None:
            out[sl, 0] = np.median(sub[:, sel], axis=-1).astype(np.float32) * scale
            continue
        h, w = sub.shape[1] // gy * gy, sub.shape[2] // gx * gx
        if h == 0 or w == 0:
            continue
        blocks = sub[:, :h, :w].reshape(sub.shape[0], gy, h // gy, gx, w // gx)
        blocks = blocks.transpose(0, 1, 3, 2, 4).reshape(sub.shape[0], gy * gx, -1)
        out[sl] = np.median(blocks, axis=-1).astype(np.float32) * scale
    return out


def live_pixels(panel: NDArray[Any], valid_frames: ArrayLike | None = None) -> NDArray[np.bool_]:
    """Pixels that show image at some point: brighter than the dark level in a sample.

    Sector-shaped images leave the corners of a panel black; a median over
    the whole panel would sit at 0 when the black share exceeds half and miss
    every gain step.  Up to `LIVE_SAMPLES` valid frames, evenly spread.

    Parameters
    ----------
    panel : array, shape (T, rows, cols)
    valid_frames : bool array, shape (T,), optional

    Returns
    -------
    bool array, shape (rows, cols)
    """
    idx = _even_sample(np.flatnonzero(_valid(valid_frames, panel.shape[0])).astype(np.intp),
                       LIVE_SAMPLES)
    if idx.size == 0:
        return np.zeros(panel.shape[1:], dtype=bool)
    return np.asarray(np.asarray(panel[idx]).max(axis=0) > _DARK_GREY)


@dataclass(frozen=True)
class GainEvent:
    """One frame-to-frame step of the display gain.

    Attributes
    ----------
    frame : int
        Index of the first frame after the step.
    time_s : float
        Its time (s).
    bmode_db : float or None
        Step of the B-mode panel's median level (dB); None without B-mode.
    contrast_db : float
        Median step of the contrast panel's block levels (dB).
    contrast_follows : bool
        The contrast panel stepped too (same sign, comparable size, or the
        whole panel moved together on its own).
    contrast_blocks : int
        Contrast blocks usable for the comparison (neither dark nor
        saturated); fewer than `GAIN_MIN_BLOCKS` means the contrast panel
        could not tell.
    """

    frame: int
    time_s: float
    bmode_db: float | None
    contrast_db: float
    contrast_follows: bool
    contrast_blocks: int


def _robust_sigma(x: NDArray[np.float64]) -> float:
    x = x[np.isfinite(x)]
    if x.size < 3:
        return 0.0
    return float(_MAD_TO_SIGMA * np.median(np.abs(x - np.median(x))))


def gain_events(
    contrast_blocks_db: NDArray[np.float64],
    bmode_db: NDArray[np.float64] | None,
    times_s: ArrayLike,
    *,
    dynamic_range_db: float,
    display_max: float = 255.0,
    valid_frames: ArrayLike | None = None,
) -> list[GainEvent]:
    """Find frame-to-frame gain steps from panel levels (see `panel_levels_db`).

    Steps are taken between consecutive valid frames.  A step is a gain
    change when either

    - the B-mode median level moves by at least `GAIN_STEP_DB` and by at
      least `GAIN_STEP_Z` robust standard deviations of its own
      frame-to-frame differences (tissue brightening or darkening without
      contrast); or
    - at least `GAIN_BLOCK_AGREEMENT` of the usable contrast blocks (not
      within `GAIN_BLOCK_MARGIN_GREY` of either display end) move the same
      way by at least `GAIN_STEP_DB`, and the median block step is
      `GAIN_ABRUPT_RATIO` times the median block steps just before and after
      it (a bolus rises region by region and over several frames).

    Parameters
    ----------
    contrast_blocks_db : array, shape (T, B)
        Contrast-panel block levels (dB).
    bmode_db : array, shape (T,) or (T, 1), or None
        B-mode panel level (dB).
    times_s : array, shape (T,)
    dynamic_range_db, display_max : float
        Display scaling (for the block margins).
    valid_frames : bool array, shape (T,), optional

    Returns
    -------
    list of GainEvent
    """
    t = np.asarray(times_s, dtype=np.float64).reshape(-1)
    idx = np.flatnonzero(_valid(valid_frames, t.size))
    if idx.size < 3:
        return []
    scale = float(dynamic_range_db) / float(display_max)
    lc = np.asarray(contrast_blocks_db, dtype=np.float64)[idx]
    lo_db, hi_db = GAIN_BLOCK_MARGIN_GREY * scale, (display_max - GAIN_BLOCK_MARGIN_GREY) * scale
    usable = (lc >= lo_db) & (lc <= hi_db)
    pair_ok = usable[1:] & usable[:-1]
    dc = np.where(pair_ok, np.diff(lc, axis=0), np.nan)
    n_ok = pair_ok.sum(axis=1)
    med_c = np.zeros(n_ok.size)
    rows = n_ok > 0
    if rows.any():
        med_c[rows] = np.nanmedian(dc[rows], axis=1)
    sign = np.sign(med_c)[:, None]
    agree = np.sum(np.nan_to_num(dc * sign) >= GAIN_STEP_DB, axis=1)
    share = np.where(n_ok > 0, agree / np.maximum(n_ok, 1), 0.0)
    mag = np.abs(med_c)
    before = np.concatenate([[0.0], mag[:-1]])
    after = np.concatenate([mag[1:], [0.0]])
    abrupt = mag >= GAIN_ABRUPT_RATIO * np.maximum(before, after)
    step_c = ((n_ok >= GAIN_MIN_BLOCKS) & (share >= GAIN_BLOCK_AGREEMENT)
              & (mag >= GAIN_STEP_DB) & abrupt)

    db: NDArray[np.float64] | None = None
    step_b = np.zeros_like(step_c)
    if bmode_db is not None:
        lb = np.asarray(bmode_db, dtype=np.float64).reshape(t.size, -1)[idx, 0]
        db = np.diff(lb)
        thr = max(GAIN_STEP_DB, GAIN_STEP_Z * _robust_sigma(db))
        step_b = np.isfinite(db) & (np.abs(db) >= thr)

    events = []
    for i in np.flatnonzero(step_b | step_c):
        b = None if db is None else float(db[i])
        follows = bool(step_c[i]) or (
            b is not None and med_c[i] * b > 0 and abs(med_c[i]) >= GAIN_FOLLOW_SHARE * abs(b))
        k = int(idx[i + 1])
        events.append(GainEvent(k, float(t[k]), b if step_b[i] else None, float(med_c[i]),
                                follows, int(n_ok[i])))
    return events


def level_drift_db(
    bmode_db: NDArray[np.float64], times_s: ArrayLike, valid_frames: ArrayLike | None = None
) -> tuple[float, float]:
    """Largest departure of the smoothed B-mode level from its start.

    The level is smoothed by a running median over `GAIN_DRIFT_WINDOW_S`
    (longer than a breath); the start is the smoothed value at the first
    valid frame.

    Returns
    -------
    (drift_db, time_s)
        Signed largest departure (dB) and where it occurs (s); ``(0, 0)``
        with too few frames.
    """
    t = np.asarray(times_s, dtype=np.float64).reshape(-1)
    idx = np.flatnonzero(_valid(valid_frames, t.size))
    lb = np.asarray(bmode_db, dtype=np.float64).reshape(t.size, -1)[idx, 0]
    tv = t[idx]
    if idx.size < 3:
        return 0.0, 0.0
    k = _window_samples(tv, GAIN_DRIFT_WINDOW_S)
    if k >= lb.size:
        return 0.0, 0.0
    smooth = ndimage.median_filter(lb, size=k, mode="nearest")
    # Only centres with a full window: the ends of a running median repeat
    # the edge samples and would show breathing as drift.
    h = k // 2
    core = smooth[h:lb.size - h]
    dev = core - core[0]
    j = int(np.argmax(np.abs(dev)))
    return float(dev[j]), float(tv[h + j])


def gain_change_warnings(
    contrast: NDArray[Any],
    bmode: NDArray[Any] | None,
    times_s: ArrayLike,
    *,
    dynamic_range_db: float,
    display_max: float = 255.0,
    valid_frames: ArrayLike | None = None,
) -> list[AnalysisWarning]:
    """``gain-change``: frame-wise gain or autoscaling changes.

    Three patterns (see `gain_events` and `level_drift_db`): a B-mode level
    step (whether the contrast panel follows it is reported), a step of the
    whole contrast panel at once, and a slow B-mode level drift of more than
    `GAIN_DRIFT_DB`.  Two passes over the panels' frames (levels), strided.

    Parameters
    ----------
    contrast : array, shape (T, rows, cols)
        Contrast-panel display values.
    bmode : array, shape (T, rows, cols), or None
        B-mode-panel display values, when the cine has that panel.
    times_s : array, shape (T,)
    dynamic_range_db : float
        Display dynamic range (dB) used to express grey levels in dB.
    display_max : float
    valid_frames : bool array, shape (T,), optional
    """
    t = np.asarray(times_s, dtype=np.float64).reshape(-1)
    lc = panel_levels_db(contrast, dynamic_range_db=dynamic_range_db, display_max=display_max,
                         grid=GAIN_GRID)
    lb = (panel_levels_db(bmode, dynamic_range_db=dynamic_range_db, display_max=display_max,
                          pixels=live_pixels(bmode, valid_frames))
          if bmode is not None else None)
    events = gain_events(lc, lb, t, dynamic_range_db=dynamic_range_db, display_max=display_max,
                         valid_frames=valid_frames)
    out: list[AnalysisWarning] = []
    affecting = [e for e in events if e.contrast_follows]
    bmode_only = [e for e in events if not e.contrast_follows]
    if affecting:
        e = max(affecting, key=lambda ev: abs(ev.contrast_db))
        where = (f"the B-mode tissue level by {e.bmode_db:+.1f} dB and the contrast panel by "
                 f"{e.contrast_db:+.1f} dB" if e.bmode_db is not None else
                 f"the whole contrast panel by {e.contrast_db:+.1f} dB in one frame")
        factor = 10.0 ** (e.contrast_db / 10.0)
        steps = (f"a step at {e.time_s:.1f} s" if len(affecting) == 1 else
                 f"{len(affecting)} steps, at {_fmt_times([ev.time_s for ev in affecting])}; "
                 f"largest at {e.time_s:.1f} s")
        out.append(AnalysisWarning(
            GAIN_CHANGE,
            f"the display gain changes during the cine ({steps}: {where}), brightening or "
            "darkening tissue without contrast: linear power after "
            f"a step is scaled by about x{factor:.2g}, so the curve's shape, peak enhancement, "
            "AUC, slopes and the fitted times are distorted; lesion/reference ratios from the "
            "same frames are less affected; keep gain fixed during the acquisition",
        ))
    if bmode_only:
        e = max(bmode_only, key=lambda ev: abs(ev.bmode_db or 0.0))
        b_db = e.bmode_db or 0.0
        steps = (f"a step at {e.time_s:.1f} s" if len(bmode_only) == 1 else
                 f"{len(bmode_only)} steps, at {_fmt_times([ev.time_s for ev in bmode_only])}; "
                 f"largest at {e.time_s:.1f} s")
        unknown = [ev for ev in bmode_only if ev.contrast_blocks < GAIN_MIN_BLOCKS]
        if unknown:
            meaning = ("the contrast panel is too dark (or too bright) there to tell whether its "
                       "gain changed too; if it did, linear power after the step is scaled by "
                       f"about x{10.0 ** (b_db / 10.0):.2g} and peak enhancement, AUC and slopes "
                       "are distorted; check that the contrast gain stayed fixed")
        else:
            meaning = (f"the contrast panel shows no matching step ({e.contrast_db:+.1f} dB), so "
                       "the contrast numbers are probably unaffected; check that the contrast "
                       "gain stayed fixed")
        out.append(AnalysisWarning(
            GAIN_CHANGE,
            f"the B-mode panel's gain changes during the cine ({steps}: {b_db:+.1f} dB): "
            f"{meaning}; motion tracking on B-mode is less reliable across the step",
        ))
    if lb is not None and not events:
        drift, at = level_drift_db(lb, t, valid_frames)
        if abs(drift) > GAIN_DRIFT_DB:
            out.append(AnalysisWarning(
                GAIN_CHANGE,
                f"the B-mode tissue level drifts by {drift:+.1f} dB over the cine (largest at "
                f"{at:.1f} s, {GAIN_DRIFT_WINDOW_S:g} s running median) without a step: "
                "autoscaling, a slow gain change or a change of view; if the contrast display "
                "drifted with it, amplitudes (peak enhancement, AUC, slopes) drift by up to "
                f"x{10.0 ** (drift / 10.0):.2g} in linear power across the cine",
            ))
    return out


# --------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class CurveShape:
    """Robust landmarks of one ROI curve (linear power, a.u.).

    Attributes
    ----------
    smoothed : ndarray, shape (T,)
        Curve with invalid samples interpolated, moving average over
        `CURVE_SMOOTH_S`.
    peak_index : int
        Index of the smoothed maximum.
    peak : float
        Smoothed maximum (a.u.).
    baseline : float
        Minimum of the smoothed curve up to the peak (a.u.).
    enhancement : float
        ``peak - baseline`` (a.u.).
    noise_se : float
        Standard error of the smoothed curve (a.u.): robust sigma of the
        first differences / sqrt(2), over sqrt(window samples).
    """

    smoothed: NDArray[np.float64]
    peak_index: int
    peak: float
    baseline: float
    enhancement: float
    noise_se: float


def curve_shape(times_s: ArrayLike, curve: ArrayLike,
                valid_frames: ArrayLike | None = None) -> CurveShape | None:
    """Smoothed curve, peak, pre-peak minimum and noise of one ROI curve.

    Returns None when fewer than 3 samples are valid and finite.
    """
    t = np.asarray(times_s, dtype=np.float64).reshape(-1)
    y = np.asarray(curve, dtype=np.float64).reshape(-1)
    ok = _valid(valid_frames, t.size) & np.isfinite(y)
    if ok.sum() < 3:
        return None
    yf = y if ok.all() else np.interp(t, t[ok], y[ok])
    k = _window_samples(t, CURVE_SMOOTH_S)
    s = _moving_average(yf, k)
    p = int(np.argmax(s))
    base = float(np.min(s[:p + 1]))
    sigma = _robust_sigma(np.diff(y[ok])) / math.sqrt(2.0)
    return CurveShape(s, p, float(s[p]), base, float(s[p]) - base, sigma / math.sqrt(k))


def _names(rois: Sequence[Roi] | Sequence[str], n: int) -> list[str]:
    names = [r if isinstance(r, str) else r.name for r in rois]
    if len(names) != n:
        raise ValueError(f"{len(names)} ROI names for {n} curves")
    return names


def arrival_warnings(
    times_s: ArrayLike,
    curves: ArrayLike,
    enhancing: Sequence[bool],
    rois: Sequence[Roi] | Sequence[str],
    *,
    valid_frames: ArrayLike | None = None,
) -> list[AnalysisWarning]:
    """``arrival-not-captured``: contrast already present in the first frames.

    For each enhancing ROI (`curve_shape`): the mean of the valid samples in
    the first `EARLY_WINDOW_S` is at least `EARLY_MAX_SHARE` of the peak
    enhancement above the pre-peak minimum, or the smoothed curve crosses
    `ARRIVAL_LEVEL_SHARE` of its enhancement before `MIN_BASELINE_S`; either
    excess must also exceed `CURVE_NOISE_Z` standard errors.  ROIs whose whole
    enhancement is under `CURVE_MIN_ENHANCEMENT_SE` standard errors are not
    judged.

    Parameters
    ----------
    times_s : array, shape (T,)
    curves : array, shape (R, T)
        Mean linear power per ROI (a.u.).
    enhancing : sequence of bool, length R
    rois : sequence of Roi or of names, length R
    valid_frames : bool array, shape (T,), optional
    """
    t = np.asarray(times_s, dtype=np.float64).reshape(-1)
    y = np.asarray(curves, dtype=np.float64).reshape(-1, t.size)
    names = _names(rois, y.shape[0])
    valid = _valid(valid_frames, t.size)
    out = []
    for i, name in enumerate(names):
        if not enhancing[i]:
            continue
        cs = curve_shape(t, y[i], valid)
        if cs is None or cs.enhancement <= max(CURVE_MIN_ENHANCEMENT_SE * cs.noise_se, 0.0):
            continue  # too weak against the noise to judge its shape
        guard = CURVE_NOISE_Z * cs.noise_se
        early_sel = valid & np.isfinite(y[i]) & (t <= t[0] + EARLY_WINDOW_S)
        if early_sel.sum() < 2:
            early_sel = np.zeros_like(valid)
            early_sel[np.flatnonzero(valid & np.isfinite(y[i]))[:2]] = True
        excess = float(np.mean(y[i][early_sel])) - cs.baseline
        share = excess / cs.enhancement
        above = cs.smoothed >= cs.baseline + max(ARRIVAL_LEVEL_SHARE * cs.enhancement, guard)
        crossing = float(t[int(np.argmax(above))]) if above.any() else math.inf
        early = share >= EARLY_MAX_SHARE and excess >= guard
        no_baseline = crossing - t[0] < MIN_BASELINE_S
        if not (early or no_baseline):
            continue
        out.append(AnalysisWarning(
            ARRIVAL_NOT_CAPTURED,
            f"ROI '{name}': contrast is already present at the start of the cine (the first "
            f"{EARLY_WINDOW_S:g} s are at {max(share, 0.0):.0%} of the peak enhancement; the "
            f"curve passes {ARRIVAL_LEVEL_SHARE:.0%} of it at {crossing - t[0]:.1f} s): the "
            "arrival was not captured, so there is no pre-contrast baseline; arrival time, rise "
            "time and wash-in rate are unreliable, and the baseline is overestimated, so peak "
            "enhancement and AUC are underestimated; start recording before the injection",
        ))
    return out


def washout_warnings(
    times_s: ArrayLike,
    curves: ArrayLike,
    enhancing: Sequence[bool],
    rois: Sequence[Roi] | Sequence[str],
    *,
    valid_frames: ArrayLike | None = None,
) -> list[AnalysisWarning]:
    """``ends-before-washout``: an enhancing ROI has not washed out by the end.

    For each enhancing ROI (`curve_shape`): the mean of the valid samples in
    the last `END_WINDOW_S` is still at least `WASHOUT_MAX_RESIDUAL` of the
    peak enhancement above baseline (and `CURVE_NOISE_Z` standard errors), or
    the smoothed peak lies in the last `LATE_PEAK_SHARE` of the cine.  ROIs
    whose whole enhancement is under `CURVE_MIN_ENHANCEMENT_SE` standard errors
    are not judged.

    Parameters are those of `arrival_warnings`.
    """
    t = np.asarray(times_s, dtype=np.float64).reshape(-1)
    y = np.asarray(curves, dtype=np.float64).reshape(-1, t.size)
    names = _names(rois, y.shape[0])
    valid = _valid(valid_frames, t.size)
    duration = float(t[-1] - t[0])
    out = []
    for i, name in enumerate(names):
        if not enhancing[i]:
            continue
        cs = curve_shape(t, y[i], valid)
        if cs is None or cs.enhancement <= max(CURVE_MIN_ENHANCEMENT_SE * cs.noise_se, 0.0):
            continue  # too weak against the noise to judge its shape
        ok = valid & np.isfinite(y[i])
        end_sel = ok & (t >= t[-1] - END_WINDOW_S)
        if end_sel.sum() < 2:
            end_sel = np.zeros_like(ok)
            end_sel[np.flatnonzero(ok)[-2:]] = True
        residual = float(np.mean(y[i][end_sel])) - cs.baseline
        share = residual / cs.enhancement
        t_peak = float(t[cs.peak_index])
        late_peak = t_peak - t[0] >= (1.0 - LATE_PEAK_SHARE) * duration
        high_end = share >= WASHOUT_MAX_RESIDUAL and residual >= CURVE_NOISE_Z * cs.noise_se
        if not (late_peak or high_end):
            continue
        out.append(AnalysisWarning(
            ENDS_BEFORE_WASHOUT,
            f"ROI '{name}': the cine ends before wash-out (the last {END_WINDOW_S:g} s are still "
            f"at {share:.0%} of the peak enhancement; peak at {t_peak - t[0]:.1f} s of "
            f"{duration:.1f} s): fall time, wash-out rate, wash-out AUC, AUC and mean transit "
            "time are extrapolated from the fitted model, the peak itself may lie later, and the "
            "presence or timing of wash-out cannot be judged; record longer",
        ))
    return out


# --------------------------------------------------------------------------- ROI pixels


def _peak_frames(t: NDArray[np.float64], curve: NDArray[np.float64],
                 valid: NDArray[np.bool_]) -> NDArray[np.intp]:
    cs = curve_shape(t, curve, valid)
    if cs is None:
        return np.flatnonzero(valid).astype(np.intp)
    tp = t[cs.peak_index]
    sel = valid & (np.abs(t - tp) <= PEAK_HALF_WINDOW_S)
    if not sel.any():
        sel = valid & (np.abs(t - tp) == np.min(np.abs(t[valid] - tp)))
    return np.flatnonzero(sel).astype(np.intp)


def saturation_shares(
    contrast: NDArray[Any],
    rois: Sequence[Roi],
    curves: ArrayLike,
    times_s: ArrayLike,
    *,
    display_max: float = 255.0,
    valid_frames: ArrayLike | None = None,
    exclude: NDArray[np.bool_] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Share of each ROI's pixels at the display maximum around its peak.

    Parameters
    ----------
    contrast : array, shape (T, rows, cols)
        Contrast-panel display values.
    rois : sequence of Roi
        Masks in contrast-panel pixels.
    curves : array, shape (R, T)
        The ROIs' mean linear power (locates each ROI's peak).
    times_s : array, shape (T,)
    display_max : float
    valid_frames : bool array, shape (T,), optional
    exclude : bool array, shape (rows, cols), optional
        Pixels not counted (e.g. burned-in overlays, reported separately).

    Returns
    -------
    shares : ndarray, shape (R,)
        Saturated share of ROI pixel-frames over the peak frames (0..1).
    peak_times : ndarray, shape (R,)
        Centre of each ROI's peak window (s).
    """
    t = np.asarray(times_s, dtype=np.float64).reshape(-1)
    y = np.asarray(curves, dtype=np.float64).reshape(-1, t.size)
    valid = _valid(valid_frames, t.size)
    top = float(display_max) - SATURATION_MARGIN_GREY
    shares = np.zeros(len(rois))
    when = np.zeros(len(rois))
    for i, roi in enumerate(rois):
        mask = roi.mask if exclude is None else roi.mask & ~exclude
        frames = _peak_frames(t, y[i], valid)
        if frames.size == 0 or not mask.any():
            continue
        px = np.asarray(contrast[frames][:, mask])
        shares[i] = float(np.mean(px >= top))
        when[i] = float(np.mean(t[frames]))
    return shares, when


def saturation_warnings(
    contrast: NDArray[Any],
    rois: Sequence[Roi],
    curves: ArrayLike,
    times_s: ArrayLike,
    *,
    display_max: float = 255.0,
    valid_frames: ArrayLike | None = None,
    exclude: NDArray[np.bool_] | None = None,
) -> list[AnalysisWarning]:
    """``saturation``: more than `SATURATION_MAX_SHARE` of an ROI at the display maximum.

    Counted over the ROI's peak frames (valid frames within
    `PEAK_HALF_WINDOW_S` of its smoothed maximum); see `saturation_shares`
    for the parameters.
    """
    shares, when = saturation_shares(contrast, rois, curves, times_s, display_max=display_max,
                                     valid_frames=valid_frames, exclude=exclude)
    out = []
    for roi, share, tp in zip(rois, shares, when, strict=True):
        if share > SATURATION_MAX_SHARE:
            out.append(AnalysisWarning(
                SATURATION,
                f"ROI '{roi.name}': {share:.1%} of its pixels are at the display maximum around "
                f"its peak ({tp:.1f} s): the display clips the strongest echoes, so the curve is "
                f"flattened at its peak and peak enhancement, AUC and wash-in rate are "
                f"underestimated (by at least about {share:.0%} at the peak); lower the contrast "
                "gain",
            ))
    return out


def floor_shares(
    contrast: NDArray[Any],
    rois: Sequence[Roi],
    *,
    valid_frames: ArrayLike | None = None,
    exclude: NDArray[np.bool_] | None = None,
) -> NDArray[np.float64]:
    """Share of each ROI's pixel-frames at the display floor (< 0.5 grey).

    At most `FLOOR_MAX_SAMPLES` valid frames, evenly spread, are counted.

    Returns
    -------
    ndarray, shape (R,)
        Share (0..1) per ROI.
    """
    n = contrast.shape[0]
    idx = _even_sample(np.flatnonzero(_valid(valid_frames, n)).astype(np.intp), FLOOR_MAX_SAMPLES)
    out = np.zeros(len(rois))
    if idx.size == 0:
        return out
    sample = np.asarray(contrast[idx])
    for i, roi in enumerate(rois):
        mask = roi.mask if exclude is None else roi.mask & ~exclude
        if mask.any():
            out[i] = float(np.mean(sample[:, mask] < 0.5))
    return out


def floor_clipping_warnings(
    contrast: NDArray[Any],
    rois: Sequence[Roi],
    *,
    valid_frames: ArrayLike | None = None,
    exclude: NDArray[np.bool_] | None = None,
) -> list[AnalysisWarning]:
    """``floor-clipping``: more than `FLOOR_MAX_SHARE` of an ROI at display value 0.

    See `floor_shares` for the parameters.
    """
    out = []
    for roi, share in zip(rois, floor_shares(contrast, rois, valid_frames=valid_frames,
                                             exclude=exclude), strict=True):
        if share > FLOOR_MAX_SHARE:
            out.append(AnalysisWarning(
                FLOOR_CLIPPING,
                f"ROI '{roi.name}': {share:.0%} of its pixel-frames are at the display floor (0): "
                "echoes below the displayed range are lost, so the baseline reads the display "
                "floor rather than the tissue (biased, with too little noise), the "
                "peak-to-baseline ratio is unreliable and the late wash-out tail is truncated; "
                "raise the gain or the dynamic range",
            ))
    return out


# --------------------------------------------------------------------------- overlays and colour


def overlay_mask(
    contrast: NDArray[Any],
    *,
    display_max: float = 255.0,
    valid_frames: ArrayLike | None = None,
) -> NDArray[np.bool_]:
    """Pixels of the contrast panel that are bright and constant over time.

    Up to `OVERLAY_SAMPLES` valid frames, evenly spread over the cine, are
    compared; a pixel is an overlay when its lowest value is at least
    `OVERLAY_MIN_LEVEL_SHARE` of the display maximum and its range at most
    `OVERLAY_MAX_RANGE_GREY`.  Empty when fewer than `OVERLAY_MIN_SAMPLES`
    frames are available or the panel is not live (median range under
    `OVERLAY_LIVE_RANGE_GREY`).

    Parameters
    ----------
    contrast : array, shape (T, rows, cols)
        Contrast-panel display values.
    display_max : float
    valid_frames : bool array, shape (T,), optional

    Returns
    -------
    bool array, shape (rows, cols)
    """
    n = contrast.shape[0]
    idx = _even_sample(np.flatnonzero(_valid(valid_frames, n)).astype(np.intp), OVERLAY_SAMPLES)
    empty = np.zeros(contrast.shape[1:], dtype=bool)
    if idx.size < OVERLAY_MIN_SAMPLES:
        return empty
    sample = np.asarray(contrast[idx], dtype=np.float32)
    lo, hi = sample.min(axis=0), sample.max(axis=0)
    rng = hi - lo
    if float(np.median(rng)) < OVERLAY_LIVE_RANGE_GREY:
        return empty
    return np.asarray((lo >= OVERLAY_MIN_LEVEL_SHARE * display_max)
                      & (rng <= OVERLAY_MAX_RANGE_GREY))


def overlay_warnings(
    mask: NDArray[np.bool_], rois: Sequence[Roi]
) -> list[AnalysisWarning]:
    """``overlay-in-panel``: burned-in graphics inside the contrast panel.

    Parameters
    ----------
    mask : bool array, shape (rows, cols)
        From `overlay_mask`.
    rois : sequence of Roi
        Checked for overlap (after a 1-pixel dilation of the overlay, whose
        anti-aliased edges blend with the image).
    """
    n = int(np.count_nonzero(mask))
    if n < OVERLAY_MIN_PIXELS:
        return []
    _, n_marks = ndimage.label(mask, structure=np.ones((3, 3)))
    grown = ndimage.binary_dilation(mask, structure=np.ones((3, 3)))
    return [AnalysisWarning(
        OVERLAY_IN_PANEL,
        f"burned-in overlay (text, calipers or markers: {n} pixels in {n_marks} mark(s), bright "
        f"and constant over the cine) inside the contrast panel at {_bbox_text(mask)}; "
        + _roi_overlap_text(grown, rois, "overlay"),
    )]


def colour_mask(chroma_panel: NDArray[Any] | None) -> NDArray[np.bool_] | None:
    """Coloured pixels (chroma above `COLOUR_CHROMA_MIN`), or None for grey sources."""
    if chroma_panel is None:
        return None
    return np.asarray(chroma_panel > COLOUR_CHROMA_MIN)


def colour_warnings(chroma_panel: NDArray[Any] | None,
                    rois: Sequence[Roi]) -> list[AnalysisWarning]:
    """``colour-in-panel``: coloured pixels inside the contrast panel.

    A contrast panel mostly in colour is refused earlier by the pipeline
    (``pipeline.MAX_COLOUR_SHARE``); this reports the few coloured pixels
    left (markers, a colour bar, a coloured caliper), where they are and
    whether an ROI overlaps them.

    Parameters
    ----------
    chroma_panel : array, shape (rows, cols), or None
        `Cine.chroma` cut to the contrast panel (None for grey sources).
    rois : sequence of Roi
    """
    mask = colour_mask(chroma_panel)
    if mask is None:
        return []
    n = int(np.count_nonzero(mask))
    if n < COLOUR_MIN_PIXELS:
        return []
    return [AnalysisWarning(
        COLOUR_IN_PANEL,
        f"{n} coloured pixels ({n / mask.size:.2%} of the contrast panel) at {_bbox_text(mask)}: "
        "colour markers or a colour map; their grey value comes from a colour look-up, not from "
        "echo power, so linearised power there is meaningless; "
        + _roi_overlap_text(mask, rois, "coloured marks"),
    )]


# --------------------------------------------------------------------------- entry point


def acquisition_warnings(
    cine: Cine,
    panels: PanelChoice,
    rois: Sequence[Roi],
    curves: ArrayLike,
    enhancing: Sequence[bool],
    *,
    dynamic_range_db: float,
    valid_frames: ArrayLike | None = None,
) -> list[AnalysisWarning]:
    """Run every acquisition quality check on one analysed cine.

    Parameters
    ----------
    cine : Cine
        The loaded cine (display values, times, chroma).
    panels : PanelChoice
        Contrast panel (all pixel checks) and B-mode panel (gain check; the
        gain check falls back to the contrast panel alone without one).
    rois : sequence of Roi
        ROIs rasterised on the contrast panel.
    curves : array, shape (R, T)
        Measured (not fitted) mean linear power per ROI and frame (a.u.), as
        `ceuskit.tic.roi_means` returns; used to locate each ROI's peak and to
        judge arrival and wash-out.
    enhancing : sequence of bool, length R
        Outcome of the enhancement test; arrival and wash-out are judged on
        enhancing ROIs only.
    dynamic_range_db : float
        Display dynamic range (dB) used to express grey-level steps in dB.
    valid_frames : bool array, shape (T,), optional
        Frames the analysis uses (e.g. after motion screening); the pixel and
        curve checks ignore the others, the timing checks (duration, gaps,
        duplicates) look at every frame.

    Returns
    -------
    list of AnalysisWarning
        In the order of `QC_CODES`; ROI-level checks give one warning per
        affected ROI.

    Notes
    -----
    Cost: one pass over the contrast panel (duplicates), one strided pass
    over both panels (gain levels), and small samples (peak frames, at most
    `FLOOR_MAX_SAMPLES` and `OVERLAY_SAMPLES` frames).  ROI masks are taken
    where the ROI file puts them (no motion correction); pixels found to be
    overlays are left out of the saturation and floor counts, since the
    overlay warning covers them.
    """
    t = np.asarray(cine.times_s, dtype=np.float64)
    y = np.asarray(curves, dtype=np.float64).reshape(-1, t.size)
    if y.shape[0] != len(rois) or len(enhancing) != len(rois):
        raise ValueError(f"{len(rois)} ROIs, {y.shape[0]} curves, {len(enhancing)} flags")
    valid = _valid(valid_frames, t.size)
    contrast = cine.frames[(slice(None), *panels.contrast.slices)]
    bmode = (cine.frames[(slice(None), *panels.bmode.slices)]
             if panels.bmode is not None else None)
    dmax = float(cine.display_max)
    overlay = overlay_mask(contrast, display_max=dmax, valid_frames=valid)
    chroma = None if cine.chroma is None else cine.chroma[panels.contrast.slices]

    out: list[AnalysisWarning] = []
    out += duration_warnings(t)
    out += time_gap_warnings(t, cine.meta.get("gaps_s") or ())
    out += duplicate_frame_warnings(contrast, t)
    out += gain_change_warnings(contrast, bmode, t, dynamic_range_db=dynamic_range_db,
                                display_max=dmax, valid_frames=valid)
    out += saturation_warnings(contrast, rois, y, t, display_max=dmax, valid_frames=valid,
                               exclude=overlay)
    out += floor_clipping_warnings(contrast, rois, valid_frames=valid, exclude=overlay)
    out += arrival_warnings(t, y, enhancing, rois, valid_frames=valid)
    out += washout_warnings(t, y, enhancing, rois, valid_frames=valid)
    out += overlay_warnings(overlay, rois)
    out += colour_warnings(chroma, rois)
    return out
