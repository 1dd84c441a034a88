"""Display dynamic range estimated from the cine's own speckle statistics.

A log-compressed display maps echo power ``I`` to ``D = Dmax (1 + 10
log10(I / I0) / DR)``: a display spread of ``s`` grey levels is ``s DR /
Dmax`` dB.  Fully developed speckle averaged over ``L`` independent looks
has gamma-distributed intensity (shape ``L``), whose log has a spread of
``10 / ln 10 * sqrt(trigamma(L))`` dB (5.57 dB for a single look) and whose
linear contrast (spread / mean) is ``1 / sqrt(L)``.  Assuming one look
(the textbook 5.57 dB) reads a display with persistence, spatial smoothing
or several summed scatterer populations as having a much larger dynamic
range.  Both moments are therefore used: for a trial DR each block is
linearised, its contrast gives its effective number of looks, and the DR is
where the display spread equals the log spread those looks predict.  With
no speckle (flat or smooth regions) the two agree only at DR -> 0, and no
crossing inside `GRID_DB` is found: the estimate is refused with the reason.

``ceuskit analyze --dynamic-range auto`` uses it
(`ceuskit.pipeline.resolve_dynamic_range`); its validation is
``benchmarks/dr_accuracy.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

#: Side (px) of the square blocks whose statistics are measured.
BLOCK_PX = 8
#: Blocks are taken from this many brightest frames (the contrast at its peak).
N_BRIGHT_FRAMES = 8
#: Blocks darker than this share of full brightness (mean) are left out: the
#: receiver noise floor and the display's black level are not speckle.
MIN_BLOCK_MEAN_SHARE = 60.0 / 255.0
#: At most this many blocks are used (evenly spaced), to bound the cost.
MAX_BLOCKS = 4000
#: Fewer usable blocks than this: no estimate.
MIN_BLOCKS = 200
#: Trial dynamic ranges (dB): start, stop, step.
GRID_DB = (20.0, 120.0, 1.0)
#: Estimates below this are refused: no contrast preset compresses into so
#: narrow a range, and a display smoothed after compression reads this low
#: (the simulator's display blurred by a 0.7 px Gaussian reads 21-26 dB at
#: 40-80 dB; benchmarks/dr_accuracy.py).
MIN_PLAUSIBLE_DB = 30.0
#: Independent groups of blocks for the statistical interval.
N_GROUPS = 10
#: Largest error found over 40-80 dB on gamma speckle of 1-5 looks (4.0 dB),
#: on the simulator's contrast panel (4.6 dB, 1 fps, seeds 0-7) and in whole
#: analyses of the simulator (6.8 dB, 2 fps, seeds 0-7: the brightest frames
#: lie closer together; benchmarks/dr_accuracy.py --ratios 8), with a little
#: room, added in quadrature to the statistical interval: the model's own error.
MODEL_MARGIN_DB = 7.0

_DB_PER_NEPER = 10.0 / math.log(10.0)

#: Persistence check (`frame_persistence`): consecutive frames per segment,
#: at most this many segments spread over the cine, square regions of this
#: side (px), and the fewest regions that make a check.
PERSISTENCE_SEGMENT_FRAMES = 25
PERSISTENCE_MAX_SEGMENTS = 12
PERSISTENCE_REGION_PX = 32
PERSISTENCE_MIN_REGIONS = 40
#: The regions' low quantile that bounds the frame-averaging weight from below
#: (motion and slowly decorrelating speckle correlate some regions' frame
#: differences; display persistence correlates all of them).
PERSISTENCE_QUANTILE = 0.05
#: A lower bound at or above this refuses the speckle estimate.  Unprocessed
#: simulator cines bound at -0.03 to 0.01 before clipping at 0 (motion up to
#: 8 px, drift, blooming, 1-15 frames/s, seeds 0-1); a persistence of 0.1,
#: which already reads 4-8 dB high, at 0.049-0.081 (benchmarks/dr_accuracy.py
#: --persistence 2).
PERSISTENCE_LIMIT = 0.03


@dataclass(frozen=True)
class PersistenceCheck:
    """Result of `frame_persistence`: is the display averaged over frames?

    Attributes
    ----------
    weight_lower : float or None
        Lower bound (0-1) of the frame-averaging weight ``p`` of a display
        shown as ``p`` x the previous shown frame + ``1 - p`` x the new one;
        None when too few regions could be measured.
    weight_typical : float or None
        The same from the regions' median (raised by motion and slowly
        decorrelating speckle, so only indicative).
    n_regions : int
        Region x segment measurements used.
    detected : bool
        ``weight_lower >= PERSISTENCE_LIMIT``.
    method : str
        How it was measured, or why it was not.
    """

    weight_lower: float | None
    weight_typical: float | None
    n_regions: int
    detected: bool
    method: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record (results.json ``...persistence``)."""
        return {"weight_lower": self.weight_lower, "weight_typical": self.weight_typical,
                "n_regions": self.n_regions, "detected": self.detected, "method": self.method}


def frame_persistence(frames: ArrayLike, *, display_max: float = 255.0) -> PersistenceCheck:
    """Look for display persistence (frame averaging after log compression).

    Receiver noise and freshly replaced bubble speckle change independently
    from frame to frame, so the differences of consecutive frames ``d_t =
    y_t - y_(t-1)`` have a lag-1 correlation of -1/2 (whatever stays still,
    tissue speckle included, cancels in the differences).  A display shown as
    ``y_t = p y_(t-1) + (1 - p) x_t`` turns that into ``-(1 - p) / 2``.  The
    correlation is measured in `PERSISTENCE_REGION_PX` regions over
    `PERSISTENCE_SEGMENT_FRAMES`-frame segments (pixels clipped at 0 or full
    scale left out, a frame identical to the one before dropped as a
    repeated frame of a video export, and each difference taken less its
    mean over the region, so that the perfusion level's own rise, gain steps
    and flicker do not count as averaging); motion and slowly decorrelating
    speckle raise it in some regions only, display persistence in all, so a
    low quantile (`PERSISTENCE_QUANTILE`) of the regions bounds ``p`` from
    below.

    Parameters
    ----------
    frames : array, shape (T, h, w)
        Display values of the contrast panel, the whole loop.
    display_max : float
        Full-brightness display value.

    Returns
    -------
    PersistenceCheck
    """
    stack = np.asarray(frames)
    if stack.ndim != 3:
        raise ValueError(f"need frames of shape (T, h, w), got {stack.shape}")
    t, h, w = stack.shape
    r = PERSISTENCE_REGION_PX
    hr, wr = h // r, w // r
    seg = PERSISTENCE_SEGMENT_FRAMES
    if hr == 0 or wr == 0 or t < 4:
        return PersistenceCheck(None, None, 0, False, (
            f"not checked: the panel is smaller than one {r} x {r} px region or has fewer than "
            "4 frames"))
    from ceuskit._lut import difference_correlation_sums

    n_seg = max(1, min(PERSISTENCE_MAX_SEGMENTS, t // seg))
    starts = np.unique(np.linspace(0, max(t - seg, 0), n_seg).astype(int))
    # One compiled signature per element type: 8-bit cines as they are, the rest (decoloured
    # panels are float32 already) as float32, which holds display values exactly.
    pixels = stack if stack.dtype in (np.uint8, np.float32) else stack.astype(np.float32)
    rho: list[FloatArray] = []
    sums = np.zeros((hr * wr, 4))
    for s0 in starts:
        kept = [int(s0)]
        for f in range(int(s0) + 1, min(int(s0) + seg, t)):
            if not np.array_equal(stack[f], stack[kept[-1]]):
                kept.append(f)
        if len(kept) < 3:
            continue
        difference_correlation_sums(pixels, np.array(kept, dtype=np.int64), r,
                                    float(display_max), sums)
        with np.errstate(invalid="ignore", divide="ignore"):
            c = sums[:, 0] / np.sqrt(sums[:, 1] * sums[:, 2])
        use = ((sums[:, 3] >= 0.5 * (len(kept) - 2) * r * r) & (sums[:, 1] > 0) & (sums[:, 2] > 0)
               & np.isfinite(c))
        rho.append(c[use])
    values = np.concatenate(rho) if rho else np.zeros(0)
    if values.size < PERSISTENCE_MIN_REGIONS:
        return PersistenceCheck(None, None, int(values.size), False, (
            f"not checked: {values.size} regions of {r} x {r} px with unclipped, changing frames, "
            f"fewer than {PERSISTENCE_MIN_REGIONS}"))
    low = float(np.clip(1.0 + 2.0 * np.quantile(values, PERSISTENCE_QUANTILE), 0.0, 1.0))
    typical = float(np.clip(1.0 + 2.0 * np.median(values), 0.0, 1.0))
    detected = low >= PERSISTENCE_LIMIT
    return PersistenceCheck(round(low, 3), round(typical, 3), int(values.size), detected, (
        f"lag-1 correlation of consecutive frame differences in {values.size} regions of "
        f"{r} x {r} px ({starts.size} segments of up to {seg} frames): -0.5 for a display "
        f"without frame averaging; its {PERSISTENCE_QUANTILE:.0%} quantile bounds the "
        f"averaging weight at {low:.2f} or more (limit {PERSISTENCE_LIMIT:g}), which decides; "
        f"the median's {typical:.2f} is raised by motion and slowly changing speckle too"))


@dataclass(frozen=True)
class DynamicRangeEstimate:
    """Result of `estimate_dynamic_range`.

    Attributes
    ----------
    dynamic_range_db : float or None
        Estimated display dynamic range (dB); None when refused.
    ci_db : (float, float) or None
        95 % interval (dB): the spread between independent groups of blocks,
        widened by `MODEL_MARGIN_DB`.
    effective_looks : float or None
        Median effective number of looks of the blocks at the estimate.
    n_blocks : int
        Blocks used.
    method : str
        How the estimate was found, or why there is none.
    persistence : PersistenceCheck or None
        The display-persistence check made first (None: not made).
    resampling : ResamplingCheck or None
        The check for a display resampled after compression (None: not made).
    compression : CompressionCheck or None
        Lossy compression, from the file and the pixels (None: not looked).
        Where lossy, the interval's upper end is at least the presets' top
        (`PRESET_RANGE_DB`): compression only ever makes the speckle read
        low, by an amount the cine does not show.
    """

    dynamic_range_db: float | None
    ci_db: tuple[float, float] | None
    effective_looks: float | None
    n_blocks: int
    method: str
    persistence: PersistenceCheck | None = None
    resampling: ResamplingCheck | None = None
    compression: CompressionCheck | None = None

    @property
    def lossy(self) -> bool:
        """The cine was lossy-compressed (`compression`): the speckle reads low."""
        return self.compression is not None and self.compression.lossy

    @property
    def jpeg_grid(self) -> bool:
        """The resampling check's pattern is JPEG's 8 px block grid (the pixels show JPEG)."""
        return _jpeg_grid(self.resampling, self.compression)


def brightest_frames(stack: NDArray[Any]) -> NDArray[np.intp]:
    """Indices of the `N_BRIGHT_FRAMES` frames of (T, h, w) `stack` with the highest mean."""
    means = stack.reshape(stack.shape[0], -1).mean(axis=1, dtype=np.float64)
    return np.argsort(means, kind="stable")[-min(N_BRIGHT_FRAMES, stack.shape[0]):]


#: Resampling check (`display_resampling`): the smooth trend removed from the
#: line-by-line energy (running mean, px), the lowest frequency looked at
#: (cycles/px), and the fewest lines per axis.
RESAMPLING_TREND_PX = 15
RESAMPLING_MIN_FREQUENCY = 0.07
RESAMPLING_MIN_LINES = 32
#: Lines left out at each edge of the panel: a panel cut from a resized frame
#: blends into the black gap beside it there, and one such line's energy
#: would drown the pattern in broadband power.
RESAMPLING_EDGE_PX = 3
#: A periodic modulation of the energy at or above this (relative amplitude),
#: standing at least `RESAMPLING_MIN_PEAK_RATIO` times above the periodogram's
#: median, refuses the estimate.  Simulated contrast panels as rendered reach
#: 0.04 (seeds 0-7, 1-8 frames/s, motion, blooming, MP4), non-contrast ones at
#: 40 dB 0.12 with a peak below 100 x the median, gamma speckle 0.01; frames
#: resized by 1.1-2.5x after compression 0.13-0.83, averaging down-sampling
#: by 0.8x 0.15-0.17, JPEG (quality 85) 0.04-0.14 (benchmarks/dr_accuracy.py
#: --resampling).
RESAMPLING_LIMIT = 0.12
RESAMPLING_MIN_PEAK_RATIO = 100.0


@dataclass(frozen=True)
class ResamplingCheck:
    """Result of `display_resampling`: was the display interpolated after compression?

    Attributes
    ----------
    modulation : float or None
        Largest relative amplitude of a periodic pattern in the speckle's
        fine-scale energy, over both axes (None: not checked).
    period_px : float or None
        Its period (px).
    axis : str or None
        ``"rows"`` (the pattern repeats down the image) or ``"columns"``.
    detected : bool
    method : str
    """

    modulation: float | None
    period_px: float | None
    axis: str | None
    detected: bool
    method: str

    def on_block_grid(self, blocks_px: tuple[float, ...] = (4.0, 8.0, 16.0)) -> bool:
        """Whether the pattern repeats with a codec's block size (within 3 %)."""
        period = self.period_px or 0.0
        return any(abs(period - block) <= 0.03 * block for block in blocks_px)

    def cause(self) -> str:
        """What the pattern's period suggests, for messages."""
        if self.on_block_grid():
            return ("block-compressed (a JPEG or video codec's block grid) or resampled after "
                    "log compression")
        return "resampled after log compression (resized or scan-converted)"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record (results.json ``...resampling``)."""
        return {"modulation": self.modulation, "period_px": self.period_px, "axis": self.axis,
                "detected": self.detected, "method": self.method}


def _line_modulation(frames: NDArray[Any], axis: int, top: float
                     ) -> tuple[float, float, float] | None:
    """(relative amplitude, period px, peak / median power) of the strongest periodic
    pattern in the energy of second differences along `axis` (1: rows, 2: columns)."""
    f = frames.astype(np.float32)
    inside = (frames > 0) & (frames < top)
    lo, mid, hi = ([slice(None), slice(None), slice(None)] for _ in range(3))
    lo[axis], mid[axis], hi[axis] = slice(None, -2), slice(1, -1), slice(2, None)
    e = f[tuple(hi)] - 2.0 * f[tuple(mid)] + f[tuple(lo)]
    ok = inside[tuple(hi)] & inside[tuple(mid)] & inside[tuple(lo)]
    other = tuple(a for a in (0, 1, 2) if a != axis)
    count = ok.sum(axis=other).astype(np.float64)
    energy = np.where(ok, e * e, 0.0).sum(axis=other, dtype=np.float64)
    n = count.size
    if n < RESAMPLING_MIN_LINES or count.max() <= 0:
        return None
    # Lines with little unclipped speckle carry no pattern: held at the mean.
    used = count >= 0.25 * count.max()
    v = np.where(used, energy / np.maximum(count, 1.0), np.nan)
    level = float(np.nanmean(v)) if np.sum(used) >= RESAMPLING_MIN_LINES else 0.0
    if not level > 0:  # too few lines, or no speckle at all (flat frames)
        return None
    v = v / level - 1.0
    v = np.where(used, v, 0.0)
    # Single lines far off (a burned-in marker, an edge) are held at a robust bound.
    centre = float(np.median(v))
    spread = 5.0 * 1.4826 * float(np.median(np.abs(v - centre))) + 1e-12
    v = np.clip(v, centre - spread, centre + spread)
    k = RESAMPLING_TREND_PX
    trend = np.convolve(np.pad(v, k // 2, mode="edge"), np.ones(k) / k, mode="valid")
    power = np.abs(np.fft.rfft(v - trend)) ** 2
    freq = np.fft.rfftfreq(n)
    sel = freq >= RESAMPLING_MIN_FREQUENCY
    p, fr = power[sel], freq[sel]
    i = int(np.argmax(p))
    median = float(np.median(p))
    return (float(np.sqrt(2.0 * p[i]) / n), float(1.0 / fr[i]),
            float(p[i] / median) if median > 0 else float("inf"))


def display_resampling(frames: ArrayLike, *, display_max: float = 255.0) -> ResamplingCheck:
    """Look for a display interpolated after log compression (resized, scan-converted).

    An interpolated pixel averages its neighbours' display (log) values, so
    its speckle is smoother than at the pixels that fall on the original
    samples; resizing by a non-integer factor repeats that pattern every few
    pixels.  The energy of second differences, line by line along each axis
    of the brightest frames (clipped pixels left out, the smooth depth trend
    removed), is searched for a periodic component; fully developed speckle
    shows none.  Integer factors (every pixel equally interpolated),
    averaging down-sampling and smoothing leave no periodic trace and are
    not detected (benchmarks/dr_accuracy.py).

    Parameters
    ----------
    frames : array, shape (T, h, w)
        Display values of the contrast panel.
    display_max : float

    Returns
    -------
    ResamplingCheck
    """
    stack = np.asarray(frames)
    if stack.ndim != 3:
        raise ValueError(f"need frames of shape (T, h, w), got {stack.shape}")
    bright = np.asarray(stack[np.sort(brightest_frames(stack))])
    e = RESAMPLING_EDGE_PX
    if min(bright.shape[1:]) > 2 * e + RESAMPLING_MIN_LINES:
        bright = bright[:, e:-e, e:-e]
    found = {name: _line_modulation(bright, ax, float(display_max))
             for name, ax in (("rows", 1), ("columns", 2))}
    measured = {k: v for k, v in found.items() if v is not None}
    if not measured:
        return ResamplingCheck(None, None, None, False, (
            f"not checked: fewer than {RESAMPLING_MIN_LINES} lines with unclipped speckle "
            "along either axis"))
    # The strongest axis that passes both conditions, else the strongest axis.
    hits = {k: v for k, v in measured.items()
            if v[0] >= RESAMPLING_LIMIT and v[2] >= RESAMPLING_MIN_PEAK_RATIO}
    axis, (amp, period, ratio) = max((hits or measured).items(), key=lambda kv: kv[1][0])
    detected = bool(hits)
    return ResamplingCheck(round(amp, 3), round(period, 2), axis, detected, (
        f"energy of the speckle's second differences, line by line, in the {bright.shape[0]} "
        f"brightest frames: strongest periodic modulation {amp:.2f} every {period:.1f} px "
        f"along the {axis} ({ratio:.0f} x the median periodogram power); refused at "
        f"{RESAMPLING_LIMIT:g} or more standing {RESAMPLING_MIN_PEAK_RATIO:g} x above the "
        "median, as interpolation after compression does"))


#: Block-quantisation check (`block_quantisation`): the block side of JPEG's
#: DCT (px), the frames measured, the smallest and largest quantisation step
#: looked for (grey levels; below 5 an integer lattice of tolerance 1 covers
#: 2/5 or more of the line by chance), the tolerance (the decoder's rounding
#: moves an orthonormal coefficient by 0.29 rms), the share of a frequency's
#: non-zero coefficients that must lie on the lattice, the fewest non-zero
#: coefficients that make a test, and the fewest frequencies that must pass.
QUANT_BLOCK_PX = 8
QUANT_FRAMES = 4
QUANT_MIN_STEP = 5
QUANT_MAX_STEP = 64
QUANT_TOLERANCE = 1.0
QUANT_LATTICE_SHARE = 0.9
QUANT_MIN_COEFFICIENTS = 100
#: Blocks tested at the grid found, at most (evenly spaced over the frames).
QUANT_MAX_BLOCKS = 6000
#: Unprocessed simulator panels and gamma speckle pass 0 frequencies; JPEG at
#: quality 97-50 22-55 (benchmarks/dr_accuracy.py --compression 2), quality
#: 100 (steps of 1) none, and it reads as it was.
QUANT_MIN_FREQUENCIES = 3
#: Frequencies (row, column) that place the block grid: the low and mid band.
#: JPEG quantises the mid band coarsely enough to see from quality ~97 down
#: (steps of 5 or more) and the low band from ~90, which still leaves some
#: of its coefficients non-zero at ~50, where the mid band is all zeros.
_GRID_FREQUENCIES = tuple((u, v) for u in range(8) for v in range(8) if 1 <= u + v <= 7)
#: Blocks used to place the grid, at most (evenly spaced), and the largest step
#: tried there (the low and mid band's steps down to quality ~50).
_GRID_MAX_BLOCKS = 1500
_GRID_MAX_STEP = 16


def _dct_matrix(n: int) -> FloatArray:
    """Orthonormal DCT-II matrix (JPEG's transform, up to the level shift)."""
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return np.asarray(d, dtype=np.float64)


@dataclass(frozen=True)
class QuantisationCheck:
    """Result of `block_quantisation`: were the frames JPEG-compressed (DCT-quantised)?

    Attributes
    ----------
    n_frequencies : int
        Of the 63 AC frequencies of the 8 x 8 DCT, those whose coefficients
        lie on a lattice of a step of `QUANT_MIN_STEP` or more.
    steps : tuple of int
        Those frequencies' steps (grey levels; a multiple of the true step
        can be reported where its odd multiples are rare).
    grid_offset_px : (int, int) or None
        Row and column of the first whole block in the frames given.
    detected : bool
        ``n_frequencies >= QUANT_MIN_FREQUENCIES``.
    method : str
    """

    n_frequencies: int
    steps: tuple[int, ...]
    grid_offset_px: tuple[int, int] | None
    detected: bool
    method: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record (results.json ``...compression.quantisation``)."""
        return {"n_frequencies": self.n_frequencies, "steps": list(self.steps),
                "grid_offset_px": None if self.grid_offset_px is None else list(self.grid_offset_px),
                "detected": self.detected, "method": self.method}


@dataclass(frozen=True)
class CompressionCheck:
    """Was the cine lossy-compressed, by its file or by its pixels?

    Attributes
    ----------
    file : str or None
        What the file says (a lossy transfer syntax or video codec, Lossy
        Image Compression 01), None where it says nothing lossy.
    quantisation : QuantisationCheck or None
        JPEG block quantisation looked for in the pixels (None: not looked).
    """

    file: str | None
    quantisation: QuantisationCheck | None

    @property
    def jpeg_found(self) -> bool:
        """The pixels show JPEG's block quantisation."""
        return self.quantisation is not None and self.quantisation.detected

    @property
    def lossy(self) -> bool:
        """The file or the pixels say lossy."""
        return bool(self.file) or self.jpeg_found

    def describe(self) -> str:
        """How the compression is known, for messages."""
        parts = ([f"the file says so: {self.file}"] if self.file else []) + (
            ["the pixels show JPEG's 8 x 8 blocks"] if self.jpeg_found else [])
        return "; ".join(parts) or "not lossy"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record (results.json ``...compression``)."""
        return {"file": self.file, "lossy": self.lossy,
                "quantisation": None if self.quantisation is None else self.quantisation.as_dict()}


def _lattice_share(c: FloatArray, step: float) -> tuple[FloatArray, FloatArray]:
    """Per column of `c` (coefficients): the share of those that quantisation with
    `step` would leave non-zero lying within `QUANT_TOLERANCE` of a multiple, and their count."""
    big = np.abs(c) > 0.75 * step
    near = np.abs(c - step * np.rint(c / step)) <= QUANT_TOLERANCE
    n = big.sum(axis=0)
    return (big & near).sum(axis=0) / np.maximum(n, 1), n.astype(np.float64)


def block_quantisation(frames: ArrayLike, *, display_max: float = 255.0) -> QuantisationCheck:
    """Look for JPEG's quantisation of 8 x 8 block DCT coefficients in decoded frames.

    A JPEG decoder rebuilds each 8 x 8 block from DCT coefficients that are
    multiples of the quantisation table's steps; rounding the pixels moves
    them by 0.29 rms, so the decoded blocks' coefficients still sit on that
    lattice, where speckle's own coefficients spread evenly.  The block grid
    is found first (the offset where mid-frequency coefficients fall on a
    lattice best), then each AC frequency is tested for the largest step
    whose non-zero multiples hold `QUANT_LATTICE_SHARE` of its coefficients.
    Quantisation removes the speckle's fine, small coefficients, so the
    speckle estimate reads low (JPEG quality 90: 5-23 dB at 40-80 dB,
    benchmarks/dr_accuracy.py --compression).  Video codecs quantise prediction residuals
    (no lattice in the pixels) and wavelet codecs no blocks: those are known
    from the file (``Cine.meta["lossy_compression"]``).

    Parameters
    ----------
    frames : array, shape (T, h, w) or (h, w)
        Display values (grey levels); the first `QUANT_FRAMES` are used.
    display_max : float
        Blocks touching 0 or this (clipped after decoding) are left out.

    Returns
    -------
    QuantisationCheck
    """
    stack = np.asarray(frames)
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3:
        raise ValueError(f"need frames of shape (T, h, w), got {stack.shape}")
    stack = np.asarray(stack[:QUANT_FRAMES], dtype=np.float64)
    b = QUANT_BLOCK_PX
    d = _dct_matrix(b)

    t, h, w = stack.shape
    # Block origins on an 8 px grid, one block short of each edge so that
    # every grid offset (0-7 px) fits; the same blocks are moved by the offset.
    hb, wb = (h - b) // b, (w - b) // b
    if hb < 3 or wb < 3:
        return QuantisationCheck(0, (), None, False, "not checked: frames under 32 px")
    frame_of, row0, col0 = (a.ravel() for a in np.meshgrid(
        np.arange(t), np.arange(hb) * b, np.arange(wb) * b, indexing="ij"))

    def blocks_at(oy: int, ox: int, pick: NDArray[np.intp]) -> FloatArray:
        k = np.arange(b)
        rows = (row0[pick] + oy)[:, None] + k
        cols = (col0[pick] + ox)[:, None] + k
        blocks = stack[frame_of[pick][:, None, None], rows[:, :, None], cols[:, None, :]]
        ok = (blocks.min(axis=(1, 2)) > 0) & (blocks.max(axis=(1, 2)) < display_max)
        # Identical blocks (graphics repeated over frames, repeated frames) would
        # put their one coefficient value on any lattice through it.
        return np.unique(blocks[ok].reshape(-1, b * b), axis=0).reshape(-1, b, b)

    def spaced(n: int, most: int) -> NDArray[np.intp]:
        return np.unique(np.linspace(0, n - 1, min(n, most)).astype(np.intp))

    grid = [u * b + v for u, v in _GRID_FREQUENCIES]
    first = spaced(hb * wb, _GRID_MAX_BLOCKS)  # the first frame's blocks
    best: tuple[float, tuple[int, int]] = (-1.0, (0, 0))
    for oy in range(b):
        for ox in range(b):
            c = (d @ blocks_at(oy, ox, first) @ d.T).reshape(-1, b * b)[:, grid]
            score = np.zeros(len(_GRID_FREQUENCIES))
            for step in range(QUANT_MIN_STEP, _GRID_MAX_STEP + 1):
                share, n = _lattice_share(c, float(step))
                score = np.maximum(score, np.where(n >= QUANT_MIN_COEFFICIENTS / 4, share, 0.0))
            total = float(score.sum())
            if total > best[0]:
                best = (total, (oy, ox))
    offset = best[1]
    c = (d @ blocks_at(*offset, spaced(frame_of.size, QUANT_MAX_BLOCKS)) @ d.T
         ).reshape(-1, b * b)[:, 1:]
    found = np.zeros(c.shape[1], dtype=np.int64)
    for step in range(QUANT_MIN_STEP, QUANT_MAX_STEP + 1):
        share, n = _lattice_share(c, float(step))
        found[(share >= QUANT_LATTICE_SHARE) & (n >= QUANT_MIN_COEFFICIENTS)] = step
    steps = tuple(int(s) for s in found[found > 0])
    k = len(steps)
    detected = k >= QUANT_MIN_FREQUENCIES
    span = f" (steps {min(steps)}-{max(steps)} grey levels)" if steps else ""
    return QuantisationCheck(k, steps, offset, detected, (
        f"8 x 8 block DCT of {c.shape[0]} distinct unclipped blocks in {t} frames, grid at "
        f"row {offset[0]}, column {offset[1]}: {k} of 63 frequencies lie on a quantisation "
        f"lattice{span}; JPEG-compressed at {QUANT_MIN_FREQUENCIES} or more"))


def speckle_blocks(frames: ArrayLike, *, display_max: float = 255.0,
                   mask: ArrayLike | None = None) -> FloatArray:
    """Display values of the blocks whose statistics measure the compression.

    Parameters
    ----------
    frames : array, shape (T, h, w) or (h, w)
        Display values (grey levels) of the contrast panel.
    display_max : float
        Full-brightness display value (255 for 8-bit).
    mask : bool array, shape (h, w), optional
        Pixels that may be used (default all).

    Returns
    -------
    ndarray, shape (n_blocks, BLOCK_PX**2)
        Blocks of the `N_BRIGHT_FRAMES` brightest frames that lie inside the
        mask, touch neither 0 nor `display_max` (clipped values would shrink
        the spread) and are brighter than `MIN_BLOCK_MEAN_SHARE`.
    """
    stack = np.asarray(frames)
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3:
        raise ValueError(f"need frames of shape (T, h, w), got {stack.shape}")
    _, h, w = stack.shape
    b = BLOCK_PX
    hb, wb = h // b, w // b
    if hb == 0 or wb == 0:
        return np.zeros((0, b * b))
    keep = np.ones((hb, wb), dtype=bool)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)[:hb * b, :wb * b]
        keep = np.asarray(m.reshape(hb, b, wb, b).all(axis=(1, 3)), dtype=bool)
    bright = brightest_frames(stack)
    out = []
    for k in np.sort(bright):
        f = np.asarray(stack[k, :hb * b, :wb * b], dtype=np.float64)
        blocks = f.reshape(hb, b, wb, b).swapaxes(1, 2)[keep].reshape(-1, b * b)
        ok = ((blocks.min(axis=1) > 0) & (blocks.max(axis=1) < display_max)
              & (blocks.mean(axis=1) > MIN_BLOCK_MEAN_SHARE * display_max))
        out.append(blocks[ok])
    blocks = np.concatenate(out) if out else np.zeros((0, b * b))
    if blocks.shape[0] > MAX_BLOCKS:
        blocks = blocks[np.linspace(0, blocks.shape[0] - 1, MAX_BLOCKS).astype(int)]
    return blocks


def _trigamma(x: FloatArray) -> FloatArray:
    """psi'(x), the variance of log(X) for X ~ gamma(x), for x > 0.

    Recurrence up to x + 6, then the asymptotic series (error below 1e-11
    relative): ``scipy.special.polygamma(1, x)``'s value, ~10x faster on the
    ~400,000 values an estimate needs.
    """
    z = np.asarray(x, dtype=np.float64)
    acc = np.zeros_like(z)
    for j in range(6):
        acc += 1.0 / (z + j) ** 2
    y = z + 6.0
    inv = 1.0 / y
    inv2 = inv * inv
    series = inv + 0.5 * inv2 + inv * inv2 * (1.0 / 6.0 + inv2 * (-1.0 / 30.0 + inv2 * (
        1.0 / 42.0 + inv2 * (-1.0 / 30.0))))
    return np.asarray(acc + series, dtype=np.float64)


def consistency(blocks: ArrayLike, grid_db: ArrayLike, *, display_max: float = 255.0
                ) -> tuple[FloatArray, FloatArray]:
    """Ratio of measured to predicted log spread, per trial DR and block.

    Parameters
    ----------
    blocks : array, shape (n, m)
        Display values of each block.
    grid_db : array, shape (g,)
        Trial dynamic ranges (dB).
    display_max : float

    Returns
    -------
    ratio : ndarray, shape (g, n)
        Display spread in dB at the trial DR over the log spread predicted
        by the block's effective looks there; 1 at the true DR for gamma
        speckle.
    looks : ndarray, shape (g, n)
        Effective number of looks of each block at each trial DR.
    """
    d = np.asarray(blocks, dtype=np.float64)
    grid = np.asarray(grid_db, dtype=np.float64).reshape(-1)
    n, m = d.shape
    # Unbiased variances (ddof 1, here and for the looks): blocks are small.
    # Rounding to integer grey levels adds 1/12 level^2 of variance.
    spread = np.sqrt(np.maximum(d.var(axis=1, ddof=1) - 1.0 / 12.0, 1e-12))
    top = d.max(axis=1, keepdims=True)
    offset = top - d
    scale = grid / (_DB_PER_NEPER * display_max)
    if n and np.array_equal(offset, np.rint(offset)) and offset.max() < 4096:
        # Integer grey levels: each block's moments at every trial DR are its
        # histogram of levels below its maximum times exp(-k scale) (one
        # matrix product instead of an exp per pixel and trial).
        levels = offset.astype(np.int64)
        k = int(levels.max()) + 1
        rows = np.repeat(np.arange(n) * k, m)
        hist = np.bincount(rows + levels.ravel(), minlength=n * k).reshape(n, k).astype(np.float64)
        v = np.arange(k, dtype=np.float64)
        m1 = (hist @ np.exp(-np.outer(v, scale))).T / m
        m2 = (hist @ np.exp(-2.0 * np.outer(v, scale))).T / m
    else:
        m1 = np.empty((grid.size, n))
        m2 = np.empty_like(m1)
        for i, s in enumerate(scale):
            e = np.exp(-offset * s)
            m1[i] = e.mean(axis=1)
            m2[i] = (e * e).mean(axis=1)
    looks = 1.0 / np.maximum((m2 / (m1 * m1) - 1.0) * (m / (m - 1.0)), 1e-12)
    ratio = spread[None, :] * grid[:, None] / display_max / (_DB_PER_NEPER * np.sqrt(_trigamma(looks)))
    return ratio, looks


def _crossing(curve: FloatArray, grid: FloatArray) -> float | None:
    """First trial DR where `curve` falls through 1 (linear interpolation)."""
    above = curve >= 1.0
    idx = np.flatnonzero(above[:-1] & ~above[1:])
    if idx.size == 0:
        return None
    i = int(idx[0])
    c0, c1 = curve[i], curve[i + 1]
    return float(grid[i] + (c0 - 1.0) / (c0 - c1) * (grid[i + 1] - grid[i]))


def _jpeg_grid(resampled: ResamplingCheck | None, compression: CompressionCheck | None) -> bool:
    """A detected resampling pattern that is JPEG's 8 px block grid, the pixels showing JPEG."""
    return (resampled is not None and resampled.detected and compression is not None
            and compression.jpeg_found and resampled.on_block_grid((float(QUANT_BLOCK_PX),)))


def estimate_dynamic_range(frames: ArrayLike, *, display_max: float = 255.0,
                           mask: ArrayLike | None = None, seed: int = 0,
                           lossy_file: str | None = None) -> DynamicRangeEstimate:
    """Estimate the display dynamic range (dB) of a log-compressed cine.

    Parameters
    ----------
    frames : array, shape (T, h, w)
        Display values of the contrast panel (the whole loop: the brightest
        frames are used).
    display_max : float
        Full-brightness display value (255 for 8-bit).
    mask : bool array, shape (h, w), optional
        Pixels that may be used (default all).
    seed : int
        Seed of the random split into groups for the interval.
    lossy_file : str or None
        What the file says of lossy compression (``Cine.meta
        ["lossy_compression"]``), None where it says nothing lossy.

    Returns
    -------
    DynamicRangeEstimate
        With ``dynamic_range_db`` None and the reason in ``method`` when the
        display averages frames (`frame_persistence`: persistence makes the
        speckle read 4-13 dB high, and undoing it needs its weight to within
        ~0.01), when it was resampled after compression
        (`display_resampling`: it then reads low), when there are too few
        speckle blocks or no consistent DR in `GRID_DB`.  Where the file
        says it was lossy-compressed or the pixels show JPEG quantisation
        (`block_quantisation`), an estimate's interval reaches at least
        80 dB: quantisation removes the speckle's small fine-scale
        coefficients, and the speckle reads low (JPEG quality 90: 5-23 dB at
        40-80 dB; H.264 at crf 28: 5-17 dB; benchmarks/dr_accuracy.py
        --compression).
    """
    stack = np.asarray(frames)
    pers: PersistenceCheck | None = None
    resampled: ResamplingCheck | None = None
    quant: QuantisationCheck | None = None
    said = CompressionCheck(lossy_file or None, None)
    if stack.ndim == 3:
        pers = frame_persistence(stack, display_max=display_max)
        if pers.detected:
            return DynamicRangeEstimate(None, None, None, 0, (
                "not estimated: the display averages frames (persistence): consecutive frame "
                f"differences are correlated everywhere (averaging weight {pers.weight_lower:.2f} "
                "or more; 0 without persistence), which makes the speckle read several dB too "
                "high"), pers, compression=said)
        # The brightest frames, once: the display checks and the blocks measure the same ones.
        stack = np.asarray(stack[np.sort(brightest_frames(stack))])
        quant = block_quantisation(stack, display_max=display_max)
        resampled = display_resampling(stack, display_max=display_max)
    compression = CompressionCheck(said.file, quant)
    if resampled is not None and resampled.detected:
        if _jpeg_grid(resampled, compression):
            assert quant is not None
            why = (f"not estimated: the cine was JPEG-compressed so strongly that its 8 x 8 "
                   f"blocks show in the speckle (its fine-scale energy repeats every "
                   f"{resampled.period_px:.1f} px along the {resampled.axis}, modulation "
                   f"{resampled.modulation:.2f}; {quant.n_frequencies} of 63 block DCT "
                   "frequencies quantised): quantisation removes the speckle's fine detail, "
                   "which makes it read many dB too low")
        else:
            why = (f"not estimated: the display was {resampled.cause()}: the speckle's "
                   f"fine-scale energy repeats every {resampled.period_px:.1f} px along the "
                   f"{resampled.axis} (modulation {resampled.modulation:.2f}; fully developed "
                   f"speckle stays below {RESAMPLING_LIMIT:g}), since such processing averages "
                   "neighbouring log values, which makes the speckle read several dB too low")
        return DynamicRangeEstimate(None, None, None, 0, why, pers, resampled, compression)
    est = replace(_speckle_estimate(stack, display_max, mask, seed), persistence=pers,
                  resampling=resampled, compression=compression)
    if not est.lossy or est.dynamic_range_db is None or est.ci_db is None:
        return est
    lo, hi = est.ci_db
    return replace(est, ci_db=(lo, max(hi, PRESET_RANGE_DB[1])), method=(
        f"{est.method}; lossy-compressed ({compression.describe()}): compression makes the "
        f"speckle read low by an amount the cine does not show, so the interval's upper end "
        f"is the contrast presets' top, {PRESET_RANGE_DB[1]:g} dB, or the speckle's 95 % bound "
        f"({hi:.1f} dB) where higher; its lower end is the speckle's 95 % bound"))


def _speckle_estimate(frames: NDArray[Any], display_max: float, mask: ArrayLike | None,
                      seed: int) -> DynamicRangeEstimate:
    """`estimate_dynamic_range` after the display-processing checks."""
    blocks = speckle_blocks(frames, display_max=display_max, mask=mask)
    n = int(blocks.shape[0])
    if n < MIN_BLOCKS:
        return DynamicRangeEstimate(None, None, None, n, (
            f"not estimated: {n} unclipped {BLOCK_PX} x {BLOCK_PX} px blocks brighter than "
            f"{MIN_BLOCK_MEAN_SHARE:.0%} of full scale in the {N_BRIGHT_FRAMES} brightest "
            f"frames, fewer than {MIN_BLOCKS}"))
    lo, hi, step = GRID_DB
    grid = np.arange(lo, hi + step / 2, step)
    ratio, looks = consistency(blocks, grid, display_max=display_max)
    est = _crossing(np.median(ratio, axis=1), grid)
    if est is None:
        return DynamicRangeEstimate(None, None, None, n, (
            f"not estimated: no dynamic range from {lo:g} to {hi:g} dB makes the blocks' "
            "log spread agree with their speckle contrast (no fully developed speckle, or "
            "not a log-compressed display)"))
    if est < MIN_PLAUSIBLE_DB:
        return DynamicRangeEstimate(None, None, None, n, (
            f"not estimated: the speckle reads {est:.0f} dB, below {MIN_PLAUSIBLE_DB:g} dB, "
            "narrower than contrast presets compress into; a display smoothed or resampled "
            "after compression (speckle reduction) reads this low"))
    rng = np.random.default_rng(seed)
    groups = np.array_split(rng.permutation(n), N_GROUPS)
    parts = [_crossing(np.median(ratio[:, g], axis=1), grid) for g in groups]
    found = np.array([p for p in parts if p is not None])
    if found.size >= 3:
        # t quantile (0.975) for the group means' spread, from 2 to 9 degrees of freedom.
        tq = {2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}
        stat = tq.get(found.size - 1, 2.26) * float(found.std(ddof=1)) / math.sqrt(found.size)
    else:
        stat = float("inf")
    half = math.hypot(stat, MODEL_MARGIN_DB)
    i = int(np.clip(np.searchsorted(grid, est), 0, grid.size - 1))
    lk = float(np.median(looks[i]))
    return DynamicRangeEstimate(
        round(est, 2), (round(est - half, 2), round(est + half, 2)), round(lk, 3), n,
        f"speckle statistics: {n} blocks of {BLOCK_PX} x {BLOCK_PX} px in the "
        f"{N_BRIGHT_FRAMES} brightest frames; the DR at which their display spread equals "
        "the log spread of gamma speckle with the looks their linear contrast gives "
        f"(median effective looks {lk:.2f})")


@dataclass(frozen=True)
class LevelScale:
    """How far the dB levels of an analysis may be off because its dynamic range is uncertain.

    Linearised at ``DR``, a display value ``g`` gives ``10 log10 P = (g /
    255 - 1) DR``: every level in dB, and with it every power ratio's dB
    value, is proportional to the DR.  A level ``E`` dB read at the DR used
    lies between ``E * low`` and ``E * high`` over the DR's interval, and a
    power ratio ``r`` between ``r ** low`` and ``r ** high``.  Exact for one
    pixel; for ROI means of speckle of the same statistics in both ROIs too
    (the mean of ``P ** k`` is the mean of ``P``, to the power ``k``, times a
    factor of the speckle alone, which cancels in the ratio); approximate
    where a baseline is subtracted.

    Attributes
    ----------
    low, high : float
        Factors (``low <= 1 <= high``): the interval's ends over the DR used.
    dynamic_range_db : float
        The DR the analysis used (dB).
    interval_db : (float, float)
        The DR's interval (dB) the factors come from.
    source : str
        ``estimated`` (the analysis used the speckle estimate), ``default``
        (it used the default, and the speckle check gave the interval) or
        ``unchecked`` (it used the default, the speckle could not check it,
        and the interval is `PRESET_RANGE_DB`).
    """

    low: float
    high: float
    dynamic_range_db: float
    interval_db: tuple[float, float]
    source: str

    def describe(self) -> str:
        """The interval in words, for findings and reports (no parentheses: it goes inside some)."""
        lo, hi = self.interval_db
        if self.source == "estimated":
            return f"the estimated dynamic range's interval, {lo:.1f}-{hi:.1f} dB"
        if self.source == "unchecked":
            return (f"the default dynamic range, {self.dynamic_range_db:g} dB, which the speckle "
                    f"could not check, over contrast presets' {lo:.0f}-{hi:.0f} dB")
        return (f"the default dynamic range, {self.dynamic_range_db:g} dB, and the speckle's "
                f"reading, {lo:.1f}-{hi:.1f} dB")


#: The dynamic ranges contrast presets use (dB): the interval of a default
#: that the speckle could not check (the range ceuskit's estimate is
#: validated over, benchmarks/dr_accuracy.py).
PRESET_RANGE_DB = (40.0, 80.0)


def level_scale(linearization: Mapping[str, Any]) -> LevelScale | None:
    """The `LevelScale` of a results.json ``linearization`` section.

    Parameters
    ----------
    linearization : mapping
        ``dynamic_range_db``, ``dynamic_range_source`` and, for an estimated
        DR, ``dynamic_range_ci_db``; for the default, the speckle check
        ``dynamic_range_check`` (or, after a refused ``auto``,
        ``dynamic_range_estimate``).

    Returns
    -------
    LevelScale or None
        None for a DR the user gave (taken as exact) and where no speckle
        check was made (no record).  A default the speckle could not check
        gets `PRESET_RANGE_DB`: the least-checked value must not look the
        most certain.
    """
    dr = linearization.get("dynamic_range_db")
    source = linearization.get("dynamic_range_source")
    if not isinstance(dr, int | float) or not dr > 0:
        return None
    interval: Any = None
    if source == "estimated":
        interval = linearization.get("dynamic_range_ci_db")
    elif source == "default":
        check = linearization.get("dynamic_range_check", linearization.get("dynamic_range_estimate"))
        if not isinstance(check, Mapping):
            return None
        interval = check.get("ci_db")
        if interval is None:
            source = "unchecked"
            interval = [min(PRESET_RANGE_DB[0], float(dr)), max(PRESET_RANGE_DB[1], float(dr))]
    if (not isinstance(interval, list | tuple) or len(interval) != 2
            or not all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in interval)):
        return None
    lo, hi = float(min(interval)), float(max(interval))
    # The DR used is inside the range even where the check disagrees with the
    # default: the values reported were measured there.
    return LevelScale(min(lo / dr, 1.0), max(hi / dr, 1.0), float(dr), (lo, hi), str(source))
