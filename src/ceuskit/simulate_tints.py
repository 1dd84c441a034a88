"""Tinted exports of a phantom: the contrast panel through a colour map.

Scanners export the contrast panel through a colour map (a "hot" or "gold"
tint) while the B-mode panel stays grey; some draw the map as a colour bar
beside the panel.  `with_tint` renders a phantom that way, so that the
colour-map inversion (`ceuskit.colour_maps`) can be tested against the grey
original: the truth is unchanged, since the tint is only a display.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from ceuskit.colour_maps import ColourMap, tint
from ceuskit.simulate import Phantom

#: Colour bar: width (px) and its gap (px) from the contrast panel's right edge.
BAR_WIDTH_PX = 6
BAR_GAP_PX = 3


def tinted_frames(frames: NDArray[np.uint8], contrast_xyxy: tuple[int, int, int, int],
                  cmap: ColourMap, *, colour_bar: bool = False) -> NDArray[np.uint8]:
    """RGB frames (T, H, W, 3): grey, with the contrast panel through `cmap`.

    With `colour_bar`, a vertical bar of the map (dark at the bottom) is drawn
    in the `BAR_WIDTH_PX` columns starting `BAR_GAP_PX` to the right of the
    panel, over the panel's middle 80 % of rows.
    """
    grey = np.asarray(frames, dtype=np.uint8)
    out = np.repeat(grey[..., None], 3, axis=-1)
    x0, y0, x1, y1 = contrast_xyxy
    out[:, y0:y1, x0:x1] = cmap.apply(grey[:, y0:y1, x0:x1])
    if colour_bar:
        bx0 = x1 + BAR_GAP_PX
        bx1 = bx0 + BAR_WIDTH_PX
        if bx1 > grey.shape[2]:
            raise ValueError("no room for a colour bar right of the contrast panel")
        h = y1 - y0
        ya, yb = y0 + h // 10, y1 - h // 10
        levels = np.linspace(255.0, 0.0, yb - ya)  # bright at the top
        out[:, ya:yb, bx0:bx1] = cmap.apply(levels)[None, :, None, :]
    return out


def with_tint(phantom: Phantom, name: str, *, colour_bar: bool = False) -> Phantom:
    """A copy of `phantom` whose contrast panel is shown through the library tint `name`.

    The frames become (T, H, W, 3) RGB; the truth records the tint.
    """
    cmap = tint(name)
    p = phantom.contrast_panel
    rgb = tinted_frames(phantom.frames, (p.x0, p.y0, p.x1, p.y1), cmap, colour_bar=colour_bar)
    rgb.flags.writeable = False
    truth = {**phantom.truth, "colour_map": {"tint": name, "colour_bar": bool(colour_bar)}}
    return replace(phantom, frames=rgb, truth=truth)


__all__ = ["BAR_GAP_PX", "BAR_WIDTH_PX", "tinted_frames", "with_tint"]
