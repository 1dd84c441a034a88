"""The analysis pipeline: cine file + ROI file -> quantified curves.

``analyze`` runs every stage in data-flow order:

    load -> panels -> linearise -> motion -> ROI curves -> enhancement test
         -> model fit -> descriptors -> parametric maps (lesion studies) -> results

Each stage takes the previous stage's value and returns a new one; the CLI,
the web app and the batch runner all call these functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ceuskit import DISCLAIMER, __version__
from ceuskit.cine import Cine
from ceuskit.dynamic_range import DynamicRangeEstimate
from ceuskit.errors import AnalysisWarning, InputError
from ceuskit.io import load_cine
from ceuskit.kinetics.descriptors import DESCRIPTOR_UNITS
from ceuskit.kinetics.fast import fast_descriptors
from ceuskit.kinetics.fit import (
    ENHANCEMENT_MIN_DB,
    ENHANCEMENT_SMOOTH_S,
    ENHANCEMENT_Z,
    PEAK_SHRINK_SE,
    USABLE_STATUSES,
    FitResult,
    FitStatus,
    enhancement_test,
    fit_curves,
)
from ceuskit.kinetics.models import get_model
from ceuskit.kinetics.select import fit_auto
from ceuskit.linearize import (
    DEFAULT_DYNAMIC_RANGE_DB,
    CodedPower,
    check_dynamic_range,
    linear_power_table,
    to_linear_power,
)
from ceuskit.motion import (
    MIN_FRAME_CONFIDENCE,
    TRUST_MAX_IMPLAUSIBLE_SHARE,
    TRUST_MIN_CONFIDENCE,
    VALID_TOLERANCE_PX,
    MotionEstimate,
    ReferenceFrameError,
    apply_motion,
    estimate_motion,
    warp_frame,
)
from ceuskit.outputs import finite_or_none, json_ready
from ceuskit.panels import PanelChoice, choose_panels, colour_share
from ceuskit.qc import acquisition_warnings
from ceuskit.roi import Roi, load_roi_file
from ceuskit.tic import roi_means

if TYPE_CHECKING:  # the map module compiles numba kernels: imported only when mapping
    from ceuskit.clinical.case import ClinicalCase
    from ceuskit.maps import MapOptions, MapResult

Progress = Callable[[str], None]

#: The perfusion keys every ROI carries in results.json (contract.md).
PERFUSION_KEYS = (
    "arrival_time_s", "time_to_peak_s", "rise_time_s", "mean_transit_time_s", "fall_time_s",
    "peak_enhancement", "auc", "wash_in_rate", "wash_out_rate", "wash_in_auc",
    "wash_out_auc", "wash_in_perfusion_index", "qof",
)
#: Lesion / reference ratios of amplitude parameters: these depend on gain and
#: depth, so their ratio to tissue at the same depth is what compares.
RATIO_KEYS = ("peak_enhancement", "auc", "wash_in_rate", "wash_in_auc",
              "wash_out_auc", "wash_in_perfusion_index")
#: Lesion - reference differences of time parameters (s).
DIFFERENCE_KEYS = ("arrival_time_s", "time_to_peak_s", "rise_time_s", "mean_transit_time_s")
#: Share of contrast-panel pixels in colour above which the panel is refused.
MAX_COLOUR_SHARE = 0.02
SUPPORTED_MODELS = ("lognormal", "gamma", "ldrw", "auto")
#: Candidates of ``--model auto`` (bolus models; replenishment is for
#: destruction-reperfusion cines, not a bolus).
AUTO_MODELS = ("lognormal", "gamma", "ldrw")
#: Motion compensation settings: "auto" tracks the B-mode panel (translation)
#: when there is one and falls back to the contrast panel otherwise.
MOTION_CHOICES = ("off", "auto", "translation", "rigid")


#: Where the dynamic range used to linearise comes from (results.json
#: ``linearization.dynamic_range_source``; ``"auto"`` only until resolved).
DYNAMIC_RANGE_SOURCES = ("user", "default", "auto", "estimated")


@dataclass(frozen=True)
class AnalysisOptions:
    """User settings of an analysis.

    Attributes
    ----------
    dynamic_range_db : float
        Display dynamic range used to linearise (dB).
    fps : float or None
        Frame rate (frames/s) for files without timing.
    panel : (x0, y0, x1, y1) or None
        Contrast panel override in frame pixels.
    model : str
        Perfusion model name.
    motion : str
        Motion compensation: ``"off"``, ``"auto"`` (translation, tracked on
        the B-mode panel, or on the contrast panel when there is none),
        ``"translation"`` or ``"rigid"`` (translation plus rotation).
    reference_frame : int or None
        Frame index (0-based) that motion is measured against; chosen
        automatically when None.
    maps : bool
        Also compute the parametric maps inside the ROIs (`ceuskit.maps`)
        when the ROI file has a lesion ROI; their pixel test is then the one
        that gives the lesion's necrosis fraction.
    block_px : int or None
        Block size of the maps (pixels per side); None = the maps' default
        (`ceuskit.maps.BLOCK_PX`, 4 px: about one resolution cell).
    injection_time_s : float
        When the contrast was injected, on the cine clock (s from the first
        frame; negative when the recording started after the injection).
        Wash-out timing (early < 60 s) and degree (within 120 s) count from it.
    dynamic_range_source : {"user", "default", "auto", "estimated"} or None
        Where `dynamic_range_db` comes from.  ``"auto"`` asks for the
        estimate from the cine's speckle (`resolve_dynamic_range`, which
        turns it into ``"estimated"``, or ``"default"`` with a warning when
        no estimate is possible).  None: ``"default"`` when the value is
        `DEFAULT_DYNAMIC_RANGE_DB`, else ``"user"``.
    dynamic_range_ci_db : (float, float) or None
        95 % interval of an estimated dynamic range (dB).
    dynamic_range_check : DynamicRangeEstimate or None
        The speckle estimate made to check a given or default dynamic range
        (`resolve_dynamic_range`); None before the check and for ``auto``.
    colour_map : str
        How a contrast panel exported through a colour map is turned back
        into display values (`decolour_cine`): ``"auto"`` (default: colour
        bar and library tints, `ceuskit.colour_maps.resolve_colour_map`), a
        library tint (``"hot"``, ``"gold"``, ...), a path to a 256 x 3 table,
        or ``"off"`` (refuse colour panels).
    """

    dynamic_range_db: float = DEFAULT_DYNAMIC_RANGE_DB
    fps: float | None = None
    panel: tuple[int, int, int, int] | None = None
    model: str = "lognormal"
    motion: str = "auto"
    reference_frame: int | None = None
    maps: bool = True
    block_px: int | None = None
    injection_time_s: float = 0.0
    dynamic_range_source: str | None = None
    dynamic_range_ci_db: tuple[float, float] | None = None
    colour_map: str = "auto"
    dynamic_range_check: DynamicRangeEstimate | None = None

    def __post_init__(self) -> None:
        if self.dynamic_range_source is None:
            object.__setattr__(self, "dynamic_range_source",
                               "default" if self.dynamic_range_db == DEFAULT_DYNAMIC_RANGE_DB
                               else "user")
        if self.dynamic_range_source not in DYNAMIC_RANGE_SOURCES:
            raise ValueError(f"dynamic_range_source must be one of {', '.join(DYNAMIC_RANGE_SOURCES)}")
        inj = self.injection_time_s
        if isinstance(inj, bool) or not isinstance(inj, int | float) or not math.isfinite(inj) \
                or not -3600.0 <= inj <= 3600.0:
            raise InputError("--injection-time", f"{inj!r} is not a time on the cine clock",
                             "give seconds from the first frame, e.g. --injection-time -5 for an "
                             "injection 5 s before the recording started")
        try:
            check_dynamic_range(self.dynamic_range_db)
        except ValueError as exc:
            raise InputError("--dynamic-range", str(exc), "give the scanner's value in dB") from None
        if self.fps is not None and not (math.isfinite(self.fps) and 0 < self.fps <= 1000):
            raise InputError("--fps", f"{self.fps} is not a frame rate",
                             "give frames per second, e.g. --fps 10")
        if self.model not in SUPPORTED_MODELS:
            raise InputError("--model", f"model {self.model!r} is not available yet",
                             f"use one of {', '.join(SUPPORTED_MODELS)}")
        if self.motion not in MOTION_CHOICES:
            raise InputError("--motion", f"{self.motion!r} is not a motion setting",
                             f"use one of {', '.join(MOTION_CHOICES)}")
        ref = self.reference_frame
        if ref is not None and (isinstance(ref, bool) or not isinstance(ref, int | np.integer)
                                or ref < 0):
            raise InputError("--reference-frame", f"{ref!r} is not a frame index",
                             "give a frame number counted from 0, e.g. --reference-frame 0")
        if self.block_px is not None:
            self.map_options()  # validates the block size now, before any work
        if not isinstance(self.colour_map, str) or not self.colour_map.strip():
            raise InputError("--colour-map", f"{self.colour_map!r} is not a colour-map setting",
                             "use auto, off, a library tint or a 256 x 3 table file")

    def map_options(self) -> MapOptions:
        """The parametric-map settings these options imply (block size, model).

        Raises
        ------
        InputError
            A block size the maps do not accept.
        """
        from ceuskit.maps import BLOCK_PX, MapOptions

        try:
            return MapOptions(block_px=BLOCK_PX if self.block_px is None else self.block_px,
                              model=self.model)
        except ValueError as exc:
            raise InputError("--block", str(exc), "give a block size such as --block 4") from None


@dataclass(frozen=True)
class RoiResult:
    """Everything measured in one ROI.

    Attributes
    ----------
    roi : Roi
    intensity : ndarray, shape (T,)
        Mean linear power per frame (a.u.).
    enhancing : bool
        Outcome of the enhancement test.
    enhancement : dict
        The test's statistic, threshold and description.
    fit : FitResult or None
        The model fit (None when the ROI does not enhance).
    perfusion : dict
        `PERFUSION_KEYS` -> value (None where undefined).
    """

    roi: Roi
    intensity: NDArray[np.float64]
    enhancing: bool
    enhancement: dict[str, Any]
    fit: FitResult | None
    perfusion: dict[str, float | None]
    fit_status: str
    relative: dict[str, float | None] = field(default_factory=dict)
    selection: dict[str, Any] | None = None
    #: Lesion ROIs: the pixel enhancement test's necrosis figures
    #: (`ceuskit.maps.lesion_necrosis`); None for other roles.
    necrosis: dict[str, Any] | None = None
    #: Lesion ROIs: the intraluminal-enhancement verdict
    #: (`ceuskit.enhancement.enhancement_verdict`); None for other roles.
    verdict: dict[str, Any] | None = None
    #: Lesion ROIs: peak enhancement of the viable (enhancing) part (`with_viable_part`).
    viable: dict[str, Any] | None = None


@dataclass(frozen=True)
class Analysis:
    """The outcome of `analyze`: inputs' provenance, panels, curves and warnings."""

    source_name: str
    cine_meta: dict[str, Any]
    times_s: NDArray[np.float64]
    panels: PanelChoice
    options: AnalysisOptions
    rois: list[RoiResult]
    warnings: list[AnalysisWarning]
    peak_frame_index: int
    contrast_frame: NDArray[np.float32]
    bmode_frame: NDArray[np.float32] | None
    motion: MotionEstimate | None = None
    #: The parametric maps (None when turned off or without a lesion ROI).
    maps: MapStudy | None = None
    #: The clinical case the assessment combines with the CEUS findings.
    case: ClinicalCase | None = None
    #: Whether a contrast bolus was seen anywhere (`ceuskit.enhancement.contrast_bolus_seen`).
    bolus: dict[str, Any] = field(default_factory=dict)
    #: The frame the ROIs are drawn on when motion compensation ran (the motion reference
    #: frame): (index, contrast panel, B-mode panel or None); None without motion compensation.
    roi_frame: tuple[int, NDArray[np.float32], NDArray[np.float32] | None] | None = None

    @property
    def reference(self) -> RoiResult | None:
        return next((r for r in self.rois if r.roi.role == "reference"), None)

    def results(self) -> dict[str, Any]:
        """The results.json document (stable keys: see contract.md)."""
        return build_results(self)


ENHANCEMENT_TEST_TEXT = (
    f"z = (smoothed peak - pre-bolus baseline) / (noise sigma * sqrt(1/k + 1/n_baseline)), "
    f"moving average over {ENHANCEMENT_SMOOTH_S:g} s (k samples); enhancing when "
    f"z > {ENHANCEMENT_Z:g} and the peak (less {PEAK_SHRINK_SE:g} standard errors) is at least "
    f"{ENHANCEMENT_MIN_DB:g} dB above the baseline"
)


def enhancement_dict(enhancing: bool, stat: float, details: Any) -> dict[str, Any]:
    """The ``enhancement_test`` entry of an ROI in results.json (verdict, statistic, rule)."""
    out: dict[str, Any] = {
        "enhancing": bool(enhancing),
        "statistic": finite_or_none(stat),
        "test": ENHANCEMENT_TEST_TEXT,
        "z_threshold": ENHANCEMENT_Z,
        "min_rise_db": ENHANCEMENT_MIN_DB,
    }
    if isinstance(details, dict):
        for k, v in details.items():
            if isinstance(v, np.ndarray):
                v = v.tolist() if v.ndim else v.item()
            if isinstance(v, np.generic):
                v = v.item()
            out[k] = v
    return out


def estimate_cine_motion(
    cine: Cine,
    panels: PanelChoice,
    options: AnalysisOptions,
    progress: Progress | None = None,
) -> tuple[MotionEstimate | None, list[AnalysisWarning]]:
    """Estimate in-plane motion as `options.motion` asks (None when off).

    Motion is tracked on the display frames of the B-mode panel when there is
    one; otherwise on the contrast panel's perfusion pattern (warning
    ``motion-from-contrast-panel``).  A cine in which motion cannot be
    estimated is analysed without it (warning ``motion-not-estimated``).

    Raises
    ------
    InputError
        A reference frame outside the cine, or one with nothing to track.
    """
    if options.motion == "off":
        return None, []
    say = progress or (lambda _msg: None)
    mode = "translation" if options.motion == "auto" else options.motion
    ref = options.reference_frame
    if ref is not None and ref >= cine.n_frames:
        raise InputError("--reference-frame", f"frame {ref} is beyond the last frame "
                         f"({cine.n_frames - 1})", f"give a frame from 0 to {cine.n_frames - 1}")
    warnings: list[AnalysisWarning] = []
    panel = panels.bmode if panels.bmode is not None else panels.contrast
    tracked = "bmode" if panels.bmode is not None else "contrast"
    say(f"estimating motion ({mode}) on the {'B-mode' if tracked == 'bmode' else 'contrast'} panel")
    try:
        motion = estimate_motion(cine.frames[(slice(None), *panel.slices)], mode=mode,
                                 reference=ref, tracked_panel=tracked, times_s=cine.times_s,
                                 spacing_mm=panel.spacing_mm or cine.spacing_mm)
    except ReferenceFrameError as exc:
        raise InputError("--reference-frame", str(exc)) from None
    except ValueError as exc:
        warnings.append(AnalysisWarning(
            "motion-not-estimated",
            f"motion compensation was skipped ({exc}); the curves may mix neighbouring "
            "tissue if the anatomy moved",
        ))
        return None, warnings
    n = motion.n_frames
    if tracked == "contrast":
        warnings.append(AnalysisWarning(
            "motion-from-contrast-panel",
            "there is no B-mode panel, so motion was estimated on the contrast panel's "
            f"perfusion pattern, in the {int(motion.tracked.sum())} of {n} frames where the "
            "bolus shows (the others keep the nearest frame's estimate); this is less precise "
            "than tracking B-mode speckle and detects out-of-plane frames less reliably",
        ))

    def listed(frames: NDArray[np.int64]) -> str:
        text = ", ".join(f"{i} ({cine.times_s[i]:.1f} s)" for i in frames[:12])
        return text + (f" and {frames.size - 12} more" if frames.size > 12 else "")

    implausible = np.flatnonzero(np.asarray(motion.implausible))
    low = np.flatnonzero(motion.low_confidence)
    n_tracked = int(motion.tracked.sum())
    if not motion.trusted:
        # Never apply an estimate nothing supports: it would move the ROIs
        # and could change the findings.
        warnings.append(AnalysisWarning(
            "motion-untrusted",
            "the motion estimate was not applied ("
            + ("too many implausible frames" if motion.implausible_share
               > TRUST_MAX_IMPLAUSIBLE_SHARE else "confidence too low")
            + f"): its overall confidence is {motion.overall_confidence:.2f} (at least "
            f"{TRUST_MIN_CONFIDENCE:g} needed) and {implausible.size} of {n_tracked} tracked "
            f"frames ({motion.implausible_share:.0%}; at most {TRUST_MAX_IMPLAUSIBLE_SHARE:.0%} "
            "allowed) have implausible shifts"
            + (f": frames {listed(implausible)}" if implausible.size else "")
            + (f"; {low.size} frames have too little structure or too ambiguous a match: "
               f"frames {listed(low)}" if low.size else "")
            + f" (largest estimated shift {motion.max_estimated_displacement_px:.1f} px); the curves "
            "are measured without motion correction and may mix neighbouring tissue if the "
            "anatomy moved",
        ))
        return None, warnings
    if implausible.size or low.size:
        warnings.append(AnalysisWarning(
            "motion-implausible-frames",
            (f"{implausible.size} of {n_tracked} tracked frames had implausible motion estimates "
             "(too large, too fast or far from their neighbours': see the motion section's "
             "plausibility_rule); they keep the nearest plausible frame's transform and were "
             f"left out of the curve fits: frames {listed(implausible)}"
             if implausible.size else "")
            + ("; " if implausible.size and low.size else "")
            + (f"{low.size} tracked frames matched with too little confidence (below "
               f"{MIN_FRAME_CONFIDENCE:g}: little structure or an ambiguous correlation peak) and "
               f"keep the nearest confident frame's transform: frames {listed(low)}"
               if low.size else ""),
        ))
    # Frames rejected for their match (implausible ones are reported above).
    rejected = np.flatnonzero(motion.rejected & ~np.asarray(motion.implausible))
    if rejected.size:
        share = rejected.size / n
        warnings.append(AnalysisWarning(
            "frames-rejected",
            f"{rejected.size} of {n} frames ({share:.0%}) match the reference poorly after motion "
            f"correction (out-of-plane motion or probe lift) and were left out of the curve fits: "
            f"frames {listed(rejected)}"
            + ("; with this many frames lost the perfusion parameters are unreliable"
               if share > 0.2 else ""),
        ))
    return motion, warnings


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
    if fused:
        from ceuskit._motion_kernels import aligned_power

        mats = motion.matrices((rows, cols)) if motion is not None else None
        scratch = np.empty_like(buffer)
    for start in range(0, n, chunk_frames):
        sl = slice(start, min(n, start + chunk_frames))
        power = to_linear_power(cine.frames[(sl, *panels.contrast.slices)],
                                options.dynamic_range_db, cine.display_max,
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


def measure_rois(
    cine: Cine,
    panels: PanelChoice,
    rois: list[Roi],
    options: AnalysisOptions,
    progress: Progress | None = None,
    motion: MotionEstimate | None = None,
    *,
    necrosis: bool = True,
) -> tuple[list[RoiResult], list[AnalysisWarning], int, dict[str, Any]]:
    """Linearise the contrast panel, measure each ROI's curve and fit it.

    With a `motion` estimate, the linear power of every frame is first
    aligned to the reference frame (`apply_motion`; pixels that come from
    outside the panel are NaN and left out of ROI means), and frames the
    estimate rejects are left out of the enhancement test and the fit (their
    measured values stay in ``RoiResult.intensity`` for the plot).

    With ``necrosis`` (default), lesion ROIs also get their necrosis
    fraction (`ceuskit.maps.lesion_necrosis`, one more pass); pass False when
    the parametric maps will be computed, whose pixel test gives it
    (`with_map_necrosis`).

    Returns
    -------
    (roi results, warnings, index of the lesion's peak frame, bolus record: `_with_verdicts`)
    """
    say = progress or (lambda _msg: None)
    warnings: list[AnalysisWarning] = []
    say("linearising the contrast panel" + (" and aligning it" if motion is not None else ""))
    masks = [r.mask for r in rois]
    chunks: list[NDArray[np.float64]] = []
    panel_chunks: list[NDArray[np.float64]] = []
    power_sum = np.zeros(panels.contrast.shape, dtype=np.float64)
    power_count = np.zeros(panels.contrast.shape, dtype=np.int64)
    kept = None if motion is None else ~np.asarray(motion.rejected)
    for sl, power in contrast_power_chunks(cine, panels, options, motion):
        chunks.append(roi_means(power, masks))
        with np.errstate(invalid="ignore"):
            panel_chunks.append(np.nanmean(power.reshape(power.shape[0], -1), axis=1, dtype=np.float64))
        use = power if kept is None else power[kept[sl]]
        finite = np.isfinite(use)
        power_sum += np.where(finite, use, 0.0).sum(axis=0, dtype=np.float64)
        power_count += finite.sum(axis=0)
    curves = np.concatenate(chunks, axis=1)
    panel_curve = np.concatenate(panel_chunks)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_image = np.where(power_count > 0, power_sum / np.maximum(power_count, 1), np.nan)
    t = cine.times_s
    t_end = float(t[-1])
    # Rejected frames (and frames where an ROI lies wholly outside the
    # aligned panel) are NaN samples to the fitter, which skips them.
    fit_curves_in = curves
    if motion is not None and motion.rejected.any():
        fit_curves_in = curves.copy()
        fit_curves_in[:, motion.rejected] = np.nan
    results: list[RoiResult] = []
    enh, stat, details = enhancement_test(t, fit_curves_in)
    enh = np.asarray(enh, dtype=bool).reshape(len(rois))
    stat = np.asarray(stat, dtype=np.float64).reshape(len(rois))
    fits, selections = fit_enhancing(t, fit_curves_in[enh], options.model, say)
    j = 0
    for i, roi in enumerate(rois):
        per_curve_details = {
            k: (v[i] if isinstance(v, np.ndarray) and v.shape[:1] == (len(rois),) else v)
            for k, v in (details.items() if isinstance(details, dict) else [])
        }
        edict = enhancement_dict(bool(enh[i]), float(stat[i]), per_curve_details)
        perfusion: dict[str, float | None] = dict.fromkeys(PERFUSION_KEYS)
        one_fit: FitResult | None = None
        status_label = "no-enhancement"
        selection: dict[str, Any] | None = None
        if enh[i]:
            one_fit, selection = fits[j], selections[j]
            status = FitStatus(int(one_fit.status))
            status_label = status.label
            desc = fast_descriptors(one_fit, t_end)
            for k in PERFUSION_KEYS:
                value = one_fit.qof if k == "qof" else desc[k]
                perfusion[k] = finite_or_none(value)
            if status is not FitStatus.OK:
                warnings.append(AnalysisWarning(
                    f"fit-{status.label}",
                    f"ROI '{roi.name}': the {one_fit.model.name} fit ended with status "
                    f"'{status.label}'; its perfusion parameters are less reliable",
                ))
            j += 1
        results.append(RoiResult(roi=roi, intensity=curves[i], enhancing=bool(enh[i]),
                                 enhancement=edict, fit=one_fit, perfusion=perfusion,
                                 fit_status=status_label, selection=selection))
    results = _with_relative(results)
    bolus, results = _with_verdicts(cine, panels, options, motion, results, panel_curve, mean_image)
    if necrosis:
        results = _with_necrosis(results, cine, panels, options, motion)
    lesion = next((r for r in results if r.roi.role == "lesion"), results[0])
    src = np.array(lesion.fit.predict(t) if lesion.fit is not None else lesion.intensity,
                   dtype=np.float64).reshape(-1)
    if motion is not None:
        # The frame shown in the report should be one that was kept.
        src[motion.rejected] = np.nan
    peak_index = int(np.nanargmax(src)) if np.any(np.isfinite(src)) else 0
    return results, warnings, peak_index, bolus


def _with_verdicts(cine: Cine, panels: PanelChoice, options: AnalysisOptions,
                   motion: MotionEstimate | None, results: list[RoiResult],
                   panel_curve: NDArray[np.float64], mean_image: NDArray[np.float64],
                   ) -> tuple[dict[str, Any], list[RoiResult]]:
    """Whether a bolus was seen, and each lesion ROI's enhancement verdict (`ceuskit.enhancement`).

    The bolus is looked for in the reference and vessel ROIs and the whole
    panel.  Each lesion's core and brighter neighbours come from the
    cine-mean power image; their curves take one more streaming pass (only
    when some lesion has a brighter neighbour).
    """
    from ceuskit.enhancement import CORE_MIN_PX, contrast_bolus_seen, enhancement_verdict, neighbour_masks

    t = cine.times_s
    valid = None if motion is None else ~np.asarray(motion.rejected)
    candidates = {f"ROI '{r.roi.name}'": r.intensity for r in results
                  if r.roi.role in ("reference", "vessel")}
    candidates["the contrast panel"] = panel_curve
    seen, reason, evidence = contrast_bolus_seen(t, candidates, valid=valid,
                                                 modality=cine.meta.get("modality"))
    bolus = {"contrast_bolus_seen": seen, "contrast_bolus_reason": reason, "evidence": evidence}
    lesions = [r for r in results if r.roi.role == "lesion"]
    if not lesions:
        return bolus, results
    vessels = [r.roi.mask for r in results if r.roi.role == "vessel"]
    geometry = {r.roi.name: neighbour_masks(r.roi.mask, mean_image, vessels) for r in lesions}
    extra: list[NDArray[np.bool_]] = []
    index: dict[tuple[str, str], int] = {}
    for name, (bright, core) in geometry.items():
        if bright.any():
            index[(name, "bright")] = len(extra)
            extra.append(bright)
            if int(core.sum()) >= CORE_MIN_PX:
                index[(name, "core")] = len(extra)
                extra.append(core)
    extra_curves = (mask_curves(cine, panels, options, motion, extra) if extra
                    else np.zeros((0, t.size)))
    ref = next((r for r in results if r.roi.role == "reference" and r.enhancing), None)
    reference_rise = None
    if ref is not None:
        peak, base = ref.enhancement.get("smoothed_peak"), ref.enhancement.get("baseline")
        if peak is not None and base is not None:
            reference_rise = float(peak) - float(base)
    out = []
    for r in results:
        if r.roi.role != "lesion":
            out.append(r)
            continue
        bright, core = geometry[r.roi.name]
        has_bright = bool(bright.any())
        core_curve = (r.intensity if not has_bright else
                      extra_curves[index[(r.roi.name, "core")]] if (r.roi.name, "core") in index else None)
        verdict = enhancement_verdict(
            t, r.intensity, core=core_curve, core_px=int(core.sum()), lesion_px=r.roi.area_px,
            neighbour=extra_curves[index[(r.roi.name, "bright")]] if has_bright else None,
            neighbour_name="the brighter pixels around the ROI" if has_bright else None,
            bright_neighbour_px=int(bright.sum()), reference_rise=reference_rise,
            bolus_seen=seen, bolus_reason=reason, valid=valid)
        out.append(replace(r, verdict=verdict.as_dict()))
    return bolus, out


def fit_enhancing(
    t: NDArray[np.float64], curves: NDArray[np.float64], model_name: str, say: Progress
) -> tuple[list[FitResult], list[dict[str, Any] | None]]:
    """Fit the enhancing ROIs' curves with one model, or pick per curve with ``auto``.

    Returns one single-curve `FitResult` per curve and, for ``auto``, the
    model-selection record (criterion values and Akaike weights per model).
    """
    n = curves.shape[0]
    if n == 0:
        return [], []
    if model_name != "auto":
        say(f"fitting {n} curve(s) with the {model_name} model")
        fit = fit_curves(get_model(model_name), t, curves)
        return [fit.select(j) for j in range(n)], [None] * n
    say(f"fitting {n} curve(s) with each of {', '.join(AUTO_MODELS)}; choosing by AICc")
    auto = fit_auto(t, curves, models=AUTO_MODELS)
    crit, weights = np.asarray(auto.criterion), np.asarray(auto.weights)
    fits: list[FitResult] = []
    selections: list[dict[str, Any] | None] = []
    for j in range(n):
        c = int(auto.choice[j])
        fits.append(auto.results[c if c >= 0 else 0].select(j))
        selections.append({
            "criterion": auto.criterion_name,
            "chosen": auto.names[c] if c >= 0 else None,
            "values": {m: finite_or_none(crit[j, k]) for k, m in enumerate(auto.names)},
            "akaike_weights": {m: finite_or_none(weights[j, k]) for k, m in enumerate(auto.names)},
        })
    return fits, selections


def _with_necrosis(results: list[RoiResult], cine: Cine, panels: PanelChoice,
                   options: AnalysisOptions, motion: MotionEstimate | None) -> list[RoiResult]:
    """Attach each lesion ROI's necrosis fraction (non-enhancing area / lesion area).

    The per-pixel enhancement test of the parametric maps, in the lesion's
    post-arrival window (`ceuskit.maps.lesion_necrosis`): one more streaming
    pass over the contrast panel, aligned by nearest neighbour as the maps'
    pixel test is.
    """
    if not any(r.roi.role == "lesion" for r in results):
        return results
    from ceuskit.maps import lesion_necrosis  # compiled kernels: loaded when needed

    fits: list[tuple[str, NDArray[Any]] | None] = []
    for r in results:
        p = None if r.fit is None else np.asarray(r.fit.params, dtype=np.float64).reshape(-1)
        fits.append(None if r.fit is None or p is None or not np.all(np.isfinite(p))
                    else (r.fit.model.name, p))
    viable: dict[str, NDArray[np.bool_]] = {}
    necrosis = lesion_necrosis(lambda: coded_power_chunks(cine, panels, options, motion, order=0),
                               cine.times_s, [r.roi for r in results], fits,
                               valid_frames=None if motion is None else ~motion.rejected,
                               viable_out=viable)
    for figures in necrosis.values():
        figures["computed_by"] = "lesion pixel test (parametric maps off)"
    results = [replace(r, necrosis=necrosis.get(r.roi.name)) if r.roi.role == "lesion" else r
               for r in results]
    return with_viable_part(results, viable, cine, panels, options, motion)


#: Fewest enhancing pixels whose mean curve is fitted as the lesion's viable part.
VIABLE_MIN_PX = 30


def with_viable_part(results: list[RoiResult], viable: dict[str, NDArray[np.bool_]], cine: Cine,
                     panels: PanelChoice, options: AnalysisOptions,
                     motion: MotionEstimate | None) -> list[RoiResult]:
    """Give each enhancing lesion ROI the peak enhancement of its viable part.

    The viable part is the lesion's pixels that the necrosis pixel test calls
    enhancing; its mean curve (one more streaming pass) is fitted with the
    lesion's model.  Radiologists grade enhancement on the enhancing tissue,
    not on a mean diluted by necrosis (`ceuskit.findings`).
    """
    todo = [r for r in results if r.roi.role == "lesion" and r.fit is not None
            and int(viable.get(r.roi.name, np.zeros(0, bool)).sum()) >= VIABLE_MIN_PX]
    if not todo:
        return results
    t = cine.times_s
    masks = [viable[r.roi.name] for r in todo]
    curves = mask_curves(cine, panels, options, motion, masks)
    if motion is not None and motion.rejected.any():
        curves[:, motion.rejected] = np.nan
    out = {}
    for r, mask, curve in zip(todo, masks, curves, strict=True):
        assert r.fit is not None
        fit = fit_curves(r.fit.model, t, curve[None])
        status = FitStatus(int(np.asarray(fit.status).reshape(-1)[0]))
        pe = finite_or_none(fast_descriptors(fit.select(0), float(t[-1]))["peak_enhancement"]) \
            if status in USABLE_STATUSES else None
        out[r.roi.name] = {"peak_enhancement": pe, "viable_px": int(mask.sum()),
                           "lesion_px": r.roi.area_px, "model": r.fit.model.name,
                           "fit_status": status.label,
                           "definition": "lesion pixels the necrosis pixel test calls enhancing; "
                                         "their mean curve fitted with the lesion's model"}
    return [replace(r, viable=out[r.roi.name]) if r.roi.name in out else r for r in results]


def _with_relative(results: list[RoiResult]) -> list[RoiResult]:
    ref = next((r for r in results if r.roi.role == "reference" and r.enhancing), None)
    if ref is None:
        return results
    out = []
    for r in results:
        rel: dict[str, float | None] = {}
        if r is not ref:
            for k in RATIO_KEYS:
                a, b = r.perfusion.get(k), ref.perfusion.get(k)
                rel[f"{k}_ratio"] = (a / b) if (a is not None and b not in (None, 0.0)) else None
            for k in DIFFERENCE_KEYS:
                a, b = r.perfusion.get(k), ref.perfusion.get(k)
                rel[f"{k}_difference"] = (a - b) if (a is not None and b is not None) else None
            if not r.enhancing:
                rel["peak_enhancement_ratio"] = 0.0
        out.append(replace(r, relative=rel))
    return out


def resolve_dynamic_range(cine: Cine, panels: PanelChoice, options: AnalysisOptions,
                          progress: Progress | None = None
                          ) -> tuple[AnalysisOptions, list[AnalysisWarning]]:
    """Estimate the display dynamic range from the cine: to use it, or to check the given one.

    The contrast panel's brightest frames are measured
    (`ceuskit.dynamic_range.estimate_dynamic_range`).

    - ``dynamic_range_source == "auto"``: the estimate and its interval
      replace the value (source ``"estimated"``, warning
      ``dynamic-range-estimated`` with its limits); when the cine has too
      little fully developed speckle, the documented default is kept (source
      ``"default"``) with warning ``dynamic-range-not-estimated``.
    - A given or default value is kept; the estimate is recorded in
      ``dynamic_range_check`` (results.json
      ``linearization.dynamic_range_check``), and warning
      ``dynamic-range-disagrees`` is given when the value lies outside the
      estimate's interval.

    Returns
    -------
    (options, warnings)
    """
    from ceuskit.dynamic_range import estimate_dynamic_range

    say = progress or (lambda _msg: None)
    auto = options.dynamic_range_source == "auto"
    say("estimating the display dynamic range from the speckle" if auto
        else "checking the display dynamic range against the speckle")
    est = estimate_dynamic_range(cine.frames[(slice(None), *panels.contrast.slices)],
                                 display_max=float(cine.display_max))
    if not auto:
        return replace(options, dynamic_range_check=est), dynamic_range_disagreement(options, est)
    if est.dynamic_range_db is None or est.ci_db is None:
        return replace(options, dynamic_range_db=DEFAULT_DYNAMIC_RANGE_DB,
                       dynamic_range_source="default", dynamic_range_ci_db=None), [AnalysisWarning(
            "dynamic-range-not-estimated",
            f"--dynamic-range auto: {est.method}; the default {DEFAULT_DYNAMIC_RANGE_DB:g} dB was "
            "used, so amplitude parameters (PE, AUC, WiPI) and their ratios may be distorted; "
            "give the scanner's dynamic range with --dynamic-range DB")]
    # The estimate lies inside the estimator's grid (20-120 dB), which check_dynamic_range accepts.
    # Display processing after compression is not detected (benchmarks/dr_accuracy.py): say so
    # on every estimate rather than let the interval look more certain than it is.
    return replace(options, dynamic_range_db=est.dynamic_range_db, dynamic_range_source="estimated",
                   dynamic_range_ci_db=est.ci_db), [AnalysisWarning(
        "dynamic-range-estimated",
        f"the display dynamic range ({est.dynamic_range_db:g} dB, 95 % interval "
        f"{est.ci_db[0]:g}-{est.ci_db[1]:g} dB) was estimated from the speckle; the estimate "
        "holds only for a display without persistence (frame averaging) or speckle reduction: "
        "with them on, simulated cines read up to 13 dB high or 25 dB low, outside the interval; "
        "give the scanner's value with --dynamic-range DB when you know it")]


def dynamic_range_check_record(est: DynamicRangeEstimate) -> dict[str, Any]:
    """results.json ``linearization.dynamic_range_check``: the speckle estimate beside a given value."""
    return {"estimate_db": est.dynamic_range_db,
            "ci_db": None if est.ci_db is None else list(est.ci_db),
            "effective_looks": est.effective_looks, "n_blocks": est.n_blocks, "method": est.method}


def dynamic_range_disagreement(options: AnalysisOptions, est: DynamicRangeEstimate
                               ) -> list[AnalysisWarning]:
    """Warning ``dynamic-range-disagrees``: the value used is outside the speckle estimate's interval."""
    if est.dynamic_range_db is None or est.ci_db is None:
        return []
    lo, hi = est.ci_db
    used = float(options.dynamic_range_db)
    if lo <= used <= hi:
        return []
    given = ("the documented default" if options.dynamic_range_source == "default"
             else "the value given")
    # Which display processing reads which way (benchmarks/dr_accuracy.py).
    why = ("persistence (frame averaging) reads high" if used < lo else
           "speckle reduction, smoothing or resampling after compression reads low")
    return [AnalysisWarning(
        "dynamic-range-disagrees",
        f"the speckle suggests a display dynamic range of {est.dynamic_range_db:g} dB (95 % interval "
        f"{lo:g}-{hi:g} dB), but {used:g} dB ({given}) was used to linearise: if that is not the "
        "scanner's setting, amplitude parameters (PE, AUC, WiPI) and their ratios are distorted; "
        "check the scanner's setting and pass it with --dynamic-range DB (or use --dynamic-range "
        f"auto); the estimate can be wrong where {why}")]


def decolour_cine(cine: Cine, panels: PanelChoice, options: AnalysisOptions, *,
                  source_name: str = "cine", progress: Progress | None = None
                  ) -> tuple[Cine, list[AnalysisWarning]]:
    """The cine with a tinted contrast panel turned back into display values.

    A grey panel (colour in at most `MAX_COLOUR_SHARE` of its pixels) is
    returned as it is.  Otherwise the colour map (``options.colour_map``,
    `ceuskit.colour_maps.resolve_colour_map`) is inverted on the panel, frame
    by frame from the source's colour frames (`Cine.rgb_frames`); the rest of
    the frame (the grey B-mode panel) keeps its luma.  How the map was found,
    its residuals and the share of off-map colours go to ``cine.meta
    ["colour_map"]`` (results.json ``linearization.colour_map``).

    Raises
    ------
    InputError
        A colour panel with ``colour_map="off"``, no map found, an ambiguous
        map, or too many colours off the map (a colour Doppler overlay, a
        second map).
    """
    from ceuskit import colour_maps as cm

    share = colour_share(cine, panels.contrast)
    if share <= MAX_COLOUR_SHARE:
        return cine, []
    if options.colour_map == "off" or cine.rgb_frames is None:
        raise InputError(
            source_name,
            f"the contrast panel is in colour ({share:.0%} of its pixels) and colour-map "
            "inversion is off",
            "pass --colour-map auto (or a library tint, or a 256 x 3 table file), export the "
            "contrast cine in grey scale, or choose a grey panel with --panel",
        )
    say = progress or (lambda _msg: None)
    say("finding the contrast panel's colour map")
    slices = panels.contrast.slices
    cmap, how = cm.resolve_colour_map(options.colour_map, cine.rgb_frames, cine.frames, slices,
                                      source_name)
    say(f"inverting the colour map ({cmap.name}) on the contrast panel")
    inv = cm.invert_panel(cmap, cine.rgb_frames, cine.frames, slices)
    if inv.off_map_share > cm.MAX_OFF_MAP_SHARE:
        raise InputError(
            source_name,
            f"{inv.off_map_share:.1%} of the contrast panel's coloured pixels are not on its colour "
            f"map ({cmap.name}): a colour Doppler overlay, a second map or a wrong map, so the "
            "display values cannot be recovered",
            "export the contrast cine without colour overlays, or pass the scanner's map with "
            "--colour-map FILE",
        )
    frames = np.array(cine.frames, dtype=np.float32)
    frames[(slice(None), *slices)] = inv.values
    chroma = None if cine.chroma is None else np.array(cine.chroma)
    if chroma is not None:
        # The panel is now grey display values; what stays "colour" is what was off the map.
        chroma[slices] = np.where(inv.residual_max_rgb > cm.OFF_MAP_RGB, chroma[slices], 0.0)
    record = {
        **how,
        "source": cmap.source,
        "residual_p99_rgb": round(inv.residual_p99_rgb, 2),
        "off_map_share": round(inv.off_map_share, 6),
        "grey_share": round(inv.grey_share, 6),
        "colour_share": round(share, 4),
    }
    warnings: list[AnalysisWarning] = [AnalysisWarning(
        "colour-map-inverted",
        f"the contrast panel was exported through a colour map ({cmap.name}: "
        f"{how.get('found_by', how['method'])}); "
        f"its display values were recovered from the colours (99th percentile residual "
        f"{inv.residual_p99_rgb:.0f} RGB units)",
    )]
    if cmap.source == "colour bar":
        warnings.append(AnalysisWarning(
            "colour-map-from-bar",
            "the colour map was read off the colour bar, assuming display values run linearly "
            "along it from its darkest to its brightest end; amplitude parameters are only as "
            "right as that assumption (pass the scanner's table with --colour-map FILE)",
        ))
    meta = {**dict(cine.meta), "colour_map": record}
    out = replace(cine, frames=frames, chroma=chroma, meta=meta, display_max=255.0,
                  rgb_frames=None)
    return out, warnings


def prepare_cine(
    cine: Cine,
    roi_path: str | PathLike[str],
    options: AnalysisOptions,
    *,
    source_name: str = "cine",
    progress: Progress | None = None,
) -> tuple[Cine, PanelChoice, list[Roi], MotionEstimate | None, list[AnalysisWarning]]:
    """The stages every analysis of a loaded cine starts with: panels, colour, ROIs, motion.

    Chooses the contrast panel, turns a tinted one back into display values
    (`decolour_cine`), rasterises the ROI file on it and estimates motion as
    ``options.motion`` asks.  Shared by `analyze_cine` and the parametric
    maps (`ceuskit.api.map_cine`).

    Returns
    -------
    (cine -- the input, or its decoloured copy --, panels, rois, motion
    estimate or None, colour and motion warnings)

    Raises
    ------
    InputError
        Colour contrast panel that cannot be inverted, invalid ROIs, bad options.
    """
    say = progress or (lambda _msg: None)
    say("choosing the contrast panel")
    panels = choose_panels(cine, options.panel)
    cine, colour_warnings = decolour_cine(cine, panels, options, source_name=source_name,
                                          progress=progress)
    rois = load_roi_file(roi_path, panel=panels.contrast, frame_shape=cine.frame_shape)
    motion, motion_warnings = estimate_cine_motion(cine, panels, options, progress)
    return cine, panels, rois, motion, colour_warnings + motion_warnings


@dataclass(frozen=True, eq=False)
class MapStudy:
    """A parametric map with what is needed to show it.

    Attributes
    ----------
    result : MapResult
    panels : PanelChoice
    rois : list of Roi
    background : ndarray (rows, cols), float32
        Display frame shown under the maps (aligned to the motion reference).
    background_label : str
        ``"B-mode"`` or ``"contrast"``.
    frame_index : int
        Index of that frame.
    warnings : list of AnalysisWarning
    scheduler_used : str
        Where the fits ran (``"in-process"``, ``"local-cluster"`` or an address).
    display_max : float
        Display value of full brightness (grey scale of `background`).
    """

    result: MapResult
    panels: PanelChoice
    rois: list[Roi]
    background: NDArray[np.float32]
    background_label: str
    frame_index: int
    warnings: list[AnalysisWarning]
    scheduler_used: str
    display_max: float = 255.0
    #: The options the maps were made with (a dynamic range asked as ``auto`` resolved).
    options: AnalysisOptions | None = None

    @property
    def frame_time_s(self) -> float:
        """Cine time (s) of the frame shown under the maps."""
        return float(self.result.times_s[self.frame_index])


def map_prepared(
    cine: Cine,
    panels: PanelChoice,
    rois: list[Roi],
    motion: MotionEstimate | None,
    options: AnalysisOptions,
    map_options: MapOptions | None = None,
    *,
    warnings: list[AnalysisWarning] | None = None,
    frame_index: int | None = None,
    scheduler: Any = None,
    progress: Progress | None = None,
) -> MapStudy:
    """Parametric maps of a cine whose panels, ROIs and motion are known (`prepare_cine`).

    The one mapping path: ``ceuskit map`` (`ceuskit.api.map_cine`) and
    ``ceuskit analyze`` (`analyze_cine`) both come here.  The aligned linear
    power is streamed by `contrast_power_chunks` (bilinear for the block
    curves, nearest neighbour for the pixel test of a motion-corrected
    cine); `ceuskit.maps.compute_maps` does the rest.

    Parameters
    ----------
    cine, panels, rois, motion, options
        As `prepare_cine` returns them, and the analysis settings.
    map_options : MapOptions, optional
        Default: ``options.map_options()`` (block size and model).
    warnings : list of AnalysisWarning, optional
        Carried into the result (the preparation's warnings).
    frame_index : int, optional
        Frame shown under the maps; default the kept frame nearest the
        lesion ROI's fitted time to peak.
    scheduler : distributed.Client, str or None
        Where the block fits run (`ceuskit.maps_dask.DaskRunner`; ``"none"``
        keeps them in this process).
    progress : callable, optional

    Returns
    -------
    MapStudy
    """
    from ceuskit.maps import compute_maps
    from ceuskit.maps_dask import DaskRunner

    map_options = map_options or options.map_options()
    valid = None if motion is None else ~np.asarray(motion.rejected)
    chunk = map_options.frame_chunk

    def source() -> Iterator[tuple[slice, NDArray[np.float32] | CodedPower]]:
        return coded_power_chunks(cine, panels, options, motion, chunk_frames=chunk)

    def nearest_source() -> Iterator[tuple[slice, NDArray[np.float32] | CodedPower]]:
        return coded_power_chunks(cine, panels, options, motion, chunk_frames=chunk, order=0)

    with DaskRunner(scheduler) as runner:
        result = compute_maps(source, cine.times_s, rois, map_options, valid_frames=valid,
                              spacing_mm=panels.contrast.spacing_mm, runner=runner,
                              progress=progress,
                              pixel_source=nearest_source if motion is not None else None)
        used = runner.used
    t = np.asarray(cine.times_s)
    if frame_index is None:
        # The lesion's fitted peak, on a kept frame.
        lesion = next((r for r in rois if r.role == "lesion"), rois[0])
        ttp = result.rois[lesion.name]["roi_curve"].get("time_to_peak_s")
        ok = np.ones(t.size, dtype=bool) if valid is None else valid
        target = float(ttp) if ttp is not None else float(t[np.argmax(ok)])
        frame_index = int(np.flatnonzero(ok)[np.argmin(np.abs(t[ok] - target))]) if ok.any() else 0
    bmode = panels.bmode
    use_bmode = bmode is not None and bmode.shape == panels.contrast.shape
    panel = bmode if use_bmode and bmode is not None else panels.contrast
    background = np.array(cine.frames[frame_index][panel.slices], dtype=np.float32)
    if motion is not None:
        background = warp_frame(background, motion, frame_index)
    return MapStudy(result=result, panels=panels, rois=rois, background=background,
                    background_label="B-mode" if use_bmode else "contrast",
                    frame_index=int(frame_index), warnings=list(warnings or []),
                    scheduler_used=used, display_max=float(cine.display_max), options=options)


def with_map_necrosis(results: list[RoiResult], maps: MapResult) -> list[RoiResult]:
    """Give each lesion ROI the necrosis figures of the maps' pixel test.

    The same dictionary as `ceuskit.maps.lesion_necrosis` gives, taken from
    the map summary, so that ``necrosis_fraction`` and the map's necrosis
    mask come from one run of the pixel test.
    """
    from ceuskit.maps import PIXEL_TEST_TEXT

    out = []
    for r in results:
        summary = maps.rois.get(r.roi.name)
        if r.roi.role != "lesion" or summary is None:
            out.append(r)
            continue
        window = summary["test_window"]
        tested = int(summary["tested_px"])
        out.append(replace(r, necrosis={
            "necrosis_fraction": summary["necrosis_fraction"],
            "tested_px": tested,
            "non_enhancing_px": tested - int(summary["enhancing_px"]),
            "baseline_window_s": window["baseline_s"],
            "post_arrival_window_s": window["post_arrival_s"],
            "post_window_source": window["post_window_source"],
            "test": PIXEL_TEST_TEXT,
            "plane": "the cine's single imaging plane (ROIs in the motion reference frame)",
            "computed_by": "parametric maps (the necrosis mask's pixel test)",
        }))
    return out


def analyze_cine(
    cine: Cine,
    roi_path: str | PathLike[str],
    options: AnalysisOptions | None = None,
    *,
    source_name: str = "cine",
    progress: Progress | None = None,
    case: ClinicalCase | None = None,
) -> Analysis:
    """Run the pipeline on an already loaded cine.

    Parameters
    ----------
    cine : Cine
    roi_path : path-like
        The ROI file (contract format).
    options : AnalysisOptions, optional
    source_name : str
        Name of the cine for provenance (a file name, never a patient name).
    progress : callable, optional
        Receives one short message per stage.
    case : ClinicalCase, optional
        The clinical picture (`ceuskit.clinical.case`); the assessment in
        results.json combines it with the CEUS findings.

    Returns
    -------
    Analysis

    Raises
    ------
    InputError
        Colour contrast panel, invalid ROIs, bad options.
    """
    options = options or AnalysisOptions()
    say = progress or (lambda _msg: None)
    cine, panels, rois, motion, motion_warnings = prepare_cine(
        cine, roi_path, options, source_name=source_name, progress=progress)
    options, dr_warnings = resolve_dynamic_range(cine, panels, options, progress)
    motion_warnings = motion_warnings + dr_warnings
    do_maps = options.maps and any(r.role == "lesion" for r in rois)
    # With maps, their pixel test gives the necrosis fraction: the test runs once.
    roi_results, warnings, peak, bolus = measure_rois(cine, panels, rois, options, progress, motion,
                                               necrosis=not do_maps)
    map_study = None
    if do_maps:
        map_study = map_prepared(cine, panels, rois, motion, options,
                                 warnings=list(cine.warnings) + motion_warnings, frame_index=peak,
                                 scheduler="none", progress=progress)
        roi_results = with_map_necrosis(roi_results, map_study.result)
        mres = map_study.result
        roi_results = with_viable_part(
            roi_results, {r.roi.name: mres.tested & r.roi.mask & mres.enhancing for r in roi_results
                          if r.roi.role == "lesion"}, cine, panels, options, motion)
    say("checking acquisition quality")
    qc_warnings = acquisition_warnings(
        cine, panels, rois, np.stack([r.intensity for r in roi_results]),
        [r.enhancing for r in roi_results], dynamic_range_db=options.dynamic_range_db,
        valid_frames=None if motion is None else ~motion.rejected,
    )
    warnings = list(cine.warnings) + motion_warnings + qc_warnings + warnings
    for role, use in (("reference", "for the ratios and the findings"),
                      ("lesion", "for the findings and the assessment")):
        named = [r.name for r in rois if r.role == role]
        if len(named) > 1:
            warnings.append(AnalysisWarning(
                f"several-{role}-rois",
                f"{len(named)} ROIs have role '{role}' ({', '.join(repr(n) for n in named)}): the first, "
                f"'{named[0]}', is used {use}; the others are measured but not compared; give them "
                "role 'other' to say so",
            ))
    if options.panel is None and panels.method == "whole-frame":
        warnings.append(AnalysisWarning(
            "panel-whole-frame",
            "no contrast panel was declared or detected, so the whole frame was analysed; "
            "check that the ROIs lie on the contrast image, or pass --panel",
        ))
    for r in roi_results:
        if r.fit is not None and r.perfusion.get("time_to_peak_s") is not None and \
                float(r.perfusion["time_to_peak_s"] or 0.0) > cine.duration_s:
            warnings.append(AnalysisWarning(
                "peak-after-end",
                f"ROI '{r.roi.name}': the fitted peak lies after the last frame; its time "
                "and amplitude parameters are extrapolated",
            ))
    contrast_frame = np.array(cine.frames[peak][panels.contrast.slices])
    bmode_frame = (np.array(cine.frames[peak][panels.bmode.slices])
                   if panels.bmode is not None else None)
    roi_frame: tuple[int, NDArray[np.float32], NDArray[np.float32] | None] | None = None
    if motion is not None:
        # Shown under the ROIs, which are drawn in the reference frame's coordinates.
        contrast_frame = warp_frame(contrast_frame, motion, peak)
        bmode_frame = warp_frame(bmode_frame, motion, peak) if bmode_frame is not None else None
        # The frame the ROIs are drawn on: the motion reference frame, as recorded.
        ref = int(motion.reference_index)
        roi_frame = (ref, np.array(cine.frames[ref][panels.contrast.slices]),
                     np.array(cine.frames[ref][panels.bmode.slices]) if panels.bmode is not None else None)
    return Analysis(
        source_name=source_name,
        cine_meta=dict(cine.meta),
        times_s=np.asarray(cine.times_s),
        panels=panels,
        options=options,
        rois=roi_results,
        warnings=warnings,
        peak_frame_index=peak,
        contrast_frame=contrast_frame,
        bmode_frame=bmode_frame,
        motion=motion,
        maps=map_study,
        case=case,
        bolus=bolus,
        roi_frame=roi_frame,
    )


def load_clips(cine_paths: str | PathLike[str] | Sequence[str | PathLike[str]],
               options: AnalysisOptions, progress: Progress | None = None,
               clip_starts_s: Sequence[float] | None = None
               ) -> tuple[Cine, str, list[AnalysisWarning]]:
    """Read one cine, or the clips of one exam joined on one clock (`ceuskit.clips`).

    Returns
    -------
    (cine, its name for messages and results.json, warnings of the join)
    """
    from ceuskit.clips import join_clips, source_name

    paths = ([cine_paths] if isinstance(cine_paths, str | PathLike) else list(cine_paths))
    if not paths:
        raise InputError("ceuskit analyze", "no cine given", "name the cine file(s)")
    say = progress or (lambda _msg: None)
    cines = []
    for p in paths:
        say(f"reading {Path(p).name}")
        cines.append(load_cine(p, fps=options.fps))
    names = [Path(p).name for p in paths]
    if len(cines) == 1 and clip_starts_s is None:
        return cines[0], names[0], []
    say(f"joining {len(cines)} clips on one clock")
    cine, warnings = join_clips(cines, names, clip_starts_s)
    return cine, source_name(names), warnings


def analyze(
    cine_path: str | PathLike[str] | Sequence[str | PathLike[str]],
    roi_path: str | PathLike[str],
    options: AnalysisOptions | None = None,
    *,
    progress: Progress | None = None,
    case: ClinicalCase | None = None,
    clip_starts_s: Sequence[float] | None = None,
) -> Analysis:
    """Load a cine (DICOM, video or NPZ), or an exam's clips, and analyse it with an ROI file.

    See `analyze_cine` for the parameters; ``cine_path`` is read with
    `ceuskit.io.load_cine`.  Several paths are the clips of one exam (same
    probe position), joined on one clock by `ceuskit.clips.join_clips`
    (starts from `clip_starts_s`, s, or from the DICOM acquisition times).
    """
    options = options or AnalysisOptions()
    cine, name, clip_warnings = load_clips(cine_path, options, progress, clip_starts_s)
    analysis = analyze_cine(cine, roi_path, options, source_name=name, progress=progress,
                            case=case)
    if clip_warnings:
        analysis = replace(analysis, warnings=clip_warnings + analysis.warnings)
    return analysis


def json_array(a: NDArray[Any], digits: int = 6) -> list[float | None]:
    """A curve for results.json: `digits` significant figures, non-finite values as None."""
    return [None if not math.isfinite(float(v)) else float(f"{float(v):.{digits}g}") for v in a]


def build_results(analysis: Analysis) -> dict[str, Any]:
    """Assemble the results.json document."""
    t = analysis.times_s
    dt = np.diff(t)
    rois: dict[str, Any] = {}
    for r in analysis.rois:
        entry: dict[str, Any] = dict(r.roi.as_dict())
        entry["enhancing"] = r.enhancing
        entry["enhancement_test"] = r.enhancement
        entry["model"] = r.fit.model.name if r.fit is not None else "none"
        entry["fit"] = None
        if r.fit is not None:
            entry["fit"] = {
                "status": r.fit_status,
                "parameters": {n: finite_or_none(v) for n, v in
                               zip(r.fit.model.param_names, np.asarray(r.fit.params).reshape(-1),
                                   strict=True)},
                "standard_errors": {n: finite_or_none(v) for n, v in
                                    zip(r.fit.model.param_names,
                                        np.asarray(r.fit.stderr).reshape(-1), strict=True)},
                "iterations": int(np.asarray(r.fit.n_iter).reshape(-1)[0]),
                "model_selection": r.selection,
            }
        entry["perfusion"] = r.perfusion
        if r.verdict is not None:
            entry["enhancement_verdict"] = r.verdict
        if r.viable is not None:
            entry["viable_part"] = r.viable
        if r.necrosis is not None:
            entry["necrosis_fraction"] = r.necrosis["necrosis_fraction"]
            entry["necrosis"] = r.necrosis
        if analysis.maps is not None and r.roi.name in analysis.maps.result.rois:
            entry["map"] = json_ready(analysis.maps.result.rois[r.roi.name])
        entry["relative_to_reference"] = r.relative or None
        entry["tic"] = {
            "times_s": json_array(t, 8),
            "intensity": json_array(r.intensity),
            "fitted": json_array(np.asarray(r.fit.predict(t)).reshape(-1))
            if r.fit is not None else None,
        }
        rois[r.roi.name] = entry
    meta = {k: v for k, v in analysis.cine_meta.items() if isinstance(v, str | int | float | bool)}
    doc = {
        "ceuskit_version": __version__,
        "disclaimer": DISCLAIMER,
        "source": {"file": analysis.source_name, **meta},
        "acquisition": {
            "n_frames": int(t.size),
            "duration_s": float(t[-1]),
            "median_frame_interval_s": float(np.median(dt)),
            "frame_rate_hz": float(1.0 / np.median(dt)),
            "timing_source": analysis.cine_meta.get("timing_source"),
            "modality": analysis.cine_meta.get("modality"),
            "contrast_bolus_seen": analysis.bolus.get("contrast_bolus_seen"),
            "contrast_bolus_reason": analysis.bolus.get("contrast_bolus_reason"),
            "contrast_bolus_evidence": analysis.bolus.get("evidence"),
            **({"clips": json_ready(analysis.cine_meta["clips"]),
                "gaps_s": json_ready(analysis.cine_meta["gaps_s"])}
               if "clips" in analysis.cine_meta else {}),
        },
        "panels": analysis.panels.as_dict(),
        "linearization": {
            "dynamic_range_db": analysis.options.dynamic_range_db,
            "dynamic_range_source": analysis.options.dynamic_range_source,
            **({"dynamic_range_ci_db": list(analysis.options.dynamic_range_ci_db)}
               if analysis.options.dynamic_range_ci_db is not None else {}),
            **({"dynamic_range_check": dynamic_range_check_record(analysis.options.dynamic_range_check)}
               if analysis.options.dynamic_range_check is not None else {}),
            "formula": "P = 10 ** ((g / 255 - 1) * DR / 10); display 255 -> 1.0",
            **({"colour_map": json_ready(analysis.cine_meta["colour_map"])}
               if "colour_map" in analysis.cine_meta else {}),
        },
        "analysis": {
            "model": analysis.options.model,
            "injection_time_s": float(analysis.options.injection_time_s),
            "peak_frame_index": analysis.peak_frame_index,
            "peak_frame_time_s": float(t[analysis.peak_frame_index]),
        },
        "units": {**DESCRIPTOR_UNITS, "qof": "1", "intensity": "a.u. (linear echo power)",
                  "area_mm2": "mm2"},
        "rois": rois,
        "motion": _motion_section(analysis),
        "maps": _maps_section(analysis),
        "warnings": [w.as_dict() for w in analysis.warnings],
    }
    return with_assessment(doc, analysis.case)


def with_assessment(results: dict[str, Any], case: ClinicalCase | None) -> dict[str, Any]:
    """Add ``findings``, ``assessment`` (with its one-paragraph ``summary``) and the case used.

    The findings are read off the quantification already in ``results``
    (`ceuskit.findings.derive_findings`).  Pure: returns a new document.
    """
    from ceuskit.findings import derive_findings

    return {**results, **assessment_sections(derive_findings(results), case)}


def assessment_sections(findings: dict[str, Any] | None, case: ClinicalCase | None) -> dict[str, Any]:
    """results.json's ``findings``, ``assessment`` (with ``summary``) and ``clinical_case``.

    The assessment combines the CEUS findings (None without CEUS) with the
    clinical case (None without one): `ceuskit.clinical.rules.assess`.
    """
    from ceuskit.clinical.rules import assess, summary_paragraph

    assessment = assess(findings, case)
    assessment["summary"] = summary_paragraph(findings, assessment)
    return {"findings": findings, "assessment": assessment,
            "clinical_case": None if case is None else case.model_dump(mode="json", exclude_none=True)}


def _maps_section(analysis: Analysis) -> dict[str, Any]:
    """results.json ``maps``: how the maps were made (per-ROI figures are under ``rois.<name>.map``).

    ``directory`` and ``files`` are filled in by the writer
    (`ceuskit.api.analyze_to_dir`); None when nothing was written.
    """
    study = analysis.maps
    if study is None:
        reason = ("turned off (--no-maps)" if not analysis.options.maps
                  else "the ROI file has no lesion ROI")
        return {"computed": False, "reason": reason, "directory": None, "files": None}
    from ceuskit.maps import MAP_PARAMETERS

    summary = study.result.summary()
    summary.pop("rois", None)  # per ROI under rois.<name>.map
    return json_ready({
        "computed": True,
        **summary,
        "parameters": list(MAP_PARAMETERS),
        "frame_shown_index": study.frame_index,
        "frame_shown_time_s": study.frame_time_s,
        "background": study.background_label,
        "fits_ran": study.scheduler_used,
        "directory": None,
        "files": None,
    })


def _motion_section(analysis: Analysis) -> dict[str, Any]:
    """results.json ``motion``: what was estimated and which frames were left out."""
    requested = analysis.options.motion
    m = analysis.motion
    if m is None:
        untrusted = any(w.code == "motion-untrusted" for w in analysis.warnings)
        return {"requested": requested,
                "mode": ("off" if requested == "off" else
                         "not-applied (untrusted)" if untrusted else "not-estimated"),
                "tracked_panel": None, "rejected_frames": {"count": 0, "indices": [], "times_s": []}}
    panel = analysis.panels.bmode if m.tracked_panel == "bmode" else analysis.panels.contrast
    spacing = (panel.spacing_mm if panel is not None and panel.spacing_mm is not None
               else analysis.panels.contrast.spacing_mm)
    return {"requested": requested, **m.as_dict(analysis.times_s, spacing)}
