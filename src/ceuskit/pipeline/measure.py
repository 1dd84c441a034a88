"""ROI measurement: curves, the enhancement test, fits, verdicts, necrosis, the viable part."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ceuskit.cine import Cine
from ceuskit.dynamic_range import level_scale
from ceuskit.errors import AnalysisWarning
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
from ceuskit.motion import MotionEstimate
from ceuskit.outputs import finite_or_none
from ceuskit.panels import PanelChoice, mask_bbox
from ceuskit.pipeline.power import coded_power_chunks, contrast_power_chunks, mask_curves
from ceuskit.pipeline.results import linearization_record
from ceuskit.pipeline.values import (
    AUTO_MODELS,
    DIFFERENCE_KEYS,
    PERFUSION_KEYS,
    RATIO_KEYS,
    AnalysisOptions,
    Progress,
    RoiResult,
)
from ceuskit.roi import Roi
from ceuskit.tic import roi_means

if TYPE_CHECKING:  # the map module compiles numba kernels: imported only when mapping
    from ceuskit.maps import MapResult

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
    from ceuskit._motion_kernels import power_sums

    masks = [r.mask for r in rois]
    chunks: list[NDArray[np.float64]] = []
    rows = panels.contrast.shape[0]
    # Per frame and row: the finite values' sum and count (the panel curve is
    # each frame's NaN-mean); per pixel: the same over the kept frames (the
    # cine-mean image).  One compiled pass over each chunk (`power_sums`)
    # instead of NumPy's NaN-mean and masked sums, which made several
    # full-size temporaries per chunk.
    frame_sum = np.empty((cine.n_frames, rows), dtype=np.float64)
    frame_count = np.empty((cine.n_frames, rows), dtype=np.int64)
    power_sum = np.zeros(panels.contrast.shape, dtype=np.float64)
    power_count = np.zeros(panels.contrast.shape, dtype=np.int64)
    kept = (np.ones(cine.n_frames, dtype=bool) if motion is None
            else ~np.asarray(motion.rejected))
    scale = level_scale(linearization_record(options, cine.meta))
    # The power at the DR interval's ends is the power here to the power
    # DR' / DR, pixel by pixel: the ROIs' curves there come from this pass.
    exponents = () if scale is None else (scale.low, scale.high)
    boxes = [_box(m) for m in masks] if exponents else []
    powered: list[list[NDArray[np.float64]]] = [[] for _ in exponents]
    for sl, power in contrast_power_chunks(cine, panels, options, motion):
        chunks.append(roi_means(power, masks))
        for i, exponent in enumerate(exponents):
            powered[i].append(_powered_means(power, masks, boxes, exponent))
        power_sums(power, kept[sl], frame_sum[sl], frame_count[sl], power_sum, power_count)
    curves = np.concatenate(chunks, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        panel_curve = frame_sum.sum(axis=1) / frame_count.sum(axis=1)
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
    if scale is not None:
        results = _with_ratio_range(results, t, [np.concatenate(p, axis=1) for p in powered],
                                    None if motion is None else motion.rejected, scale.interval_db)
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
        status, pe = _refit_peak(r.fit.model, t, curve)
        out[r.roi.name] = {"peak_enhancement": pe, "viable_px": int(mask.sum()),
                           "lesion_px": r.roi.area_px, "model": r.fit.model.name,
                           "fit_status": status.label,
                           "definition": "lesion pixels the necrosis pixel test calls enhancing; "
                                         "their mean curve fitted with the lesion's model"}
    return [replace(r, viable=out[r.roi.name]) if r.roi.name in out else r for r in results]


def _refit_peak(model: Any, t: NDArray[np.float64], curve: NDArray[np.float64]
                ) -> tuple[FitStatus, float | None]:
    """Fit one more curve with an ROI's model: its status and peak enhancement (None unless usable)."""
    fit = fit_curves(model, t, curve[None])
    status = FitStatus(int(np.asarray(fit.status).reshape(-1)[0]))
    if status not in USABLE_STATUSES:
        return status, None
    return status, finite_or_none(fast_descriptors(fit.select(0), float(t[-1]))["peak_enhancement"])


def _box(mask: NDArray[np.bool_]) -> tuple[slice, slice]:
    box = mask_bbox(mask)
    if box is None:
        raise ValueError("empty ROI mask")
    return box.slices


def _powered_means(power: NDArray[np.float32], masks: list[NDArray[np.bool_]],
                   boxes: list[tuple[slice, slice]], exponent: float) -> NDArray[np.float64]:
    """`roi_means` of ``power ** exponent`` (NaN pixels left out), over each ROI's pixels only."""
    out = np.empty((len(masks), power.shape[0]), dtype=np.float64)
    for i, (m, (ys, xs)) in enumerate(zip(masks, boxes, strict=True)):
        vals = power[:, ys, xs][:, m[ys, xs]].astype(np.float64) ** exponent
        n = np.isfinite(vals).sum(axis=1)
        # A frame with no finite pixel in the ROI gives NaN, as in `roi_means`.
        out[i] = np.where(n > 0, np.nansum(vals, axis=1) / np.maximum(n, 1), np.nan)
    return out


def _peak(model: Any, t: NDArray[np.float64], curve: NDArray[np.float64]) -> float | None:
    """`_refit_peak`'s peak enhancement where it is positive (a ratio's term)."""
    pe = _refit_peak(model, t, curve)[1]
    return pe if pe is not None and pe > 0 else None


def _reference_index(results: list[RoiResult]) -> int | None:
    """The ROI the ratios are taken against: the first enhancing reference."""
    return next((i for i, r in enumerate(results) if r.roi.role == "reference" and r.enhancing), None)


#: Relative slack added to each end of a ratio's measured range: the ends are
#: the aligned power raised to DR'/DR, which agrees with an analysis run at
#: DR' (linearised, then aligned) within 0.1 % (tests/test_pipeline.py).
RATIO_RANGE_SLACK = 0.002


def _with_ratio_range(results: list[RoiResult], t: NDArray[np.float64],
                      powered: list[NDArray[np.float64]],
                      rejected: NDArray[np.bool_] | None,
                      interval_db: tuple[float, float]) -> list[RoiResult]:
    """Give each peak-enhancement ratio its range over the dynamic range's interval.

    `powered` holds every ROI's curve linearised at each end of the interval
    (`_powered_means`); the reference's and each ROI's are fitted with their
    own models there, as at the DR used.  Where a fit finds no peak at an end,
    the ratio keeps no range and says why (``ratio_range_reason``).
    """
    ref_i = _reference_index(results)
    if ref_i is None or results[ref_i].fit is None:
        return results
    ref_fit = results[ref_i].fit
    assert ref_fit is not None
    curves = [c.copy() for c in powered]
    if rejected is not None and rejected.any():
        for c in curves:
            c[:, rejected] = np.nan
    ref_peaks = [_peak(ref_fit.model, t, c[ref_i]) for c in curves]
    out = []
    for i, r in enumerate(results):
        ratio = r.relative.get("peak_enhancement_ratio")
        if i == ref_i or r.fit is None or not r.enhancing or ratio is None or not ratio > 0:
            out.append(r)
            continue
        peaks = [_peak(r.fit.model, t, c[i]) for c in curves]
        failed = [f"{db:g} dB" for db, pr, pe in zip(interval_db, ref_peaks, peaks, strict=True)
                  if pr is None or pe is None]
        if failed:
            whose = (f"the reference ROI '{results[ref_i].roi.name}'"
                     if any(p is None for p in ref_peaks) else f"ROI '{r.roi.name}'")
            out.append(replace(r, ratio_range_reason=(
                f"not measured: {whose}'s curve, linearised at {' and '.join(failed)} (the "
                "dynamic range's interval), gave no fitted peak; findings use the level scaled "
                "over the interval instead")))
            continue
        values = [float(ratio), *(pe / pr for pe, pr in zip(peaks, ref_peaks, strict=True)
                                  if pe is not None and pr is not None)]
        out.append(replace(r, ratio_range=(min(values) * (1.0 - RATIO_RANGE_SLACK),
                                           max(values) * (1.0 + RATIO_RANGE_SLACK))))
    return out


def _with_relative(results: list[RoiResult]) -> list[RoiResult]:
    ref_i = _reference_index(results)
    if ref_i is None:
        return results
    ref = results[ref_i]
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
