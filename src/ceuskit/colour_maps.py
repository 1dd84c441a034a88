"""Colour-map inversion: tinted contrast panels back to display values.

Scanners often export the contrast panel through a colour map (a "hot" or
"gold" tint) beside a grey B-mode panel.  The display value ``v`` (0..255)
of a tinted pixel is recovered (`display_values`):

* for a map whose luma rises strictly with the value (every library tint),
  from the pixel's luma -- for videos the decoded luma plane, which the
  codec keeps at full resolution while it halves the colour (4:2:0);
* otherwise from its colour: the nearest point on the map's colour curve
  (the polyline through the 256 entries in RGB space), read off as a
  fractional index.

Either way the pixel's *residual* (`block_residual`, RGB units) is the
distance between its colour and the map's colour at that value, both
averaged over the `RESIDUAL_BLOCK_PX` px around it: ~0 for lossless
exports, a few units for H.264, large for colours the map does not contain
(a colour Doppler overlay, a second map, annotations).

Which map (`resolve_colour_map`):

1. ``--colour-map FILE``: a user table, 256 rows of R, G, B (``.npy``, or
   text/CSV, values 0..255 or 0..1), entry ``i`` the colour of display value
   ``i``.
2. ``--colour-map NAME``: a tint of the library (`TINTS`).
3. ``auto`` (the default): the first frame is searched for a colour bar
   (`find_colour_bar`); the colours of the bar and of the panel (sampled over
   the cine) are compared with every library tint (`match_tint`).  A library
   tint that fits them (median residual <= `FIT_RGB`) is used;
   otherwise the bar itself becomes the map, its darkest end display value 0
   and its brightest 255, linear along the bar; without a bar or a fitting
   tint the panel is refused, naming the fix.

A map must be unambiguous: colours far apart along the curve (more than
`AMBIGUOUS_INDEX_GAP` entries) must not come closer than `AMBIGUOUS_RGB`, or
one colour would stand for two display values; such maps are refused.

Grey pixels (chroma <= `GREY_CHROMA`) that are not on the map keep their
luma (grey overlays and text); coloured pixels off the map (residual above
`OFF_MAP_RGB`) are counted, and a panel where more than
`MAX_OFF_MAP_SHARE` of the coloured pixel-frames are off the map is refused
(a colour Doppler overlay, or a second map).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from ceuskit.cine import RGBFrames
from ceuskit.errors import InputError
from ceuskit.io.frames import LUMA_WEIGHTS, chroma

FloatArray = NDArray[np.float64]

#: Library tints: piecewise-linear anchors (display value, (R, G, B)).  Their
#: shapes follow the tints scanners and viewers use (black through red and
#: yellow to white; black through brown to gold; sepia; black through blue to white); they are
#: this module's own definitions, not any vendor's table.
TINTS: dict[str, tuple[tuple[int, tuple[int, int, int]], ...]] = {
    "hot": ((0, (0, 0, 0)), (96, (255, 0, 0)), (192, (255, 255, 0)), (255, (255, 255, 255))),
    "gold": ((0, (0, 0, 0)), (96, (128, 72, 8)), (192, (232, 176, 48)), (255, (255, 244, 176))),
    "sepia": ((0, (0, 0, 0)), (128, (150, 112, 72)), (255, (255, 236, 200))),
    "ice": ((0, (0, 0, 0)), (112, (24, 64, 200)), (200, (96, 200, 240)), (255, (235, 250, 255))),
}
#: Largest median residual (RGB units, `block_residual`) at which a panel's
#: colours fit a tint (a lossless export fits with ~0, an H.264 export of
#: the saturated "hot" tint with ~6; wrong tints are >= 40 away).
FIT_RGB = 12.0
#: A coloured pixel farther than this from the map (RGB units,
#: `block_residual`) is "off the map" (H.264's 99th percentile on "hot": ~19).
OFF_MAP_RGB = 40.0
#: Residuals compare block means of this many px per side: video codecs keep
#: colour at half resolution, so single pixels' colours are blurred.
RESIDUAL_BLOCK_PX = 4
#: Frames sampled over the cine (evenly spaced) to recognise a tint.
N_SAMPLE_FRAMES = 16
#: Pixels with chroma (max - min over R, G, B) at most this are grey.
GREY_CHROMA = 12.0
#: Largest share of coloured pixel-frames of the panel that may be off the map.
MAX_OFF_MAP_SHARE = 0.01
#: Ambiguity test of a map: entries more than this many apart ...
AMBIGUOUS_INDEX_GAP = 8
#: ... must stay at least this far apart (RGB units).
AMBIGUOUS_RGB = 6.0
#: Colour bar search: least length (px) and share of the frame's height,
#: widths (px), horizontal uniformity (RGB units) and least luma span.
BAR_MIN_LENGTH_PX = 48
BAR_WIDTH_PX = (3, 60)
BAR_UNIFORM_RGB = 6.0
BAR_MIN_LUMA_SPAN = 96.0




@dataclass(frozen=True, eq=False)
class ColourMap:
    """A colour map: the colour of every display value.

    Attributes
    ----------
    name : str
        Library name, file name, or ``"colour bar"``.
    table : float64 array, shape (256, 3)
        RGB (0..255) of display value ``i`` in row ``i``.
    source : str
        ``"library"``, ``"file"`` or ``"colour bar"``.
    """

    name: str
    table: FloatArray
    source: str

    def __post_init__(self) -> None:
        t = np.asarray(self.table, dtype=np.float64)
        if t.shape != (256, 3) or not np.all(np.isfinite(t)):
            raise ValueError("a colour map is a (256, 3) table of finite RGB values")
        t.flags.writeable = False
        object.__setattr__(self, "table", t)

    def apply(self, values: NDArray[Any]) -> NDArray[np.uint8]:
        """RGB uint8 of display values (any shape; rounded, clipped to 0..255)."""
        idx = np.clip(np.rint(np.asarray(values, dtype=np.float64)), 0, 255).astype(np.intp)
        return np.asarray(np.rint(self.table), dtype=np.uint8)[idx]


def tint(name: str) -> ColourMap:
    """The library tint `name` (see `TINTS`) as a 256-entry map."""
    if name not in TINTS:
        raise ValueError(f"unknown tint {name!r}; the library has {', '.join(sorted(TINTS))}")
    anchors = TINTS[name]
    x = np.array([a[0] for a in anchors], dtype=np.float64)
    rgb = np.array([a[1] for a in anchors], dtype=np.float64)
    i = np.arange(256, dtype=np.float64)
    table = np.column_stack([np.interp(i, x, rgb[:, k]) for k in range(3)])
    # Entries are what an 8-bit display shows.
    return ColourMap(name, np.rint(table), "library")


def load_colour_map(path: str | PathLike[str]) -> ColourMap:
    """Read a user colour map: 256 rows of R, G, B.

    ``.npy`` files hold a (256, 3) array; any other file is text (commas,
    semicolons, tabs or spaces between the three numbers; ``#`` comments).
    Values 0..255, or 0..1 for a table whose largest value is at most 1.

    Raises
    ------
    InputError
        Unreadable file, wrong shape, values outside 0..255, or an ambiguous map.
    """
    p = Path(path)
    fix = "give a table of 256 rows of R, G, B (0..255), row i the colour of display value i"
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            text = p.read_text(encoding="utf-8", errors="replace")
            rows = []
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                parts = line.replace(",", " ").replace(";", " ").split()
                rows.append([float(v) for v in parts])
            arr = np.array(rows, dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise InputError(p, f"cannot be read as a colour map ({exc})", fix) from None
    arr = np.asarray(arr, dtype=np.float64)
    if arr.shape != (256, 3):
        raise InputError(p, f"holds a {'x'.join(map(str, arr.shape))} table, not 256 x 3", fix)
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 255:
        raise InputError(p, "has values outside 0..255", fix)
    if arr.max() <= 1.0:
        arr = arr * 255.0
    cmap = ColourMap(p.name, arr, "file")
    problem = ambiguity(cmap)
    if problem:
        raise InputError(p, f"is ambiguous: {problem}", "a colour map must not repeat a colour "
                         "for two different display values")
    return cmap


def ambiguity(cmap: ColourMap) -> str | None:
    """Why `cmap` cannot be inverted (a colour that stands for two values), or None."""
    t = cmap.table
    d = np.sqrt(((t[:, None, :] - t[None, :, :]) ** 2).sum(axis=-1))
    i, j = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    far = np.abs(i - j) > AMBIGUOUS_INDEX_GAP
    if not np.any(far & (d < AMBIGUOUS_RGB)):
        return None
    a, b = np.argwhere(far & (d < AMBIGUOUS_RGB))[0]
    return (f"display values {int(a)} and {int(b)} have nearly the same colour "
            f"({d[a, b]:.1f} RGB units apart)")


class Inverter:
    """Display values of coloured pixels under one map, by a cached look-up.

    Every distinct 24-bit colour is projected onto the map's polyline once
    and cached (display value as a 1/256 fixed point, residual clipped to
    255): long cines repeat a few thousand colours millions of times.
    """

    def __init__(self, cmap: ColourMap) -> None:
        self.cmap = cmap
        t = cmap.table
        self._p = t[:-1]
        self._d = np.diff(t, axis=0)
        self._dd = np.maximum((self._d ** 2).sum(axis=1), 1e-12)
        self._value: NDArray[np.uint16] | None = None  # the 24-bit cache, made on first call
        self._resid = np.zeros(0, dtype=np.uint8)
        self._known = np.zeros(0, dtype=bool)

    def project(self, colours: NDArray[Any]) -> tuple[FloatArray, FloatArray]:
        """Display value (fractional index) and residual (RGB units) of colours (n, 3)."""
        c = np.asarray(colours, dtype=np.float64).reshape(-1, 3)
        value = np.empty(c.shape[0])
        resid = np.empty(c.shape[0])
        for s in range(0, c.shape[0], 2048):
            x = c[s:s + 2048, None, :] - self._p[None, :, :]
            t = np.clip((x * self._d[None]).sum(axis=-1) / self._dd[None], 0.0, 1.0)
            r2 = ((x - t[..., None] * self._d[None]) ** 2).sum(axis=-1)
            k = np.argmin(r2, axis=1)
            rows = np.arange(k.size)
            value[s:s + 2048] = k + t[rows, k]
            resid[s:s + 2048] = np.sqrt(r2[rows, k])
        return value, resid

    def __call__(self, rgb: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Display values and residuals (RGB units, clipped to 255) of RGB pixels (..., 3)."""
        if self._value is None:
            self._value = np.zeros(2**24, dtype=np.uint16)
            self._resid = np.zeros(2**24, dtype=np.uint8)
            self._known = np.zeros(2**24, dtype=bool)
        a = np.asarray(rgb, dtype=np.uint8)
        code = ((a[..., 0].astype(np.uint32) << 16) | (a[..., 1].astype(np.uint32) << 8)
                | a[..., 2])
        new = np.unique(code[~self._known[code]])
        if new.size:
            cols = np.column_stack([(new >> 16) & 255, (new >> 8) & 255, new & 255])
            v, r = self.project(cols)
            self._value[new] = np.rint(v * 256.0).astype(np.uint16)
            self._resid[new] = np.clip(np.rint(r), 0, 255).astype(np.uint8)
            self._known[new] = True
        values = self._value[code].astype(np.float32) * np.float32(1.0 / 256.0)
        return values, self._resid[code].astype(np.float32)


@dataclass(frozen=True)
class ColourBar:
    """A colour bar found in a frame: where it is and the map it draws."""

    x0: int
    x1: int
    y0: int
    y1: int
    cmap: ColourMap

    def as_dict(self) -> dict[str, Any]:
        return {"xyxy_px": [self.x0, self.y0, self.x1, self.y1]}


def _luma(rgb: NDArray[Any]) -> NDArray[np.float64]:
    return np.asarray(rgb, dtype=np.float64) @ LUMA_WEIGHTS


def find_colour_bar(frame: NDArray[np.uint8]) -> ColourBar | None:
    """A vertical colour bar in an RGB frame (H, W, 3), or None.

    A bar is a strip `BAR_WIDTH_PX` wide, at least `BAR_MIN_LENGTH_PX` long,
    whose columns agree row by row (`BAR_UNIFORM_RGB`), which differs from
    the pixels beside it, holds colour, and whose luma runs monotonically over
    at least `BAR_MIN_LUMA_SPAN` display levels.  Its colours from the dark end
    to the bright end, resampled linearly along its length, become the map.
    """
    f = np.asarray(frame, dtype=np.int16)
    h, w = f.shape[:2]
    if h < BAR_MIN_LENGTH_PX or w < BAR_WIDTH_PX[0] + 2:
        return None
    # Pixels equal (within the tolerance) to their right neighbour.
    same = np.abs(f[:, 1:] - f[:, :-1]).max(axis=-1) <= BAR_UNIFORM_RGB
    colourful = chroma(f) > 30.0
    best: ColourBar | None = None
    best_len = 0
    # Columns with a long coloured run are candidate bar columns.
    cand = np.flatnonzero(colourful.sum(axis=0) >= BAR_MIN_LENGTH_PX // 2)
    if cand.size == 0:
        return None
    groups = np.split(cand, np.flatnonzero(np.diff(cand) > 1) + 1)
    strips = []
    for g in groups:
        # A video codec blurs the bar's edge columns into the background:
        # try the group without one or two columns on each side as well.
        for trim in (0, 1, 2):
            x0, x1 = int(g[0]) + trim, int(g[-1]) + 1 - trim
            if BAR_WIDTH_PX[0] <= x1 - x0 <= BAR_WIDTH_PX[1]:
                strips.append((x0, x1))
    for x0, x1 in strips:
        # Within a group of coloured columns, the bar is where rows agree.
        uniform = same[:, x0:x1 - 1].all(axis=1)
        left = np.abs(f[:, x0] - f[:, x0 - 1]).max(axis=-1) > BAR_UNIFORM_RGB if x0 > 0 \
            else np.ones(h, bool)
        right = (np.abs(f[:, x1 - 1] - f[:, x1]).max(axis=-1) > BAR_UNIFORM_RGB if x1 < w
                 else np.ones(h, bool))
        rows = uniform & (left | right)
        runs = _runs(rows)
        for y0, y1 in runs:
            if y1 - y0 < BAR_MIN_LENGTH_PX or y1 - y0 <= best_len:
                continue
            prof = f[y0:y1, (x0 + x1) // 2].astype(np.float64)
            luma = _luma(prof)
            if float(luma.max() - luma.min()) < BAR_MIN_LUMA_SPAN:
                continue
            step = np.diff(luma)
            rising = float(np.sum(np.clip(step, 0, None)))
            falling = float(np.sum(np.clip(-step, 0, None)))
            if min(rising, falling) > 0.05 * max(rising, falling):
                continue  # not monotone: not a bar
            if falling > rising:
                prof = prof[::-1]  # dark end first (bars are usually bright at the top)
            pos = np.linspace(0.0, prof.shape[0] - 1.0, 256)
            table = np.column_stack([np.interp(pos, np.arange(prof.shape[0]), prof[:, k])
                                     for k in range(3)])
            best = ColourBar(x0, x1, y0, y1, ColourMap("colour bar", table, "colour bar"))
            best_len = y1 - y0
    return best


def _runs(mask: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """(start, stop) of the runs of True in a 1-D mask."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(np.diff(m.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def map_luma(cmap: ColourMap) -> FloatArray:
    """BT.601 luma of each entry of the map (256,)."""
    return np.asarray(cmap.table @ LUMA_WEIGHTS)


def luma_monotonic(cmap: ColourMap) -> bool:
    """Whether the map's luma rises strictly from entry to entry (invertible from luma alone)."""
    return _tables(cmap).monotonic


#: Sub-steps per display level of the look-up tables below (1/64 level:
#: interpolation error <= ~0.04 level next to the map's breakpoints).
_FINE = 64


class _Tables:
    """Per-map look-up tables on a fine uniform grid (fast per-pixel arithmetic)."""

    def __init__(self, cmap: ColourMap) -> None:
        grid = np.arange(255 * _FINE + 1, dtype=np.float64) / _FINE
        lum = map_luma(cmap)
        self.monotonic = bool(np.all(np.diff(lum) > 0))
        # Display value at luma = grid (luma inverse), and colour at value = grid.
        self.value_at_luma = np.interp(grid, lum, np.arange(256.0)).astype(np.float32)
        self.colour_at_value = [np.interp(grid, np.arange(256.0), cmap.table[:, k])
                                .astype(np.float32) for k in range(3)]
        # The map's colour at the value each luma stands for (monotonic maps).
        v = self.value_at_luma.astype(np.float64)
        self.colour_at_luma = [np.interp(v, np.arange(256.0), cmap.table[:, k])
                               .astype(np.float32) for k in range(3)]


def _tables(cmap: ColourMap) -> _Tables:
    """The map's look-up tables, made on first use and kept with the (immutable) map."""
    tab = cmap.__dict__.get("_lookup")
    if tab is None:
        tab = _Tables(cmap)
        object.__setattr__(cmap, "_lookup", tab)
    return tab


def _fine_lookup(tables: list[NDArray[np.float32]], x: NDArray[Any]) -> list[NDArray[np.float32]]:
    """Linear interpolation of `_FINE` grid tables (1-D, same grid) at x (0..255)."""
    n = tables[0].shape[0]
    pos = np.clip(np.asarray(x, dtype=np.float32) * np.float32(_FINE), 0, n - 1.001)
    k = pos.astype(np.intp)
    f = pos - k
    k1 = k + 1
    out = []
    for t in tables:
        lo = np.take(t, k)
        out.append(lo + (np.take(t, k1) - lo) * f)
    return out


def values_and_colours(cmap: ColourMap, luma: NDArray[Any], rgb: NDArray[np.uint8],
                       inverter: Inverter | None = None
                       ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """`display_values` of the pixels and the map's colour (..., 3) at those values."""
    tab = _tables(cmap)
    if tab.monotonic:
        v, r, g, b = _fine_lookup([tab.value_at_luma, *tab.colour_at_luma], luma)
    else:
        v = display_values(cmap, luma, rgb, inverter)
        r, g, b = _fine_lookup(tab.colour_at_value, v)
    return v, np.stack([r, g, b], axis=-1)


def display_values(cmap: ColourMap, luma: NDArray[Any], rgb: NDArray[np.uint8],
                   inverter: Inverter | None = None) -> NDArray[np.float32]:
    """Display values of pixels under `cmap` (see the module notes).

    For a map whose luma rises strictly, the value is read off the pixel's
    luma (the decoded luma plane of a video: exact where chroma was
    subsampled or clipped); otherwise from its colour (nearest point on the
    map's curve).
    """
    tab = _tables(cmap)
    if tab.monotonic:
        return _fine_lookup([tab.value_at_luma], luma)[0]
    inv = inverter if inverter is not None else Inverter(cmap)
    return inv(rgb)[0]


def colour_of(cmap: ColourMap, values: NDArray[Any]) -> NDArray[np.float32]:
    """The map's colour (..., 3) at fractional display values."""
    return np.stack(_fine_lookup(_tables(cmap).colour_at_value, values), axis=-1)


def block_residual(rgb: NDArray[Any], predicted: NDArray[Any],
                   block: int = RESIDUAL_BLOCK_PX) -> NDArray[np.float32]:
    """Distance (RGB units) between observed and predicted colours, both
    averaged over the block x block px around each pixel.

    Video codecs keep colour at half resolution, so single pixels' colours
    are blurred; local means compare what the codec kept.
    """
    d = np.asarray(rgb, dtype=np.float32) - np.asarray(predicted, dtype=np.float32)
    m = cv2.blur(d, (block, block), borderType=cv2.BORDER_REFLECT)
    return np.asarray(cv2.magnitude(cv2.magnitude(m[..., 0], m[..., 1]), m[..., 2]))


@dataclass(frozen=True)
class TintMatch:
    """How well sampled frames fit each library tint."""

    best: ColourMap | None
    median_rgb: dict[str, float]
    reason: str


def match_tint(samples: list[tuple[NDArray[Any], NDArray[np.uint8]]],
               bar: ColourBar | None = None, *,
               candidates: Iterable[ColourMap] | None = None) -> TintMatch:
    """The library tint that sampled panel frames (luma, RGB) are shown through, if any.

    A tint fits when the median `block_residual` over the coloured pixels is
    at most `FIT_RGB` and, with a colour bar, the bar's colours lie on it
    (95th percentile within `FIT_RGB`).  Of several that fit, the closest is
    taken when they read the frames alike (median difference <= 1 level);
    otherwise none (ambiguous).
    """
    maps = list(candidates) if candidates is not None else [tint(n) for n in TINTS]
    coloured = [(chroma(rgb) > GREY_CHROMA) for _, rgb in samples]
    if not samples or not any(np.any(c) for c in coloured):
        return TintMatch(None, {}, "no coloured pixels to match")
    fits: list[tuple[float, ColourMap, FloatArray]] = []
    med: dict[str, float] = {}
    for cmap in maps:
        res, vals = [], []
        for (luma, rgb), col in zip(samples, coloured, strict=True):
            v, pred = values_and_colours(cmap, luma, rgb)
            res.append(block_residual(rgb, pred)[col])
            vals.append(v[col])
        med[cmap.name] = float(np.median(np.concatenate(res)))
        bar_ok = True
        if bar is not None:
            bar_ok = float(np.percentile(Inverter(cmap).project(bar.cmap.table)[1], 95)) <= FIT_RGB
        if med[cmap.name] <= FIT_RGB and bar_ok:
            fits.append((med[cmap.name], cmap, np.concatenate(vals)))
    if not fits:
        near = min(med, key=lambda k: med[k])
        return TintMatch(None, med, f"the colours fit no library tint (closest: {near}, median "
                         f"{med[near]:.0f} RGB units from it, {FIT_RGB:g} needed"
                         + (", and the colour bar's colours" if bar is not None else "") + ")")
    fits.sort(key=lambda f: f[0])
    for _, other, value in fits[1:]:
        if float(np.median(np.abs(value - fits[0][2]))) > 1.0:
            return TintMatch(None, med, f"the colours fit several library tints that read them "
                             f"differently ({fits[0][1].name}, {other.name})")
    return TintMatch(fits[0][1], med, f"fits the library tint {fits[0][1].name!r}")


def resolve_colour_map(spec: str, rgb_frames: RGBFrames, luma: NDArray[Any],
                       slices: tuple[slice, slice], source: str
                       ) -> tuple[ColourMap, dict[str, Any]]:
    """The colour map of a tinted panel: a file, a library name or ``auto``.

    Parameters
    ----------
    spec : str
        ``"auto"``, a name from `TINTS`, or a path to a table (`load_colour_map`).
    rgb_frames : RGBFrames
        The cine's colour frames (read once more for ``auto``).
    luma : array, shape (T, H, W)
        The cine's grey frames (luma).
    slices : (rows, cols) slices
        The contrast panel.
    source : str
        The cine's name, for errors.

    Returns
    -------
    (ColourMap, how it was found: a dict for results.json)

    Raises
    ------
    InputError
        A bad file or name, or ``auto`` finding no unambiguous map.
    """
    if spec in TINTS:
        return tint(spec), {"method": "named", "name": spec}
    if spec != "auto":
        p = Path(spec)
        if not p.is_file():
            raise InputError(spec, f"is neither a colour-map file nor a library tint "
                             f"({', '.join(sorted(TINTS))}) nor 'auto'",
                             "pass --colour-map auto, a library tint, or a 256 x 3 table file")
        return load_colour_map(p), {"method": "file", "name": p.name}
    n = int(luma.shape[0])
    picks = set(np.unique(np.linspace(0, n - 1, min(N_SAMPLE_FRAMES, n)).astype(int)).tolist())
    bar: ColourBar | None = None
    samples: list[tuple[NDArray[Any], NDArray[np.uint8]]] = []
    for i, fr in rgb_frames(frozenset(picks | {0})):
        if i == 0:
            bar = find_colour_bar(fr)
        if i in picks:
            samples.append((np.asarray(luma[i][slices], dtype=np.float32),
                            np.ascontiguousarray(fr[slices])))
    match = match_tint(samples, bar)
    how: dict[str, Any] = {"method": "auto", "colour_bar": bar.as_dict() if bar else None,
                           "tint_fit_median_rgb": {k: round(v, 2) for k, v in match.median_rgb.items()}}
    if match.best is not None:
        how["name"] = match.best.name
        how["found_by"] = ("library tint matched to the colour bar and the panel's colours"
                           if bar else "library tint matched to the panel's colours")
        return match.best, how
    if bar is not None:
        problem = ambiguity(bar.cmap)
        if problem is None:
            how["name"] = "colour bar"
            how["found_by"] = (f"read from the colour bar ({match.reason}); display values "
                               "assumed linear along the bar, from its dark to its bright end")
            return bar.cmap, how
        raise InputError(source, f"has a colour bar whose map is ambiguous ({problem})",
                         "pass the scanner's map with --colour-map FILE (256 x 3)")
    raise InputError(source, f"has a contrast panel in colour with no colour bar, and "
                     f"{match.reason}: a colour Doppler image, or a map the library does not know",
                     "pass the scanner's map with --colour-map FILE (256 rows of R, G, B) or "
                     f"a library tint ({', '.join(sorted(TINTS))})")


@dataclass(frozen=True, eq=False)
class Inversion:
    """A tinted panel turned back into display values.

    Attributes
    ----------
    values : float32 array, shape (T, h, w)
        Display values of the panel (0..255).
    residual_max_rgb : float32 array, shape (h, w)
        Largest residual (`block_residual`) of each pixel over the cine (RGB
        units; 0 where the pixel was grey and kept its luma).
    off_map_share : float
        Share of coloured pixel-frames off the map (residual > `OFF_MAP_RGB`).
    grey_share : float
        Share of pixel-frames that are grey and off the map (kept as luma).
    residual_p99_rgb : float
        99th percentile of the residual over the pixel-frames on the map or coloured.
    """

    values: NDArray[np.float32]
    residual_max_rgb: NDArray[np.float32]
    off_map_share: float
    grey_share: float
    residual_p99_rgb: float


def invert_panel(cmap: ColourMap, rgb_frames: RGBFrames, luma: NDArray[Any],
                 slices: tuple[slice, slice]) -> Inversion:
    """Display values of a tinted panel under `cmap`, frame by frame.

    Pixels on the map get their display value (`display_values`); grey
    pixels off the map keep their luma; coloured pixels off the map keep their
    luma too and are counted in `Inversion.off_map_share`.
    """
    inverter = None if luma_monotonic(cmap) else Inverter(cmap)
    n = int(luma.shape[0])
    out: NDArray[np.float32] | None = None
    rmax: NDArray[np.float32] | None = None
    coloured = off = grey = total = 0
    hist = np.zeros(256, dtype=np.int64)
    seen = np.zeros(n, dtype=bool)
    for i, fr in rgb_frames(None):
        a = np.asarray(fr[slices], dtype=np.uint8)
        lum = np.asarray(luma[i][slices], dtype=np.float32)
        if out is None:
            out = np.empty((n, *a.shape[:2]), dtype=np.float32)
            rmax = np.zeros(a.shape[:2], dtype=np.float32)
        assert rmax is not None
        v, pred = values_and_colours(cmap, lum, a, inverter)
        r = block_residual(a, pred)
        is_grey = chroma(a) <= GREY_CHROMA
        on = r <= OFF_MAP_RGB
        keep = ~on
        v[keep] = lum[keep]
        colour_px = ~is_grey
        coloured += int(colour_px.sum())
        off += int((colour_px & ~on).sum())
        grey += int((is_grey & ~on).sum())
        total += int(a.shape[0] * a.shape[1])
        np.maximum(rmax, np.where(is_grey & ~on, 0.0, r).astype(np.float32), out=rmax)
        hist += np.bincount(np.clip(r[on | colour_px], 0, 255).astype(np.int64), minlength=256)
        out[i] = v
        seen[i] = True
    if out is None or rmax is None or not seen.all():
        raise ValueError("the colour frames do not cover the cine")
    cum = np.cumsum(hist)
    p99 = float(np.searchsorted(cum, 0.99 * cum[-1])) if cum[-1] else 0.0
    return Inversion(out, rmax, off / coloured if coloured else 0.0, grey / max(total, 1), p99)


__all__ = [
    "AMBIGUOUS_RGB",
    "FIT_RGB",
    "GREY_CHROMA",
    "MAX_OFF_MAP_SHARE",
    "OFF_MAP_RGB",
    "TINTS",
    "ColourBar",
    "ColourMap",
    "Inversion",
    "Inverter",
    "RGBFrames",
    "TintMatch",
    "ambiguity",
    "block_residual",
    "colour_of",
    "display_values",
    "find_colour_bar",
    "invert_panel",
    "load_colour_map",
    "luma_monotonic",
    "map_luma",
    "match_tint",
    "resolve_colour_map",
    "tint",
    "values_and_colours",
]
