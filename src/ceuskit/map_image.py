"""Drawing a map overlay straight from arrays: colour table, Pillow text, PNG.

`compose` lays out one readable image -- a title, the coloured panel
(nearest-neighbour enlarged to about `TARGET_LONG_SIDE_PX`, physical aspect
kept when the pixel size is known), mm axes ("lateral (mm)" / "depth (mm)",
the vocabulary of the report's ROI figure), ROI outlines with their names, a
colour bar with tick labels (or a legend for categorical maps) and caption
lines -- and encodes it as PNG with Pillow.  No figure library is involved:
a map renders in a few tens of milliseconds.

Text uses DejaVu Sans (the system's ``fonts-dejavu``, else the copy inside
matplotlib when installed), else Pillow's own default font.
"""

from __future__ import annotations

import importlib.util
import io
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

#: The enlarged panel's longer side aims at this many pixels (integer factor
#: for square pixels; at most `MAX_FACTOR` times the panel).
TARGET_LONG_SIDE_PX = 720
MAX_FACTOR = 4
#: Font sizes (px): labels, tick labels, small print.
LABEL_PX, TICK_PX, SMALL_PX = 14, 12, 10
#: zlib level of the PNG: level 1 encodes a ~900 x 700 map in ~20 ms against
#: ~45 ms at Pillow's default 6, for ~15 % more bytes.
PNG_COMPRESS_LEVEL = 1

_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
RGB = tuple[int, int, int]


@cache
def font(size: int) -> Font:
    """DejaVu Sans at `size` px (system, else matplotlib's copy), else Pillow's default font."""
    paths = [Path(p) for p in _FONT_CANDIDATES]
    spec = importlib.util.find_spec("matplotlib")  # finds the package without importing it
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        paths.append(Path(loc) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf")
    for p in paths:
        if p.is_file():
            try:
                return ImageFont.truetype(str(p), size)
            except OSError:
                continue
    return ImageFont.load_default(size)


def _text_size(text: str, f: Font) -> tuple[int, int]:
    box = f.getbbox(text)
    return int(box[2] - box[0]), int(box[3] - box[1])


def _line_height(f: Font) -> int:
    return _text_size("Ag(|", f)[1] + 4


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 x 10^k steps) inside [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, target)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = first
    while v <= hi + 1e-9 * step:
        ticks.append(0.0 if abs(v) < 1e-12 * step else v)
        v += step
    return ticks


def fmt_value(v: float) -> str:
    """A short number for tick labels and captions (3 significant digits)."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    a = abs(v)
    if a < 1e-3 or a >= 1e5:
        return f"{v:.2e}"
    return f"{v:.3g}"


def _tick_label(v: float, step: float) -> str:
    """`v` with as many decimals as the tick step needs (0.025 steps: 3)."""
    decimals = 0
    if step > 0:
        while decimals < 9:
            scaled = step * 10**decimals
            if abs(scaled - round(scaled)) <= 1e-6 * scaled:
                break
            decimals += 1
    return f"{v:.{decimals}f}"


@dataclass(frozen=True)
class ColourBar:
    """A continuous colour bar: the table, its limits and label; ends marked when clipped."""

    table: NDArray[np.uint8]
    lo: float
    hi: float
    label: str
    clipped_low: bool = False
    clipped_high: bool = False


@dataclass(frozen=True)
class Legend:
    """A categorical legend: (colour, label) entries under a title."""

    entries: Sequence[tuple[RGB, str]]
    title: str


@dataclass(frozen=True)
class Outline:
    """An ROI outline in panel pixels (x = column, y = row) and its label."""

    xy: NDArray[np.float64]
    label: str


def enlarge(rgb: NDArray[np.uint8], spacing_mm: tuple[float, float] | None
            ) -> tuple[Image.Image, float, float]:
    """The panel enlarged by nearest neighbour; returns (image, x factor, y factor).

    Square (or unknown) pixels get one integer factor; other pixel sizes are
    resized so that the image keeps the panel's physical aspect.
    """
    h, w = rgb.shape[:2]
    img = Image.fromarray(rgb, "RGB")
    sy, sx = spacing_mm if spacing_mm is not None else (1.0, 1.0)
    if abs(sy / sx - 1.0) < 0.02:
        f = int(min(MAX_FACTOR, max(1, round(TARGET_LONG_SIDE_PX / max(h, w)))))
        return (img.resize((w * f, h * f), Image.Resampling.NEAREST), float(f), float(f)) if f > 1 \
            else (img, 1.0, 1.0)
    px_per_mm = TARGET_LONG_SIDE_PX / max(w * sx, h * sy)
    fx, fy = sx * px_per_mm, sy * px_per_mm
    k = max(1.0 / min(fx, fy), 1.0)  # never smaller than the panel
    k = min(k, MAX_FACTOR / max(fx, fy)) if max(fx, fy) * k > MAX_FACTOR else k
    fx, fy = max(1.0, fx * k), max(1.0, fy * k)
    size = (round(w * fx), round(h * fy))
    return img.resize(size, Image.Resampling.NEAREST), size[0] / w, size[1] / h


def _vertical_text(canvas: Image.Image, xy: tuple[int, int], text: str, f: Font, fill: RGB) -> None:
    """Text rotated by 90 degrees (reading upwards), top-left corner at `xy`."""
    tw, th = _text_size(text, f)
    box = f.getbbox(text)
    mask = Image.new("L", (tw + 2, th + 4), 0)
    ImageDraw.Draw(mask).text((1 - box[0], 2 - box[1]), text, font=f, fill=255)
    mask = mask.rotate(90, expand=True)
    canvas.paste(Image.new("RGB", mask.size, fill), xy, mask)


def compose(
    panel_rgb: NDArray[np.uint8],
    *,
    spacing_mm: tuple[float, float] | None,
    title: Sequence[str],
    scale: ColourBar | Legend,
    outlines: Sequence[Outline] = (),
    caption: Sequence[str] = (),
    footnote: str = "",
) -> bytes:
    """Lay out a map image (see the module notes) and return it as PNG bytes."""
    f_label, f_tick, f_small = font(LABEL_PX), font(TICK_PX), font(SMALL_PX)
    lh_label, lh_tick, lh_small = _line_height(f_label), _line_height(f_tick), _line_height(f_small)
    panel, fx, fy = enlarge(panel_rgb, spacing_mm)
    pw, ph = panel.size
    h, w = panel_rgb.shape[:2]
    sy, sx = spacing_mm if spacing_mm is not None else (1.0, 1.0)
    unit = "mm" if spacing_mm is not None else "px"

    # Axis ticks: mm of pixel centres (pixel 0's centre at 0), as the ROI figure.
    xt = nice_ticks(-0.5 * sx, (w - 0.5) * sx, max(3, pw // 110))
    yt = nice_ticks(-0.5 * sy, (h - 0.5) * sy, max(3, ph // 90))
    xstep = xt[1] - xt[0] if len(xt) > 1 else 1.0
    ystep = yt[1] - yt[0] if len(yt) > 1 else 1.0
    ylabels = [_tick_label(v, ystep) for v in yt]
    ytw = max((_text_size(s, f_tick)[0] for s in ylabels), default=0)

    left = 12 + lh_label + ytw + 10
    top = 10 + lh_label * len(title) + 6
    if isinstance(scale, ColourBar):
        ticks = nice_ticks(scale.lo, scale.hi, 6)
        step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
        labels = [_tick_label(v, step) for v in ticks]
        ends = [("≥ " if scale.clipped_high else "") + fmt_value(scale.hi),
                ("≤ " if scale.clipped_low else "") + fmt_value(scale.lo)]
        tw = max((_text_size(s, f_tick)[0] for s in [*labels, *ends]), default=0)
        right = 14 + 20 + 6 + tw + 10 + lh_label + 12
    else:
        tw = max((_text_size(lbl, f_tick)[0] for _, lbl in scale.entries), default=0)
        right = max(14 + 16 + 8 + tw, _text_size(scale.title, f_label)[0] // 2) + 16
    cap_width = left + pw + right
    chars = max(40, int(cap_width / (0.55 * LABEL_PX)))
    cap_lines = [line for c in caption for line in textwrap.wrap(c, chars)]
    small_chars = max(60, int(cap_width / (0.55 * SMALL_PX)))
    foot_lines = textwrap.wrap(footnote, small_chars) if footnote else []
    bottom = 6 + lh_tick + lh_label + 8 + lh_label * len(cap_lines) + 4 + lh_small * len(foot_lines) + 6
    width, height = left + pw + right, top + ph + bottom
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(panel, (left, top))
    draw = ImageDraw.Draw(canvas)
    black = (0, 0, 0)

    y = 8
    for i, line in enumerate(title):
        draw.text((left, y), line, font=f_label if i == 0 else f_tick, fill=black)
        y += lh_label

    # ROI outlines and names, on the enlarged panel.
    for o in outlines:
        if o.xy.size == 0:
            continue
        pts = [(left + (x + 0.5) * fx - 0.5, top + (yv + 0.5) * fy - 0.5) for x, yv in o.xy]
        draw.line([*pts, pts[0]], fill=(255, 255, 255), width=2)
        x0 = min(p[0] for p in pts)
        y0 = min(p[1] for p in pts)
        lw, lh = _text_size(o.label, f_tick)
        ty = max(top + 1, y0 - lh - 6)
        # On a dark box: white text alone is lost on bright speckle.
        tx = min(x0, left + pw - lw - 4)
        draw.rectangle((tx - 2, ty, tx + lw + 2, ty + lh + 3), fill=(0, 0, 0))
        draw.text((tx, ty), o.label, font=f_tick, fill=(255, 255, 255))

    # Frame and axes.
    draw.rectangle((left - 1, top - 1, left + pw, top + ph), outline=black)
    for v in xt:
        px = left + (v / sx + 0.5) * fx
        draw.line((px, top + ph, px, top + ph + 4), fill=black)
        s = _tick_label(v, xstep)
        draw.text((px - _text_size(s, f_tick)[0] / 2, top + ph + 6), s, font=f_tick, fill=black)
    for v, s in zip(yt, ylabels, strict=True):
        py = top + (v / sy + 0.5) * fy
        draw.line((left - 5, py, left - 1, py), fill=black)
        sw, sh = _text_size(s, f_tick)
        draw.text((left - 8 - sw, py - sh / 2 - 2), s, font=f_tick, fill=black)
    xlabel = f"lateral ({unit})"
    draw.text((left + pw / 2 - _text_size(xlabel, f_label)[0] / 2, top + ph + 6 + lh_tick),
              xlabel, font=f_label, fill=black)
    ylabel = f"depth ({unit})"
    yw = _text_size(ylabel, f_label)[0]
    _vertical_text(canvas, (8, int(top + ph / 2 - yw / 2)), ylabel, f_label, black)

    # Colour bar or legend.
    bx = left + pw + 14
    if isinstance(scale, ColourBar):
        bar_h = ph
        n = scale.table.shape[0]
        rows = np.clip(((1.0 - (np.arange(bar_h) + 0.5) / bar_h) * n).astype(int), 0, n - 1)
        strip = np.repeat(scale.table[rows][:, None, :], 20, axis=1)
        canvas.paste(Image.fromarray(np.ascontiguousarray(strip), "RGB"), (bx, top))
        draw.rectangle((bx - 1, top - 1, bx + 20, top + bar_h), outline=black)
        span = scale.hi - scale.lo
        tx = bx + 20 + 6
        placed: list[float] = []
        # The ends first (they say where the scale is clipped), then ticks that do not collide.
        for v, s in ((scale.hi, ends[0]), (scale.lo, ends[1])):
            py = top + (1.0 - (v - scale.lo) / span) * bar_h
            draw.line((bx + 20, py, bx + 24, py), fill=black)
            sh = _text_size(s, f_tick)[1]
            ty = min(max(py - sh / 2 - 2, top - 4), top + bar_h - sh)
            draw.text((tx, ty), s, font=f_tick, fill=black)
            # Where the label is drawn (kept inside the bar's height), not the tick.
            placed.append(ty + sh / 2 + 2)
        for v, s in zip(ticks, labels, strict=True):
            py = top + (1.0 - (v - scale.lo) / span) * bar_h
            if any(abs(py - q) < lh_tick for q in placed):
                continue
            draw.line((bx + 20, py, bx + 24, py), fill=black)
            sh = _text_size(s, f_tick)[1]
            draw.text((tx, py - sh / 2 - 2), s, font=f_tick, fill=black)
            placed.append(py)
        lw = _text_size(scale.label, f_label)[0]
        _vertical_text(canvas, (tx + tw + 8, int(top + bar_h / 2 - min(lw, bar_h) / 2)),
                       scale.label, f_label, black)
    else:
        draw.text((bx, top), scale.title if _text_size(scale.title, f_tick)[0] < right - 20
                  else "legend", font=f_tick, fill=black)
        y = top + lh_tick + 6
        for colour, label in scale.entries:
            draw.rectangle((bx, y, bx + 16, y + 14), fill=colour, outline=black)
            draw.text((bx + 22, y - 1), label, font=f_tick, fill=black)
            y += max(lh_tick, 18) + 4

    y = top + ph + 6 + lh_tick + lh_label + 8
    for line in cap_lines:
        draw.text((8, y), line, font=f_label, fill=black)
        y += lh_label
    y += 4
    for line in foot_lines:
        draw.text((8, y), line, font=f_small, fill=(80, 80, 80))
        y += lh_small
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def blend(background: NDArray[Any] | None, display_max: float, colours: NDArray[np.uint8],
          valid: NDArray[np.bool_], alpha: float) -> NDArray[np.uint8]:
    """The grey background with `colours` laid over it at `alpha` where `valid` (RGB uint8)."""
    shape = valid.shape
    if background is None:
        grey = np.full(shape, 255.0, dtype=np.float32)
    else:
        grey = np.clip(np.asarray(background, dtype=np.float32) * np.float32(255.0 / display_max),
                       0.0, 255.0)
    out = np.repeat(grey[..., None], 3, axis=2)
    mixed = out[valid] * np.float32(1.0 - alpha) + colours[valid].astype(np.float32) * np.float32(alpha)
    out[valid] = mixed
    return np.asarray(np.clip(out + 0.5, 0, 255), dtype=np.uint8)


def hex_colour(rgb: Sequence[int]) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb[:3])


def parse_hex(colour: str) -> RGB:
    c = colour.lstrip("#")
    return (int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16))


__all__ = ["ColourBar", "Legend", "Outline", "blend", "compose", "enlarge", "fmt_value", "font",
           "nice_ticks"]
