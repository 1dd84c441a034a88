"""In-plane motion compensation: estimate on one panel, apply to any stack.

Breathing and probe drift move the anatomy under fixed ROIs: an uncorrected
shift of a few pixels mixes a lesion's curve with its neighbours'.  Motion is
estimated on the B-mode panel, whose tissue speckle is stable (the contrast
panel changes with the bolus), and the same transform is applied to the
contrast panel's linear power before ROI means.

Convention
----------
A frame's transform maps reference coordinates to frame coordinates: the
anatomy found at pixel ``p`` of the reference frame appears in frame ``t`` at

    W_t(p) = R(theta_t) (p - c) + c + d_t,

with ``d_t = (dx_px[t], dy_px[t])`` (x = column to the right, y = row down,
in pixels), ``theta_t = rotation_deg[t]`` (positive from +x towards +y, i.e.
clockwise on screen) and ``c`` the panel centre ``((w - 1) / 2, (h - 1) / 2)``.
This is the simulator's convention (anatomy displaced by ``+d``).  Aligning a
frame samples it at ``W_t(p)`` for every reference pixel ``p``.

Method (`estimate_motion`)
--------------------------
1. Every frame is mean-subtracted and tapered by a Tukey window; cross-power
   spectra against a template are whitened (phase correlation: robust to the
   brightness changes of the bolus) and apodised by a Gaussian, so the
   correlation peak is a Gaussian of ``APODISATION_SIGMA_PX``; its sub-pixel
   position comes from a three-point Gaussian fit per axis (exact for a
   sampled Gaussian).  The peak height (1 for identical frames) measures how
   well a frame matches.
2. Provisional template: the *most typical* of ``N_TYPICAL`` evenly spaced
   frames (highest median peak height against the others), or the user's
   reference frame.  A first pass registers every frame to it.  Steps 2-3
   only choose frames, so on panels of at least ``COARSE_MIN_SIDE_PX`` px
   they run on ``COARSE_FACTOR``-fold block means (a quarter of the pixels);
   the template's members are then re-measured at full resolution.
3. Reference (automatic choice): among frames whose first-pass peak height is
   not an outlier (same robust rule as rejection, below), the one closest to
   the median position (x and y medians): the anatomy's typical position,
   about which breathing oscillates, so that it moves least on average and
   the fewest pixels leave the panel.  ROIs are taken to be drawn on the
   reference frame: pass the frame you drew them on when it matters.
4. Second pass against a cleaner template: the motion-corrected mean of up to
   ``N_TEMPLATE`` well-matched frames in the reference's coordinates.
   Displacements are then expressed relative to the reference frame itself.
   In translation mode on panels that steps 2-3 coarsen, the search runs on
   the block means too (peak height and second peak come from there), and
   each shift is refined at full resolution: the same whitened, apodised
   correlation evaluated at five integer shifts around it (a filter made
   once from the template's spectrum, `_refine_filter`), and the same
   Gaussian fit.  On synthetic speckle with known shifts its RMS error is
   0.02-0.04 px (the full-grid pass's 0.015-0.022 px), the two within
   0.07 px of each other, at about a third of the cost (no full-resolution
   FFT per frame; tests/test_motion.py).
5. ``rigid`` mode measures each frame's rotation with OpenCV's ECC
   (``cv2.findTransformECC``, ``MOTION_EUCLIDEAN``) against the template,
   started from the translation; the frame is rotated back and its shift
   measured again by phase correlation (more accurate on speckle than ECC's
   interpolating intensity match).  The template's frames are aligned
   rigidly too.
6. Quality: normalised cross-correlation, after alignment, between the frame
   and the template, both band-passed (difference of Gaussians,
   ``QUALITY_BAND_PX``) so that it measures speckle, which out-of-plane
   motion decorrelates.  A frame is rejected when its quality is below
   ``median - max(REJECT_K_MAD * 1.4826 * MAD, REJECT_MIN_DROP)`` over the
   tracked frames.

Without a B-mode panel (``tracked_panel="contrast"``), the contrast panel is
registered on its perfusion pattern: the gradient magnitude of the smoothed
frame (`CONTRAST_SMOOTH_PX`; bubble speckle is fresh every frame and which
side of a border is brighter changes with the bolus phase), only in frames
where the bolus shows (`bolus_frames`); the others keep the transform of the
nearest tracked frame.  Quality there drifts with the bolus phase, so only
dips below its running median are rejected; an out-of-plane frame that
shows a similar pattern cannot be told from an in-plane one on this panel.
Frames whose pattern has sunk into the noise (dim late frames: structure
below `CONTRAST_MIN_STRUCTURE_SHARE` of the peak frames') are not tracked
either: phase correlation on noise locks onto peaks anywhere in the search
range (54-61 px in a real breast clip).

Trust
-----
7. Plausibility (`PLAUSIBILITY_RULE`): a tracked frame whose shift is too
   large for the panel (`PLAUSIBLE_SHIFT_SHARE`), too far from its agreeing
   neighbours (`CONSISTENCY_*`) or reached too fast (`MAX_SPEED_MM_PER_S`,
   when frame times are given) is *implausible*: rejected from the fits (the
   safer choice: where the anatomy is in it is unknown) and holding the
   nearest plausible frame's transform (so no image is moved by it).
8. Confidence per frame, 0..1 (`TRUST_RULE`): distinctness of the correlation
   peak over the second peak x its height against the typical height x the
   frame's structure; 0 when implausible.  Frames below
   `MIN_FRAME_CONFIDENCE` hold the nearest confident frame's transform (like
   untracked frames; their curve samples are kept).  The estimate as a whole
   is `trusted` when its mean confidence and share of implausible frames pass
   `TRUST_MIN_CONFIDENCE` and `TRUST_MAX_IMPLAUSIBLE_SHARE`; the pipeline does
   not apply an untrusted estimate (warning ``motion-untrusted``).

Everything here is pure computation on arrays (no I/O).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import scipy.fft
from numpy.typing import ArrayLike, NDArray
from scipy.ndimage import median_filter

FloatArray = NDArray[np.float64]

MODES = ("translation", "rigid")
PANELS = ("bmode", "contrast")

#: Standard deviation (px) of the Gaussian that the whitened correlation peak
#: is shaped into: wide enough for a three-point sub-pixel fit, narrow enough
#: to keep phase correlation's sharp, unambiguous peak.
APODISATION_SIGMA_PX = 1.0
#: Share of each side tapered by the Tukey window (the rest weighs 1): keeps
#: most of the panel while removing the edge discontinuity that whitening
#: would otherwise turn into a false peak at zero shift.
TAPER_SHARE = 0.25
#: Largest displacement searched, as a share of the panel's smaller side.
MAX_SHIFT_SHARE = 0.25
#: The provisional template and the first pass (steps 2-3) run on frames
#: averaged over COARSE_FACTOR x COARSE_FACTOR px blocks when both sides of
#: the panel are at least COARSE_MIN_SIDE_PX: they only choose the reference
#: frame and the template's members, so a quarter of the pixels is enough;
#: the template itself uses the full resolution, and the second pass (in
#: translation mode) searches coarse and refines at full resolution.
COARSE_FACTOR = 2
COARSE_MIN_SIDE_PX = 96
#: Candidates for the provisional template, evenly spaced in the cine.
N_TYPICAL = 12
#: Frames averaged (after alignment) into the second-pass template.
N_TEMPLATE = 48
#: Difference-of-Gaussians band (px) in which match quality is measured:
#: the lower sigma tames pixel noise and interpolation blur, the upper one
#: removes the anatomy's slow brightness changes, leaving mostly speckle.
QUALITY_BAND_PX = (1.0, 4.0)
#: Rejection: quality below median - max(K * 1.4826 * MAD, MIN_DROP).  The
#: MAD term adapts to how steady a cine's matches are; the absolute drop
#: keeps a very steady cine from rejecting frames for trivial dips.
REJECT_K_MAD = 4.0
REJECT_MIN_DROP = 0.10
#: Contrast-panel fallback: Gaussian smoothing (px) that averages out the
#: bubble speckle (fresh every frame) and keeps the perfusion pattern, whose
#: gradient magnitude is then registered: the borders of the lesion and the
#: vessels stay put while which side of them is brighter changes with the
#: bolus phase (tumour first, muscle and lumen later), which defeats
#: registering brightness itself.
CONTRAST_SMOOTH_PX = 2.0
#: ... with partial whitening (cross-power / |cross-power|^0.5) and a wider
#: apodisation (px): the perfusion pattern has little fine detail.
CONTRAST_WHITEN = 0.5
CONTRAST_APODISATION_SIGMA_PX = 2.0
#: ... frames are tracked where the panel's smoothed mean brightness is at
#: least this share of its rise above the pre-bolus level (small: a lesion
#: enhances before, and over less area than, the tissue and vessels around
#: it, and its wash-in must be tracked) ...
CONTRAST_BOLUS_SHARE = 0.05
#: ... and match quality is compared with its running median over this many
#: frames either side (it drifts with the bolus phase); out-of-plane episodes
#: shorter than that show as dips below it.
CONTRAST_LOCAL_HALF_WINDOW = 7
#: Auto reference: the frame's first-pass position may differ from the
#: running median of its 5-frame neighbourhood by at most this (px): smooth
#: breathing passes, while a transient glitch (an out-of-plane frame that the
#: match does not reveal, as on the contrast panel) does not.
REFERENCE_MAX_GLITCH_PX = 0.5
#: ECC (rigid mode): iterations, convergence threshold (change of the warp),
#: Gaussian pre-filter size (px, odd) and the largest move of the panel
#: centre (px) accepted from the translation estimate it starts from.
ECC_ITERATIONS = 30
ECC_EPS = 1e-4
ECC_GAUSS_SIZE = 3
ECC_MAX_STEP_PX = 3.0
#: Rotations beyond this (degrees) are taken for ECC failures: breathing and
#: probe rocking rotate the image by a few degrees at most.
ECC_MAX_ROTATION_DEG = 15.0
#: Structure (contrast panel): spatial standard deviation of the frame
#: smoothed by this Gaussian (px), which averages out the bubble speckle and
#: receiver noise (fresh every frame) and keeps the perfusion pattern ...
STRUCTURE_SMOOTH_PX = 4.0
#: ... relative to the "peak frames" (this percentile of the structure over
#: the frames where the bolus shows) ...
STRUCTURE_REFERENCE_PERCENTILE = 90.0
#: ... a contrast frame is tracked only when its structure is at least this
#: share of the peak frames': dim late frames whose pattern has sunk into the
#: noise hold no anatomy for phase correlation to find, and it then locks
#: onto noise peaks anywhere in the search range (tens of px in a real breast
#: clip).  Pre-bolus frames of the simulator keep ~0.4 (tissue background),
#: noise-only frames ~0.05.
CONTRAST_MIN_STRUCTURE_SHARE = 0.2
#: Confidence per frame (see `MotionEstimate.confidence`), the product of
#: three scores in 0..1.  Distinctness: 1 while the second correlation peak is
#: below PEAK_RATIO_CLEAR of the first (well-matched frames: 0.25-0.35 on both
#: panels), 0 from PEAK_RATIO_AMBIGUOUS on (noise: 0.55-0.97), linear between.
PEAK_RATIO_CLEAR = 0.4
PEAK_RATIO_AMBIGUOUS = 0.9
#: Height: 1 while the peak is at least this share of the median peak of the
#: tracked frames, proportional below (dim frames: ~0.15 of it).
PEAK_HEIGHT_FULL_SHARE = 0.5
#: Structure: 1 while the frame's structure (B-mode: standard deviation of
#: the band-passed speckle; contrast: see STRUCTURE_SMOOTH_PX) is at least
#: this share of the peak frames', proportional below.
STRUCTURE_FULL_SHARE = 0.5
#: A tracked frame whose confidence is below this carries too little
#: structure or too ambiguous a peak for its shift to mean anything (dim
#: frames score 0-0.05, well-matched ones 0.7-1): its estimate is not used,
#: it holds the nearest confident frame's transform (like an untracked frame;
#: it is not rejected, its curve sample is kept).
MIN_FRAME_CONFIDENCE = 0.25
#: Plausibility.  Size: a displacement beyond this share of the panel's
#: smaller side is not in-plane breathing or probe motion (the liver moves
#: 1-2 cm per breath, a breast lesion far less; at typical 0.1-0.3 mm pixels
#: and 40-60 mm panels 15 % is 6-9 mm), but a correlation peak locked onto
#: noise or onto the panel's edge.
PLAUSIBLE_SHIFT_SHARE = 0.15
#: Speed: between a frame and the last plausible frame before it (walking
#: out from the reference) the anatomy may move at most this fast (mm/s:
#: about the diaphragm's peak speed in deep breathing; probe drift and breast
#: motion are far slower) ...
MAX_SPEED_MM_PER_S = 15.0
#: ... converted at the panel's pixel size, or at this one when unknown
#: (0.2 mm, the simulator's, i.e. 75 px/s), over the frames' time interval
#: (without frame times there is no speed test) ...
FALLBACK_SPACING_MM = 0.2
#: ... plus this allowance (px) for the estimate's own scatter.
SPEED_TOLERANCE_PX = 3.0
#: Consistency: a frame's displacement may depart from the median of its
#: CONSISTENCY_NEIGHBOURS tracked neighbours either side by at most
#: max(CONSISTENCY_MIN_PX, CONSISTENCY_K x their median absolute deviation
#: from that median): when the neighbours agree, a frame far from them is a
#: glitch; when they do not (fast breathing at a low frame rate) the bound
#: widens with their spread.  The 10 px floor (2 mm at 0.2 mm pixels) lets
#: fast, jerky but real motion pass (frame-to-frame jumps of up to ~8 px from
#: agreeing neighbours occur in the random-shift unit test) and still catches
#: the tens-of-px jumps of a correlation peak locked onto noise.
CONSISTENCY_NEIGHBOURS = 2
CONSISTENCY_MIN_PX = 10.0
CONSISTENCY_K = 4.0
#: Trust (used by the pipeline, `MotionEstimate.trusted`): an estimate whose
#: overall confidence is below this, or in which more than this share of the
#: tracked frames is implausible, is not applied: it would move the ROIs by
#: amounts nothing supports.
TRUST_MIN_CONFIDENCE = 0.5
TRUST_MAX_IMPLAUSIBLE_SHARE = 0.2
#: Second correlation peak: the highest value farther than this many
#: apodisation sigmas from the first peak (its own Gaussian flank has fallen
#: to exp(-4.5) = 1 % of its height there).
SECOND_PEAK_EXCLUSION_SIGMAS = 3.0

#: An aligned pixel is valid when its source point lies inside the source
#: frame within this tolerance (px): exact integer shifts stay exact.
VALID_TOLERANCE_PX = 1e-3

#: Frames per processing chunk (bounds the memory of the FFT buffers).
CHUNK = 64
#: Largest set of coarse-grid spectra (bytes) that the first pass keeps for
#: the second (translation mode): the second pass searches the same spectra
#: against the final template, so keeping them saves converting, block
#: averaging and transforming every frame again (~0.25 s of CPU for 901
#: frames of 480 x 248 px, whose spectra take 109 MB).  Beyond this they are
#: recomputed, chunk by chunk, as before.
SPECTRA_CACHE_BYTES = 256 << 20


class ReferenceFrameError(ValueError):
    """The requested reference frame cannot be used (outside the cine, or nothing to track)."""


REJECTION_RULE = (
    f"quality = normalised cross-correlation after alignment between the frame and the "
    f"motion-corrected template, both band-passed (difference of Gaussians, sigma "
    f"{QUALITY_BAND_PX[0]:g}-{QUALITY_BAND_PX[1]:g} px); a frame is rejected when its quality is "
    f"below median - max({REJECT_K_MAD:g} x 1.4826 x MAD, {REJECT_MIN_DROP:g}) over all tracked frames"
)
REJECTION_RULE_CONTRAST = (
    f"quality = normalised cross-correlation after alignment between the gradient magnitude of "
    f"the smoothed frame and that of the template, less its trend (Gaussian, sigma "
    f"{4 * CONTRAST_SMOOTH_PX:g} px); the perfusion pattern changes with the bolus phase, so a "
    f"frame is rejected when its quality drops below the running median of "
    f"{2 * CONTRAST_LOCAL_HALF_WINDOW + 1} tracked frames less max({REJECT_K_MAD:g} x 1.4826 x "
    f"MAD of the drops, {REJECT_MIN_DROP:g}): only transient dips (out-of-plane frames) count"
)

PLAUSIBILITY_RULE = (
    f"a tracked frame's estimate is implausible when its displacement exceeds "
    f"{PLAUSIBLE_SHIFT_SHARE:.0%} of the panel's smaller side, when it moved faster than "
    f"{MAX_SPEED_MM_PER_S:g} mm/s (+ {SPEED_TOLERANCE_PX:g} px) from the last plausible frame "
    f"(walking out from the reference; when the frame times are known), or when it departs "
    f"from the median of its "
    f"{2 * CONSISTENCY_NEIGHBOURS} tracked neighbours by more than max({CONSISTENCY_MIN_PX:g} px, "
    f"{CONSISTENCY_K:g} x their spread); implausible frames are left out of the curve fits "
    f"(rejected) and hold the nearest plausible frame's transform"
)
TRUST_RULE = (
    f"confidence per frame = distinctness of the correlation peak (second peak below "
    f"{PEAK_RATIO_CLEAR:g} of the first: 1, above {PEAK_RATIO_AMBIGUOUS:g}: 0) x its height "
    f"(full from {PEAK_HEIGHT_FULL_SHARE:g} x the median) x the frame's structure (full from "
    f"{STRUCTURE_FULL_SHARE:g} x the peak frames'), 0 when implausible; frames below "
    f"{MIN_FRAME_CONFIDENCE:g} hold the nearest confident frame's transform; the estimate is "
    f"applied only when the mean over tracked frames is at least {TRUST_MIN_CONFIDENCE:g} and at most "
    f"{TRUST_MAX_IMPLAUSIBLE_SHARE:.0%} of the tracked frames are implausible"
)


@dataclass(frozen=True)
class MotionEstimate:
    """Per-frame in-plane transform of a cine relative to its reference frame.

    Attributes
    ----------
    dx_px, dy_px : ndarray, shape (T,)
        Displacement of the anatomy in each frame relative to the reference
        frame, in pixels of the tracked panel (x right, y down); 0 at the
        reference.
    rotation_deg : ndarray, shape (T,)
        Rotation about the panel centre in degrees (positive from +x towards
        +y); zeros in ``translation`` mode.
    quality : ndarray, shape (T,)
        Match quality after alignment (band-passed normalised
        cross-correlation with the template, -1..1); NaN for untracked frames.
    rejected : ndarray of bool, shape (T,)
        Frames whose match is poor (out-of-plane motion): to be excluded from
        curves and maps.
    tracked : ndarray of bool, shape (T,)
        Frames that were registered; the others (contrast fallback: before
        the bolus) hold the transform of the nearest tracked frame.
    reference_index : int
        The reference frame (index into the cine).
    reference_choice : str
        ``"user"`` or ``"auto: ..."`` saying how it was chosen.
    mode : str
        ``"translation"`` or ``"rigid"``.
    tracked_panel : str
        ``"bmode"`` or ``"contrast"``.
    quality_threshold : ndarray, shape (T,)
        Quality below which each frame was rejected (the same for every
        frame on the B-mode panel; a running threshold on the contrast panel);
        NaN for untracked frames.
    panel_shape : (int, int)
        (rows, cols) of the tracked panel; rotation is about its centre.
    rejection_rule : str
        The quality measure and rejection rule, in words.
    confidence : ndarray, shape (T,)
        How far each tracked frame's estimate can be trusted, 0..1 (see
        `TRUST_RULE`); NaN for untracked frames.  Default: 1 where tracked.
    implausible : ndarray of bool, shape (T,)
        Tracked frames whose estimate failed a plausibility test
        (`PLAUSIBILITY_RULE`); they are also `rejected` and hold the nearest
        plausible frame's transform.  Default: none.
    estimated_displacement_px : ndarray, shape (T,)
        Length of each tracked frame's displacement as estimated, before
        implausible and low-confidence frames were made to hold a neighbour's
        (px); NaN for untracked frames.  Default: that of ``dx_px, dy_px``.
    """

    dx_px: FloatArray
    dy_px: FloatArray
    rotation_deg: FloatArray
    quality: FloatArray
    rejected: NDArray[np.bool_]
    tracked: NDArray[np.bool_]
    reference_index: int
    reference_choice: str
    mode: str
    tracked_panel: str
    quality_threshold: FloatArray
    panel_shape: tuple[int, int]
    rejection_rule: str = field(default=REJECTION_RULE)
    confidence: FloatArray | None = None
    implausible: NDArray[np.bool_] | None = None
    estimated_displacement_px: FloatArray | None = None

    def __post_init__(self) -> None:
        if self.confidence is None:
            object.__setattr__(self, "confidence",
                               np.where(np.asarray(self.tracked, bool), 1.0, np.nan))
        if self.implausible is None:
            object.__setattr__(self, "implausible", np.zeros(np.shape(self.dx_px), dtype=bool))
        if self.estimated_displacement_px is None:
            object.__setattr__(self, "estimated_displacement_px",
                               np.where(np.asarray(self.tracked, bool),
                                        np.hypot(self.dx_px, self.dy_px), np.nan))
        for name in ("dx_px", "dy_px", "rotation_deg", "quality", "rejected", "tracked",
                     "quality_threshold", "confidence", "implausible", "estimated_displacement_px"):
            arr = np.array(getattr(self, name))
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)

    @property
    def n_frames(self) -> int:
        return int(self.dx_px.size)

    @property
    def overall_confidence(self) -> float:
        """Mean confidence over the tracked frames (implausible ones count 0); 0 if none."""
        c = np.asarray(self.confidence)[self.tracked]
        return float(np.mean(c)) if c.size else 0.0

    @property
    def max_estimated_displacement_px(self) -> float:
        """Largest displacement as estimated on a tracked frame, before implausible and
        low-confidence frames were made to hold a neighbour's transform (px)."""
        d = np.asarray(self.estimated_displacement_px)[self.tracked]
        return float(np.nanmax(d)) if d.size and np.isfinite(d).any() else 0.0

    @property
    def low_confidence(self) -> NDArray[np.bool_]:
        """Plausible tracked frames below `MIN_FRAME_CONFIDENCE` (holding a neighbour's
        transform; implausible frames are reported apart)."""
        c = np.asarray(self.confidence)
        return np.asarray(self.tracked & ~np.asarray(self.implausible)
                          & (np.nan_to_num(c, nan=1.0) < MIN_FRAME_CONFIDENCE))

    @property
    def implausible_share(self) -> float:
        """Share of the tracked frames whose estimate is implausible."""
        k = int(np.count_nonzero(self.tracked))
        return float(np.count_nonzero(np.asarray(self.implausible) & self.tracked)) / k if k else 0.0

    @property
    def trusted(self) -> bool:
        """Whether the estimate may be applied (`TRUST_MIN_CONFIDENCE`,
        `TRUST_MAX_IMPLAUSIBLE_SHARE`)."""
        return (self.overall_confidence >= TRUST_MIN_CONFIDENCE
                and self.implausible_share <= TRUST_MAX_IMPLAUSIBLE_SHARE)

    @property
    def displacement_px(self) -> FloatArray:
        """Length of the displacement of each frame (px)."""
        return np.asarray(np.hypot(self.dx_px, self.dy_px))

    @property
    def rms_displacement_px(self) -> float:
        """Root-mean-square displacement over the accepted frames (px)."""
        d = self.displacement_px[~self.rejected]
        return float(np.sqrt(np.mean(d**2))) if d.size else 0.0

    @property
    def max_displacement_px(self) -> float:
        """Largest displacement among the accepted frames (px)."""
        d = self.displacement_px[~self.rejected]
        return float(d.max()) if d.size else 0.0

    def matrices(self, shape: tuple[int, int] | None = None) -> NDArray[np.float64]:
        """Affine matrices, shape (T, 2, 3), mapping reference to frame pixels.

        Parameters
        ----------
        shape : (rows, cols), optional
            Shape of the panel the matrices are for; rotation is about its
            centre (default: the tracked panel's shape).
        """
        h, w = self.panel_shape if shape is None else shape
        return _compose(self.dx_px, self.dy_px, self.rotation_deg, ((w - 1) / 2.0, (h - 1) / 2.0))

    def as_dict(self, times_s: ArrayLike | None = None,
                spacing_mm: tuple[float, float] | None = None) -> dict[str, Any]:
        """JSON-ready summary (the results.json ``motion`` section).

        Parameters
        ----------
        times_s : array, shape (T,), optional
            Frame times (s), to list the times of rejected frames.
        spacing_mm : (row, col) mm, optional
            Pixel size, to give displacements in mm as well.
        """
        rej = np.flatnonzero(self.rejected)
        imp = np.flatnonzero(np.asarray(self.implausible))
        low = np.flatnonzero(self.low_confidence)
        out: dict[str, Any] = {
            "mode": self.mode,
            "tracked_panel": self.tracked_panel,
            "reference_frame": {"index": int(self.reference_index), "choice": self.reference_choice},
            "convention": "anatomy in frame t is displaced by (+dx, +dy) px (x right, y down) and "
                          "rotated by rotation_deg (from +x towards +y) about the panel centre, "
                          "relative to the reference frame",
            "dx_px": [round(float(v), 2) for v in self.dx_px],
            "dy_px": [round(float(v), 2) for v in self.dy_px],
            "rotation_deg": ([round(float(v), 3) for v in self.rotation_deg]
                             if self.mode == "rigid" else None),
            "rms_displacement_px": round(self.rms_displacement_px, 3),
            "max_displacement_px": round(self.max_displacement_px, 3),
            "quality": [None if not math.isfinite(float(q)) else round(float(q), 3)
                        for q in self.quality],
            "quality_threshold": _threshold_json(self.quality_threshold),
            "rejection_rule": self.rejection_rule,
            "rejected_frames": {"count": int(rej.size), "indices": [int(i) for i in rej]},
            "untracked_frames": int(np.count_nonzero(~self.tracked)),
            "confidence": [None if not math.isfinite(float(c)) else round(float(c), 3)
                           for c in np.asarray(self.confidence)],
            "overall_confidence": round(self.overall_confidence, 3),
            "max_estimated_displacement_px": round(self.max_estimated_displacement_px, 3),
            "trusted": self.trusted,
            "trust_rule": TRUST_RULE,
            "plausibility_rule": PLAUSIBILITY_RULE,
            "implausible_frames": {"count": int(imp.size), "indices": [int(i) for i in imp]},
            "low_confidence_frames": {"count": int(low.size), "indices": [int(i) for i in low],
                                      "min_confidence": MIN_FRAME_CONFIDENCE},
        }
        if times_s is not None:
            t = np.asarray(times_s, dtype=np.float64)
            out["reference_frame"]["time_s"] = float(t[self.reference_index])
            out["rejected_frames"]["times_s"] = [round(float(t[i]), 4) for i in rej]
            out["implausible_frames"]["times_s"] = [round(float(t[i]), 4) for i in imp]
            out["low_confidence_frames"]["times_s"] = [round(float(t[i]), 4) for i in low]
        if spacing_mm is not None:
            s = float(np.sqrt(spacing_mm[0] * spacing_mm[1]))
            out["rms_displacement_mm"] = round(self.rms_displacement_px * s, 4)
            out["max_displacement_mm"] = round(self.max_displacement_px * s, 4)
        return out


def _threshold_json(th: FloatArray) -> float | list[float | None] | None:
    """One number when the threshold is the same for every tracked frame, else per frame."""
    finite = th[np.isfinite(th)]
    if finite.size == 0:
        return None
    if np.all(finite == finite[0]):
        return round(float(finite[0]), 4)
    return [round(float(v), 4) if math.isfinite(float(v)) else None for v in th]


# --------------------------------------------------------------------------- geometry


def _compose(dx: ArrayLike, dy: ArrayLike, rot_deg: ArrayLike,
             centre: tuple[float, float]) -> NDArray[np.float64]:
    """(T, 2, 3) matrices of ``p -> R (p - c) + c + d``."""
    dx, dy, th = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (dx, dy, rot_deg))
    th = np.deg2rad(th)
    cos, sin = np.cos(th), np.sin(th)
    cx, cy = centre
    m = np.empty((dx.size, 2, 3))
    m[:, 0, 0], m[:, 0, 1] = cos, -sin
    m[:, 1, 0], m[:, 1, 1] = sin, cos
    m[:, 0, 2] = cx + dx - (cos * cx - sin * cy)
    m[:, 1, 2] = cy + dy - (sin * cx + cos * cy)
    return m


def _decompose(m: NDArray[np.float64], centre: tuple[float, float]) -> tuple[
        FloatArray, FloatArray, FloatArray]:
    """Inverse of `_compose`: (dx, dy, rotation in degrees) from (T, 2, 3) matrices."""
    cx, cy = centre
    th = np.arctan2(m[:, 1, 0], m[:, 0, 0])
    cos, sin = np.cos(th), np.sin(th)
    dx = m[:, 0, 2] - cx + (cos * cx - sin * cy)
    dy = m[:, 1, 2] - cy + (sin * cx + cos * cy)
    return dx, dy, np.rad2deg(th)


def _relative_to(m: NDArray[np.float64], k: int) -> NDArray[np.float64]:
    """Re-express template->frame matrices relative to frame k: ``W_t o W_k^-1``."""
    full = np.zeros((m.shape[0], 3, 3))
    full[:, :2] = m
    full[:, 2, 2] = 1.0
    out = full @ np.linalg.inv(full[k])
    return np.asarray(out[:, :2])


def _valid_mask(m: NDArray[np.float64], shape: tuple[int, int], src_shape: tuple[int, int]
                ) -> NDArray[np.bool_] | tuple[slice, slice]:
    """Pixels of the aligned frame whose source point lies inside the source panel.

    Returns a pair of slices (a rectangle) for a pure translation, otherwise
    a boolean mask.  A tolerance of 1e-3 px keeps exact integer shifts exact.
    """
    h, w = shape
    sh, sw = src_shape
    tol = VALID_TOLERANCE_PX
    if m[0, 1] == 0.0 and m[1, 0] == 0.0 and m[0, 0] == 1.0 and m[1, 1] == 1.0:
        tx, ty = m[0, 2], m[1, 2]
        x0 = max(0, math.ceil(-tx - tol))
        x1 = min(w, math.floor(sw - 1 - tx + tol) + 1)
        y0 = max(0, math.ceil(-ty - tol))
        y1 = min(h, math.floor(sh - 1 - ty + tol) + 1)
        return (slice(y0, max(y0, y1)), slice(x0, max(x0, x1)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = m[0, 0] * xx + m[0, 1] * yy + m[0, 2]
    sy = m[1, 0] * xx + m[1, 1] * yy + m[1, 2]
    return np.asarray((sx >= -tol) & (sx <= sw - 1 + tol) & (sy >= -tol) & (sy <= sh - 1 + tol))


_INTERP = {0: cv2.INTER_NEAREST, 1: cv2.INTER_LINEAR, 3: cv2.INTER_CUBIC}


def _warp(image: NDArray[Any], m: NDArray[np.float64], order: int = 1) -> NDArray[np.float32]:
    """Sample `image` at ``m @ p`` for every pixel p (edges replicated)."""
    h, w = image.shape
    return np.asarray(cv2.warpAffine(
        np.ascontiguousarray(image, dtype=np.float32), m.astype(np.float64), (w, h),
        flags=_INTERP[order] | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE))


def apply_motion(stack: ArrayLike, estimate: MotionEstimate, *, order: int = 1,
                 fill: str = "nan", out: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
    """Align every frame of a stack to the reference frame.

    Parameters
    ----------
    stack : array, shape (T, h, w)
        Any per-frame image of the same cine, e.g. the linear power of the
        contrast panel.  Its panel is assumed to have the tracked panel's
        geometry (same pixel size; dual displays show both panels alike), so
        displacements apply in pixels unchanged; rotation is about this
        stack's own centre.
    estimate : MotionEstimate
    order : {0, 1, 3}
        Interpolation: nearest, bilinear (default; preserves local means of
        linear power) or bicubic.
    fill : {"nan", "edge"}
        Pixels whose source lies outside the panel (anatomy that moved in
        from beyond its edge) are NaN (default: ROI means must skip them, so
        no invented values bias them) or copies of the nearest edge pixel.
    out : float32 array, shape (T, h, w), optional
        Where to write; may be `stack` itself (aligned in place, frame by
        frame).

    Returns
    -------
    ndarray, float32, shape (T, h, w)
        ``aligned[t](p) = stack[t](W_t(p))`` with `W_t` the frame's transform.

    Raises
    ------
    ValueError
        On a frame-count mismatch, an unknown `order` or `fill`.
    """
    if order not in _INTERP:
        raise ValueError(f"order must be 0, 1 or 3, got {order!r}")
    if fill not in ("nan", "edge"):
        raise ValueError(f"fill must be 'nan' or 'edge', got {fill!r}")
    src = np.asarray(stack)
    if src.ndim != 3 or src.shape[0] != estimate.n_frames:
        raise ValueError(f"stack of shape {src.shape} does not match the {estimate.n_frames} frames "
                         "of the motion estimate")
    shape = (int(src.shape[1]), int(src.shape[2]))
    if out is None:
        out = np.empty(src.shape, dtype=np.float32)
    elif out.shape != src.shape or out.dtype != np.float32:
        raise ValueError("out must be a float32 array of the stack's shape")
    mats = estimate.matrices(shape)
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    for t in range(src.shape[0]):
        m = mats[t]
        if np.allclose(m, identity, rtol=0.0, atol=1e-9):
            if out is not src:
                out[t] = src[t]
            continue
        frame = _warp(src[t], m, order)
        if fill == "nan":
            valid = _valid_mask(m, shape, shape)
            if isinstance(valid, tuple):
                keep = frame[valid].copy()
                frame.fill(np.nan)
                frame[valid] = keep
            else:
                frame[~valid] = np.nan
        out[t] = frame
    return out


def warp_frame(image: ArrayLike, estimate: MotionEstimate, index: int, *, order: int = 1
               ) -> NDArray[np.float32]:
    """Align one frame (e.g. a display frame for a figure) to the reference frame.

    Like `apply_motion` for frame `index` alone, with edge pixels replicated
    (no NaN) since the result is for display.
    """
    img = np.asarray(image, dtype=np.float32)
    m = estimate.matrices((int(img.shape[0]), int(img.shape[1])))[int(index)]
    return _warp(img, m, order)


# --------------------------------------------------------------------------- registration core


@dataclass(frozen=True)
class _Setup:
    """Per-panel constants of the registration."""

    shape: tuple[int, int]
    panel: str  # "bmode" or "contrast": how frames are prepared
    window: NDArray[np.float32]
    apod: NDArray[np.float32]  # Gaussian on the rfft grid
    apod_mean: float  # mean of the apodisation over the full spectrum: peak of identical frames
    max_shift: int
    whiten: float  # exponent p of the whitening: cross-power / |cross-power|^p
    sigma: float  # apodisation sigma (px): the correlation peak's width


def _setup(shape: tuple[int, int], panel: str, max_shift_px: float | None,
           scale: int = 1) -> _Setup:
    """Constants for a panel of `shape` px; `scale` > 1 for frames averaged
    over scale x scale blocks (the peak width and shift limits scale with it)."""
    h, w = shape
    contrast = panel == "contrast"
    sigma = (CONTRAST_APODISATION_SIGMA_PX if contrast else APODISATION_SIGMA_PX) / scale
    window = np.outer(_tukey(h, TAPER_SHARE * 2), _tukey(w, TAPER_SHARE * 2)).astype(np.float32)
    ky = scipy.fft.fftfreq(h)[:, None]
    kx = scipy.fft.rfftfreq(w)[None, :]
    s2 = 2.0 * np.pi**2 * sigma**2
    apod = np.exp(-s2 * (ky**2 + kx**2)).astype(np.float32)
    kxf = scipy.fft.fftfreq(w)[None, :]
    apod_mean = float(np.mean(np.exp(-s2 * (ky**2 + kxf**2))))
    limit = max(2, int(MAX_SHIFT_SHARE * min(h, w)))
    max_shift = (limit if max_shift_px is None
                 else max(1, min(limit, math.ceil(max_shift_px / scale))))
    return _Setup((h, w), panel, window, apod, apod_mean, max_shift,
                  CONTRAST_WHITEN if contrast else 1.0, sigma)


def _tukey(m: int, alpha: float) -> FloatArray:
    """Symmetric Tukey window of `m` points, tapered share `alpha` (0 < alpha < 1).

    ``scipy.signal.windows.tukey``'s formula, value for value (scipy.signal
    takes ~0.3-0.9 s to import, for this one window).
    """
    if m <= 1 or alpha <= 0:
        return np.ones(m)
    if alpha >= 1:
        raise ValueError("alpha must be below 1")
    n = np.arange(0, m, dtype=np.float64)
    width = math.floor(alpha * (m - 1) / 2.0)
    n1, n2, n3 = n[0:width + 1], n[width + 1:m - width - 1], n[m - width - 1:]
    w1 = 0.5 * (1 + np.cos(np.pi * (-1 + 2.0 * n1 / alpha / (m - 1))))
    w3 = 0.5 * (1 + np.cos(np.pi * (-2.0 / alpha + 1 + 2.0 * n3 / alpha / (m - 1))))
    return np.concatenate((w1, np.ones(n2.shape), w3))


def _smooth(frame: NDArray[Any], sigma: float) -> NDArray[np.float32]:
    f = np.asarray(frame, dtype=np.float32)
    if sigma <= 0:
        return f
    return np.asarray(cv2.GaussianBlur(f, (0, 0), sigma, borderType=cv2.BORDER_REFLECT))


def _prepare(frame: NDArray[Any], st: _Setup) -> NDArray[np.float32]:
    """The image that is registered: the B-mode frame itself, or the gradient
    magnitude of the smoothed contrast frame (see `CONTRAST_SMOOTH_PX`)."""
    if st.panel == "bmode":
        return np.asarray(frame, dtype=np.float32)
    f = _smooth(frame, CONTRAST_SMOOTH_PX)
    gx = cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    gy = cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
    return np.asarray(cv2.magnitude(gx, gy))


def _band(prepared: NDArray[np.float32], st: _Setup,
          out: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
    """The band in which match quality is measured (see `QUALITY_BAND_PX`).

    `out` (float32, the image's shape), when given, receives the band: the
    per-frame loop then writes straight into its stack (no copy per frame).
    """
    lo, hi = QUALITY_BAND_PX
    if st.panel == "contrast":
        # Already smooth: remove only the slow trend.
        band = np.asarray(prepared - _smooth(prepared, 4.0 * CONTRAST_SMOOTH_PX))
        if out is None:
            return band
        out[...] = band
        return out
    f = np.asarray(prepared, dtype=np.float32)
    # OpenCV's blur into `out` and its float32 subtraction: the same values as
    # ``_smooth(f, lo) - _smooth(f, hi)``, without two temporaries.
    low = np.asarray(cv2.GaussianBlur(f, (0, 0), lo, dst=out, borderType=cv2.BORDER_REFLECT))
    high = _smooth(f, hi)
    return np.asarray(cv2.subtract(low, high, dst=low))


def _spectra(images: NDArray[np.float32], st: _Setup) -> NDArray[np.complex64]:
    """Windowed, mean-free rfft2 spectra of prepared images (n, h, w)."""
    means = images.mean(axis=(1, 2), dtype=np.float64).astype(np.float32)
    x = images - means[:, None, None]
    x *= st.window
    return np.asarray(scipy.fft.rfft2(x, workers=-1))


def _correlate(spec: NDArray[np.complex64], ref_conj: NDArray[np.complex64],
               st: _Setup) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Sub-pixel shift (dx, dy) of each image against the template, the peak
    height and the height of the second peak.

    The whitened, apodised cross-power spectrum has a Gaussian peak at the
    displacement; a three-point Gaussian fit per axis locates it.  Peak
    height is normalised to 1 for identical images; the second peak is the
    highest value of the searched surface outside the first peak (see
    `SECOND_PEAK_EXCLUSION_SIGMAS`).
    """
    from ceuskit._motion_kernels import surface_peaks, whitened_cross

    h, w = st.shape
    n = spec.shape[0]
    cross = np.empty_like(spec)
    norm = np.full(n, st.apod_mean)
    # rfft bins other than the first and last column stand for two.
    wts = np.full(spec.shape[-1], 2.0)
    wts[0] = 1.0
    if w % 2 == 0:
        wts[-1] = 1.0
    whitened_cross(spec, np.ascontiguousarray(ref_conj[0]), st.apod, float(st.whiten), wts,
                   float(h * w), cross, norm)
    m = st.max_shift
    ry = np.arange(-m - 1, m + 2) % h
    rx = np.arange(-m - 1, m + 2) % w
    # irfft2 restricted to the searched rows: the same two steps pocketfft's
    # irfft2 takes (inverse along the rows' axis, then the real inverse along
    # the last axis, scaled by 1 / (h w) once), so the searched values are
    # irfft2's, for about half its cost.
    cols = scipy.fft.ifft(cross, axis=-2, norm="forward", workers=-1)
    surf = scipy.fft.irfft(cols[:, ry, :], n=w, axis=-1, norm="forward", workers=-1)
    surf *= np.float32(1.0 / (h * w))
    block = np.ascontiguousarray(surf[:, :, rx] / np.maximum(norm, 1e-30)[:, None, None])
    iy = np.empty(n, dtype=np.int64)
    ix = np.empty(n, dtype=np.int64)
    c1 = np.empty(n)
    # The second peak: the highest value farther than SECOND_PEAK_EXCLUSION_SIGMAS
    # apodisation sigmas from the first (the first peak's own flanks excluded).
    r = SECOND_PEAK_EXCLUSION_SIGMAS * st.sigma
    surface_peaks(block, r * r, iy, ix, c1)
    rows = np.arange(n)
    c0 = block[rows, iy, ix]
    dy = _gauss3(block[rows, iy - 1, ix], c0, block[rows, iy + 1, ix])
    dx = _gauss3(block[rows, iy, ix - 1], c0, block[rows, iy, ix + 1])
    return (ix - (m + 1) + dx).astype(np.float64), (iy - (m + 1) + dy).astype(np.float64), \
        c0.astype(np.float64), c1.astype(np.float64)


def _gauss3(lo: FloatArray, mid: FloatArray, hi: FloatArray) -> FloatArray:
    """Sub-sample offset of a peak from three samples: Gaussian fit, parabola as fallback."""
    lo, mid, hi = (np.asarray(v, dtype=np.float64) for v in (lo, mid, hi))
    pos = (lo > 0) & (mid > 0) & (hi > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        llo, lmid, lhi = (np.log(np.where(pos, v, 1.0)) for v in (lo, mid, hi))
        g = 0.5 * (llo - lhi) / (llo - 2.0 * lmid + lhi)
        p = 0.5 * (lo - hi) / (lo - 2.0 * mid + hi)
    off = np.where(pos, g, p)
    return np.clip(np.nan_to_num(off, nan=0.0), -0.5, 0.5)


def _ecc_rotation(tmpl: NDArray[np.float32], image: NDArray[np.float32],
                  d: tuple[float, float]) -> float:
    """Rotation (degrees) of `image` against the template by Euclidean ECC.

    ECC (``cv2.findTransformECC``, ``MOTION_EUCLIDEAN``) starts from the
    translation `d` (px) with no rotation; only its angle is kept (the
    translation is re-measured by phase correlation, which is more accurate
    on speckle than an interpolating intensity match).  Returns 0 when ECC
    fails or wanders off (panel centre moved by more than `ECC_MAX_STEP_PX`,
    or an angle beyond `ECC_MAX_ROTATION_DEG`).
    """
    h, w = image.shape
    start = np.array([[1.0, 0.0, d[0]], [0.0, 1.0, d[1]]])
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, ECC_ITERATIONS, ECC_EPS)
    try:
        _, warp = cv2.findTransformECC(tmpl, image, start.astype(np.float32), cv2.MOTION_EUCLIDEAN,
                                       criteria, None, ECC_GAUSS_SIZE)  # type: ignore[call-overload]
    except cv2.error:
        return 0.0
    out = np.asarray(warp, dtype=np.float64)
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0, 1.0])
    if not np.all(np.isfinite(out)):
        return 0.0
    theta = math.degrees(math.atan2(out[1, 0], out[0, 0]))
    moved = float(np.hypot(*(out @ c - start @ c)))
    if moved > ECC_MAX_STEP_PX or abs(theta) > ECC_MAX_ROTATION_DEG:
        return 0.0
    return theta


def _rigid(images: NDArray[np.float32], tmpl: NDArray[np.float32],
           tmpl_conj: NDArray[np.complex64], d0: NDArray[np.float64], st: _Setup
           ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Rigid transforms (dx, dy, degrees) of a chunk against the template.

    The angle comes from `_ecc_rotation`; the frame is then rotated back about
    the panel centre and its remaining shift ``d'`` measured by phase
    correlation: with ``W(p) = R (p - c) + c + d``, the de-rotated frame is
    the template shifted by ``R^T d``, so ``d = R d'``.
    """
    h, w = st.shape
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    theta = np.array([_ecc_rotation(tmpl, images[i], (d0[i, 0], d0[i, 1]))
                      for i in range(images.shape[0])])
    rot = _compose(np.zeros(theta.size), np.zeros(theta.size), theta, (c[0], c[1]))
    derotated = np.stack([_warp(images[i], rot[i]) for i in range(images.shape[0])])
    dxp, dyp, _, _ = _correlate(_spectra(derotated, st), tmpl_conj, st)
    t = np.deg2rad(theta)
    dx = np.cos(t) * dxp - np.sin(t) * dyp
    dy = np.sin(t) * dxp + np.cos(t) * dyp
    return dx, dy, theta


def _hold_nearest(values: NDArray[Any], tracked: NDArray[np.bool_]) -> NDArray[Any]:
    """Copy each untracked entry from the nearest tracked one (the earlier on ties)."""
    idx = np.flatnonzero(tracked)
    if idx.size == tracked.size:
        return values
    pos = np.arange(tracked.size)
    right = np.clip(np.searchsorted(idx, pos), 0, idx.size - 1)
    left = np.clip(right - 1, 0, idx.size - 1)
    use_left = np.abs(pos - idx[left]) <= np.abs(idx[right] - pos)
    nearest = np.where(use_left, idx[left], idx[right])
    out = values.copy()
    out[~tracked] = values[nearest[~tracked]]
    return out


def _robust_floor(values: FloatArray) -> float:
    """``median - max(REJECT_K_MAD * 1.4826 * MAD, REJECT_MIN_DROP)`` of `values`."""
    med = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - med)))
    return med - max(REJECT_K_MAD * mad, REJECT_MIN_DROP)


#: Threads for the per-frame OpenCV filters (they release the GIL; the FFTs
#: and compiled kernels are parallel on their own).
FILTER_THREADS = max(1, min(4, os.cpu_count() or 1))


def _per_frame(fn: Callable[[NDArray[Any]], NDArray[np.float32]], images: Any
               ) -> NDArray[np.float32]:
    """``np.stack([fn(x) for x in images])``, the frames spread over `FILTER_THREADS` threads.

    Each thread takes one contiguous block of frames and writes each result
    into the output stack: one task per thread instead of one per frame, and
    no stacking copy at the end.
    """
    n = len(images)
    if FILTER_THREADS == 1 or n < 2 * FILTER_THREADS:
        return np.stack([fn(x) for x in images])
    first = np.asarray(fn(images[0]))
    out = np.empty((n, *first.shape), dtype=first.dtype)
    out[0] = first

    def run(block: NDArray[np.intp]) -> None:
        for i in block:
            out[i] = fn(images[i])

    _in_blocks(run, np.arange(1, n))
    return out


def _in_blocks(run: Callable[[NDArray[np.intp]], None], items: NDArray[np.intp]) -> None:
    """``run(block)`` for `FILTER_THREADS` contiguous blocks of `items`, one thread each."""
    blocks = np.array_split(items, FILTER_THREADS)
    with ThreadPoolExecutor(FILTER_THREADS) as pool:
        for done in [pool.submit(run, b) for b in blocks]:
            done.result()  # (re-raises a thread's exception here)


def _bands(images: NDArray[np.float32], st: _Setup) -> NDArray[np.float32]:
    """`_band` of every image (n, h, w), written in place into one stack (threads as `_per_frame`)."""
    out = np.empty(images.shape, dtype=np.float32)

    def run(block: NDArray[np.intp]) -> None:
        for i in block:
            _band(images[i], st, out=out[i])

    if FILTER_THREADS == 1 or images.shape[0] < 2 * FILTER_THREADS:
        run(np.arange(images.shape[0]))
    else:
        _in_blocks(run, np.arange(images.shape[0]))
    return out


def _coarse(images: NDArray[np.float32], factor: int) -> NDArray[np.float32]:
    """Means over factor x factor px blocks of images (n, h, w) (a partial last row or column dropped)."""
    if factor == 1:
        return images
    _, h, w = images.shape
    hc, wc = h // factor, w // factor
    # OpenCV's area resampling by an integer factor is the block mean, and
    # several times faster than NumPy's strided or reshaped means.
    return _per_frame(lambda x: np.asarray(cv2.resize(x[:hc * factor, :wc * factor], (wc, hc),
                                                      interpolation=cv2.INTER_AREA), dtype=np.float32),
                      images)


#: Most one-pixel steps `_refine` takes from the coarse grid's shift to the
#: best integer shift at full resolution (the coarse shift is within ~0.2 px).
REFINE_MAX_STEPS = 3


def _refine_filter(tmpl_conj: NDArray[np.complex64], st: _Setup) -> NDArray[np.float64]:
    """The template filter of `_refine`, tiled 3 x 3 (shape (3h, 3w)).

    ``g = irfft2(T W)`` with ``W = apod / |T|^(2 p)``: the template's
    spectrum whitened by its own magnitude (``p`` = `_Setup.whiten`) and
    apodised.  For a frame that is the template shifted, ``|F| = |T|``, so
    ``F conj(G)`` is the whitened cross-power spectrum `_correlate` uses, and
    its peak the same Gaussian.  (Whitening matters: on log-compressed
    speckle a plain cross-correlation of band-passed images biases sub-pixel
    shifts by up to 0.25 px, measured on the simulator.)
    """
    h, w = st.shape
    t = np.conj(tmpl_conj[0]).astype(np.complex128)
    mag = np.abs(t) ** (2.0 * st.whiten)
    weight = st.apod / np.maximum(mag, 1e-12 * float(mag.max()) + 1e-30)
    g = scipy.fft.irfft2(t * weight, s=(h, w))
    return np.ascontiguousarray(np.tile(g, (3, 3)))


def _refine(images: NDArray[np.float32], tiled: NDArray[np.float64], dx: FloatArray,
            dy: FloatArray, st: _Setup) -> tuple[FloatArray, FloatArray]:
    """Full-resolution shifts (px) of prepared images against the template,
    from approximate ones (`dx`, `dy`: the coarse grid's, in full px).

    The whitened correlation (`_refine_filter`) is scored at the nearest
    integer shift and its four neighbours (`cross_correlation`); while a
    neighbour scores higher the centre moves there (`REFINE_MAX_STEPS` at
    most); a three-point Gaussian fit per axis (`_gauss3`) gives the
    sub-pixel offset, as in `_correlate`.  Five points of the surface instead
    of the searched rows of a full-resolution inverse FFT, and no
    full-resolution forward FFT of the frames.
    """
    from ceuskit._motion_kernels import CROSS_OFFSETS, cross_correlation

    h, w = st.shape
    n = images.shape[0]
    centre = np.column_stack([np.clip(np.rint(dx), 2 - w, w - 2),
                              np.clip(np.rint(dy), 2 - h, h - 2)]).astype(np.int64)
    scores = np.empty((n, 5))
    window = st.window.astype(np.float64)
    cross_correlation(images, window, tiled, centre, scores)
    step = np.array(CROSS_OFFSETS, dtype=np.int64)
    for _ in range(REFINE_MAX_STEPS):
        best = np.argmax(scores, axis=1)
        moving = np.flatnonzero(best != 0)
        if moving.size == 0:
            break
        centre[moving] = np.clip(centre[moving] + step[best[moving]], [2 - w, 2 - h], [w - 2, h - 2])
        sub = np.empty((moving.size, 5))
        cross_correlation(np.ascontiguousarray(images[moving]), window, tiled,
                          np.ascontiguousarray(centre[moving]), sub)
        scores[moving] = sub
    fx = _gauss3(scores[:, 1], scores[:, 0], scores[:, 2])
    fy = _gauss3(scores[:, 3], scores[:, 0], scores[:, 4])
    return centre[:, 0] + fx, centre[:, 1] + fy


def _chunks(idx: NDArray[np.int64]) -> list[NDArray[np.int64]]:
    return [idx[i:i + CHUNK] for i in range(0, idx.size, CHUNK)]


def _prepared(stack: NDArray[Any], idx: NDArray[np.int64], st: _Setup) -> NDArray[np.float32]:
    if st.panel == "bmode":
        # One conversion of the whole chunk (what `_prepare` does frame by frame).
        return np.asarray(stack[idx], dtype=np.float32)
    return _per_frame(lambda t: _prepare(stack[t], st), idx)


def estimate_motion(
    frames: ArrayLike,
    *,
    mode: str = "translation",
    reference: int | None = None,
    tracked_panel: str = "bmode",
    usable: ArrayLike | None = None,
    max_shift_px: float | None = None,
    times_s: ArrayLike | None = None,
    spacing_mm: tuple[float, float] | None = None,
) -> MotionEstimate:
    """Estimate in-plane motion of every frame relative to a reference frame.

    Parameters
    ----------
    frames : array, shape (T, h, w)
        Display values (grey, any real dtype) of the tracked panel.
    mode : {"translation", "rigid"}
        Translation only (default), or translation plus rotation.
    reference : int, optional
        Index of the reference frame; chosen automatically when None (see the
        module notes) and reported in ``reference_choice``.
    tracked_panel : {"bmode", "contrast"}
        Which panel `frames` come from.  ``"bmode"`` registers the speckle;
        ``"contrast"`` is the fallback without a B-mode panel: it registers
        the gradient magnitude of the smoothed perfusion pattern, only on
        frames where the bolus shows (`bolus_frames`, unless `usable` says
        otherwise).
    usable : bool array, shape (T,), optional
        Frames that can be registered; the others hold the transform of the
        nearest usable frame and are never rejected.  Default: all frames
        (B-mode) or `bolus_frames` (contrast).
    max_shift_px : float, optional
        Largest displacement searched (px); default a quarter of the panel's
        smaller side.
    times_s : array, shape (T,), optional
        Frame times (s), for the speed limit (without them, no speed test).
    spacing_mm : (row, col) mm, optional
        Pixel size, for the speed limit (default `FALLBACK_SPACING_MM`).

    Returns
    -------
    MotionEstimate

    Raises
    ------
    ReferenceFrameError
        A reference outside the cine or not usable (a ValueError).
    ValueError
        Bad shape, mode or panel; fewer than two usable frames.
    """
    if mode not in MODES:
        raise ValueError(f"motion mode must be one of {', '.join(MODES)}, got {mode!r}")
    if tracked_panel not in PANELS:
        raise ValueError(f"tracked_panel must be one of {', '.join(PANELS)}, got {tracked_panel!r}")
    stack = np.asarray(frames)
    if stack.ndim != 3 or stack.shape[0] < 2 or min(stack.shape[1:]) < 16:
        raise ValueError(f"need a (T >= 2, h >= 16, w >= 16) stack of frames, got {stack.shape}")
    n = int(stack.shape[0])
    shape = (int(stack.shape[1]), int(stack.shape[2]))
    if usable is None:
        ok = bolus_frames(stack) if tracked_panel == "contrast" else np.ones(n, dtype=bool)
    else:
        ok = np.asarray(usable, dtype=bool).reshape(-1)
    if ok.shape != (n,):
        raise ValueError("usable must have one entry per frame")
    idx = np.flatnonzero(ok)
    if idx.size < 2:
        raise ValueError("fewer than two frames can be registered (on the contrast panel: "
                         "the bolus shows in fewer than two frames)")
    if reference is not None:
        reference = int(reference)
        if not 0 <= reference < n:
            raise ReferenceFrameError(f"reference frame {reference} is outside the cine "
                                      f"(0..{n - 1})")
        if not ok[reference]:
            raise ReferenceFrameError(
                f"reference frame {reference} shows no structure to register (on the contrast "
                "panel: before the bolus); choose a frame where the bolus shows")
    from ceuskit._motion_kernels import warped_ncc

    st = _setup(shape, tracked_panel, max_shift_px)
    centre_xy = ((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0)
    f = COARSE_FACTOR if min(shape) >= COARSE_MIN_SIDE_PX else 1
    st1 = (st if f == 1 else
           _setup((shape[0] // f, shape[1] // f), tracked_panel, max_shift_px, scale=f))

    def coarse_spectra(sel: NDArray[np.int64]) -> NDArray[np.complex64]:
        return _spectra(_coarse(_prepared(stack, sel, st), f), st1)

    # 1. Provisional template: the user's reference, or the most typical frame.
    if reference is not None:
        provisional = reference
        n_cand = 0
    else:
        cand = idx[np.unique(np.linspace(0, idx.size - 1, min(N_TYPICAL, idx.size)).astype(int))]
        n_cand = int(cand.size)
        spec_c = coarse_spectra(cand)
        heights = np.ones((cand.size, cand.size))
        for i in range(cand.size):
            heights[i] = _correlate(spec_c, np.conj(spec_c[i])[None], st1)[2]
        np.fill_diagonal(heights, np.nan)
        provisional = int(cand[int(np.nanargmax(np.nanmedian(heights, axis=1)))])

    # Translations: the second pass correlates on the coarse grid and refines
    # at full resolution (`_refine`); rigid transforms need the full grid.
    coarse_pass = mode == "translation" and f > 1
    # The second pass searches the same coarse spectra as the first: kept
    # when they fit in `SPECTRA_CACHE_BYTES` (they are recomputed otherwise).
    spec_bytes = idx.size * st1.apod.size * np.dtype(np.complex64).itemsize
    kept_spectra: list[NDArray[np.complex64]] | None = (
        [] if coarse_pass and spec_bytes <= SPECTRA_CACHE_BYTES else None)

    # 2. First pass against the provisional template (coarse grid, shifts in full px).
    ref_conj = np.conj(coarse_spectra(np.array([provisional])))
    d1 = np.zeros((n, 2))
    h1 = np.full(n, np.nan)
    for c in _chunks(idx):
        spec = coarse_spectra(c)
        dx, dy, hgt, _ = _correlate(spec, ref_conj, st1)
        d1[c, 0], d1[c, 1], h1[c] = f * dx, f * dy, hgt
        if kept_spectra is not None:
            kept_spectra.append(spec)

    # 3. The reference frame.  "Good" frames exclude only clear outliers of
    # the first-pass match (a stricter cut, such as above the median, would
    # favour frames near the provisional template's position and bias the
    # median position towards it).
    good = idx[h1[idx] >= _robust_floor(h1[idx])]
    if reference is not None:
        ref = reference
        choice = "user"
    else:
        middle = np.median(d1[good], axis=0)
        # Positions are compared with their neighbours' running median: a
        # transient glitch must not become the reference.
        smooth = np.column_stack([median_filter(d1[idx, k], size=5, mode="nearest")
                                  for k in (0, 1)])
        steady = np.zeros(n, dtype=bool)
        steady[idx] = np.hypot(*(d1[idx] - smooth).T) <= REFERENCE_MAX_GLITCH_PX
        cand = good[steady[good]] if np.any(steady[good]) else good
        ref = int(cand[int(np.argmin(np.hypot(*(d1[cand] - middle).T)))])
        choice = (f"auto: frame {ref}, the well-matched frame closest to the median position "
                  f"(first pass against frame {provisional}, the most typical of {n_cand} "
                  "evenly spaced frames)")

    # 4. Template: motion-corrected mean of well-matched frames in the
    # reference's coordinates (first-pass shifts re-expressed relative to it;
    # in rigid mode with their rotation against the reference frame).
    # Frames whose first-pass shift from the reference is implausibly large
    # (see PLAUSIBLE_SHIFT_SHARE) stay out of the template.
    near = good[np.hypot(*(d1[good] - d1[ref]).T) <= PLAUSIBLE_SHIFT_SHARE * min(shape)]
    good = near if near.size else good
    members = good[np.unique(np.linspace(0, good.size - 1, min(N_TEMPLATE, good.size)).astype(int))]
    members = np.union1d(members, [ref])
    member_images = _prepared(stack, members, st)
    if f == 1:
        rel = d1[members] - d1[ref]
    else:
        # The members' shifts from the reference at full resolution (through
        # the provisional template, as the first pass measures them), so that
        # the template is as sharp as a full-resolution first pass makes it.
        prov_conj = np.conj(_spectra(_prepared(stack, np.array([provisional]), st), st))
        mdx, mdy, _, _ = _correlate(_spectra(member_images, st), prov_conj, st)
        dm = np.column_stack([mdx, mdy])
        rel = dm - dm[int(np.searchsorted(members, ref))]
    if mode == "rigid":
        ref_image = _prepare(stack[ref], st)
        ref_conj = np.conj(_spectra(ref_image[None], st))
        dxm, dym, thm = _rigid(member_images, ref_image, ref_conj, rel, st)
        mats1 = _compose(dxm, dym, thm, centre_xy)
    else:
        mats1 = _compose(rel[:, 0], rel[:, 1], np.zeros(members.size), centre_xy)
    acc = np.zeros(shape, dtype=np.float64)
    for m, image in zip(mats1, member_images, strict=True):
        acc += _warp(image, m)
    del member_images
    template = (acc / members.size).astype(np.float32)
    tmpl_conj = np.conj(_spectra(template[None], st))
    tmpl_band = _band(template, st)
    tmpl_conj1 = np.conj(_spectra(_coarse(template[None], f), st1)) if coarse_pass else tmpl_conj
    tmpl_filter = _refine_filter(tmpl_conj, st) if coarse_pass else None

    # 5. Second pass and match quality, chunk by chunk.
    mats = np.zeros((n, 2, 3))
    mats[:, 0, 0] = mats[:, 1, 1] = 1.0
    quality = np.full(n, np.nan)
    peak = np.full(n, np.nan)
    second = np.full(n, np.nan)
    band_std = np.full(n, np.nan)
    for k, c in enumerate(_chunks(idx)):
        images = _prepared(stack, c, st)
        bands = _bands(images, st)
        theta = np.zeros(c.size)
        if tmpl_filter is not None:
            spec = (kept_spectra[k] if kept_spectra is not None
                    else _spectra(_coarse(images, f), st1))
            dx, dy, peak[c], second[c] = _correlate(spec, tmpl_conj1, st1)
            dx, dy = _refine(images, tmpl_filter, f * dx, f * dy, st)
        else:
            dx, dy, peak[c], second[c] = _correlate(_spectra(images, st), tmpl_conj, st)
        if mode == "rigid":
            dx, dy, theta = _rigid(images, template, tmpl_conj, np.column_stack([dx, dy]), st)
        mats[c] = _compose(dx, dy, theta, centre_xy)
        spread = np.empty(c.size)
        qual = np.empty(c.size)
        warped_ncc(bands, tmpl_band, np.ascontiguousarray(mats[c]), VALID_TOLERANCE_PX, qual, spread)
        quality[c] = qual
        if tracked_panel == "bmode":
            # The B-mode structure measure is this band's spread (`structure_share`).
            band_std[c] = spread

    # 6. Rejection (see `REJECTION_RULE` and `REJECTION_RULE_CONTRAST`).
    q = quality[idx]
    threshold = np.full(n, np.nan)
    if tracked_panel == "contrast":
        baseline = median_filter(q, size=2 * CONTRAST_LOCAL_HALF_WINDOW + 1, mode="nearest")
        # The same robust rule, applied to the dips below the running median.
        threshold[idx] = baseline + _robust_floor(q - baseline)
        rule = REJECTION_RULE_CONTRAST
    else:
        threshold[idx] = _robust_floor(q)
        rule = REJECTION_RULE
    rejected = np.zeros(n, dtype=bool)
    rejected[idx] = q < threshold[idx]

    # 7. Plausibility (`PLAUSIBILITY_RULE`) of the shifts relative to the reference.
    rel_raw = _relative_to(mats, ref)
    d_raw = np.column_stack(_decompose(rel_raw, centre_xy)[:2])
    d_raw[ref] = 0.0
    t_s: FloatArray | None = None
    if times_s is not None:
        t_s = np.asarray(times_s, dtype=np.float64).reshape(-1)
        if t_s.shape != (n,):
            raise ValueError("times_s must have one entry per frame")
    pixel_mm = (FALLBACK_SPACING_MM if spacing_mm is None
                else float(np.sqrt(spacing_mm[0] * spacing_mm[1])))
    implausible = _implausible(d_raw, ok, rejected, ref, shape, t_s, MAX_SPEED_MM_PER_S / pixel_mm)

    # 8. Confidence per frame (`TRUST_RULE`).
    confidence = np.full(n, np.nan)
    ratio = second[idx] / np.maximum(peak[idx], 1e-12)
    distinct = np.clip((PEAK_RATIO_AMBIGUOUS - ratio) / (PEAK_RATIO_AMBIGUOUS - PEAK_RATIO_CLEAR),
                       0.0, 1.0)
    typical = float(np.median(peak[idx]))
    height = np.clip(peak[idx] / max(PEAK_HEIGHT_FULL_SHARE * typical, 1e-12), 0.0, 1.0)
    structure = _structure_share(stack, tracked_panel, ok, band_std)[idx]
    confidence[idx] = distinct * height * np.clip(structure / STRUCTURE_FULL_SHARE, 0.0, 1.0)
    confidence[implausible] = 0.0
    confidence[ref] = max(confidence[ref], MIN_FRAME_CONFIDENCE)
    rejected |= implausible

    # Relative to the reference frame; untracked, implausible and
    # low-confidence frames hold the nearest confident tracked frame's transform.
    rel_m = _hold_nearest(rel_raw, ok & (confidence >= MIN_FRAME_CONFIDENCE))
    dx, dy, rot = _decompose(rel_m, centre_xy)
    if mode == "translation":
        rot = np.zeros(n)
    dx[ref] = dy[ref] = rot[ref] = 0.0
    return MotionEstimate(dx_px=dx, dy_px=dy, rotation_deg=rot, quality=quality, rejected=rejected,
                          tracked=ok, reference_index=ref, reference_choice=choice, mode=mode,
                          tracked_panel=tracked_panel, quality_threshold=threshold,
                          panel_shape=shape, rejection_rule=rule, confidence=confidence,
                          implausible=implausible,
                          estimated_displacement_px=np.where(ok, np.hypot(*d_raw.T), np.nan))


def _implausible(d: FloatArray, tracked: NDArray[np.bool_], rejected: NDArray[np.bool_], ref: int,
                 shape: tuple[int, int], times_s: FloatArray | None, speed_px_s: float
                 ) -> NDArray[np.bool_]:
    """Tracked frames whose displacement `d` (T, 2; px, relative to `ref`) is implausible.

    See `PLAUSIBILITY_RULE`: size, then consistency with the neighbours (the
    size-plausible, not quality-rejected tracked frames either side), then
    speed from the last plausible frame, walking out from the reference.
    """
    n = d.shape[0]
    idx = np.flatnonzero(tracked)
    bad = np.zeros(n, dtype=bool)
    bad[idx] = np.hypot(d[idx, 0], d[idx, 1]) > PLAUSIBLE_SHIFT_SHARE * min(shape)
    bad[ref] = False
    anchors = idx[~bad[idx] & ~rejected[idx]]
    k = CONSISTENCY_NEIGHBOURS
    glitch = np.zeros(n, dtype=bool)
    for t in idx[~bad[idx]]:
        j = int(np.searchsorted(anchors, t))
        after = j + 1 if j < anchors.size and anchors[j] == t else j
        nb = np.concatenate([anchors[max(0, j - k):j], anchors[after:after + k]])
        if nb.size < 2:
            continue
        med = np.median(d[nb], axis=0)
        spread = float(np.median(np.hypot(*(d[nb] - med).T)))
        glitch[t] = math.hypot(*(d[t] - med)) > max(CONSISTENCY_MIN_PX, CONSISTENCY_K * spread)
    bad |= glitch
    bad[ref] = False
    if times_s is None:
        return bad
    for order in (idx[idx > ref], idx[idx < ref][::-1]):
        last = ref
        for t in order:
            if bad[t]:
                continue
            step = math.hypot(*(d[t] - d[last]))
            if step > speed_px_s * abs(times_s[t] - times_s[last]) + SPEED_TOLERANCE_PX:
                bad[t] = True
            elif not rejected[t]:
                last = int(t)
    return bad


def structure_share(frames: ArrayLike, panel: str = "contrast",
                    among: ArrayLike | None = None) -> FloatArray:
    """Structure of each frame relative to the peak frames' (see `STRUCTURE_SMOOTH_PX`).

    Structure is the spatial standard deviation of the frame smoothed by
    `STRUCTURE_SMOOTH_PX` (contrast panel: the perfusion pattern without the
    bubble speckle and noise) or of its band-passed speckle (B-mode,
    `QUALITY_BAND_PX`); it is divided by its `STRUCTURE_REFERENCE_PERCENTILE`
    percentile over the frames `among` (default: all).

    Returns
    -------
    float array, shape (T,)
        0 for a flat frame; about 1 for the peak frames.
    """
    return _structure_share(frames, panel, among)


def _structure_share(frames: ArrayLike, panel: str, among: ArrayLike | None,
                     known: FloatArray | None = None) -> FloatArray:
    """`structure_share`; `known` holds raw structure values already measured (NaN: not yet)."""
    stack = np.asarray(frames)
    lo, hi = QUALITY_BAND_PX
    raw = np.full(stack.shape[0], np.nan) if known is None else np.array(known, dtype=np.float64)
    for t in np.flatnonzero(~np.isfinite(raw)):
        f = np.asarray(stack[t], dtype=np.float32)
        g = (_smooth(f, STRUCTURE_SMOOTH_PX) if panel == "contrast"
             else _smooth(f, lo) - _smooth(f, hi))
        raw[t] = float(np.std(g, dtype=np.float64))
    sel = raw if among is None else raw[np.asarray(among, dtype=bool)]
    top = float(np.percentile(sel, STRUCTURE_REFERENCE_PERCENTILE)) if sel.size else 0.0
    return raw / top if top > 0 else np.zeros_like(raw)


def bolus_frames(frames: ArrayLike) -> NDArray[np.bool_]:
    """Frames of a contrast panel in which the bolus shows (structure to register).

    The panel's mean display value per frame is smoothed over 5 frames; a
    frame qualifies when it is at least `CONTRAST_BOLUS_SHARE` of the way from
    the pre-bolus level (median of the first 10 % of frames) to the maximum,
    and when its structure (`structure_share` among those frames) is at least
    `CONTRAST_MIN_STRUCTURE_SHARE` of the peak frames': a dim frame whose
    pattern has sunk into the noise is not registered even if the panel's
    mean brightness is still up.

    Parameters
    ----------
    frames : array, shape (T, h, w)
        Display values of the contrast panel.

    Returns
    -------
    bool array, shape (T,)
    """
    stack = np.asarray(frames)
    m = stack.reshape(stack.shape[0], -1).mean(axis=1, dtype=np.float64)
    k = min(5, m.size)
    smooth = np.convolve(np.pad(m, (k // 2, k - 1 - k // 2), mode="edge"), np.ones(k) / k, "valid")
    base = float(np.median(smooth[:max(1, m.size // 10)]))
    rise = float(smooth.max()) - base
    if rise <= 0:
        return np.zeros(m.size, dtype=bool)
    bolus = np.asarray(smooth >= base + CONTRAST_BOLUS_SHARE * rise)
    if not bolus.any():
        return bolus
    return np.asarray(bolus & (structure_share(stack, "contrast", bolus)
                               >= CONTRAST_MIN_STRUCTURE_SHARE))
