"""Re-lay-out a phantom's dual display the ways scanners export it.

`ceuskit.simulate` renders one layout: contrast left, B-mode right, a dark
gap between them.  Exports from real scanners differ: panels touching
without a separator, B-mode left of contrast, panels stacked top/bottom, a
B-mode panel smaller than the contrast one, text and marks burned into the
margins.  `relayout` moves the two rendered panels of a `Phantom` into any
of `LAYOUTS` without re-rendering, so the phantom's truth stays exact.

The contrast panel is always kept at full size (only moved): the ROI file is
in ``space: "panel"`` coordinates of the contrast panel, so it stays valid.
Only the B-mode panel is ever scaled.

`write_layout_phantom` writes such a cine with ``truth.json`` and
``rois.json``; the DICOM and NPZ files carry *no* ultrasound regions, so a
reader has to find the panels from the image.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import zoom

from ceuskit.cine import Panel
from ceuskit.outputs import write_json_atomic
from ceuskit.simulate import FORMATS, Phantom, phantom_outputs, write_cine_file

__all__ = ["LAYOUTS", "Layout", "relayout", "with_layout", "write_layout_phantom"]

#: The layouts `relayout` makes, each with what `ceuskit.panels` should call it.
LAYOUTS = {
    "side-by-side-gap": "side-by-side",    # as simulated: contrast left, dark gap
    "side-by-side-nogap": "side-by-side",  # B-mode left, contrast right, touching (640x240)
    "contrast-left-nogap": "side-by-side",  # contrast left, B-mode right, touching
    "stacked": "stacked",                  # contrast top, B-mode bottom, dark gap
    "stacked-nogap": "stacked",            # contrast top, B-mode bottom, touching
    "unequal": "side-by-side",             # B-mode at 60 % size left of contrast, touching
    "text-overlay": "side-by-side",        # side-by-side-nogap plus burned-in text and marks
}
#: Frame of the touching side-by-side exports (rows, cols): 640 x 240, as
#: exported by scanners as plain MP4.
NOGAP_FRAME = (240, 640)
#: Dark gap between stacked panels (px).
STACKED_GAP_PX = 8
#: Scale of the B-mode panel in the ``unequal`` layout.
UNEQUAL_SCALE = 0.6


@dataclass(frozen=True)
class Layout:
    """Frames of a re-laid-out dual display and where its panels are.

    Attributes
    ----------
    name : str
        One of `LAYOUTS`.
    frames : ndarray, shape (T, H, W), uint8
    contrast, bmode : Panel
        The panels in frame pixels (ends exclusive).
    kind : str
        ``"side-by-side"`` or ``"stacked"``.
    """

    name: str
    frames: NDArray[np.uint8]
    contrast: Panel
    bmode: Panel
    kind: str


def _place(shape: tuple[int, int], n: int, parts: list[tuple[NDArray[np.uint8], int, int]]
           ) -> NDArray[np.uint8]:
    frames = np.zeros((n, *shape), dtype=np.uint8)
    for block, y0, x0 in parts:
        frames[:, y0:y0 + block.shape[1], x0:x0 + block.shape[2]] = block
    return frames


def _text_overlay(frames: NDArray[np.uint8], times_s: NDArray[np.float64],
                  contrast: Panel, bmode: Panel) -> None:
    """Burn in what scanners put on screen: a text band, a timer, calipers, a logo."""
    h, w = frames.shape[1:]
    font = ImageFont.load_default()
    band = Image.new("L", (w, contrast.y0 - 4), 0)
    ImageDraw.Draw(band).text((6, 2), "CEUS  MI 0.08  L9-3  Gn 62  DR 60  12 Hz", fill=255, font=font)
    band_arr = np.asarray(band)
    frames[:, :band_arr.shape[0], :] = np.maximum(frames[:, :band_arr.shape[0], :], band_arr)
    # A timer on the right of the band changes every frame.
    for i, t in enumerate(times_s):
        img = Image.new("L", (60, 14), 0)
        ImageDraw.Draw(img).text((0, 0), f"{t:6.1f} s", fill=255, font=font)
        frames[i, 2:16, w - 64:w - 4] = np.maximum(frames[i, 2:16, w - 64:w - 4], np.asarray(img))
    # A small solid logo in the left margin, clear of the panels.
    lx1 = min(contrast.x0, bmode.x0) - 8
    frames[:, h - 40:h - 20, lx1 - 24:lx1] = 200
    frames[:, h - 36:h - 24, lx1 - 20:lx1 - 4] = 40
    # Depth ticks in the right margin and a caliper "+" on each panel.
    rx = max(contrast.x1, bmode.x1) + 6
    for y in range(contrast.y0, contrast.y1, 20):
        frames[:, y, rx:rx + 4] = 230
    for p in (contrast, bmode):
        cy, cx = (p.y0 + p.y1) // 2 + 20, (p.x0 + p.x1) // 2 - 30
        frames[:, cy, cx - 4:cx + 5] = 255
        frames[:, cy - 4:cy + 5, cx] = 255


def relayout(phantom: Phantom, layout: str) -> Layout:
    """Move a phantom's two panels into another export layout.

    Parameters
    ----------
    phantom : Phantom
        From `ceuskit.simulate.simulate`.
    layout : str
        One of `LAYOUTS`.

    Returns
    -------
    Layout

    Raises
    ------
    ValueError
        For an unknown layout.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout (--layout) must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    c_in, b_in = phantom.contrast_panel, phantom.bmode_panel
    if layout == "side-by-side-gap":
        return Layout(layout, np.array(phantom.frames), c_in, b_in, LAYOUTS[layout])
    con = np.asarray(phantom.frames[(slice(None), *c_in.slices)])
    bmo = np.asarray(phantom.frames[(slice(None), *b_in.slices)])
    n, (ph, pw) = con.shape[0], con.shape[1:]
    s = phantom.spacing_mm
    if layout == "unequal":
        bmo = np.clip(np.rint(zoom(bmo.astype(np.float32), (1, UNEQUAL_SCALE, UNEQUAL_SCALE),
                                   order=1)), 0, 255).astype(np.uint8)
        s_b = (s[0] / UNEQUAL_SCALE, s[1] / UNEQUAL_SCALE)
    else:
        s_b = s
    bh, bw = bmo.shape[1:]
    if layout in ("stacked", "stacked-nogap"):
        gap = STACKED_GAP_PX if layout == "stacked" else 0
        shape = (2 * ph + gap + 32, pw + 64)
        c_yx, b_yx = (16, 32), (16 + ph + gap, 32)
    else:
        shape = NOGAP_FRAME
        x0 = (shape[1] - (pw + bw)) // 2
        y0 = (shape[0] - ph) // 2
        if layout == "contrast-left-nogap":
            c_yx, b_yx = (y0, x0), (y0, x0 + pw)
        else:  # B-mode left
            c_yx, b_yx = (y0, x0 + bw), (y0 + (ph - bh) // 2, x0)
    contrast = Panel(c_yx[1], c_yx[0], c_yx[1] + pw, c_yx[0] + ph, spacing_mm=s,
                     kind="contrast", source="file")
    bmode = Panel(b_yx[1], b_yx[0], b_yx[1] + bw, b_yx[0] + bh, spacing_mm=s_b,
                  kind="bmode", source="file")
    frames = _place(shape, n, [(con, *c_yx), (bmo, *b_yx)])
    if layout == "text-overlay":
        _text_overlay(frames, phantom.times_s, contrast, bmode)
    return Layout(layout, frames, contrast, bmode, LAYOUTS[layout])


def with_layout(phantom: Phantom, layout: str) -> Phantom:
    """A copy of `phantom` in another layout (frames, panels and truth's geometry)."""
    lay = relayout(phantom, layout)
    lay.frames.flags.writeable = False
    truth = {**phantom.truth, "frame_shape": list(lay.frames.shape[1:]), "layout": layout,
             "panels": {"contrast": list(lay.contrast.bounds), "bmode": list(lay.bmode.bounds)}}
    return replace(phantom, frames=lay.frames, contrast_panel=lay.contrast,
                   bmode_panel=lay.bmode, truth=truth)


def write_layout_phantom(phantom: Phantom, out_dir: str | PathLike[str], fmt: str = "dicom", *,
                         overwrite: bool = False) -> dict[str, Path]:
    """Write a (re-laid-out) phantom like `ceuskit.simulate.write_phantom`, without regions.

    The DICOM and NPZ cines declare no ultrasound regions, so readers must find
    the panels from the image, as for the MP4 export.

    Returns
    -------
    dict of str to Path
        ``{"cine": ..., "truth": ..., "rois": ...}``.
    """
    paths = phantom_outputs(out_dir, {"cine": FORMATS[fmt]} if fmt in FORMATS else {}, fmt,
                            overwrite=overwrite)
    write_cine_file(paths["cine"], fmt, phantom.frames, phantom.times_s, regions=(),
                    spacing_mm=phantom.spacing_mm, description="ceuskit phantom")
    write_json_atomic(paths["truth"], phantom.truth)
    write_json_atomic(paths["rois"], phantom.rois)
    return paths
