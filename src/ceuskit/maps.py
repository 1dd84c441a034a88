"""Parametric maps: per-block perfusion fits, necrosis, heterogeneity and DVP.

Pure numerics, no file I/O.  `compute_maps` takes the aligned linear power of
the contrast panel as a *source*: a callable that yields ``(frame slice,
power chunk)`` pairs, called once per pass, so the cine is never linearised
as a whole (`array_source` wraps an in-memory array; the pipeline's
`ceuskit.pipeline.contrast_power_chunks` streams a loaded cine).  Memory is
bounded by one chunk of frames plus per-pixel accumulators plus the block
curves (blocks x frames float64), whatever the cine's length.

Procedure (constants are module-level names):

1. **ROI curves** (pass 1).  Mean linear power of every ROI per frame; each
   ROI curve is tested and fitted as in the pipeline.  They set the time
   windows of step 2.
2. **Pixel enhancement test** (pass 2, one per pixel, not per block: the
   necrosis mask keeps the pixel resolution).  For a pixel whose time
   window is that of ROI k:

   - baseline window: frames before the earliest fitted arrival ``t0`` of
     any enhancing ROI, less `BASELINE_GUARD_S` (at least
     `MIN_BASELINE_FRAMES` frames);
   - post-arrival window: frames where ROI k's fitted curve is at least
     `PEAK_WINDOW_FRACTION` of its peak enhancement above its baseline
     (the window around peak enhancement, where the clinical reading of
     necrosis is made); an ROI that does not enhance borrows the window of
     the reference ROI (else of the enhancing ROI that arrives first);
   - ``b``, ``s_b``: mean and standard deviation of the pixel's own linear
     power over its ``n_b`` baseline frames; ``p``: its mean over the
     ``n_p`` post-arrival frames;
   - ``z = (p - b) / (s_b sqrt(1/n_p + 1/n_b))`` (Welch-type statistic of
     the difference of two means with the baseline's variance, which is the
     variance of both windows under "no enhancement");
   - the pixel enhances when ``z`` exceeds the one-sided critical value of
     Student's t with ``n_b - 1`` degrees of freedom at ``p = PIXEL_P``
     (the tail of a normal ``z > PIXEL_Z``: 4.3 for 60 baseline frames,
     6.2 for 12, because ``s_b`` is estimated from the baseline alone)
     **and** ``10 log10(p / b) >= PIXEL_MIN_RISE_DB``; otherwise it is
     non-enhancing.  Rejected (out-of-plane) frames and samples that motion
     alignment brought in from outside the panel are left out.

   No display threshold enters: a dim but significantly enhancing pixel is
   viable tissue, a bright but flat one is not.
3. **Block curves** (pass 3).  The panel is tiled in ``block_px`` x
   ``block_px`` blocks (from the panel's top-left corner).  One curve per
   block and ROI label: the mean linear power of the block's *enhancing*
   pixels of that label (averaging linear power, never display values;
   non-enhancing pixels are left out so that a block at a necrosis border
   is not diluted, and blocks do not mix tissue across ROI borders).
4. **Fits** (chunks of block rows, in-process or on Dask).  Every block
   curve is fitted with `fit_curves` (numba core) or `fit_auto`; the
   descriptors come from `fast_descriptors`.  Each pixel shows its block's
   values.
5. **Necrosis** (lesion ROIs): mask = non-enhancing pixels of the lesion
   ROI; fraction = non-enhancing area / lesion area (tested pixels), on the
   cine's single imaging plane (ROIs in the motion reference frame), in the
   lesion's post-arrival window (stated in the summary).
6. **Heterogeneity** (every ROI): ``index`` = robust coefficient of
   variation (``1.4826 x MAD / median``, pixel-weighted; `robust_cv`) of
   peak enhancement over the ROI's enhancing pixels (the plain std / mean
   is reported too); the ROI is *heterogeneous* when the index exceeds
   `HETEROGENEITY_CV_THRESHOLD` or its necrosis fraction exceeds
   `HETEROGENEITY_NECROSIS_THRESHOLD` (see the constants for the figures
   that set them).
7. **Dynamic vascular pattern** (needs an enhancing reference ROI): per
   block, ``DVP(t) = (f(t) - b) - (f_ref(t) - b_ref)`` with ``f`` the
   fitted block curve, ``f_ref`` the fitted reference-ROI curve and ``b``
   their fitted baselines, at the frame times; a non-enhancing pixel has
   ``f - b = 0``.  With ``tol = DVP_FLAT_FRACTION x PE_ref``: *flat* when
   ``|DVP| <= tol`` throughout; *unipolar +* when it exceeds ``+tol`` and
   never falls below ``-tol``; *unipolar -* the converse; *bipolar +/-*
   when it does both and the first excursion is positive (hyper-enhancement
   then wash-out below the reference); *bipolar -/+* when the first is
   negative.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange, types
from numba.extending import overload
from numpy.typing import NDArray
from scipy import special

from ceuskit.kinetics.fast import fast_descriptors
from ceuskit.kinetics.fit import USABLE_STATUSES, FitResult, FitStatus, fit_curves
from ceuskit.kinetics.models import get_model
from ceuskit.kinetics.select import fit_auto
from ceuskit.linearize import CodedPower
from ceuskit.outputs import finite_or_none
from ceuskit.roi import Roi

FloatArray = NDArray[np.float64]
PowerChunks = Iterator[tuple[slice, NDArray[np.float32] | CodedPower]]
#: A re-iterable source of aligned linear power: each call yields
#: ``(frame slice, power[slice])`` chunks covering all frames in order, each
#: chunk a float32 array (t, rows, cols) of the contrast panel (a.u.; NaN
#: where motion alignment has no data) or the same as `CodedPower` (8-bit
#: values and their table).  A chunk may be overwritten by the next one.
PowerSource = Callable[[], PowerChunks]
#: Runs ``fit_block_chunk(*args)`` for each argument tuple, results in order
#: (in-process loop by default; `ceuskit.maps_dask.dask_runner` on a cluster).
ChunkRunner = Callable[[Sequence[tuple[Any, ...]]], list[dict[str, Any]]]

# --- block averaging -------------------------------------------------------------
#: Default block size (pixels per side).  Bubble speckle is drawn afresh every
#: frame, so a single pixel's curve has a frame-to-frame CV near 1 (exponential
#: intensity statistics); a block averages the independent speckle cells it
#: covers.  4 x 4 px at the usual 0.1-0.3 mm pixel spacing is 0.4-1.2 mm,
#: about one lateral resolution cell of a CEUS transducer: it lowers the
#: per-frame noise two- to four-fold while keeping the map at the scanner's
#: own resolution, and a 512 x 512 panel becomes 16,384 curves (seconds to
#: fit).  ``--block 1`` fits every pixel, larger blocks smooth more.
BLOCK_PX = 4
MAX_BLOCK_PX = 64
#: Frames per chunk of the streaming passes (bounds the transient float32 copy
#: of the linear power: 32 x 512 x 512 x 4 B = 32 MiB).
FRAME_CHUNK = 32
#: Block rows per fitting task (the unit of work sent to a Dask worker).
ROW_CHUNK_BLOCKS = 16

# --- pixel enhancement test (necrosis) --------------------------------------------
#: Significance of the per-pixel test: the one-sided tail of a normal z > 4,
#: p = 3.2e-5, i.e. fewer than one false "enhancing" pixel in 30,000
#: non-enhancing ones.  The critical value is Student's t at this p with
#: n_b - 1 degrees of freedom (the noise is estimated from the n_b baseline
#: frames); real (viable) tissue, 10-30 dB above its baseline at peak, gives
#: statistics in the hundreds.
PIXEL_Z = 4.0
PIXEL_P = float(special.ndtr(-PIXEL_Z))  # normal upper tail (scipy.stats is slow to import)
#: Minimum rise of the post-arrival mean over the baseline (dB of power), as
#: in the ROI enhancement test: smaller rises are within what gain drift,
#: residual motion and blooming from neighbouring tissue produce.
PIXEL_MIN_RISE_DB = 1.0
#: The baseline window ends this long (s) before the earliest fitted arrival.
BASELINE_GUARD_S = 0.5
MIN_BASELINE_FRAMES = 5
#: Post-arrival window: where the ROI's fitted enhancement is at least this
#: share of its peak (the full width at half maximum around the peak).
PEAK_WINDOW_FRACTION = 0.5

# --- heterogeneity --------------------------------------------------------------------
_MAD_TO_SIGMA = 1.4826
#: Heterogeneity index (robust CV of peak enhancement over enhancing pixels)
#: above which an ROI is called heterogeneous.  Measured at block 4
#: (tests/test_maps.py and the 90 s / 8 fps simulations of the report):
#: homogeneous tissue -- the simulator's muscle and lumen (perfusion CV 0.12
#: and 0), synthetic lesions with uniform amplitude -- gives 0.05-0.14; the
#: simulator's tumour (lognormal perfusion field, std of log 0.5) and the
#: synthetic heterogeneous lesions give 0.35-0.61.  0.25 lies between, about
#: 0.1 from either group.
HETEROGENEITY_CV_THRESHOLD = 0.25
#: Necrosis fraction above which a lesion is heterogeneous whatever its CV
#: (twice the necrosis test's 5-point tolerance: a necrotic share the test
#: cannot confuse with none).
HETEROGENEITY_NECROSIS_THRESHOLD = 0.10
#: Heterogeneity needs enhancement to describe: no index for fewer enhancing
#: pixels than four blocks, no verdict for an ROI under 5 % enhancing (a bland
#: thrombus is "non-enhancing", not "heterogeneous").
HETEROGENEITY_MIN_BLOCKS = 4
HETEROGENEITY_MIN_ENHANCING = 0.05

# --- dynamic vascular pattern ------------------------------------------------------------
#: DVP tolerance as a share of the reference ROI's peak enhancement: a block
#: whose fitted curve stays within +-20 % (about +-0.8 dB at peak) of the
#: reference's throughout is "flat".  Block fits of a lesion identical to
#: the reference deviate by up to ~10 % (tests/test_maps.py), real
#: differences of interest (hyper-enhancement of a tumour, wash-out below
#: the reference) are 2x and more.
DVP_FLAT_FRACTION = 0.2
DVP_CLASSES = ("flat", "unipolar +", "unipolar -", "bipolar +/-", "bipolar -/+")

#: The perfusion parameters every map has (descriptor keys, see
#: `ceuskit.kinetics.descriptors`), then the quality of fit.
MAP_PARAMETERS = (
    "arrival_time_s", "time_to_peak_s", "rise_time_s", "mean_transit_time_s",
    "peak_enhancement", "auc", "wash_in_rate", "wash_out_rate", "qof",
)
MAP_UNITS = {
    "arrival_time_s": "s", "time_to_peak_s": "s", "rise_time_s": "s",
    "mean_transit_time_s": "s", "peak_enhancement": "a.u.", "auc": "a.u.·s",
    "wash_in_rate": "a.u./s", "wash_out_rate": "a.u./s", "qof": "1",
}
SUPPORTED_MODELS = ("lognormal", "gamma", "ldrw", "auto")
AUTO_MODELS = ("lognormal", "gamma", "ldrw")
#: Status map value of pixels outside every ROI.
OUTSIDE = -1
_ROLE_ORDER = {"lesion": 0, "reference": 1, "vessel": 2, "other": 3}

PIXEL_TEST_TEXT = (
    f"per pixel: z = (p - b) / (s_b * sqrt(1/n_p + 1/n_b)) with b, s_b the mean and standard "
    f"deviation of the pixel's linear power over the baseline window (frames before the earliest "
    f"fitted arrival less {BASELINE_GUARD_S:g} s) and p its mean over its ROI's post-arrival "
    f"window (where the ROI's fitted enhancement is >= {PEAK_WINDOW_FRACTION:g} x its peak); "
    f"enhancing when z exceeds the one-sided critical value of Student's t with n_b - 1 degrees "
    f"of freedom at p = {PIXEL_P:.2g} (normal z > {PIXEL_Z:g}) and 10 log10(p / b) >= "
    f"{PIXEL_MIN_RISE_DB:g} dB"
)
HETEROGENEITY_TEXT = (
    f"index = robust coefficient of variation (1.4826 x median absolute deviation / median) of "
    f"peak enhancement over the ROI's enhancing pixels; heterogeneous when index > "
    f"{HETEROGENEITY_CV_THRESHOLD:g} or necrosis fraction > {HETEROGENEITY_NECROSIS_THRESHOLD:g}; "
    f"no index below {HETEROGENEITY_MIN_BLOCKS} blocks of enhancing pixels, no verdict below "
    f"{HETEROGENEITY_MIN_ENHANCING:.0%} enhancing"
)
DVP_TEXT = (
    f"DVP(t) = (fitted block curve - its baseline) - (fitted reference curve - its baseline) at "
    f"the frame times; tol = {DVP_FLAT_FRACTION:g} x reference peak enhancement; flat: |DVP| <= "
    f"tol throughout; unipolar +/-: exceeds tol on one side only; bipolar +/- or -/+: both, "
    f"named in the order of the first excursions"
)


# ---------------------------------------------------------------------------
# options and result
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MapOptions:
    """Settings of a parametric map.

    Attributes
    ----------
    block_px : int
        Block size in pixels per side (1 = every pixel its own curve).
    model : str
        ``"lognormal"``, ``"gamma"``, ``"ldrw"`` or ``"auto"`` (AICc per block).
    frame_chunk : int
        Frames per streaming chunk.
    row_chunk_blocks : int
        Block rows per fitting task.
    keep_dvp_curves : bool
        Keep the DVP signal of every block (blocks x frames float32).
    """

    block_px: int = BLOCK_PX
    model: str = "lognormal"
    frame_chunk: int = FRAME_CHUNK
    row_chunk_blocks: int = ROW_CHUNK_BLOCKS
    keep_dvp_curves: bool = True

    def __post_init__(self) -> None:
        b = self.block_px
        if isinstance(b, bool) or not isinstance(b, int | np.integer) or not 1 <= b <= MAX_BLOCK_PX:
            raise ValueError(f"block size (--block) must be a whole number of pixels from 1 to "
                             f"{MAX_BLOCK_PX}, got {b!r}")
        if self.model not in SUPPORTED_MODELS:
            raise ValueError(f"model (--model) must be one of {', '.join(SUPPORTED_MODELS)}, "
                             f"got {self.model!r}")
        if self.frame_chunk < 1 or self.row_chunk_blocks < 1:
            raise ValueError("frame_chunk and row_chunk_blocks must be positive")


@dataclass(frozen=True)
class PixelWindows:
    """Time windows of the pixel enhancement test.

    Attributes
    ----------
    baseline : bool array, shape (T,)
        Baseline frames (shared by all pixels).
    post : bool array, shape (K, T)
        Post-arrival frames of each ROI (in ROI order).
    baseline_s : (float, float)
        First and last baseline frame time (s).
    post_s : list of (float, float) or None
        First and last post-arrival frame time of each ROI (s).
    source : list of str
        How each ROI's post window was chosen.
    note : str
        Caveat on the baseline window ("" when none).
    """

    baseline: NDArray[np.bool_]
    post: NDArray[np.bool_]
    baseline_s: tuple[float, float]
    post_s: list[tuple[float, float] | None]
    source: list[str]
    note: str = ""


@dataclass(frozen=True, eq=False)
class MapResult:
    """Parametric maps of one cine inside its ROIs.

    All pixel maps have the contrast panel's shape (rows, cols); pixels
    outside every ROI are NaN (float maps) or -1 (integer maps).

    Attributes
    ----------
    params : dict of str to float32 array
        `MAP_PARAMETERS` -> map (units in `MAP_UNITS`); NaN where the pixel
        is outside the ROIs, non-enhancing, or its block's fit is unusable.
    status : int8 array
        `FitStatus` code of the pixel's block fit; ``NO_ENHANCEMENT`` for
        non-enhancing pixels, ``NON_FINITE`` for untestable ones, -1 outside.
    model : int8 array
        Index into `model_names` of the model used; -1 where none.
    model_names : tuple of str
    enhancing : bool array
        Pixel enhancement test outcome (False outside the ROIs).
    tested : bool array
        Pixels inside an ROI with enough valid samples to be tested.
    necrosis : bool array
        Non-enhancing tested pixels inside lesion ROIs.
    z, rise_db : float32 arrays
        The pixel test's statistic and post/baseline ratio (dB).
    dvp_class : int8 array
        Index into `DVP_CLASSES`; -1 where not available.
    segments : int32 array
        Row of `dvp_curves` (and of the block fits) each enhancing pixel
        belongs to; -1 elsewhere.
    dvp_curves : float32 array, shape (S, T), or None
        DVP signal per block curve (a.u.) at `times_s`.
    times_s : float64 array, shape (T,)
    spacing_mm : (float, float) or None
        Pixel size (row, col) in mm.
    rois : dict
        Per-ROI summary (see `summary`).
    windows : PixelWindows
    options : MapOptions
    n_curves : int
        Block curves fitted.
    """

    params: dict[str, NDArray[np.float32]]
    status: NDArray[np.int8]
    model: NDArray[np.int8]
    model_names: tuple[str, ...]
    enhancing: NDArray[np.bool_]
    tested: NDArray[np.bool_]
    necrosis: NDArray[np.bool_]
    z: NDArray[np.float32]
    rise_db: NDArray[np.float32]
    dvp_class: NDArray[np.int8]
    segments: NDArray[np.int32]
    dvp_curves: NDArray[np.float32] | None
    times_s: FloatArray
    spacing_mm: tuple[float, float] | None
    rois: dict[str, dict[str, Any]]
    windows: PixelWindows
    options: MapOptions
    n_curves: int
    reference_name: str | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.status.shape[0]), int(self.status.shape[1]))

    def summary(self) -> dict[str, Any]:
        """JSON-ready description: rules, windows, units and per-ROI figures."""
        w = self.windows
        return {
            "block_px": int(self.options.block_px),
            "model": self.options.model,
            "model_names": list(self.model_names),
            "n_block_curves": int(self.n_curves),
            "shape_rows_cols": list(self.shape),
            "spacing_mm": None if self.spacing_mm is None else [float(v) for v in self.spacing_mm],
            "units": dict(MAP_UNITS),
            "status_codes": {s.label: int(s) for s in FitStatus} | {"outside-rois": OUTSIDE},
            "dvp_classes": {name: i for i, name in enumerate(DVP_CLASSES)} | {"not-available": -1},
            "dvp_reference_roi": self.reference_name,
            "rules": {
                "enhancement_test": PIXEL_TEST_TEXT,
                "necrosis": ("necrosis mask = non-enhancing tested pixels of a lesion ROI; necrosis "
                             "fraction = non-enhancing area / tested lesion area, on the cine's "
                             "single imaging plane (ROIs in the motion reference frame), in the "
                             "lesion's post-arrival window around peak enhancement"),
                "heterogeneity": HETEROGENEITY_TEXT,
                "dvp": DVP_TEXT,
                "block_averaging": (f"mean linear power of the enhancing pixels of each "
                                    f"{self.options.block_px} x {self.options.block_px} px block "
                                    "and ROI; each pixel shows its block's fit"),
            },
            "windows": {
                "baseline_s": list(w.baseline_s),
                "baseline_frames": int(np.count_nonzero(w.baseline)),
                "note": w.note or None,
            },
            "rois": self.rois,
        }


# ---------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------
def array_source(power: NDArray[Any], frame_chunk: int = FRAME_CHUNK) -> PowerSource:
    """A `PowerSource` over an in-memory (T, rows, cols) linear-power array."""
    arr = np.asarray(power)
    if arr.ndim != 3:
        raise ValueError("power must have shape (T, rows, cols)")

    def chunks() -> PowerChunks:
        for start in range(0, arr.shape[0], frame_chunk):
            sl = slice(start, min(arr.shape[0], start + frame_chunk))
            yield sl, np.asarray(arr[sl], dtype=np.float32)

    return chunks


# ---------------------------------------------------------------------------
# compiled streaming kernels
# ---------------------------------------------------------------------------
#: Table argument of the kernels for float32 chunks (not read).
_NO_TABLE = np.zeros(0, dtype=np.float32)


def _kernel_input(chunk: NDArray[np.float32] | CodedPower,
                  box: tuple[slice, slice]) -> tuple[NDArray[Any], NDArray[np.float32]]:
    """The (values, table) pair a kernel reads for the `box` of a chunk."""
    key = (slice(None), *box)
    if isinstance(chunk, CodedPower):
        return chunk.values[key], chunk.table
    return chunk[key], _NO_TABLE


def _power_at(values: Any, table: Any, f: int, i: int, j: int) -> float:
    """Linear power of sample (f, i, j): ``table[values]`` for 8-bit values, else the value."""
    if values.dtype == np.uint8:
        return float(table[values[f, i, j]])
    return float(values[f, i, j])


@overload(_power_at, inline="always")
def _power_at_compiled(values: Any, table: Any, f: Any, i: Any, j: Any) -> Any:  # pragma: no cover
    # Chosen when the kernel is compiled for the array's dtype: no branch
    # per sample.
    if isinstance(values.dtype, types.Integer):
        def coded(values: Any, table: Any, f: Any, i: Any, j: Any) -> float:
            return np.float64(table[values[f, i, j]])
        return coded

    def plain(values: Any, table: Any, f: Any, i: Any, j: Any) -> float:
        return np.float64(values[f, i, j])
    return plain


@njit(cache=True, parallel=True)
def _window_sums(power: Any, table: Any, frame0: int, base: Any, post: Any, label: Any,
                 s_b: Any, ss_b: Any, n_b: Any, s_p: Any, n_p: Any) -> None:  # pragma: no cover
    """Accumulate each pixel's baseline and post-window sums over one chunk.

    Rows are spread over threads; every pixel is written by one thread only,
    and frames are added in order, so the sums do not depend on chunking.
    """
    t_n, h, w = power.shape
    for i in prange(h):
        for f in range(t_n):
            fb = base[frame0 + f]
            for j in range(w):
                k = label[i, j]
                if k < 0:
                    continue
                fp = post[k, frame0 + f]
                if not (fb or fp):
                    continue
                v = _power_at(power, table, f, i, j)
                if not np.isfinite(v):
                    continue
                if fb:
                    s_b[i, j] += v
                    ss_b[i, j] += v * v
                    n_b[i, j] += 1
                if fp:
                    s_p[i, j] += v
                    n_p[i, j] += 1


@njit(cache=True, parallel=True)
def _mask_sums(power: Any, table: Any, frame0: int, mask: Any, sums: Any,
               counts: Any) -> None:  # pragma: no cover
    """Per frame, sum and count the finite pixels under `mask` (frames over threads).

    The running sum lives in a local variable, not in `sums` (whose stores
    the compiler cannot keep in a register): ~3x faster on a full panel.
    """
    t_n, h, w = power.shape
    for f in prange(t_n):
        acc = 0.0
        n = 0
        for i in range(h):
            for j in range(w):
                if mask[i, j]:
                    v = _power_at(power, table, f, i, j)
                    if np.isfinite(v):
                        acc += v
                        n += 1
        sums[frame0 + f] = acc
        counts[frame0 + f] = n


@njit(cache=True, parallel=True)
def _block_means(power: Any, table: Any, frame0: int, seg: Any, block_px: int, row_first: Any,
                 row_count: Any, means: Any) -> None:  # pragma: no cover
    """Per frame, the mean of the finite pixels of every segment, into ``means[s, frame]``.

    One block row per thread: a segment lies in one block row, and the
    segments of block row ``br`` are ``row_first[br] .. row_first[br] +
    row_count[br] - 1`` (`block_segments` numbers them in block-row order),
    so each thread sums a frame of its row into small local buffers and
    writes each mean once (NaN where a segment has no finite pixel).  The
    (S, T) layout makes each segment's curve contiguous, ready to be fitted
    in place.
    """
    t_n, h, w = power.shape
    n_rows = (h + block_px - 1) // block_px
    width = 1
    for br in range(n_rows):
        width = max(width, row_count[br])
    for br in prange(n_rows):
        k = row_count[br]
        if k == 0:
            continue
        first = row_first[br]
        acc = np.zeros(width)
        cnt = np.zeros(width, dtype=np.int64)
        for f in range(t_n):
            acc[:k] = 0.0
            cnt[:k] = 0
            for i in range(br * block_px, min(h, (br + 1) * block_px)):
                for j in range(w):
                    s = seg[i, j]
                    if s < 0:
                        continue
                    v = _power_at(power, table, f, i, j)
                    if np.isfinite(v):
                        acc[s - first] += v
                        cnt[s - first] += 1
            for q in range(k):
                means[first + q, frame0 + f] = acc[q] / cnt[q] if cnt[q] > 0 else np.nan


# ---------------------------------------------------------------------------
# fitting helpers
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Fits:
    """Fits of a batch of curves with one model or the AICc choice among several."""

    names: tuple[str, ...]
    choice: NDArray[np.int8]  # index into names; -1 = no usable fit
    status: NDArray[np.int8]
    qof: FloatArray
    params: FloatArray  # (M, 5) of the chosen model
    desc: dict[str, FloatArray]

    def enhancement(self, t: FloatArray) -> FloatArray:
        """Fitted curve minus its fitted baseline (a.u.), shape (M, T); 0 where unfitted."""
        out = np.zeros((self.choice.size, t.size))
        for i, name in enumerate(self.names):
            rows = np.flatnonzero(self.choice == i)
            if rows.size:
                model = get_model(name)
                p = self.params[rows]
                out[rows] = model.predict(p, t) - model.baseline(p)[:, None]
        return out

    def t0(self) -> FloatArray:
        """Fitted onset time (s) of each curve, NaN where unfitted."""
        out = np.full(self.choice.size, np.nan)
        for i, name in enumerate(self.names):
            rows = np.flatnonzero(self.choice == i)
            out[rows] = self.params[rows, get_model(name).index("t0")]
        return out


def _fit_batch(t: FloatArray, curves: FloatArray, model_name: str, *, screen: bool) -> _Fits:
    """Fit curves (M, T) with ``model_name`` (or ``"auto"``) and take their descriptors."""
    m = curves.shape[0]
    t_end = float(t[-1])
    keys = [k for k in MAP_PARAMETERS if k != "qof"]
    desc = {k: np.full(m, np.nan) for k in keys}
    params = np.full((m, 5), np.nan)
    if m == 0:
        empty8 = np.zeros(0, dtype=np.int8)
        return _Fits((model_name,), empty8, empty8, np.zeros(0), params, desc)
    results: list[FitResult]
    if model_name == "auto":
        auto = fit_auto(t, curves, models=AUTO_MODELS, screen=screen)
        names = auto.names
        choice = np.asarray(auto.choice, dtype=np.int8)
        status = np.asarray(auto.status, dtype=np.int8)
        qof = np.asarray(auto.qof, dtype=np.float64)
        results = [auto.chosen(i) for i in range(len(names))]
    else:
        res = fit_curves(get_model(model_name), t, curves, screen=screen)
        names = (model_name,)
        choice = np.where(res.usable, 0, -1).astype(np.int8)
        status = np.asarray(res.status, dtype=np.int8)
        qof = np.where(res.usable, res.qof, np.nan)
        results = [res]
    for i, r in enumerate(results):
        rows = np.flatnonzero(choice == i)
        if rows.size == 0:
            continue
        d = fast_descriptors(r, t_end)
        for k in keys:
            desc[k][rows] = d[k][rows]
        params[rows] = r.params[rows]
    return _Fits(tuple(names), choice, status, qof, params, desc)


def classify_dvp(dvp: FloatArray, tol: float) -> NDArray[np.int8]:
    """DVP class of each curve (index into `DVP_CLASSES`) by the rule of the module docstring.

    Parameters
    ----------
    dvp : array, shape (M, T)
        DVP signals (a.u.); NaN samples are ignored.
    tol : float
        Flat tolerance (a.u.).
    """
    d = np.asarray(dvp, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        pos = d > tol
        neg = d < -tol
    any_pos, any_neg = pos.any(axis=-1), neg.any(axis=-1)
    n = d.shape[-1]
    first_pos = np.where(any_pos, np.argmax(pos, axis=-1), n)
    first_neg = np.where(any_neg, np.argmax(neg, axis=-1), n)
    out = np.zeros(d.shape[:-1], dtype=np.int8)
    out[any_pos & ~any_neg] = 1
    out[any_neg & ~any_pos] = 2
    both = any_pos & any_neg
    out[both & (first_pos < first_neg)] = 3
    out[both & (first_neg < first_pos)] = 4
    return out


def fit_block_chunk(
    times_s: FloatArray,
    curves: FloatArray,
    model_name: str,
    reference: tuple[str, FloatArray] | None,
    keep_dvp: bool,
) -> dict[str, Any]:
    """Fit one chunk of block curves: the unit of work of the local and Dask paths.

    Parameters
    ----------
    times_s : array, shape (T,)
        Frame times (s).
    curves : array, shape (M, T)
        Block curves (linear power, a.u.; NaN = left-out frame).
    model_name : str
        Model or ``"auto"``.
    reference : (model name, params (5,)) or None
        The reference ROI's fit, for the DVP.
    keep_dvp : bool
        Return the DVP signals as well as their classes.

    Returns
    -------
    dict
        ``status``, ``choice``, ``names``, ``qof``, descriptor keys, ``dvp_class``
        and (with `keep_dvp`) ``dvp`` (float32, (M, T)).
    """
    t = np.asarray(times_s, dtype=np.float64)
    fits = _fit_batch(t, np.asarray(curves, dtype=np.float64), model_name, screen=False)
    out: dict[str, Any] = {"status": fits.status, "choice": fits.choice, "names": fits.names,
                           "qof": fits.qof, **fits.desc}
    m = fits.choice.size
    if reference is None:
        out["dvp_class"] = np.full(m, -1, dtype=np.int8)
        out["dvp"] = None
        return out
    ref_model = get_model(reference[0])
    ref_p = np.asarray(reference[1], dtype=np.float64)
    ref_curve = ref_model.predict(ref_p, t) - float(ref_model.baseline(ref_p))
    tol = DVP_FLAT_FRACTION * float(np.max(ref_curve))
    dvp = fits.enhancement(t) - ref_curve[None, :]
    cls = classify_dvp(dvp, tol)
    cls[fits.choice < 0] = -1
    out["dvp_class"] = cls
    out["dvp"] = np.where(fits.choice[:, None] >= 0, dvp, np.nan).astype(np.float32) if keep_dvp \
        else None
    return out


def _run_local(tasks: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [fit_block_chunk(*args) for args in tasks]


# ---------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------
def roi_labels(rois: Sequence[Roi], shape: tuple[int, int]) -> NDArray[np.int16]:
    """Which ROI each pixel is attributed to (for its time window and block curve).

    Lesion ROIs take precedence over reference, vessel and other ROIs (each in
    file order) where ROIs overlap; -1 outside every ROI.
    """
    label = np.full(shape, -1, dtype=np.int16)
    order = sorted(range(len(rois)), key=lambda i: (_ROLE_ORDER.get(rois[i].role, 9), i))
    for i in reversed(order):
        label[rois[i].mask] = i
    return label


def pixel_test_windows(times_s: FloatArray, rois: Sequence[Roi], roi_fits: _Fits,
                 valid_frames: NDArray[np.bool_]) -> PixelWindows:
    """Baseline and post-arrival windows of the pixel test (rules in the module docstring)."""
    t = np.asarray(times_s, dtype=np.float64)
    n = t.size
    valid = np.asarray(valid_frames, dtype=bool)
    k = len(rois)
    enh = roi_fits.choice >= 0
    note = ""
    post = np.zeros((k, n), dtype=bool)
    source = [""] * k
    if enh.any():
        t0 = roi_fits.t0()
        t_base_end = float(np.nanmin(t0[enh])) - BASELINE_GUARD_S
        baseline = (t < t_base_end) & valid
        if np.count_nonzero(baseline) < MIN_BASELINE_FRAMES:
            baseline = np.zeros(n, dtype=bool)
            baseline[np.flatnonzero(valid)[:MIN_BASELINE_FRAMES]] = True
            note = (f"the bolus arrives within {t_base_end + BASELINE_GUARD_S:.2f} s of the first "
                    f"frame: the baseline is the first {MIN_BASELINE_FRAMES} frames and may hold "
                    "early enhancement, so the test is conservative (more pixels non-enhancing)")
        enhancement = roi_fits.enhancement(t)
        for i in np.flatnonzero(enh):
            e = enhancement[i]
            post[i] = (e >= PEAK_WINDOW_FRACTION * np.max(e)) & valid & ~baseline
            source[i] = "own fitted curve"
        ref = next((i for i, r in enumerate(rois) if r.role == "reference" and enh[i]), None)
        if ref is None:
            ref = int(np.flatnonzero(enh)[np.nanargmin(t0[enh])])
        for i in np.flatnonzero(~enh):
            post[i] = post[ref]
            source[i] = f"window of ROI '{rois[ref].name}' (this ROI's curve does not enhance)"
    else:
        n_base = max(math.ceil(0.1 * n), int(np.count_nonzero(t <= t[0] + 2.0)), 3)
        baseline = np.zeros(n, dtype=bool)
        baseline[:n_base] = True
        baseline &= valid
        post[:] = ~baseline & valid
        source = ["no ROI curve enhances: every frame after the baseline window"] * k
        note = "no ROI enhances: baseline = first 10 % of the frames (at least 2 s)"

    def span(mask: NDArray[np.bool_]) -> tuple[float, float] | None:
        idx = np.flatnonzero(mask)
        return (float(t[idx[0]]), float(t[idx[-1]])) if idx.size else None

    b_span = span(baseline) or (float("nan"), float("nan"))
    return PixelWindows(baseline=baseline, post=post, baseline_s=b_span,
                       post_s=[span(post[i]) for i in range(k)], source=source, note=note)


@dataclass(frozen=True)
class PixelTest:
    """Outcome of the per-pixel enhancement test (arrays of the panel's shape)."""

    enhancing: NDArray[np.bool_]
    tested: NDArray[np.bool_]
    z: NDArray[np.float32]
    rise_db: NDArray[np.float32]
    baseline: FloatArray
    post: FloatArray


def pixel_test(source: PowerSource, label: NDArray[np.int16], windows: PixelWindows,
               box: tuple[slice, slice] | None = None) -> PixelTest:
    """Stream the cine once and apply the pixel enhancement test inside the ROIs.

    Parameters
    ----------
    source : PowerSource
    label : int16 array (rows, cols)
        ROI label per pixel (`roi_labels`); -1 = not tested.
    windows : PixelWindows
    box : (row slice, col slice), optional
        Sub-rectangle holding every labelled pixel (saves work).
    """
    shape = label.shape
    box = box or (slice(0, shape[0]), slice(0, shape[1]))
    lab = np.ascontiguousarray(label[box])
    bh, bw = lab.shape
    s_b, ss_b, s_p = (np.zeros((bh, bw)) for _ in range(3))
    n_b, n_p = (np.zeros((bh, bw), dtype=np.int64) for _ in range(2))
    base = np.ascontiguousarray(windows.baseline)
    post = np.ascontiguousarray(windows.post)
    for sl, power in source():
        _window_sums(*_kernel_input(power, box), sl.start, base, post, lab, s_b, ss_b, n_b, s_p, n_p)
    with np.errstate(all="ignore"):
        b = s_b / n_b
        var = np.maximum(ss_b - n_b * b * b, 0.0) / np.maximum(n_b - 1, 1)
        sd = np.sqrt(var)
        # A flat (e.g. quantised) baseline has no spread: any rise is significant
        # there and the decibel floor decides.
        sd = np.where(sd > 0, sd, np.finfo(np.float64).tiny)
        p = s_p / n_p
        z = (p - b) / (sd * np.sqrt(1.0 / n_p + 1.0 / n_b))
        rise = np.where(b > 0, 10.0 * np.log10(p / b), np.where(p > b, np.inf, -np.inf))
    tested_box = (lab >= 0) & (n_b >= 3) & (n_p >= 1)
    enh_box = tested_box & (z > critical_t(n_b)) & (rise >= PIXEL_MIN_RISE_DB)

    def full(a: NDArray[Any], fill: Any, dtype: Any) -> NDArray[Any]:
        out = np.full(shape, fill, dtype=dtype)
        with np.errstate(over="ignore"):  # a noise-free baseline gives z beyond float32: inf
            out[box] = np.where(tested_box, a, fill)
        return out

    return PixelTest(
        enhancing=full(enh_box, False, bool),
        tested=full(tested_box, False, bool),
        z=full(z, np.nan, np.float32),
        rise_db=full(rise, np.nan, np.float32),
        baseline=full(b, np.nan, np.float64),
        post=full(p, np.nan, np.float64),
    )


def critical_t(n_baseline: NDArray[Any]) -> FloatArray:
    """One-sided critical value of the pixel test for baseline sample counts ``n_baseline``.

    Student's t with ``n_b - 1`` degrees of freedom at ``PIXEL_P``; +inf for
    fewer than 2 samples.
    """
    n = np.asarray(n_baseline)
    values, inverse = np.unique(n, return_inverse=True)
    # Student's t upper-tail quantile: t.isf(p, df) == -stdtrit(df, p).
    crit = np.where(values >= 2, -special.stdtrit(np.maximum(values - 1, 1), PIXEL_P), np.inf)
    return np.asarray(crit[inverse].reshape(n.shape), dtype=np.float64)


def block_segments(label: NDArray[np.int16], enhancing: NDArray[np.bool_], block_px: int,
                   n_labels: int) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
    """Number the (block, ROI label) groups of enhancing pixels.

    Returns
    -------
    seg : int32 array (rows, cols)
        Segment of each enhancing labelled pixel, -1 elsewhere; segments are
        numbered in block-row, block-column, label order.
    seg_block_row : int64 array (S,)
        Block row of each segment (for chunking by rows of blocks).
    """
    h, w = label.shape
    rows = np.arange(h)[:, None] // block_px
    cols = np.arange(w)[None, :] // block_px
    nbx = -(-w // block_px)
    use = enhancing & (label >= 0)
    key = (rows * nbx + cols) * max(n_labels, 1) + label.astype(np.int64)
    keys = np.unique(key[use])
    seg = np.full((h, w), -1, dtype=np.int32)
    seg[use] = np.searchsorted(keys, key[use]).astype(np.int32)
    block_row = (keys // max(n_labels, 1)) // nbx
    return seg, block_row


def segment_curves(source: PowerSource, seg: NDArray[np.int32], n_seg: int, n_frames: int,
                   box: tuple[slice, slice] | None = None, block_px: int = BLOCK_PX) -> FloatArray:
    """Stream the cine once: the block curve of every segment, shape (S, T).

    The curve of segment s at frame t is the mean of its finite pixels' linear
    power (a.u.), NaN when it has none.  `box` must start on the block grid
    (as `_label_box` makes it) so that block rows do not straddle threads.
    """
    box = box or (slice(0, seg.shape[0]), slice(0, seg.shape[1]))
    sb = np.ascontiguousarray(seg[box])
    n_rows = -(-sb.shape[0] // block_px)
    # First segment and segment count of each block row of the box.
    first = np.full(n_rows, n_seg, dtype=np.int64)
    last = np.full(n_rows, -1, dtype=np.int64)
    rows = np.repeat(np.arange(n_rows), block_px)[:sb.shape[0]]
    for br in range(n_rows):
        in_row = sb[rows == br]
        used = in_row[in_row >= 0]
        if used.size:
            first[br], last[br] = int(used.min()), int(used.max())
    count = np.where(last >= 0, last - first + 1, 0)
    means = np.empty((n_seg, n_frames))
    for sl, power in source():
        _block_means(*_kernel_input(power, box), sl.start, sb, block_px, first, count, means)
    return means


def roi_curves_of(source: PowerSource, rois: Sequence[Roi], n_frames: int) -> FloatArray:
    """Mean linear power of every ROI per frame (one streaming pass), shape (K, T).

    Same values as `ceuskit.tic.roi_means` (non-finite pixels left out; NaN
    for a frame with none), summed by the compiled kernel over each ROI's
    bounding box instead of gathering its pixels.
    """
    boxes, masks = [], []
    for r in rois:
        rr, cc = np.nonzero(r.mask)
        box = (slice(int(rr.min()), int(rr.max()) + 1), slice(int(cc.min()), int(cc.max()) + 1))
        boxes.append(box)
        masks.append(np.ascontiguousarray(r.mask[box]))
    sums = np.zeros((len(rois), n_frames))
    counts = np.zeros((len(rois), n_frames), dtype=np.int64)
    seen = 0
    for sl, power in source():
        if sl.stop > n_frames:
            raise ValueError(f"the source gave more frames than the {n_frames} of times_s")
        for k, (box, mask) in enumerate(zip(boxes, masks, strict=True)):
            _mask_sums(*_kernel_input(power, box), sl.start, mask, sums[k], counts[k])
        seen = sl.stop
    if seen != n_frames:
        raise ValueError(f"the source gave {seen} frames, times_s has {n_frames}")
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def _label_box(label: NDArray[np.int16], block_px: int) -> tuple[slice, slice]:
    """Smallest block-aligned rectangle holding every labelled pixel."""
    r, c = np.nonzero(label >= 0)
    h, w = label.shape
    r0, c0 = (int(r.min()) // block_px) * block_px, (int(c.min()) // block_px) * block_px
    r1 = min(h, -(-(int(r.max()) + 1) // block_px) * block_px)
    c1 = min(w, -(-(int(c.max()) + 1) // block_px) * block_px)
    return (slice(r0, r1), slice(c0, c1))


def compute_maps(
    source: PowerSource,
    times_s: NDArray[Any],
    rois: Sequence[Roi],
    options: MapOptions | None = None,
    *,
    valid_frames: NDArray[np.bool_] | None = None,
    spacing_mm: tuple[float, float] | None = None,
    runner: ChunkRunner | None = None,
    progress: Callable[[str], None] | None = None,
    pixel_source: PowerSource | None = None,
) -> MapResult:
    """Parametric maps inside the ROIs (the procedure of the module docstring).

    Parameters
    ----------
    source : PowerSource
        Aligned linear power of the contrast panel, streamed (called three
        times).
    times_s : array, shape (T,)
        Frame times (s, cine clock).
    rois : sequence of Roi
        Masks in the panel's shape.
    options : MapOptions, optional
    valid_frames : bool array, shape (T,), optional
        Frames to use (False = rejected by motion compensation).
    spacing_mm : (row, col), optional
        Pixel size, carried into the result.
    runner : callable, optional
        Runs the fitting tasks (`ChunkRunner`); default in-process.  The
        tasks and their order are the same either way, so the results are
        identical.
    progress : callable, optional
        Receives one short message per stage.
    pixel_source : PowerSource, optional
        What the pixel enhancement test reads (default `source`).  For a
        motion-corrected cine, pass the nearest-neighbour alignment: bilinear
        weights of a few per cent of a neighbour 30 dB brighter would make a
        non-enhancing pixel at a necrosis border "enhance".

    Returns
    -------
    MapResult
    """
    opts = options or MapOptions()
    say = progress or (lambda _msg: None)
    t = np.asarray(times_s, dtype=np.float64)
    n_t = t.size
    valid = np.ones(n_t, dtype=bool) if valid_frames is None else np.asarray(valid_frames, dtype=bool)
    if not rois:
        raise ValueError("no ROI to map")
    shape = tuple(int(v) for v in rois[0].mask.shape)
    h, w = shape

    # 1. ROI curves, fits and time windows.
    say("measuring the ROI curves")
    roi_curves = roi_curves_of(source, rois, n_t)
    fit_in = np.where(valid[None, :], roi_curves, np.nan)
    roi_fits = _fit_batch(t, fit_in, opts.model, screen=True)
    windows = pixel_test_windows(t, rois, roi_fits, valid)

    # 2. Pixel test.
    label = roi_labels(rois, (h, w))
    box = _label_box(label, opts.block_px)
    say("testing every pixel for enhancement")
    test = pixel_test(pixel_source or source, label, windows, box)

    # 3. Block curves of enhancing pixels.
    seg, seg_row = block_segments(label, test.enhancing, opts.block_px, len(rois))
    n_seg = int(seg_row.size)
    say(f"averaging {n_seg} block curves ({opts.block_px} x {opts.block_px} px)")
    curves = segment_curves(source, seg, n_seg, n_t, box, opts.block_px)
    curves[:, ~valid] = np.nan  # rejected frames: left out of the fits

    # 4. Fits, in chunks of block rows.
    ref_i = next((i for i, r in enumerate(rois) if r.role == "reference" and roi_fits.choice[i] >= 0),
                 None)
    reference = None
    if ref_i is not None:
        reference = (roi_fits.names[int(roi_fits.choice[ref_i])], roi_fits.params[ref_i].copy())
    bounds = np.searchsorted(seg_row, np.arange(0, (int(seg_row.max()) + 1 if n_seg else 0)
                                               + opts.row_chunk_blocks, opts.row_chunk_blocks))
    bounds = np.unique(np.clip(bounds, 0, n_seg))
    # Views of contiguous rows of `curves`: no copy for the in-process path.
    tasks = [(t, curves[a:b], opts.model, reference, opts.keep_dvp_curves)
             for a, b in itertools.pairwise(bounds)]
    say(f"fitting {n_seg} block curves ({opts.model}) in {len(tasks)} chunk(s)")
    parts = (runner or _run_local)(tasks)
    del tasks, curves

    # 5. Assemble per-segment values, then paint pixels.
    names = tuple(AUTO_MODELS) if opts.model == "auto" else (opts.model,)
    seg_vals: dict[str, FloatArray] = {}
    for key in MAP_PARAMETERS:
        seg_vals[key] = np.concatenate([p[key] for p in parts]) if parts else np.zeros(0)
    seg_status = np.concatenate([p["status"] for p in parts]) if parts else np.zeros(0, np.int8)
    seg_choice = np.concatenate([p["choice"] for p in parts]) if parts else np.zeros(0, np.int8)
    seg_dvp_cls = np.concatenate([p["dvp_class"] for p in parts]) if parts else np.zeros(0, np.int8)
    dvp_curves = None
    if reference is not None and opts.keep_dvp_curves:
        dvp_curves = (np.concatenate([p["dvp"] for p in parts]) if parts
                      else np.zeros((0, n_t), dtype=np.float32))
    del parts

    inside = label >= 0
    has_seg = seg >= 0
    sidx = seg[has_seg]
    params: dict[str, NDArray[np.float32]] = {}
    for key in MAP_PARAMETERS:
        m = np.full((h, w), np.nan, dtype=np.float32)
        m[has_seg] = seg_vals[key][sidx]
        params[key] = m
    status = np.full((h, w), OUTSIDE, dtype=np.int8)
    status[inside & ~test.tested] = int(FitStatus.NON_FINITE)
    status[inside & test.tested & ~test.enhancing] = int(FitStatus.NO_ENHANCEMENT)
    status[has_seg] = seg_status[sidx]
    model = np.full((h, w), -1, dtype=np.int8)
    model[has_seg] = seg_choice[sidx]
    dvp_class = np.full((h, w), -1, dtype=np.int8)
    if reference is not None:
        # Non-enhancing pixels: DVP = -(reference enhancement), unipolar negative.
        dvp_class[inside & test.tested & ~test.enhancing] = 2
        dvp_class[has_seg] = seg_dvp_cls[sidx]
    lesion_any = np.zeros((h, w), dtype=bool)
    for r in rois:
        if r.role == "lesion":
            lesion_any |= r.mask
    necrosis = lesion_any & test.tested & ~test.enhancing

    # 6. Per-ROI summaries (necrosis, heterogeneity, DVP, medians).
    roi_desc = {k: np.full(len(rois), np.nan) for k in MAP_PARAMETERS}
    usable = np.isin(roi_fits.status, [int(s) for s in USABLE_STATUSES]) & (roi_fits.choice >= 0)
    roi_dvp_cls = np.full(len(rois), -1, dtype=np.int8)
    if reference is not None:
        ref_model = get_model(reference[0])
        ref_curve = ref_model.predict(reference[1], t) - float(ref_model.baseline(reference[1]))
        roi_dvp = roi_fits.enhancement(t) - ref_curve[None, :]
        roi_dvp_cls = classify_dvp(roi_dvp, DVP_FLAT_FRACTION * float(np.max(ref_curve)))
    for k in MAP_PARAMETERS:
        src = roi_fits.qof if k == "qof" else roi_fits.desc[k]
        roi_desc[k] = np.where(usable, src, np.nan)
    summaries: dict[str, dict[str, Any]] = {}
    for i, r in enumerate(rois):
        summaries[r.name] = _roi_summary(i, r, test, params, dvp_class, windows, roi_fits,
                                         roi_desc, roi_dvp_cls, reference is not None,
                                         opts.block_px)

    return MapResult(
        params=params, status=status, model=model, model_names=names,
        enhancing=test.enhancing, tested=test.tested, necrosis=necrosis, z=test.z,
        rise_db=test.rise_db, dvp_class=dvp_class, segments=seg, dvp_curves=dvp_curves,
        times_s=t, spacing_mm=spacing_mm, rois=summaries, windows=windows, options=opts,
        n_curves=n_seg, reference_name=None if ref_i is None else rois[ref_i].name,
    )


def _roi_summary(i: int, roi: Roi, test: PixelTest, params: dict[str, NDArray[np.float32]],
                 dvp_class: NDArray[np.int8], windows: PixelWindows, roi_fits: _Fits,
                 roi_desc: dict[str, FloatArray], roi_dvp_cls: NDArray[np.int8],
                 has_reference: bool, block_px: int) -> dict[str, Any]:
    """Figures of one ROI for the summary (and results.json)."""
    m = roi.mask
    tested = test.tested & m
    enh = test.enhancing & m
    n_tested = int(np.count_nonzero(tested))
    n_enh = int(np.count_nonzero(enh))
    non_enh = (n_tested - n_enh) / n_tested if n_tested else None
    pe = params["peak_enhancement"][enh].astype(np.float64)
    pe = pe[np.isfinite(pe)]
    enough = pe.size >= max(2, HETEROGENEITY_MIN_BLOCKS * block_px**2)
    cv = float(np.std(pe) / np.mean(pe)) if enough and np.mean(pe) > 0 else None
    index = robust_cv(pe) if enough else None
    necrosis = non_enh if roi.role == "lesion" else None
    heterogeneous = None
    if n_tested and n_enh / n_tested >= HETEROGENEITY_MIN_ENHANCING and (
            index is not None or necrosis is not None):
        heterogeneous = bool((index is not None and index > HETEROGENEITY_CV_THRESHOLD)
                             or (necrosis is not None and necrosis > HETEROGENEITY_NECROSIS_THRESHOLD))
    medians = {}
    for k in MAP_PARAMETERS:
        v = params[k][enh]
        v = v[np.isfinite(v)]
        medians[k] = finite_or_none(np.median(v)) if v.size else None
    shares: dict[str, float] | None = None
    if has_reference and n_tested:
        cls = dvp_class[tested]
        shares = {name: float(np.count_nonzero(cls == j) / n_tested)
                  for j, name in enumerate(DVP_CLASSES)}
        shares["not-available"] = float(np.count_nonzero(cls < 0) / n_tested)
    post = windows.post_s[i]
    c = int(roi_fits.choice[i])
    return {
        "role": roi.role,
        "area_px": roi.area_px,
        "tested_px": n_tested,
        "enhancing_px": n_enh,
        "non_enhancing_fraction": non_enh,
        "necrosis_fraction": necrosis,
        "heterogeneity": {
            "index": index,
            "cv_peak_enhancement": cv,
            "necrosis_fraction": necrosis,
            "heterogeneous": heterogeneous,
            "threshold_cv": HETEROGENEITY_CV_THRESHOLD,
            "threshold_necrosis": HETEROGENEITY_NECROSIS_THRESHOLD,
        },
        "pixel_medians": medians,
        "roi_curve": {
            "model": roi_fits.names[c] if c >= 0 else "none",
            "status": FitStatus(int(roi_fits.status[i])).label,
            **{k: finite_or_none(roi_desc[k][i]) for k in MAP_PARAMETERS},
        },
        "dvp": {
            "roi_class": DVP_CLASSES[int(roi_dvp_cls[i])] if roi_dvp_cls[i] >= 0 else None,
            "pixel_shares": shares,
        },
        "test_window": {
            "baseline_s": list(windows.baseline_s),
            "post_arrival_s": None if post is None else list(post),
            "post_window_source": windows.source[i],
        },
    }


def lesion_necrosis(
    source: PowerSource,
    times_s: NDArray[Any],
    rois: Sequence[Roi],
    fits: Sequence[tuple[str, NDArray[Any]] | None],
    *,
    valid_frames: NDArray[np.bool_] | None = None,
    viable_out: dict[str, NDArray[np.bool_]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Necrosis fraction of every lesion ROI from ROI fits already made (one streaming pass).

    The pixel enhancement test of `compute_maps` (same windows, same rule),
    run on the lesion ROIs' pixels only, for the pipeline's results.json.

    Parameters
    ----------
    source : PowerSource
    times_s : array, shape (T,)
    rois : sequence of Roi
        All ROIs (the windows use the reference ROI's fit).
    fits : sequence of (model name, params (5,)) or None
        Each ROI's usable fit, None for an ROI that does not enhance.
    valid_frames : bool array, shape (T,), optional
    viable_out : dict, optional
        When given, receives each lesion ROI's enhancing (viable) pixels:
        name -> bool mask of the panel.

    Returns
    -------
    dict
        Lesion ROI name -> ``necrosis_fraction`` (0..1 or None), ``tested_px``,
        ``non_enhancing_px``, ``baseline_window_s``, ``post_arrival_window_s``,
        ``test``.
    """
    t = np.asarray(times_s, dtype=np.float64)
    valid = np.ones(t.size, dtype=bool) if valid_frames is None else np.asarray(valid_frames, bool)
    names = tuple(dict.fromkeys(f[0] for f in fits if f is not None)) or ("lognormal",)
    choice = np.array([-1 if f is None else names.index(f[0]) for f in fits], dtype=np.int8)
    params = np.array([np.full(5, np.nan) if f is None else np.asarray(f[1], dtype=np.float64)
                       for f in fits])
    roi_fits = _Fits(names, choice, np.zeros(len(fits), dtype=np.int8), np.full(len(fits), np.nan),
                     params, {})
    windows = pixel_test_windows(t, rois, roi_fits, valid)
    shape = tuple(int(v) for v in rois[0].mask.shape)
    label = np.full(shape, -1, dtype=np.int16)
    lesions = [i for i, r in enumerate(rois) if r.role == "lesion"]
    for i in reversed(lesions):
        label[rois[i].mask] = i
    if not lesions:
        return {}
    test = pixel_test(source, label, windows, _label_box(label, 1))
    out: dict[str, dict[str, Any]] = {}
    for i in lesions:
        m = rois[i].mask
        if viable_out is not None:
            viable_out[rois[i].name] = test.tested & m & test.enhancing
        n_tested = int(np.count_nonzero(test.tested & m))
        n_non = int(np.count_nonzero(test.tested & m & ~test.enhancing))
        post = windows.post_s[i]
        out[rois[i].name] = {
            "necrosis_fraction": n_non / n_tested if n_tested else None,
            "tested_px": n_tested,
            "non_enhancing_px": n_non,
            "baseline_window_s": list(windows.baseline_s),
            "post_arrival_window_s": None if post is None else list(post),
            "post_window_source": windows.source[i],
            "test": PIXEL_TEST_TEXT,
            "plane": "the cine's single imaging plane (ROIs in the motion reference frame)",
        }
    return out


def robust_cv(values: NDArray[Any]) -> float | None:
    """Robust coefficient of variation ``1.4826 MAD / median`` (None for < 2 values or median <= 0).

    Equals the CV for normally distributed values, and the standard deviation
    of the logarithm for a narrow lognormal; unlike std / mean, one badly
    fitted block (a spike fitted to a few noisy pixels at an ROI edge) does
    not move it.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return None
    med = float(np.median(v))
    if med <= 0:
        return None
    return float(_MAD_TO_SIGMA * np.median(np.abs(v - med)) / med)


def dvp_label(code: int) -> str:
    """Name of a DVP class code (``"not-available"`` for -1)."""
    return DVP_CLASSES[code] if 0 <= code < len(DVP_CLASSES) else "not-available"
