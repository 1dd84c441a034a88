"""The analysis in data-flow order.

``analyze`` runs every stage:

    load -> panels -> linearise -> motion -> ROI curves -> enhancement test
         -> model fit -> descriptors -> parametric maps (lesion studies) -> results

Each stage takes the previous stage's value and returns a new one; the CLI,
the web app and the batch runner all call these functions.  Streaming the
power is `ceuskit.pipeline.power`'s job, measuring the ROIs
`ceuskit.pipeline.measure`'s and the results.json document
`ceuskit.pipeline.results`'.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ceuskit.cine import Cine
from ceuskit.dynamic_range import PRESET_RANGE_DB, DynamicRangeEstimate
from ceuskit.errors import AnalysisWarning, InputError
from ceuskit.io import load_cine
from ceuskit.linearize import DEFAULT_DYNAMIC_RANGE_DB, CodedPower
from ceuskit.motion import (
    MIN_FRAME_CONFIDENCE,
    TRUST_MAX_IMPLAUSIBLE_SHARE,
    TRUST_MIN_CONFIDENCE,
    MotionEstimate,
    ReferenceFrameError,
    estimate_motion,
    warp_frame,
)
from ceuskit.panels import PanelChoice, choose_panels, colour_share
from ceuskit.pipeline.measure import measure_rois, with_map_necrosis, with_viable_part
from ceuskit.pipeline.power import coded_power_chunks
from ceuskit.pipeline.values import MAX_COLOUR_SHARE, Analysis, AnalysisOptions, MapStudy, Progress
from ceuskit.qc import acquisition_warnings
from ceuskit.roi import Roi, load_roi_file

if TYPE_CHECKING:  # the map module compiles numba kernels: imported only when mapping
    from ceuskit.clinical.case import ClinicalCase
    from ceuskit.maps import MapOptions


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


#: How a user gives the scanner's dynamic range, in the CLI and in the web app.
_GIVE_DR = "--dynamic-range DB; in the web app, the dynamic-range setting"

#: What an unchecked default means for the results (`dynamic_range.level_scale`'s
#: ``unchecked`` source), the end of both warnings that say so.
_UNCHECKED_CONSEQUENCE = (
    f"they are given with their range over contrast presets' {PRESET_RANGE_DB[0]:g}-"
    f"{PRESET_RANGE_DB[1]:g} dB, and findings that change within it are not assessable; give the "
    f"scanner's value ({_GIVE_DR})")


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
    lossy = cine.meta.get("lossy_compression")
    est = estimate_dynamic_range(cine.frames[(slice(None), *panels.contrast.slices)],
                                 display_max=float(cine.display_max),
                                 lossy_file=str(lossy) if lossy else None)
    processing = display_processing_warnings(est, cine, given=options.dynamic_range_source == "user")
    if not auto:
        return (replace(options, dynamic_range_check=est),
                processing + unchecked_default(options, est) + dynamic_range_disagreement(options, est))
    if est.dynamic_range_db is None or est.ci_db is None:
        return replace(options, dynamic_range_db=DEFAULT_DYNAMIC_RANGE_DB,
                       dynamic_range_source="default", dynamic_range_ci_db=None,
                       dynamic_range_estimate=est), [*processing, AnalysisWarning(
            "dynamic-range-not-estimated",
            f"--dynamic-range auto: {est.method}; the default {DEFAULT_DYNAMIC_RANGE_DB:g} dB was "
            "used, so amplitude parameters (PE, AUC, WiPI) and their ratios may be distorted: "
            + _UNCHECKED_CONSEQUENCE)]
    # The estimate lies inside the estimator's grid (20-120 dB), which check_dynamic_range accepts.
    # Speckle reduction after compression is not detected (benchmarks/dr_accuracy.py): say so
    # on every estimate rather than let the interval look more certain than it is.
    looked_for: list[str] = []
    missed: list[str] = []
    for done, found_none, unchecked in (
            (est.persistence is not None and est.persistence.weight_lower is not None,
             "display persistence (frame averaging)", "persistence, which reads up to 13 dB high"),
            (est.resampling is not None and est.resampling.modulation is not None,
             "resampling by a non-integer factor", "non-integer resampling"),
            (est.compression is not None and est.compression.quantisation is not None
             and est.compression.quantisation.grid_offset_px is not None,
             "JPEG block quantisation", "JPEG quantisation")):
        (looked_for if done else missed).append(found_none if done else unchecked)
    if est.lossy:
        # Said by the lossy-compression warning; "found no ..." would contradict it.
        looked_for = [w for w in looked_for if w != "JPEG block quantisation"]
    return replace(options, dynamic_range_db=est.dynamic_range_db, dynamic_range_source="estimated",
                   dynamic_range_ci_db=est.ci_db, dynamic_range_estimate=est), [*processing, AnalysisWarning(
        "dynamic-range-estimated",
        f"the display dynamic range ({est.dynamic_range_db:.1f} dB, "
        + ("interval" if est.lossy else "95 % interval")
        + f" {est.ci_db[0]:.1f}-{est.ci_db[1]:.1f} dB"
        + (", widened for lossy compression" if est.lossy else "")
        + ") was estimated from the speckle; "
        + (f"the check found no {' and no '.join(looked_for)}, but " if looked_for else "")
        + "speckle reduction (smoothing), integer-factor resizing, and video or wavelet "
        + "compression that the file does not declare, after log compression, are not detected"
        + (f" ({' and '.join(missed)} could not be checked either)" if missed else "")
        + ", and with them simulated cines read 10-45 dB low"
        + ("" if est.lossy else ", outside the interval")
        + f"; give the scanner's value ({_GIVE_DR}) when you know it")]


def display_processing_warnings(est: DynamicRangeEstimate, cine: Cine, *, given: bool = False
                                ) -> list[AnalysisWarning]:
    """Warnings ``display-persistence``, ``lossy-compression`` and ``display-resampled``: what
    the speckle check found (`given`: the user gave the dynamic range, which stands)."""
    out: list[AnalysisWarning] = []
    check = est.persistence
    if check is not None and check.detected and check.weight_lower is not None:
        p = check.weight_lower
        dt = float(np.median(np.diff(cine.times_s))) if cine.n_frames > 1 else float("nan")
        lag = p / (1.0 - p) if p < 1.0 else float("inf")
        out.append(AnalysisWarning(
            "display-persistence",
            "the display averages frames (persistence: consecutive frame differences are "
            f"correlated everywhere, averaging weight {p:.2f} or more, 0 without persistence): "
            "the display dynamic range cannot be measured or checked from the speckle, and the "
            f"curves lag the tissue by about {lag:.1f} frames ({lag * dt:.2f} s) or more, which "
            "delays arrival and peak times; record CEUS with persistence off"))
    comp = est.compression
    if comp is not None and comp.lossy:
        out.append(AnalysisWarning(
            "lossy-compression",
            f"the cine was stored with lossy compression ({comp.describe()}). Compression "
            "smooths the speckle, so the display dynamic range read from it comes out too low, "
            "by an amount that cannot be measured (simulated exports: 5-23 dB at JPEG quality "
            "90, 5-17 dB for H.264 video at crf 28); "
            + ("the dynamic range you gave was used as it is, and the speckle's check of it "
               "allows for this" if given else
               (f"its interval was therefore extended up to {est.ci_db[1]:.0f} dB, the top of "
                "the usual contrast presets, so a scanner set higher is not covered"
                if est.ci_db is not None else "it was not used")
               + ". Export the cine uncompressed where the scanner allows, or enter the "
               f"scanner's dynamic range ({_GIVE_DR})")))
    resampled = est.resampling
    # JPEG's own block grid is said by the lossy-compression warning.
    if resampled is not None and resampled.detected and not est.jpeg_grid:
        out.append(AnalysisWarning(
            "display-resampled",
            f"the display was {resampled.cause()} (the speckle's fine-scale energy repeats every "
            f"{resampled.period_px:.1f} px along the {resampled.axis}): the display dynamic range "
            "cannot be measured or checked from the speckle; export the cine at its native size "
            "and without lossy compression where the scanner allows"))
    return out


def unchecked_default(options: AnalysisOptions, est: DynamicRangeEstimate) -> list[AnalysisWarning]:
    """Warning ``dynamic-range-unchecked``: the default is used and the speckle could not check it."""
    if options.dynamic_range_source != "default" or est.dynamic_range_db is not None:
        return []
    why = est.method.removeprefix("not estimated: ")
    return [AnalysisWarning(
        "dynamic-range-unchecked",
        f"the default display dynamic range ({options.dynamic_range_db:g} dB) was used and the "
        f"speckle could not check it ({why}): amplitude parameters (PE, AUC, WiPI) and their "
        "ratios are distorted if the scanner was set otherwise, so " + _UNCHECKED_CONSEQUENCE)]


def dynamic_range_disagreement(options: AnalysisOptions, est: DynamicRangeEstimate
                               ) -> list[AnalysisWarning]:
    """Warning ``dynamic-range-disagrees``: the value used is outside the speckle estimate's interval."""
    if est.dynamic_range_db is None or est.ci_db is None:
        return []
    lo, hi = est.ci_db
    used = float(options.dynamic_range_db)
    if lo <= used <= hi:
        return []
    default = options.dynamic_range_source == "default"
    given = "the documented default" if default else "the value given"
    # Which display processing makes the estimate read which way (benchmarks/dr_accuracy.py).
    pers = est.persistence
    lossy = est.lossy
    if used > hi:
        doubt = ("the estimate itself can be wrong where speckle reduction, integer-factor "
                 "resizing or lossy compression reads low")
    elif pers is not None and pers.weight_lower is not None and not pers.detected:
        # Persistence, what reads high, was looked for and not found.
        doubt = ("persistence (frame averaging), which would make the speckle read high, was "
                 "looked for and not found"
                 + ("; the cine's lossy compression makes it read low, so the value used is "
                    "even further off than it looks" if lossy else ""))
    else:
        doubt = "the estimate itself can be wrong where persistence (frame averaging) reads high"
    return [AnalysisWarning(
        "dynamic-range-disagrees",
        f"the speckle suggests a display dynamic range of {est.dynamic_range_db:.1f} dB "
        f"({'interval' if lossy else '95 % interval'} {lo:.1f}-{hi:.1f} dB), but {used:g} dB "
        f"({given}) was used to linearise; {doubt}, so check the scanner's setting: "
        + (f"if it differs, give it ({_GIVE_DR}), since with the default amplitude "
           "parameters (PE, AUC, WiPI) and their ratios are distorted" if default else
           f"if it is {used:g} dB, the value given stands; if not, give the right one ({_GIVE_DR})")
        )]


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
