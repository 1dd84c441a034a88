"""Find the contrast panel (and the B-mode panel beside it).

Most CEUS exports show B-mode and contrast mode side by side.  The contrast
panel is chosen, in order of preference:

1. from the user's ``--panel X0,Y0,X1,Y1`` override;
2. among the 2-D regions the file declares (DICOM ultrasound regions);
3. from the image itself: dark columns split a dual display into two panels;
4. the whole frame.

Where there are two candidates, the contrast panel is the one that brightens
with the bolus: contrast mode is dark before the microbubbles arrive, while
B-mode shows steady tissue.  The other candidate is kept as the B-mode panel
(motion compensation tracks tissue there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ceuskit.cine import Cine, Panel
from ceuskit.errors import InputError

#: A column or row is "dark" (part of a gap or border) when no sampled frame
#: shows it brighter than this (display units): scanner backgrounds are 0-5.
DARK_LEVEL = 12.0
#: A dual display's two panels each span at least this share of the width.
MIN_PANEL_WIDTH_SHARE = 0.2
#: ... and have widths within this ratio of each other.
MIN_WIDTH_RATIO = 0.7
#: Frames sampled for layout and brightening evidence (enough to see a bolus).
N_SAMPLE_FRAMES = 64
#: Share of the cine, from its start, taken as "before the bolus".
EARLY_SHARE = 0.1


@dataclass(frozen=True)
class PanelChoice:
    """The panels an analysis uses and why.

    Attributes
    ----------
    contrast : Panel
        The contrast-mode panel (frame coordinates).
    bmode : Panel or None
        The B-mode panel beside it, when there is one.
    method : str
        ``"user"``, ``"dicom-region"``, ``"file"``, ``"image"`` or ``"whole-frame"``.
    reason : str
        One sentence for the report.
    evidence : dict
        The numbers behind the choice (brightening per candidate, display units).
    """

    contrast: Panel
    bmode: Panel | None
    method: str
    reason: str
    evidence: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "contrast": self.contrast.as_dict(),
            "bmode": None if self.bmode is None else self.bmode.as_dict(),
            "method": self.method,
            "reason": self.reason,
            "evidence": self.evidence,
        }


def _sample(cine: Cine) -> NDArray[np.float32]:
    idx = np.unique(np.linspace(0, cine.n_frames - 1, min(cine.n_frames, N_SAMPLE_FRAMES)).astype(int))
    return np.asarray(cine.frames[idx])


def brightening(frames: NDArray[np.float32], panel: Panel) -> float:
    """Rise of a panel's mean display value over the cine (display units).

    The mean brightness of each sampled frame is compared between the first
    `EARLY_SHARE` of the cine and its brightest stretch (a 3-sample moving
    average, so a single flash does not count).
    """
    m = frames[(slice(None), *panel.slices)].mean(axis=(1, 2), dtype=np.float64)
    n_early = max(1, round(EARLY_SHARE * m.size))
    early = float(np.median(m[:n_early]))
    k = min(3, m.size)
    smooth = np.convolve(m, np.ones(k) / k, mode="valid")
    return float(smooth.max() - early)


def _runs(flags: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Maximal runs of True as (start, stop) pairs, stop exclusive."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    d = np.diff(padded)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def detect_dual_layout(frames: NDArray[np.float32]) -> tuple[Panel, Panel] | None:
    """Find two side-by-side panels separated by dark columns.

    Parameters
    ----------
    frames : array, shape (T, H, W)
        Sampled display frames.

    Returns
    -------
    (left, right) panels in frame coordinates, or None when the image is not
    a dual display.
    """
    peak = frames.max(axis=0)
    w = peak.shape[1]
    bright_cols = peak.max(axis=0) > DARK_LEVEL
    runs = [r for r in _runs(bright_cols) if (r[1] - r[0]) >= MIN_PANEL_WIDTH_SHARE * w]
    if len(runs) != 2:
        return None
    widths = [b - a for a, b in runs]
    if min(widths) / max(widths) < MIN_WIDTH_RATIO:
        return None
    panels = []
    for x0, x1 in runs:
        rows = _runs(peak[:, x0:x1].max(axis=1) > DARK_LEVEL)
        y0, y1 = max(rows, key=lambda r: r[1] - r[0])
        panels.append(Panel(x0, y0, x1, y1, source="image"))
    return panels[0], panels[1]


def _pick(frames: NDArray[np.float32], a: Panel, b: Panel, method: str, what: str) -> PanelChoice:
    rise_a, rise_b = brightening(frames, a), brightening(frames, b)
    contrast, bmode = (a, b) if rise_a >= rise_b else (b, a)
    rise_c, rise_o = max(rise_a, rise_b), min(rise_a, rise_b)
    side = "left" if contrast.x0 < bmode.x0 else ("upper" if contrast.y0 < bmode.y0 else "right")
    reason = (f"{what}; the {side} panel brightens by {rise_c:.1f} grey levels over the cine "
              f"(the other by {rise_o:.1f}), as contrast mode does with the bolus")
    return PanelChoice(
        contrast=contrast.with_(kind="contrast"),
        bmode=bmode.with_(kind="bmode"),
        method=method,
        reason=reason,
        evidence={"brightening_contrast": rise_c, "brightening_other": rise_o},
    )


def choose_panels(cine: Cine, override: tuple[int, int, int, int] | None = None) -> PanelChoice:
    """Choose the contrast panel of a cine and the B-mode panel beside it.

    Parameters
    ----------
    cine : Cine
        The loaded cine.
    override : (x0, y0, x1, y1), optional
        User-given contrast panel in frame pixels (x1, y1 exclusive).

    Returns
    -------
    PanelChoice

    Raises
    ------
    InputError
        If the override is empty or leaves the frame.
    """
    h, w = cine.frame_shape
    frames = _sample(cine)
    candidates = [r for r in cine.regions if r.kind != "doppler"]
    candidates = sorted(candidates, key=lambda p: p.shape[0] * p.shape[1], reverse=True)
    if override is not None:
        x0, y0, x1, y1 = (int(v) for v in override)
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise InputError("--panel", f"{x0},{y0},{x1},{y1} is empty or outside the "
                             f"{w}x{h} frame", "give X0,Y0,X1,Y1 inside the frame, X0<X1, Y0<Y1")
        spacing = next((r.spacing_mm for r in candidates
                        if r.x0 <= x0 and r.y0 <= y0 and x1 <= r.x1 and y1 <= r.y1),
                       cine.spacing_mm)
        user = Panel(x0, y0, x1, y1, spacing_mm=spacing, kind="contrast", source="user")
        others = [r for r in candidates if r.x1 <= x0 or r.x0 >= x1]
        layout = detect_dual_layout(frames) if not others else None
        if layout:
            others = [p for p in layout if p.x1 <= x0 or p.x0 >= x1]
        bmode = others[0].with_(kind="bmode") if others else None
        return PanelChoice(user, bmode, "user", "contrast panel given with --panel", {})
    if len(candidates) >= 2:
        a = candidates[0]
        # The partner is the largest other region that does not overlap the first.
        partner = next((r for r in candidates[1:]
                        if r.x1 <= a.x0 or r.x0 >= a.x1 or r.y1 <= a.y0 or r.y0 >= a.y1), None)
        if partner is not None:
            method = a.source
            return _pick(frames, a, partner, method, "two imaging regions declared in the file")
    if len(candidates) == 1:
        only = candidates[0].with_(kind="contrast")
        return PanelChoice(only, None, only.source,
                           "the file declares a single imaging region", {})
    layout = detect_dual_layout(frames)
    if layout is not None:
        left, right = (p.with_(spacing_mm=cine.spacing_mm) for p in layout)
        return _pick(frames, left, right, "image", "dual display found in the image")
    whole = cine.whole_frame().with_(kind="contrast")
    return PanelChoice(whole, None, "whole-frame",
                       "no panels declared or detected; the whole frame is analysed", {})


def colour_share(cine: Cine, panel: Panel, threshold: float = 30.0) -> float:
    """Share of a panel's pixels that show colour (chroma above `threshold`)."""
    if cine.chroma is None:
        return 0.0
    return float(np.mean(cine.chroma[panel.slices] > threshold))
