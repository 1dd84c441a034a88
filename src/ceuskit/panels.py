"""Find the contrast panel (and the B-mode panel beside it).

Most CEUS exports show B-mode and contrast mode side by side.  The contrast
panel is chosen, in order of preference:

1. from the user's ``--panel X0,Y0,X1,Y1`` override;
2. among the 2-D regions the file declares (DICOM ultrasound regions);
3. from the image itself (`detect_layout`): two panels side by side or
   stacked, separated by dark pixels or, without a separator, where the
   temporal behaviour changes abruptly across the image (contrast dark
   before the bolus and brightening, B-mode bright and steady);
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
from scipy import ndimage

from ceuskit.cine import Cine, Panel
from ceuskit.errors import InputError

#: A column or row is "dark" (part of a gap or border) when no sampled frame
#: shows it brighter than this (display units): scanner backgrounds are 0-5.
DARK_LEVEL = 12.0
#: Two panels separated by dark pixels, side by side, each at least this
#: share of the frame width ...
MIN_PANEL_WIDTH_SHARE = 0.2
#: ... and with widths within this ratio of each other are the classic dual
#: display, taken without further evidence (as before layouts were detected).
MIN_WIDTH_RATIO = 0.7
#: Width of the square that opens the content mask (px): burned-in text,
#: caliper marks and depth ticks are strokes of 1-3 px and vanish; panels are
#: hundreds of pixels across and keep their exact edges.
OVERLAY_STROKE_PX = 5
#: A part of the content is a panel candidate when it covers at least this
#: share of the frame; logos and text blocks in the margins cover far less,
#: the smallest panel of a dual display far more (a 60 % B-mode beside a
#: full contrast panel still covers over 10 %).
MIN_PANEL_AREA_SHARE = 0.05
#: Without a separator, each side of a split spans at least this share of the
#: content (a B-mode inset at 60 % of the contrast width is 37 %).
MIN_PANEL_SHARE = 0.2
#: The contrast/B-mode difference must hold within this many columns (rows)
#: either side of a split without separator, not only between the medians of
#: the two sides: a panel boundary is abrupt, while anatomy within one panel
#: changes gradually.
BOUNDARY_PX = 8
#: The contrast side brightens with the bolus by at least this many grey
#: levels more than the B-mode side (B-mode only shows a faint trace).
MIN_RISE_STEP = 20.0
#: ... and before the bolus the B-mode side is at least this many grey levels
#: brighter than the contrast side (B-mode shows tissue; contrast mode is dark
#: until the bubbles come).  Within a single contrast panel, enhancing and
#: non-enhancing parts share the dark pre-bolus level, so they are not split.
MIN_EARLY_STEP = 20.0
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


@dataclass(frozen=True)
class DualLayout:
    """Two panels found in the image and the evidence for them.

    Attributes
    ----------
    first, second : Panel
        Left and right (side by side) or upper and lower (stacked) panel.
    layout : str
        ``"side-by-side"`` or ``"stacked"``.
    separator : bool
        Whether dark pixels separate the panels.
    split : int
        Frame column (side by side) or row (stacked) where the second panel starts.
    evidence : dict
        The numbers behind the layout (display units).
    """

    first: Panel
    second: Panel
    layout: str
    separator: bool
    split: int
    evidence: dict[str, Any]

    def describe(self) -> str:
        arrangement = self.layout.replace("-", " ")
        axis = "column" if self.layout == "side-by-side" else "row"
        sep = "with a dark separator" if self.separator else "without a separator"
        return f"{arrangement} {sep} at {axis} {self.split}"


def _content_components(frames: NDArray[np.float32]) -> tuple[NDArray[np.int32], list[int]]:
    """Label image of the imaging content and its large components, largest first.

    Content is what some sampled frame shows brighter than `DARK_LEVEL`, less
    strokes thinner than `OVERLAY_STROKE_PX` (burned-in text, calipers, ticks).
    """
    h, w = frames.shape[1:]
    mask = frames.max(axis=0) > DARK_LEVEL
    k = OVERLAY_STROKE_PX
    mask = ndimage.binary_opening(mask, structure=np.ones((k, k), dtype=bool))
    labels, n = ndimage.label(mask)
    if n == 0:
        return labels.astype(np.int32), []
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    big = [int(i) + 1 for i in np.argsort(areas)[::-1] if areas[i] >= MIN_PANEL_AREA_SHARE * h * w]
    return labels.astype(np.int32), big


def mask_bbox(mask: NDArray[np.bool_], source: str = "image") -> Panel | None:
    """The smallest rectangle holding every True pixel of `mask` (None when there is none)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return Panel(int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1, source=source)


def _levels(series: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Early level and rise of mean-brightness series (time on axis 0), as in `brightening`."""
    n_early = max(1, round(EARLY_SHARE * series.shape[0]))
    early = np.median(series[:n_early], axis=0)
    k = min(3, series.shape[0])
    kernel = np.ones(k) / k
    smooth = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="valid"), 0, series)
    return early, smooth.max(axis=0) - early


def _panel_levels(frames: NDArray[np.float32], panel: Panel) -> tuple[float, float]:
    m = frames[(slice(None), *panel.slices)].mean(axis=(1, 2), dtype=np.float64)
    early, rise = _levels(m[:, None])
    return float(early[0]), float(rise[0])


def _looks_like_pair(early_c: float, rise_c: float, early_b: float, rise_b: float) -> bool:
    """Contrast side dark before the bolus and brightening; B-mode side bright and steady."""
    return rise_c - rise_b >= MIN_RISE_STEP and early_b - early_c >= MIN_EARLY_STEP


def _split_without_separator(frames: NDArray[np.float32], content: NDArray[np.bool_],
                             box: Panel, axis: int) -> dict[str, Any]:
    """Best one-step fit of the contrast-likeness profile across one axis of `box`.

    ``axis=1`` splits columns (side by side), ``axis=0`` rows (stacked).  Each
    column (row) gets the early level E and the rise R of its mean brightness
    over the content pixels (`_levels`); its contrast-likeness is ``R - E``.
    The split is where one step fits that profile best in the least absolute
    deviations sense (anatomy that moves, such as a vessel wall in B-mode,
    gives outlying columns or rows that must not pull the split).  The
    verdict needs both the two sides (medians) and the `BOUNDARY_PX` columns
    (rows) either side of the split to look like contrast beside B-mode.
    """
    sub = frames[(slice(None), *box.slices)].astype(np.float64)
    cmask = content[box.slices]
    across = 0 if axis == 1 else 1  # average over rows for a column profile
    count = cmask.sum(axis=across)
    series = (sub * cmask).sum(axis=1 + across) / np.maximum(count, 1)
    early, rise = _levels(series)
    g = rise - early
    n = g.size
    min_len = max(BOUNDARY_PX, int(np.ceil(MIN_PANEL_SHARE * n)))
    out: dict[str, Any] = {"step_score": 0.0, "split": None, "convincing": False}
    if n < 2 * min_len:
        return out
    costs = [float(np.abs(g[:k] - np.median(g[:k])).sum() + np.abs(g[k:] - np.median(g[k:])).sum())
             for k in range(min_len, n - min_len + 1)]
    cut = min_len + int(np.argmin(costs))
    total = float(np.abs(g - np.median(g)).sum())
    score = 1.0 - min(costs) / total if total > 0 else 0.0
    first, second = slice(0, cut), slice(cut, n)
    first_is_contrast = bool(np.median(g[first]) >= np.median(g[second]))
    ci, bi = (first, second) if first_is_contrast else (second, first)
    near_first, near_second = slice(cut - BOUNDARY_PX, cut), slice(cut, cut + BOUNDARY_PX)
    nci, nbi = (near_first, near_second) if first_is_contrast else (near_second, near_first)
    sides = {"early_contrast": float(np.median(early[ci])), "rise_contrast": float(np.median(rise[ci])),
             "early_bmode": float(np.median(early[bi])), "rise_bmode": float(np.median(rise[bi]))}
    edge = {"edge_early_contrast": float(early[nci].mean()), "edge_rise_contrast": float(rise[nci].mean()),
            "edge_early_bmode": float(early[nbi].mean()), "edge_rise_bmode": float(rise[nbi].mean())}
    convincing = _looks_like_pair(*sides.values()) and _looks_like_pair(*edge.values())
    out.update(step_score=score, split=(box.x0 if axis == 1 else box.y0) + cut,
               first_is_contrast=first_is_contrast, convincing=convincing, **sides, **edge)
    return out


def detect_layout(frames: NDArray[np.float32]) -> tuple[DualLayout | None, dict[str, Any]]:
    """Find a dual display (side by side or stacked, with or without a separator).

    1. The imaging content (`_content_components`) falls into two large parts:
       two panels separated by dark pixels.  Two side-by-side panels of
       similar widths are the classic dual display and are taken as such;
       any other pair (stacked, unequal) must also look like contrast plus
       B-mode (`_looks_like_pair`).
    2. The content is one part: it is split where the profile of temporal
       behaviour across columns (or rows) steps (`_split_without_separator`),
       if both the two sides and the columns (rows) at the step look like
       contrast beside B-mode.

    Parameters
    ----------
    frames : array, shape (T, H, W)
        Sampled display frames.

    Returns
    -------
    (layout or None, evidence)
        `evidence` holds the numbers of the best candidate, also when it was
        not convincing.
    """
    w = frames.shape[2]
    labels, big = _content_components(frames)
    if not big:
        return None, {"reason": "no imaging content brighter than the background"}
    if len(big) >= 2:
        a = mask_bbox(labels == big[0])
        b = mask_bbox(labels == big[1])
        assert a is not None and b is not None
        first, second = sorted((a, b), key=lambda p: (p.x0, p.y0))
        if first.x1 <= second.x0:
            kind, split = "side-by-side", second.x0
        else:
            first, second = sorted((a, b), key=lambda p: p.y0)
            kind, split = ("stacked", second.y0) if first.y1 <= second.y0 else ("", 0)
        if kind:
            ea, ra = _panel_levels(frames, first)
            eb, rb = _panel_levels(frames, second)
            ev: dict[str, Any] = {"early_first": ea, "rise_first": ra,
                                  "early_second": eb, "rise_second": rb}
            widths = sorted((first.shape[1], second.shape[1]))
            classic = (kind == "side-by-side" and widths[0] / widths[1] >= MIN_WIDTH_RATIO
                       and widths[0] >= MIN_PANEL_WIDTH_SHARE * w)
            paired = (_looks_like_pair(ea, ra, eb, rb) if ra >= rb else _looks_like_pair(eb, rb, ea, ra))
            if classic or paired:
                ev["why"] = "two panels of similar widths" if classic else "contrast beside B-mode"
                return DualLayout(first, second, kind, True, split, ev), ev
            return None, {**ev, "reason": "two separate image parts, but not contrast beside B-mode"}
    content = labels == big[0]
    box = mask_bbox(content)
    assert box is not None
    fits = {kind: _split_without_separator(frames, content, box, axis)
            for kind, axis in (("side-by-side", 1), ("stacked", 0))}
    ranked = sorted(fits, key=lambda k: (fits[k]["convincing"], fits[k]["step_score"]), reverse=True)
    kind = ranked[0]
    fit = fits[kind]
    ev = {k: v for k, v in fit.items() if k not in ("split", "first_is_contrast", "convincing")}
    if not fit["convincing"]:
        return None, {**ev, "reason": "no step in the temporal behaviour across the image "
                                      "separates a contrast panel from a B-mode panel"}
    cut = fit["split"]
    side_a, side_b = np.zeros_like(content), np.zeros_like(content)
    if kind == "side-by-side":
        side_a[:, :cut], side_b[:, cut:] = content[:, :cut], content[:, cut:]
    else:
        side_a[:cut], side_b[cut:] = content[:cut], content[cut:]
    box_a, box_b = mask_bbox(side_a), mask_bbox(side_b)
    assert box_a is not None and box_b is not None
    ev["why"] = "a step in the temporal behaviour"
    return DualLayout(box_a, box_b, kind, False, cut, ev), ev


def detect_dual_layout(frames: NDArray[np.float32]) -> tuple[Panel, Panel] | None:
    """The two panels of a dual display (left/right or upper/lower), or None.

    See `detect_layout`.
    """
    layout, _ = detect_layout(frames)
    return None if layout is None else (layout.first, layout.second)


def _pick(frames: NDArray[np.float32], a: Panel, b: Panel, method: str, what: str,
          layout: DualLayout | None = None) -> PanelChoice:
    rise_a, rise_b = brightening(frames, a), brightening(frames, b)
    contrast, bmode = (a, b) if rise_a >= rise_b else (b, a)
    rise_c, rise_o = max(rise_a, rise_b), min(rise_a, rise_b)
    if contrast.x1 <= bmode.x0 or bmode.x1 <= contrast.x0:
        side = "left" if contrast.x0 < bmode.x0 else "right"
    else:
        side = "upper" if contrast.y0 < bmode.y0 else "lower"
    reason = (f"{what}; the {side} panel brightens by {rise_c:.1f} grey levels over the cine "
              f"(the other by {rise_o:.1f}), as contrast mode does with the bolus")
    evidence: dict[str, Any] = {"brightening_contrast": rise_c, "brightening_other": rise_o}
    if layout is not None:
        evidence.update(layout=layout.layout, separator=layout.separator, split=layout.split,
                        **layout.evidence)
    return PanelChoice(
        contrast=contrast.with_(kind="contrast"),
        bmode=bmode.with_(kind="bmode"),
        method=method,
        reason=reason,
        evidence=evidence,
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
        pair = detect_dual_layout(frames) if not others else None
        if pair:
            others = [p for p in pair if p.x1 <= x0 or p.x0 >= x1 or p.y1 <= y0 or p.y0 >= y1]
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
    found, evidence = detect_layout(frames)
    if found is not None:
        first, second = (p.with_(spacing_mm=cine.spacing_mm) for p in (found.first, found.second))
        return _pick(frames, first, second, "image",
                     f"dual display found in the image: {found.describe()}", found)
    whole = cine.whole_frame().with_(kind="contrast")
    why = evidence.get("reason", "")
    return PanelChoice(whole, None, "whole-frame",
                       "no panels declared or detected; the whole frame is analysed"
                       + (f" ({why})" if why else ""), {"layout": "single", **evidence})


def colour_share(cine: Cine, panel: Panel, threshold: float = 30.0) -> float:
    """Share of a panel's pixels that show colour (chroma above `threshold`)."""
    if cine.chroma is None:
        return 0.0
    return float(np.mean(cine.chroma[panel.slices] > threshold))
