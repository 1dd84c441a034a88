"""Report figures (matplotlib, rendered off-screen to PNG bytes)."""

from __future__ import annotations

import io
import weakref
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ceuskit.fmt import fmt

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ceuskit.maps_io import MapImage
    from ceuskit.pipeline import Analysis, MapStudy

ROLE_COLOURS = {"lesion": "#ff5a36", "reference": "#27c4f5", "vessel": "#d05ce3", "other": "#f5d327"}


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _show_panel(ax: Axes, image: np.ndarray, spacing: tuple[float, float] | None, title: str) -> float:
    """Draw a grey panel; returns the scale (mm per px, or 1) used for the axes."""
    h, w = image.shape
    scale = 1.0
    if spacing is not None:
        scale = spacing[1]
        extent = (-0.5 * spacing[1], (w - 0.5) * spacing[1], (h - 0.5) * spacing[0], -0.5 * spacing[0])
        ax.set_xlabel("lateral (mm)")
        ax.set_ylabel("depth (mm)")
    else:
        extent = (-0.5, w - 0.5, h - 0.5, -0.5)
        ax.set_xlabel("lateral (px)")
        ax.set_ylabel("depth (px)")
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, extent=extent, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    return scale


def roi_frame(analysis: Analysis) -> tuple[int, np.ndarray, np.ndarray | None, str]:
    """The frame the ROIs were drawn on: (index, contrast panel, B-mode panel, why this frame).

    With motion compensation the ROIs live in the motion reference frame's
    coordinates, so they are shown on that frame as recorded; without it the
    ROI coordinates hold for every frame and the lesion's peak frame shows them
    best.
    """
    if analysis.roi_frame is not None:
        index, contrast, bmode = analysis.roi_frame
        return index, contrast, bmode, ("the motion reference frame: motion compensation aligns every frame "
                                        "to it, so the ROIs are drawn in its coordinates")
    return (analysis.peak_frame_index, analysis.contrast_frame, analysis.bmode_frame,
            "the lesion's peak; without motion compensation the ROIs hold for every frame")


def roi_overlay_png(analysis: Analysis) -> bytes:
    """The ROIs drawn on the contrast panel (and the B-mode panel) of the frame they were drawn on
    (`roi_frame`)."""
    index, contrast, bmode, _why = roi_frame(analysis)
    has_b = bmode is not None
    fig, axes = plt.subplots(1, 2 if has_b else 1, figsize=(10 if has_b else 5.5, 4.2), squeeze=False)
    t_frame = float(analysis.times_s[index])
    spacing = analysis.panels.contrast.spacing_mm
    _show_panel(axes[0, 0], contrast, spacing, f"contrast, frame {index} (t = {fmt(t_frame, 's')})")
    panels = [axes[0, 0]]
    if bmode is not None and analysis.panels.bmode is not None:
        _show_panel(axes[0, 1], bmode, analysis.panels.bmode.spacing_mm or spacing,
                    f"B-mode, frame {index}")
        panels.append(axes[0, 1])
    sy, sx = spacing if spacing is not None else (1.0, 1.0)
    for r in analysis.rois:
        colour = ROLE_COLOURS.get(r.roi.role, "#ffffff")
        xy = r.roi.outline
        for ax in panels:
            ax.plot(xy[:, 0] * sx, xy[:, 1] * sy, color=colour, lw=1.4)
            cx = r.roi.centroid_xy[0]
            # On a dark box: the role colour alone is lost on bright speckle.
            ax.text(cx * sx, (xy[:, 1].min() - 3) * sy, r.roi.name, color=colour, fontsize=8,
                    ha="center", va="bottom", fontweight="bold", clip_on=True,
                    bbox={"boxstyle": "square,pad=0.15", "facecolor": "black", "edgecolor": "none",
                          "alpha": 0.75})
    return _png(fig)


def tic_png(analysis: Analysis) -> bytes:
    """Time-intensity curves: measured means and fitted curves, linear and in dB.

    Frames rejected by motion compensation are drawn as grey crosses: they
    are gaps in the data the fit used.
    """
    t = analysis.times_s
    rejected = (np.asarray(analysis.motion.rejected, dtype=bool) if analysis.motion is not None
                else np.zeros(t.size, dtype=bool))
    kept = ~rejected
    fig, (ax_lin, ax_db) = plt.subplots(1, 2, figsize=(11, 4.0))
    for r in analysis.rois:
        colour = ROLE_COLOURS.get(r.roi.role, "#444444")
        y = r.intensity
        y_db = 10 * np.log10(np.maximum(y, 1e-12))
        label = f"{r.roi.name} ({r.roi.role})"
        ax_lin.plot(t[kept], y[kept], ".", ms=2.5, color=colour, alpha=0.45)
        ax_db.plot(t[kept], y_db[kept], ".", ms=2.5, color=colour, alpha=0.45)
        if rejected.any():
            ax_lin.plot(t[rejected], y[rejected], "x", ms=3.5, color="#8c8c8c", alpha=0.8)
            ax_db.plot(t[rejected], y_db[rejected], "x", ms=3.5, color="#8c8c8c", alpha=0.8)
        if r.fit is not None:
            tf = np.linspace(t[0], t[-1], 800)
            yf = np.asarray(r.fit.predict(tf)).reshape(-1)
            ax_lin.plot(tf, yf, "-", color=colour, lw=1.8, label=f"{label}: {r.fit.model.name} fit")
            ax_db.plot(tf, 10 * np.log10(np.maximum(yf, 1e-12)), "-", color=colour, lw=1.8)
            ttp = r.perfusion.get("time_to_peak_s")
            if ttp is not None:
                ax_lin.axvline(ttp, color=colour, lw=0.8, ls=":")
        else:
            ax_lin.plot([], [], ".", color=colour, label=f"{label}: not enhancing, not fitted")
    if rejected.any():
        ax_lin.plot([], [], "x", color="#8c8c8c",
                    label=f"frames rejected by motion compensation ({int(rejected.sum())}), not fitted")
    # An exam of several clips: the time between them holds no data.
    for k, (a, b) in enumerate(analysis.cine_meta.get("gaps_s") or []):
        for ax in (ax_lin, ax_db):
            ax.axvspan(a, b, color="#bbbbbb", alpha=0.25, lw=0,
                       label="no recording (between clips)" if k == 0 and ax is ax_lin else None)
    ax_lin.set_xlabel("time (s)")
    ax_lin.set_ylabel("mean linear echo power (a.u.)")
    ax_lin.set_title("time-intensity curves (linear power)", fontsize=10)
    ax_db.set_xlabel("time (s)")
    ax_db.set_ylabel("mean echo power (dB re display maximum)")
    ax_db.set_title("same curves in dB", fontsize=10)
    ax_lin.legend(fontsize=7, loc="upper right")
    for ax in (ax_lin, ax_db):
        ax.grid(alpha=0.3)
    return _png(fig)


def motion_png(analysis: Analysis) -> bytes | None:
    """Estimated displacement (dx, dy; and rotation in rigid mode) over time.

    Rejected frames are marked with grey crosses; frames that were not
    tracked (contrast-panel fallback, before the bolus) are shaded.  A right
    axis gives mm when the pixel size is known.  None without an estimate.
    """
    m = analysis.motion
    if m is None:
        return None
    t = analysis.times_s
    rigid = m.mode == "rigid"
    fig, axes = plt.subplots(1, 2 if rigid else 1, figsize=(11 if rigid else 8, 3.0), squeeze=False)
    ax = axes[0, 0]
    rej = np.asarray(m.rejected, dtype=bool)
    # Lines break at rejected frames (their estimate matched nothing well).
    ax.plot(t, np.where(rej, np.nan, m.dx_px), "-", lw=1.1, color="#1f77b4",
            label="dx (lateral, +right)")
    ax.plot(t, np.where(rej, np.nan, m.dy_px), "-", lw=1.1, color="#d62728",
            label="dy (depth, +down)")
    if rej.any():
        ax.plot(t[rej], m.dx_px[rej], "x", color="#8c8c8c", ms=5)
        ax.plot(t[rej], m.dy_px[rej], "x", color="#8c8c8c", ms=5,
                label=f"rejected frames ({int(rej.sum())})")
    untracked = ~np.asarray(m.tracked, dtype=bool)
    if untracked.any():
        ax.fill_between(t, 0, 1, where=untracked, transform=ax.get_xaxis_transform(),
                        color="#cccccc", alpha=0.5, lw=0, label="not tracked (no bolus yet)")
    ax.axvline(t[m.reference_index], color="#444444", lw=0.8, ls=":", label="reference frame")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("displacement (px)")
    ax.set_title(f"motion ({m.mode}, tracked on the {'B-mode' if m.tracked_panel == 'bmode' else 'contrast'} "
                 "panel)", fontsize=10)
    panel = analysis.panels.bmode if m.tracked_panel == "bmode" else analysis.panels.contrast
    spacing = panel.spacing_mm if panel is not None else None
    if spacing is not None:
        s = float(np.sqrt(spacing[0] * spacing[1]))
        sec = ax.secondary_yaxis("right", functions=(lambda v: v * s, lambda v: v / s))
        sec.set_ylabel("displacement (mm)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    if rigid:
        ax_r = axes[0, 1]
        ax_r.plot(t, np.where(rej, np.nan, m.rotation_deg), "-", lw=1.1, color="#2ca02c")
        if rej.any():
            ax_r.plot(t[rej], m.rotation_deg[rej], "x", color="#8c8c8c", ms=5)
        ax_r.set_xlabel("time (s)")
        ax_r.set_ylabel("rotation (degrees)")
        ax_r.set_title("rotation about the panel centre", fontsize=10)
        ax_r.grid(alpha=0.3)
        fig.subplots_adjust(wspace=0.45)  # room for the mm axis between the panels
    return _png(fig)


#: Maps shown in the report (all of them are in the maps/ directory).
REPORT_MAPS = ("peak_enhancement", "time_to_peak_s", "necrosis")

#: Rendered map images per study and source name: one rendering serves the
#: report (HTML and PDF) and maps/ (`map_images`).
_MAP_IMAGES: weakref.WeakKeyDictionary[MapStudy, dict[tuple[str, str], MapImage]] = \
    weakref.WeakKeyDictionary()


def map_images(study: MapStudy, source_name: str,
               names: tuple[str, ...] | None = None) -> dict[str, MapImage]:
    """Map overlays with their colour scales (`ceuskit.maps_io.render_map`), rendered once per study.

    Each map over the grey frame the maps were drawn on (the lesion's peak),
    with its colour bar and units, the ROI outlines and mm axes.  Images are
    kept with the study, so that the report and ``maps/`` share one
    rendering.  ``names``: default every map (`ceuskit.maps_io.MAP_NAMES`).
    """
    from ceuskit.maps_io import MAP_NAMES, map_arrays, render_map

    cache = _MAP_IMAGES.setdefault(study, {})
    wanted = names if names is not None else MAP_NAMES
    missing = [n for n in wanted if (n, source_name) not in cache]
    if missing:
        arrays = map_arrays(study.result)
        for name in missing:
            cache[(name, source_name)] = render_map(
                name, arrays[name], study.result, study.rois, study.background, study.display_max,
                background_label=study.background_label, source_name=source_name)
    return {n: cache[(n, source_name)] for n in wanted}


def map_pngs(study: MapStudy, source_name: str, names: tuple[str, ...] = REPORT_MAPS) -> dict[str, bytes]:
    """Map overlays for the report: the same images ``ceuskit map`` writes as PNG (`map_images`)."""
    return {n: image.png for n, image in map_images(study, source_name, names).items()}
