"""Phantom CEUS cines with exact ground truth.

`simulate` renders a dual-display cine (contrast panel on the left, B-mode on
the right, as many scanners export it) of a deep vein in muscle that holds
either a venous tumour (``"tumor"``: rapid, hyper-enhancing, washing out,
with a necrotic core) or a bland thrombus (``"bland"``: never enhances).
`write_phantom` stores it as DICOM, MP4 or NPZ next to ``truth.json`` and
``rois.json`` (the contract's ROI file, ``space: "panel"``).

The tumour's kinetics come in families (``SimulationSpec.kinetics``,
``ceuskit simulate --kinetics``), each kept clear of the margins of
`ceuskit.findings` by construction so that its CEUS findings are known:
``malignant`` (the default and the original draws: rapid, hyper-enhancing,
early wash-out in most seeds), ``marked-washout`` (rapid, hyper, early and
marked), ``late-washout`` (rapid, hyper, late and mild; give it ~150 s),
``synchronous-iso`` and ``slow-hypo`` (no wash-out).  ``truth["findings"]``
holds the labels and the exact values of the findings' definitions on the
noise-free curves.

Physics, in linear echo power relative to the display maximum (1.0 = 0 dB =
grey 255):

- Contrast panel: ``P(x, t) = C(x, t) |s_c|^2 + R(x) |s_t|^2 + N |n|^2``.
  ``C`` is the sum over tissues of an amplitude map times a lognormal bolus;
  ``s_c`` is bubble speckle, drawn fresh every frame; ``s_t`` is the tissue
  speckle, fixed to the anatomy; ``R`` the tissue signal that leaks through
  the contrast-specific pulse sequence; ``n`` fresh receiver noise.
- B-mode panel: ``E(x) |s_t|^2`` (echogenicity times the same tissue
  speckle) plus a faint trace of the bubbles and a weak noise floor.
- Display: ``g = round(255 (1 + 10 log10(P) / DR))`` clipped to 0..255.
- Breathing motion (plus an optional steady probe drift) translates the
  whole anatomy (maps and tissue speckle) in both panels; the ROIs and the
  truth stay in the motionless reference.
- Out-of-plane frames (optional, at seeded random times) show a neighbouring
  slice: fresh tissue speckle (the scatterers are different ones, beyond the
  elevational beam width) and the anatomy seen at an offset of a few pixels.
  They are what motion compensation must reject: no in-plane shift matches
  them.

The truth curve of an ROI is the expected ROI-mean contrast power without
motion, ``sum_k w_k f_k(t) + b``, where ``w_k`` is the ROI mean of tissue k's
amplitude map and ``b`` the ROI mean of the (fixed) leak plus the noise power.
Its descriptors come from `ceuskit.kinetics.descriptors.curve_descriptors`,
the one definition every analysis uses.

ROI rasterisation (shared with `ceuskit.roi`): a pixel (row r, col c) belongs
to a shape when its centre, the point x = c, y = r, is inside it; polygons are
tested with ``matplotlib.path.Path.contains_points`` and ellipses with
``((x - cx)/rx)^2 + ((y - cy)/ry)^2 <= 1``.  The simulator writes shapes that
no pixel centre touches (polygon edges avoid every integer point; ellipses
have integer centres and half-integer radii), so any correct implementation
of that rule gives the same masks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
from matplotlib.path import Path as MplPath
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter

from ceuskit.cine import Panel
from ceuskit.errors import InputError
from ceuskit.findings import (
    ENHANCEMENT_MARGIN_DB,
    WASH_IN_MARGIN_S,
    WASH_OUT_DROP_DB,
    WASH_OUT_EARLY_LIMIT_S,
    WASH_OUT_MARKED_DB,
    WASH_OUT_MARKED_WITHIN_S,
    assess_wash_out,
    classify_enhancement,
    classify_wash_in,
    enhancement_db,
)
from ceuskit.kinetics.descriptors import curve_descriptors, dense_grid
from ceuskit.outputs import finite_or_none, write_json_atomic

__all__ = [
    "BMODE_PANEL_XYXY",
    "CONTRAST_PANEL_XYXY",
    "FRAME_SHAPE",
    "KINETICS",
    "KINETICS_DURATION_S",
    "SCENARIOS",
    "Phantom",
    "SimulationSpec",
    "confounder_specs",
    "motion_trace",
    "simulate",
    "write_phantom",
]

SCENARIOS = ("tumor", "bland")
#: Imaging modes (``--mode``): ``contrast`` (contrast-specific imaging with a
#: bolus), ``fundamental`` (plain B-mode in both panels, no contrast: bright
#: tissue, nothing arrives) and ``cardiac`` (fundamental plus a cardiac-like
#: periodic modulation: the anatomy pulses in brightness and position at
#: `_CARDIAC_HZ`, as an echo or an arterial Doppler cine does).
MODES = ("contrast", "fundamental", "cardiac")
#: Tumour kinetics families (``--kinetics``); see `_draw_kinetics`.
KINETICS = ("malignant", "marked-washout", "late-washout", "synchronous-iso", "slow-hypo")
#: Recommended cine length per family (s): long enough for every label the
#: family promises (a late wash-out needs the cine to run past 120 s to tell
#: mild from marked).
KINETICS_DURATION_S = {"malignant": 90.0, "marked-washout": 90.0, "late-washout": 150.0,
                       "synchronous-iso": 90.0, "slow-hypo": 90.0}
FORMATS = {"dicom": "cine.dcm", "mp4": "cine.mp4", "npz": "cine.npz"}

# Frame layout (frame pixels, ends exclusive): a dark top band where scanners
# put their text, then the two panels separated by a dark gap.
FRAME_SHAPE = (216, 544)
PANEL_SHAPE = (192, 256)
CONTRAST_PANEL_XYXY = (8, 16, 264, 208)
BMODE_PANEL_XYXY = (280, 16, 536, 208)

# Anatomy is drawn on a canvas larger than the panel so that motion brings real
# anatomy (and the same speckle) into view instead of an empty edge.
_MARGIN = 40
_MAX_MOTION_PX = 32.0
_MAX_FRAMES = 7201
_CHUNK = 32

_MOTION_PERIOD_S = 4.0
_MOTION_DX_RATIO = 0.4
_MOTION_DX_PHASE = 1.0
# Probe drift direction (x, y), a unit vector: mostly lateral sliding, some depth.
_DRIFT_DIRECTION = (0.8, 0.6)
# Out-of-plane frames: the neighbouring slice shows the anatomy displaced by
# this many pixels (uniform range, random direction) on top of the in-plane
# motion.  With the 32 px cap on in-plane motion it stays inside the 40 px
# canvas margin.
_OOP_OFFSET_PX = (3.0, 6.0)
# Cardiac-like modulation (``mode="cardiac"``): frequency, brightness depth
# (a factor 1 +- depth on the echo power, about +-1.8 dB at 0.5) and the
# amplitude of the pulsatile displacement (px, axial; lateral 0.4 of it).
_CARDIAC_HZ = 1.2
_CARDIAC_DEPTH = 0.5
_CARDIAC_MOTION_PX = 3.0
# Largest lumen blooming simulated (Gaussian sigma, px).
_MAX_BLOOMING_PX = 6.0

# Levels (dB re display maximum).  Tissue leakage through the contrast pulse
# sequence is about 40 dB below full scale in muscle; bright specular walls
# leak more, but scanners suppress them, hence the cap.
_LEAK_DB = -40.0
_LEAK_CAP_DB = -30.0
_BMODE_NOISE_DB = -58.0
_BMODE_TRACE_DB = -35.0  # bubbles are barely visible at low mechanical index
_ECHO_DB = {
    "muscle": -24.0,
    "wall": -6.0,
    "lumen": -65.0,
    "mass": -32.0,
    "necrosis": -36.0,
    "thrombus": -34.0,
}
_WALL_PERFUSION = 0.6  # vasa vasorum: the wall follows muscle kinetics, weaker

# Speckle PSF (Gaussian standard deviations in mm): axial finer than lateral.
_PSF_AXIAL_MM = 0.16
_PSF_LATERAL_MM = 0.32

# Geometry (mm).
_VEIN_DEPTH_FRACTION = 0.45
_LUMEN_RADIUS_MM = 4.0
_WALL_MM = 0.5
_VEIN_UNDULATION_MM = 0.6
_VEIN_WAVELENGTH_MM = 120.0
_MASS_SEMI_AXES_MM = (12.0, 8.0)
_MASS_FROM_RIGHT_MM = 20.0
_MASS_BELOW_VEIN_MM = 1.6
_THROMBUS_SEMI_AXES_MM = (11.0, 3.4)
_THROMBUS_BELOW_VEIN_MM = 1.0
_MUSCLE_ROI_MM = (8.8, 9.2, 5.3, 2.5)  # cx from left, cy below vein, rx, ry
_LUMEN_ROI_MM = (8.0, 4.5, 2.1)  # cx from left, rx, ry
_POLYGON_VERTICES = 36
_LESION_ROI_SCALE = 0.9

# Heterogeneity of viable tumour perfusion: lognormal, std of log 0.5.
_TUMOR_SIGMA_LOG = 0.5
_MUSCLE_SIGMA_LOG = 0.12
_NECROSIS_CENTRAL_BIAS = 1.5


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class SimulationSpec:
    """What to simulate.

    Attributes
    ----------
    scenario : {"tumor", "bland"}
        Venous tumour with a necrotic core, or bland (non-enhancing) thrombus.
    seed : int
        Seed of every random draw (anatomy, kinetics, speckle); the same spec
        gives the same phantom, byte for byte.
    necrosis : float
        Share of the mass that does not enhance, 0 to 0.9 (tumour only).
    motion_px : float
        Axial amplitude of the breathing motion in pixels (0 = none, at most
        32); the lateral amplitude is 0.4 times this, period 4 s.
    drift_px_per_s : float
        Speed of a steady probe drift in px/s (0 = none), along the fixed
        direction (x, y) = (0.8, 0.6); breathing plus drift must stay within
        32 px of the reference over the cine.
    out_of_plane_frames : int
        Number of frames (chosen at random from the seed, 0 = none, at most
        half the frames) that show a neighbouring slice: fresh tissue speckle
        and the anatomy offset by 3 to 6 px; listed in ``truth["motion"]``.
    fps : float
        Frame rate in frames per second.
    duration_s : float
        Time of the last frame in seconds; frames are taken at ``k / fps``
        for ``k = 0 .. floor(duration_s * fps)``.
    dynamic_range_db : float
        Display dynamic range in dB of the log compression.
    noise_floor_db : float
        Mean receiver-noise power in the contrast panel, dB re full scale.
    spacing_mm : float
        Pixel size in mm (square pixels); the panels stay 192 x 256 pixels.
    kinetics : str
        Tumour kinetics family (`KINETICS`; tumour scenario only, the bland
        thrombus ignores it): ``malignant`` (rapid, hyper, early wash-out in
        most seeds), ``marked-washout`` (rapid, hyper, early marked),
        ``late-washout`` (rapid, hyper, late mild; needs ~150 s),
        ``synchronous-iso`` and ``slow-hypo`` (no wash-out).
    blooming_px : float
        Lumen blooming (0 = none, at most 6): the contrast-filled lumen's
        signal spreads into its surroundings (the thrombus beside it, the
        wall) as a Gaussian of this sigma in pixels, as a saturating bubble
        signal and partial volume do on a scanner.  Rendering only: the
        truth stays the tissues' own (a bland thrombus still does not
        enhance).
    mode : str
        `MODES`: ``contrast`` (default), ``fundamental`` (no contrast, B-mode
        in both panels) or ``cardiac`` (fundamental with cardiac-like
        pulsation).  Without contrast nothing enhances and the truth's
        intraluminal enhancement is None (not assessable).
    persistence : float
        Frame averaging of the display (0 = none, at most 0.9), as scanners'
        persistence setting: each displayed frame is ``p`` times the previous
        displayed frame plus ``1 - p`` times the new one (in display values,
        after log compression; rounded to 8 bits).  Display only: the truth is
        the tissues' own, so the displayed curves lag it by about
        ``p / (1 - p)`` frames.
    smoothing_px : float
        Gaussian smoothing of the display after log compression (sigma in
        px, 0 = none, at most 3), as scanners' speckle reduction does.
        Display only, like `persistence`.
    """

    scenario: str = "tumor"
    seed: int = 0
    necrosis: float = 0.3
    motion_px: float = 0.0
    fps: float = 8.0
    duration_s: float = 90.0
    dynamic_range_db: float = 60.0
    noise_floor_db: float = -45.0
    spacing_mm: float = 0.2
    drift_px_per_s: float = 0.0
    out_of_plane_frames: int = 0
    kinetics: str = "malignant"
    blooming_px: float = 0.0
    mode: str = "contrast"
    persistence: float = 0.0
    smoothing_px: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise ValueError(f"mode (--mode) must be one of {', '.join(MODES)}, got {self.mode!r}")
        _check_range("blooming_px", "--blooming", self.blooming_px, 0.0, _MAX_BLOOMING_PX)
        _check_range("persistence", "--persistence", self.persistence, 0.0, 0.9)
        _check_range("smoothing_px", "--smoothing", self.smoothing_px, 0.0, 3.0)
        if self.scenario not in SCENARIOS:
            raise ValueError(
                f"scenario (--scenario) must be one of {', '.join(SCENARIOS)}, "
                f"got {self.scenario!r}")
        if not isinstance(self.kinetics, str) or self.kinetics not in KINETICS:
            raise ValueError(
                f"kinetics (--kinetics) must be one of {', '.join(KINETICS)}, "
                f"got {self.kinetics!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise ValueError(f"seed (--seed) must be an integer, got {self.seed!r}")
        if self.seed < 0:
            raise ValueError(f"seed (--seed) must be >= 0, got {self.seed}")
        _check_range("necrosis", "--necrosis", self.necrosis, 0.0, 0.9)
        _check_range("motion_px", "--motion", self.motion_px, 0.0, _MAX_MOTION_PX)
        _check_range("fps", "--fps", self.fps, 0.5, 60.0)
        _check_range("duration_s", "--duration", self.duration_s, 1.0, 900.0)
        _check_range("dynamic_range_db", "--dynamic-range", self.dynamic_range_db, 30.0, 100.0)
        _check_range("noise_floor_db", "noise_floor_db", self.noise_floor_db, -90.0, -20.0)
        # The anatomy is laid out in mm on a 192 x 256 pixel panel: outside
        # this range the mass and the reference ROI no longer fit side by side.
        _check_range("spacing_mm", "spacing_mm", self.spacing_mm, 0.18, 0.3)
        if self.n_frames > _MAX_FRAMES:
            raise ValueError(
                f"duration_s x fps (--duration x --fps) gives {self.n_frames} frames; "
                f"at most {_MAX_FRAMES} are simulated")
        _check_range("drift_px_per_s", "--drift", self.drift_px_per_s, 0.0, _MAX_MOTION_PX)
        dx, dy = motion_trace(self, self.times_s())
        reach = float(max(np.max(np.abs(dx)), np.max(np.abs(dy))))
        if reach > _MAX_MOTION_PX:
            raise ValueError(
                f"breathing plus drift (--motion, --drift) move the anatomy {reach:.1f} px "
                f"over the cine; at most {_MAX_MOTION_PX:g} px are simulated")
        oop = self.out_of_plane_frames
        if isinstance(oop, bool) or not isinstance(oop, int | np.integer) or \
                not 0 <= oop <= self.n_frames // 2:
            raise ValueError(
                f"out_of_plane_frames (--out-of-plane) must be an integer between 0 and "
                f"{self.n_frames // 2} (half the frames), got {oop!r}")

    @property
    def n_frames(self) -> int:
        """Number of frames, ``floor(duration_s * fps) + 1``."""
        return math.floor(float(self.duration_s) * float(self.fps) + 1e-9) + 1

    def times_s(self) -> NDArray[np.float64]:
        """Frame times in seconds, ``k / fps``."""
        return np.arange(self.n_frames, dtype=np.float64) / float(self.fps)


def _check_range(name: str, flag: str, value: Any, lo: float, hi: float) -> None:
    label = name if name == flag else f"{name} ({flag})"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v) or not lo <= v <= hi:
        raise ValueError(f"{label} must be between {lo:g} and {hi:g}, got {value!r}")


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class Phantom:
    """A simulated cine with its ground truth.

    Attributes
    ----------
    frames : ndarray, shape (T, H, W), uint8
        Dual-display grey frames (read-only).
    times_s : ndarray, shape (T,), float64
        Frame times in seconds, ``k / fps``.
    contrast_panel, bmode_panel : Panel
        The two panels in frame pixels (ends exclusive).
    spacing_mm : tuple of float
        Pixel size (row, col) in mm.
    truth : dict
        JSON-serialisable ground truth (what ``truth.json`` holds).
    rois : dict
        The ROI file content (``space: "panel"``).
    masks : mapping of str to ndarray of bool, shape of the contrast panel
        Reference (motionless) anatomy: ``mass``, ``necrosis``, ``viable``,
        ``thrombus``, ``lumen``, ``wall``, ``muscle`` (empty where the
        scenario has none).
    roi_masks : mapping of str to ndarray of bool
        Each ROI of `rois` rasterised on the contrast panel.
    amplitude_maps : mapping of str to ndarray of float
        Per enhancing tissue (``tumor``, ``muscle``, ``lumen``) the
        dimensionless map that multiplies its bolus curve.
    """

    frames: NDArray[np.uint8] = field(repr=False)
    times_s: NDArray[np.float64] = field(repr=False)
    contrast_panel: Panel
    bmode_panel: Panel
    spacing_mm: tuple[float, float]
    truth: dict[str, Any] = field(repr=False)
    rois: dict[str, Any] = field(repr=False)
    masks: Mapping[str, NDArray[np.bool_]] = field(repr=False)
    roi_masks: Mapping[str, NDArray[np.bool_]] = field(repr=False)
    amplitude_maps: Mapping[str, NDArray[np.float64]] = field(repr=False)


# --------------------------------------------------------------------------- kinetics


@dataclass(frozen=True)
class _Bolus:
    """Lognormal bolus ``A / (sigma sqrt(2 pi) tau) exp(-(ln tau - mu)^2 / (2 sigma^2))``."""

    t0_s: float
    mu: float
    sigma: float
    area: float

    @classmethod
    def from_shape(cls, t0_s: float, mode_s: float, sigma: float, peak: float) -> _Bolus:
        mu = math.log(mode_s) + sigma**2
        area = peak * sigma * math.sqrt(2.0 * math.pi) * math.exp(mu - sigma**2 / 2.0)
        return cls(t0_s, mu, sigma, area)

    @property
    def mode_s(self) -> float:
        return math.exp(self.mu - self.sigma**2)

    @property
    def mean_s(self) -> float:
        return math.exp(self.mu + self.sigma**2 / 2.0)

    @property
    def peak(self) -> float:
        return self.area / (self.sigma * math.sqrt(2.0 * math.pi)) * math.exp(
            self.sigma**2 / 2.0 - self.mu)

    def __call__(self, t: NDArray[np.float64]) -> NDArray[np.float64]:
        tau = np.asarray(t, dtype=np.float64) - self.t0_s
        out = np.zeros_like(tau)
        pos = tau > 0
        lt = np.log(tau[pos])
        out[pos] = self.area / (self.sigma * math.sqrt(2.0 * math.pi) * tau[pos]) * np.exp(
            -((lt - self.mu) ** 2) / (2.0 * self.sigma**2))
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": "lognormal",
            "t0_s": self.t0_s,
            "mu": self.mu,
            "sigma": self.sigma,
            "area": self.area,
            "peak": self.peak,
            "peak_db": 10.0 * math.log10(self.peak) if self.peak > 0 else None,
            "mode_s": self.mode_s,
            "time_to_peak_s": self.t0_s + self.mode_s,
            "mean_transit_time_s": self.mean_s,
            "first_moment_s": self.t0_s + self.mean_s,
        }


def _draw_malignant(rng: np.random.Generator) -> dict[str, _Bolus]:
    """Per-seed bolus of each enhancing tissue, ``malignant`` family (the default).

    The draws keep the scenario's truth by construction: the tumour arrives
    at least 2.5 s before muscle, peaks 9 to 13 dB above it and washes out
    within seconds; every peak stays well below full scale so that clipping
    at grey 255 is rare.
    """
    t0_tumor = rng.uniform(7.5, 10.5)
    t0_muscle = t0_tumor + rng.uniform(2.5, 4.0)
    t0_lumen = t0_muscle + rng.uniform(1.0, 3.0)
    peak_tumor_db = rng.uniform(-15.0, -10.0)
    peak_muscle_db = peak_tumor_db - rng.uniform(9.0, 13.0)
    peak_lumen_db = rng.uniform(-11.0, -7.0)

    def jitter(nominal: float, rel: float) -> float:
        return nominal * rng.uniform(1.0 - rel, 1.0 + rel)

    return {
        "tumor": _Bolus.from_shape(t0_tumor, jitter(4.5, 0.15), jitter(0.55, 0.10),
                                   10.0 ** (peak_tumor_db / 10.0)),
        "muscle": _Bolus.from_shape(t0_muscle, jitter(11.0, 0.15), jitter(0.5, 0.10),
                                    10.0 ** (peak_muscle_db / 10.0)),
        "lumen": _Bolus.from_shape(t0_lumen, jitter(9.0, 0.15), jitter(0.6, 0.10),
                                   10.0 ** (peak_lumen_db / 10.0)),
    }


# Truth labels (``truth["findings"]``) are given only where the noise-free
# curves are clear of each `ceuskit.findings` threshold by these margins, so
# that a label is one the measurement can be held to; otherwise the label is
# None and listed under ``ambiguous``.  The pipeline measures arrival
# differences within ~0.6 s and levels within ~1.5 dB at the default noise.
TRUTH_MARGINS = {
    "wash_in_s": 0.75,          # |d -+ WASH_IN_MARGIN_S| >= 0.75 s
    "enhancement_db": 1.5,      # |E -+ ENHANCEMENT_MARGIN_DB| >= 1.5 dB
    "wash_out_db": 1.5,         # levels 1.5 dB beyond the wash-out and marked thresholds
    "wash_out_span_s": 10.0,    # ... held for 10 s (the findings need 5 s)
    "wash_out_time_s": 10.0,    # ... starting 10 s clear of the 60 s / 120 s limits
}
#: The findings each family promises at its recommended duration
#: (`KINETICS_DURATION_S`) and necrosis <= 0.55; ``None`` = not promised.
KINETICS_PROMISE: dict[str, dict[str, Any]] = {
    "malignant": {"wash_in": "rapid", "enhancement": "hyper",
                  "wash_out": {"present": None, "timing": None, "degree": None}},
    "marked-washout": {"wash_in": "rapid", "enhancement": "hyper",
                       "wash_out": {"present": True, "timing": "early", "degree": "marked"}},
    "late-washout": {"wash_in": "rapid", "enhancement": "hyper",
                     "wash_out": {"present": True, "timing": "late", "degree": "mild"}},
    "synchronous-iso": {"wash_in": "synchronous", "enhancement": "iso",
                        "wash_out": {"present": False, "timing": None, "degree": None}},
    "slow-hypo": {"wash_in": "slow", "enhancement": "hypo",
                  "wash_out": {"present": False, "timing": None, "degree": None}},
}
# A family without wash-out stays clear of it this long (s), so that longer
# cines keep the promise.
_NO_WASH_OUT_HORIZON_S = 300.0
_DESIGN_DT_S = 0.1
_MAX_DRAWS = 200


def _span_start(t: FloatArray, ok: BoolArray, span_s: float) -> float:
    """First time from which `ok` holds at every sample for `span_s` (uniform grid), else inf."""
    if t.size < 2:
        return math.inf
    dt = float(t[1] - t[0])
    k = math.ceil(span_s / dt - 1e-9) + 1
    if ok.size < k:
        return math.inf
    run = np.convolve(ok.astype(np.int64), np.ones(k, dtype=np.int64), mode="valid")
    hit = np.flatnonzero(run == k)
    return float(t[hit[0]]) if hit.size else math.inf


def _clear_wash_out(t: FloatArray, rel_db: FloatArray, ttp_s: float, start_db: float,
                    t_end_s: float) -> dict[str, Any]:
    """Wash-out labels that hold with `TRUTH_MARGINS` on a dense noise-free level curve.

    ``rel_db`` is ``10 log10(lesion / reference enhancement)`` on the uniform
    grid `t` (injection at t = 0); only ``t <= t_end_s`` counts (the cine).
    """
    m_db, span, m_t = (TRUTH_MARGINS["wash_out_db"], TRUTH_MARGINS["wash_out_span_s"],
                       TRUTH_MARGINS["wash_out_time_s"])
    out: dict[str, Any] = {"present": None, "timing": None, "degree": None}
    sel = (t >= ttp_s) & (t <= t_end_s)
    if ttp_s > t_end_s or not np.any(sel):
        return out
    ts, rs = t[sel], rel_db[sel]
    yes = _span_start(ts, rs <= start_db - WASH_OUT_DROP_DB - m_db, span)
    never = bool(np.all(rs > start_db - WASH_OUT_DROP_DB + m_db))
    if never and t_end_s >= WASH_OUT_EARLY_LIMIT_S:
        out["present"] = False
        return out
    if not math.isfinite(yes):
        return out
    out["present"] = True
    if yes <= WASH_OUT_EARLY_LIMIT_S - m_t:
        out["timing"] = "early"
    elif np.all(rs[ts <= WASH_OUT_EARLY_LIMIT_S + m_t] > start_db - WASH_OUT_DROP_DB + m_db):
        out["timing"] = "late"
    marked = _span_start(ts, rs <= start_db - WASH_OUT_MARKED_DB - m_db, span)
    if marked <= WASH_OUT_MARKED_WITHIN_S - m_t:
        out["degree"] = "marked"
    elif t_end_s >= WASH_OUT_MARKED_WITHIN_S + m_t and np.all(
            rs[ts <= WASH_OUT_MARKED_WITHIN_S + m_t] > start_db - WASH_OUT_MARKED_DB + m_db):
        out["degree"] = "mild"
    return out


def _clear_wash_in(d_s: float) -> str | None:
    m = TRUTH_MARGINS["wash_in_s"]
    if d_s <= -WASH_IN_MARGIN_S - m:
        return "rapid"
    if abs(d_s) <= WASH_IN_MARGIN_S - m:
        return "synchronous"
    if d_s >= WASH_IN_MARGIN_S + m:
        return "slow"
    return None


def _clear_enhancement(e_db: float) -> str | None:
    m = TRUTH_MARGINS["enhancement_db"]
    if e_db >= ENHANCEMENT_MARGIN_DB + m:
        return "hyper"
    if abs(e_db) <= ENHANCEMENT_MARGIN_DB - m:
        return "iso"
    if e_db <= -ENHANCEMENT_MARGIN_DB - m:
        return "hypo"
    return None


def _arrival_offset_s(mode_s: float, sigma: float) -> float:
    """Arrival (tangent at the steepest rise crossing zero) of a lognormal, after its t0 (s)."""
    b = _Bolus.from_shape(0.0, mode_s, sigma, 1.0)
    tau = np.linspace(mode_s * 1e-3, mode_s, 20001)
    f = b(tau)
    slope = f * (-1.0 / tau - (np.log(tau) - b.mu) / (sigma**2 * tau))
    i = int(np.argmax(slope))
    return float(tau[i] - f[i] / slope[i])


def _relative_level_db(t: FloatArray, tumor: _Bolus, muscle: _Bolus, e_db: float) -> FloatArray:
    """ROI-level ``10 log10(lesion / reference enhancement)`` for peak ratio `e_db`."""
    ft = tumor(t) / tumor.peak
    fm = muscle(t) / muscle.peak
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = e_db + 10.0 * np.log10(ft / fm)
    rel[(ft > 0) & ~(fm > 0)] = np.inf
    return np.asarray(rel)


def _draw_family(rng: np.random.Generator, kinetics: str,
                 weights: tuple[float, float]) -> dict[str, _Bolus]:
    """Boluses of a non-default kinetics family, drawn until its promise holds with margins.

    Arrival difference and enhancement degree are set at the ROI level by
    construction: the tumour's t0 is placed so that the lesion ROI's arrival
    (tangent at the steepest rise) is ``d`` from the muscle ROI's, and its
    amplitude so that the lesion ROI's peak is ``E`` dB from the muscle
    ROI's (`weights` = ROI means of the tumour and muscle amplitude maps;
    the lesion ROI's necrosis is accounted for).  Draws whose wash-out is
    not clear of the findings' thresholds (`_clear_wash_out`, at the family's
    recommended duration and, for families without wash-out, up to 300 s)
    are drawn again.

    Families (d = lesion - reference arrival, E = peak ratio):

    - ``marked-washout``: d in [-4.5, -2.5] s, E in [5, 9] dB, a fast tumour
      bolus (mode ~4 s, sigma ~0.45): early, marked wash-out.
    - ``late-washout``: a slow, heavy-tailed muscle bolus (mode ~15 s, sigma
      ~0.9); d in [-4, -2.5] s, E in [5, 8] dB, sigma 0.72-0.78 times the
      muscle's and a mode solved so that the level first crosses -3 dB at
      82-90 s: late, mild wash-out (needs a cine of ~150 s).
    - ``synchronous-iso``: d in [-0.3, 0.3] s, E in [-1, 1] dB, a bolus a
      little slower than muscle (mode x 1-1.15, sigma x 1-1.1): no wash-out.
    - ``slow-hypo``: d in [3, 5] s, E in [-10, -6] dB, slower than muscle
      (mode x 1-1.2, sigma x 1-1.1): no wash-out.
    """
    promise = KINETICS_PROMISE[kinetics]["wash_out"]
    horizon = (_NO_WASH_OUT_HORIZON_S if promise["present"] is False
               else KINETICS_DURATION_S[kinetics])
    t = np.arange(0.0, horizon + _DESIGN_DT_S / 2, _DESIGN_DT_S)

    def jitter(nominal: float, rel: float) -> float:
        return nominal * rng.uniform(1.0 - rel, 1.0 + rel)

    late = kinetics == "late-washout"
    # A late wash-out is read far into the tail: there the muscle's bolus is
    # slower and heavier-tailed (mode 15 s, sigma 0.9: 13 dB below its peak
    # at 150 s instead of ~30), so that both curves stay above the noise.
    muscle_mode, muscle_sigma, muscle_db = (15.0, 0.9, (-24.0, -20.0)) if late else (
        11.0, 0.5, (-27.0, -22.0))
    for _ in range(_MAX_DRAWS):
        t0_muscle = rng.uniform(10.5, 13.5)
        muscle = _Bolus.from_shape(t0_muscle, jitter(muscle_mode, 0.15), jitter(muscle_sigma, 0.10),
                                   10.0 ** (rng.uniform(*muscle_db) / 10.0))
        lumen = _Bolus.from_shape(t0_muscle + rng.uniform(1.0, 3.0), jitter(9.0, 0.15),
                                  jitter(0.6, 0.10), 10.0 ** (rng.uniform(-11.0, -7.0) / 10.0))
        arrival_m = t0_muscle + _arrival_offset_s(muscle.mode_s, muscle.sigma)
        if kinetics == "marked-washout":
            mode, sigma = jitter(4.0, 0.15), jitter(0.45, 0.10)
            d, e_db = rng.uniform(-4.5, -2.5), rng.uniform(5.0, 9.0)
        elif kinetics == "late-washout":
            # A bolus a little narrower (in log time) than the muscle's
            # falls behind it ever faster: flat first, then a steady fall.
            sigma = muscle.sigma * rng.uniform(0.72, 0.78)
            d, e_db = rng.uniform(-4.0, -2.5), rng.uniform(5.0, 8.0)
            mode = _solve_late_mode(t, muscle, sigma, arrival_m + d, e_db, rng.uniform(82.0, 90.0))
        elif kinetics == "synchronous-iso":
            mode = muscle.mode_s * rng.uniform(1.0, 1.15)
            sigma = muscle.sigma * rng.uniform(1.0, 1.1)
            d, e_db = rng.uniform(-0.3, 0.3), rng.uniform(-1.0, 1.0)
        elif kinetics == "slow-hypo":
            mode = muscle.mode_s * rng.uniform(1.0, 1.2)
            sigma = muscle.sigma * rng.uniform(1.0, 1.1)
            d, e_db = rng.uniform(3.0, 5.0), rng.uniform(-10.0, -6.0)
        else:  # pragma: no cover - SimulationSpec validates the name
            raise ValueError(f"unknown kinetics {kinetics!r}")
        t0_tumor = arrival_m + d - _arrival_offset_s(mode, sigma)
        unit = _Bolus.from_shape(t0_tumor, mode, sigma, 1.0)
        rel = _relative_level_db(t, unit, muscle, e_db)
        got = _clear_wash_out(t, rel, unit.t0_s + unit.mode_s, min(0.0, e_db), horizon)
        if got == promise:
            w_tumor, w_muscle = weights
            scale = (w_muscle / w_tumor) if w_tumor > 0 and w_muscle > 0 else 1.0
            peak = muscle.peak * scale * 10.0 ** (e_db / 10.0)
            return {"tumor": _Bolus.from_shape(t0_tumor, mode, sigma, peak),
                    "muscle": muscle, "lumen": lumen}
    raise RuntimeError(f"could not draw kinetics {kinetics!r} that keep their promise; "
                       "check the family's ranges")


def _solve_late_mode(t: FloatArray, muscle: _Bolus, sigma: float, arrival_s: float,
                     e_db: float, crossing_s: float) -> float:
    """Tumour mode (s) whose level first falls to -WASH_OUT_DROP_DB dB at `crossing_s`.

    A slower bolus (larger mode) falls behind the muscle's later, so the
    first crossing time grows with the mode: bisection on log(mode).
    """
    def crossing(mode: float) -> float:
        b = _Bolus.from_shape(arrival_s - _arrival_offset_s(mode, sigma), mode, sigma, 1.0)
        rel = _relative_level_db(t, b, muscle, e_db)
        below = np.flatnonzero((t >= b.t0_s + b.mode_s) & (rel <= -WASH_OUT_DROP_DB))
        return float(t[below[0]]) if below.size else math.inf

    lo, hi = math.log(0.3 * muscle.mode_s), math.log(3.0 * muscle.mode_s)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if crossing(math.exp(mid)) < crossing_s:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def _draw_kinetics(rng: np.random.Generator, kinetics: str = "malignant",
                   weights: tuple[float, float] = (1.0, 1.0)) -> dict[str, _Bolus]:
    """Per-seed boluses of the tumour, muscle and lumen for a kinetics family.

    ``malignant`` keeps the original draws (`_draw_malignant`) byte for byte;
    the other families are `_draw_family`.
    """
    if kinetics == "malignant":
        return _draw_malignant(rng)
    return _draw_family(rng, kinetics, weights)


# --------------------------------------------------------------------------- anatomy


FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
InsideFn = Callable[[FloatArray, FloatArray], BoolArray]


@dataclass
class _Anatomy:
    """Maps on the canvas (panel plus `_MARGIN` on every side)."""

    masks: dict[str, BoolArray]
    amplitude: dict[str, FloatArray]  # per enhancing tissue
    echo: FloatArray  # B-mode echogenicity E(x), linear power
    leak: FloatArray  # R(x), linear power
    lesion_inside: InsideFn
    lesion_centre: tuple[float, float]
    lesion_axes: tuple[float, float]
    vein_centre: Callable[[FloatArray], FloatArray]
    lumen_radius: float
    geometry: dict[str, Any]


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int],
                  sigma: tuple[float, float]) -> FloatArray:
    """Zero-mean, unit-variance Gaussian random field of correlation `sigma` (px)."""
    z = gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (z - z.mean()) / z.std()


def _harmonic_border(rng: np.random.Generator) -> Callable[[FloatArray], FloatArray]:
    """Smooth radial perturbation delta(theta) of a border (a few % lobulation)."""
    orders = np.arange(2, 8)
    amps = 0.08 / orders * rng.uniform(0.5, 1.0, orders.size)
    phases = rng.uniform(0.0, 2.0 * np.pi, orders.size)

    def delta(theta: FloatArray) -> FloatArray:
        th = np.asarray(theta, dtype=np.float64)[..., None]
        return np.sum(amps * np.cos(orders * th + phases), axis=-1)

    return delta


def _irregular_ellipse(cx: float, cy: float, a: float, b: float,
                       delta: Callable[[FloatArray], FloatArray]) -> InsideFn:
    def inside(x: FloatArray, y: FloatArray) -> BoolArray:
        u = (np.asarray(x, dtype=np.float64) - cx) / a
        v = (np.asarray(y, dtype=np.float64) - cy) / b
        return np.asarray(np.hypot(u, v) <= 1.0 + delta(np.arctan2(v, u)))

    return inside


def _build_anatomy(spec: SimulationSpec, rng: np.random.Generator) -> _Anatomy:
    s = float(spec.spacing_mm)
    h, w = PANEL_SHAPE
    ch, cw = h + 2 * _MARGIN, w + 2 * _MARGIN
    # Panel coordinates of the canvas pixel centres.
    ys = np.arange(ch, dtype=np.float64)[:, None] - _MARGIN
    xs = np.arange(cw, dtype=np.float64)[None, :] - _MARGIN
    yy, xx = np.broadcast_arrays(ys, xs)

    yv0 = _VEIN_DEPTH_FRACTION * h
    undulation = _VEIN_UNDULATION_MM / s
    wavelength = _VEIN_WAVELENGTH_MM / s
    vein_phase = rng.uniform(0.0, 2.0 * np.pi)

    def vein_centre(x: FloatArray) -> FloatArray:
        return yv0 + undulation * np.sin(2.0 * np.pi * np.asarray(x) / wavelength + vein_phase)

    radius = _LUMEN_RADIUS_MM / s
    dist = np.abs(yy - vein_centre(xx))
    band = dist <= radius
    wall_band = (dist > radius) & (dist <= radius + _WALL_MM / s)

    if spec.scenario == "tumor":
        a, b = (v / s for v in _MASS_SEMI_AXES_MM)
        cx = w - _MASS_FROM_RIGHT_MM / s + rng.uniform(-0.8, 0.8) / s
        cy = float(vein_centre(np.array(cx))) + (_MASS_BELOW_VEIN_MM + rng.uniform(-0.6, 0.6)) / s
        lesion_inside = _irregular_ellipse(cx, cy, a, b, _harmonic_border(rng))
    else:
        a, b = (v / s for v in _THROMBUS_SEMI_AXES_MM)
        cx = w - _MASS_FROM_RIGHT_MM / s + rng.uniform(-0.8, 0.8) / s
        cy = float(vein_centre(np.array(cx))) + _THROMBUS_BELOW_VEIN_MM / s
        shape_inside = _irregular_ellipse(cx, cy, a, b, _harmonic_border(rng))

        def lesion_inside(x: FloatArray, y: FloatArray) -> BoolArray:
            in_band = np.abs(np.asarray(y) - vein_centre(np.asarray(x))) <= radius
            return np.asarray(shape_inside(x, y) & in_band)

    lesion = lesion_inside(xx, yy)
    panel_view = (slice(_MARGIN, _MARGIN + h), slice(_MARGIN, _MARGIN + w))
    inner = np.zeros_like(lesion)
    inner[_MARGIN + 4:_MARGIN + h - 4, _MARGIN + 4:_MARGIN + w - 4] = True
    if np.any(lesion & ~inner):
        raise RuntimeError("lesion does not fit in the panel; check the geometry constants")

    # Fields are drawn in a fixed order, whatever the scenario, so that muscle
    # and speckle look the same in a tumour and a bland phantom of one seed.
    striation = _smooth_field(rng, (ch, cw), (0.25 / s, 6.0 / s))
    muscle_perf = _smooth_field(rng, (ch, cw), (3.0 / s, 3.0 / s))
    lesion_tex = _smooth_field(rng, (ch, cw), (0.8 / s, 0.8 / s))
    tumor_perf = _smooth_field(rng, (ch, cw), (1.6 / s, 1.6 / s))
    necro_field = _smooth_field(rng, (ch, cw), (2.0 / s, 2.0 / s))

    masks: dict[str, BoolArray] = {}
    empty = np.zeros((ch, cw), dtype=bool)
    if spec.scenario == "tumor":
        mass = lesion
        n_mass = int(np.count_nonzero(mass))
        n_necrosis = round(float(spec.necrosis) * n_mass)
        # Necrosis is central in sarcomas but irregular: rank the mass pixels
        # by a smooth random field plus a bias towards the centre and take
        # exactly the requested count (stable sort: ties cannot move it).
        rho2 = ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2
        score = necro_field + _NECROSIS_CENTRAL_BIAS * (1.0 - rho2)
        idx = np.flatnonzero(mass)
        order = np.argsort(-score.ravel()[idx], kind="stable")
        flat = np.zeros(mass.size, dtype=bool)
        flat[idx[order[:n_necrosis]]] = True
        necrosis = flat.reshape(mass.shape)
        masks.update(mass=mass, necrosis=necrosis, viable=mass & ~necrosis,
                     thrombus=empty.copy())
        lumen = band & ~mass
        wall = wall_band & ~mass
    else:
        masks.update(mass=empty.copy(), necrosis=empty.copy(), viable=empty.copy(),
                     thrombus=lesion)
        lumen = band & ~lesion
        wall = wall_band
    muscle = ~(band | wall_band | masks["mass"])
    masks.update(lumen=lumen, wall=wall, muscle=muscle)

    # Amplitude maps: dimensionless, normalised so that the tissue's mean over
    # the panel is 1 (its bolus then gives the tissue's mean curve).
    def lognormal_map(z: FloatArray, sigma_log: float, where: BoolArray,
                      norm: BoolArray) -> FloatArray:
        m = np.where(where, np.exp(sigma_log * z), 0.0)
        sel = norm[panel_view]
        return m / m[panel_view][sel].mean() if np.any(sel) else m

    muscle_amp = lognormal_map(muscle_perf, _MUSCLE_SIGMA_LOG, muscle | wall, muscle)
    muscle_amp = np.where(wall, _WALL_PERFUSION * muscle_amp, muscle_amp)
    amplitude = {
        "tumor": lognormal_map(tumor_perf, _TUMOR_SIGMA_LOG, masks["viable"], masks["viable"]),
        "muscle": muscle_amp,
        "lumen": lumen.astype(np.float64),
    }

    def lin(db: float) -> float:
        return float(10.0 ** (db / 10.0))

    echo = np.full((ch, cw), lin(_ECHO_DB["muscle"]))
    # Perimysium: thin, laterally long bright bands give muscle its striation.
    echo = echo * np.exp(0.8 * striation - 0.32)
    echo[wall] = lin(_ECHO_DB["wall"])
    echo[lumen] = lin(_ECHO_DB["lumen"])
    tex = np.exp(0.5 * lesion_tex - 0.125)
    echo = np.where(masks["mass"], lin(_ECHO_DB["mass"]) * tex, echo)
    echo = np.where(masks["necrosis"], lin(_ECHO_DB["necrosis"]) * tex, echo)
    echo = np.where(masks["thrombus"], lin(_ECHO_DB["thrombus"]) * np.exp(
        0.6 * lesion_tex - 0.18), echo)
    leak = np.minimum(lin(_LEAK_DB) * echo / lin(_ECHO_DB["muscle"]), lin(_LEAK_CAP_DB))

    geometry = {
        "vein_centre_depth_px": yv0,
        "vein_undulation_px": undulation,
        "vein_wavelength_px": wavelength,
        "vein_phase_rad": vein_phase,
        "lumen_radius_px": radius,
        "lesion_centre_xy_px": [cx, cy],
        "lesion_semi_axes_px": [a, b],
    }
    return _Anatomy(masks, amplitude, echo, leak, lesion_inside, (cx, cy), (a, b),
                    vein_centre, radius, geometry)


# --------------------------------------------------------------------------- ROIs


def _rasterise_polygon(vertices: FloatArray, shape: tuple[int, int]) -> BoolArray:
    """Pixels whose centres (x = col, y = row) lie inside the polygon."""
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    pts = np.column_stack([xx.ravel(), yy.ravel()]).astype(np.float64)
    return np.asarray(MplPath(vertices).contains_points(pts).reshape(shape))


def _rasterise_ellipse(ellipse: tuple[float, float, float, float],
                       shape: tuple[int, int]) -> BoolArray:
    """Pixels whose centres satisfy ``((x - cx)/rx)^2 + ((y - cy)/ry)^2 <= 1``."""
    cx, cy, rx, ry = ellipse
    yy, xx = np.ogrid[0:shape[0], 0:shape[1]]
    return np.asarray(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0)


def _lattice_on_edges(vertices: FloatArray) -> list[int]:
    """Indices of polygon edges (from vertex i) that pass through a pixel centre.

    Vertices are multiples of 0.1 px, so exact integer arithmetic in tenths
    decides it.
    """
    v = np.rint(np.asarray(vertices) * 10.0).astype(np.int64)
    bad = []
    for i in range(len(v)):
        p, q = v[i], v[(i + 1) % len(v)]
        xs = np.arange(-(-min(p[0], q[0]) // 10), max(p[0], q[0]) // 10 + 1) * 10
        ys = np.arange(-(-min(p[1], q[1]) // 10), max(p[1], q[1]) // 10 + 1) * 10
        if xs.size == 0 or ys.size == 0:
            continue
        gx, gy = np.meshgrid(xs, ys)
        cross = (q[0] - p[0]) * (gy - p[1]) - (q[1] - p[1]) * (gx - p[0])
        if np.any(cross == 0):
            bad.append(i)
    return bad


def _ray_boundary(inside: InsideFn, centre: tuple[float, float], directions: FloatArray,
                  r_max: float) -> FloatArray:
    """Distance from `centre` to the border along each unit direction (bisection)."""
    lo = np.zeros(len(directions))
    hi = np.full(len(directions), r_max)
    for _ in range(48):
        mid = 0.5 * (lo + hi)
        ok = inside(centre[0] + mid * directions[:, 0], centre[1] + mid * directions[:, 1])
        lo = np.where(ok, mid, lo)
        hi = np.where(ok, hi, mid)
    return lo


def _lesion_polygon(anat: _Anatomy, lesion_mask: BoolArray) -> tuple[FloatArray, BoolArray]:
    """Polygon just inside the lesion's border and its mask (panel pixels)."""
    cx, cy = anat.lesion_centre
    a, b = anat.lesion_axes
    # Parametric angles space the vertices evenly along an elongated border.
    theta = np.linspace(0.0, 2.0 * np.pi, _POLYGON_VERTICES, endpoint=False)
    d = np.column_stack([a * np.cos(theta), b * np.sin(theta)])
    d /= np.hypot(d[:, 0], d[:, 1])[:, None]
    r = _ray_boundary(anat.lesion_inside, (cx, cy), d, 2.0 * max(a, b))
    scale = _LESION_ROI_SCALE
    while scale > 0.5:
        poly = np.asarray(np.round(
            np.column_stack([cx + scale * r * d[:, 0], cy + scale * r * d[:, 1]]), 1),
            dtype=np.float64)
        for _ in range(20):
            bad = _lattice_on_edges(poly)
            if not bad:
                break
            # Nudge towards the centre by a tenth of a pixel: the edge leaves
            # the pixel centre and the polygon stays inside the lesion.
            for i in bad:
                poly[i] = np.round(poly[i] - 0.1 * np.sign(poly[i] - np.array([cx, cy])), 1)
        mask = _rasterise_polygon(poly, PANEL_SHAPE)
        if not _lattice_on_edges(poly) and not np.any(mask & ~lesion_mask):
            return poly, mask
        scale -= 0.02
    raise RuntimeError("could not fit a lesion ROI inside the lesion")


def _half_integer(value: float) -> float:
    """Nearest radius of the form n + 0.5 (keeps pixel centres off the ellipse)."""
    return math.floor(value) + 0.5


def _build_rois(anat: _Anatomy, spec: SimulationSpec) -> tuple[dict[str, Any],
                                                             dict[str, BoolArray]]:
    s = float(spec.spacing_mm)
    view = (slice(_MARGIN, _MARGIN + PANEL_SHAPE[0]), slice(_MARGIN, _MARGIN + PANEL_SHAPE[1]))
    lesion_mask = (anat.masks["mass"] | anat.masks["thrombus"])[view]
    poly, lesion_roi = _lesion_polygon(anat, lesion_mask)

    mcx_mm, mdy_mm, mrx_mm, mry_mm = _MUSCLE_ROI_MM
    mcx = round(mcx_mm / s)
    mcy = round(float(anat.vein_centre(np.array(float(mcx)))) + mdy_mm / s)
    muscle_ell = (float(mcx), float(mcy), _half_integer(mrx_mm / s), _half_integer(mry_mm / s))
    lcx_mm, lrx_mm, lry_mm = _LUMEN_ROI_MM
    lcx = round(lcx_mm / s)
    lcy = round(float(anat.vein_centre(np.array(float(lcx)))))
    lumen_ell = (float(lcx), float(lcy), _half_integer(lrx_mm / s), _half_integer(lry_mm / s))

    roi_masks = {
        "lesion": lesion_roi,
        "muscle": _rasterise_ellipse(muscle_ell, PANEL_SHAPE),
        "lumen": _rasterise_ellipse(lumen_ell, PANEL_SHAPE),
    }
    if not np.all(anat.masks["muscle"][view][roi_masks["muscle"]]):
        raise RuntimeError("muscle ROI leaves the muscle; check the geometry constants")
    if not np.all(anat.masks["lumen"][view][roi_masks["lumen"]]):
        raise RuntimeError("lumen ROI leaves the patent lumen; check the geometry constants")

    doc = {
        "space": "panel",
        "rois": [
            {"name": "lesion", "role": "lesion",
             "polygon": [[float(x), float(y)] for x, y in poly]},
            {"name": "muscle", "role": "reference", "ellipse": list(muscle_ell)},
            {"name": "lumen", "role": "vessel", "ellipse": list(lumen_ell)},
        ],
    }
    return doc, roi_masks


# --------------------------------------------------------------------------- rendering


def _psf_filter(shape: tuple[int, int], spacing_mm: float) -> NDArray[np.float32]:
    """Fourier-domain speckle filter scaled so that E|s|^2 = 1 (orthonormal FFT)."""
    ky = scipy.fft.fftfreq(shape[0])[:, None]
    kx = scipy.fft.fftfreq(shape[1])[None, :]
    sy, sx = _PSF_AXIAL_MM / spacing_mm, _PSF_LATERAL_MM / spacing_mm
    hf = np.exp(-2.0 * np.pi**2 * (sy**2 * ky**2 + sx**2 * kx**2))
    hf *= np.sqrt(hf.size / np.sum(hf**2))
    return hf.astype(np.float32)


def _complex_white(rng: np.random.Generator, shape: tuple[int, ...]) -> NDArray[np.complex64]:
    """Circular complex Gaussian noise with E|z|^2 = 1."""
    z = rng.standard_normal((*shape, 2), dtype=np.float32)
    z *= np.float32(math.sqrt(0.5))
    return z.view(np.complex64)[..., 0]


def _translate(canvas: NDArray[Any], dy: float, dx: float) -> NDArray[Any]:
    """Panel view of canvas content displaced by (dy, dx) px, bilinear.

    The value at panel pixel p is the canvas content at reference point
    ``p - (dy, dx)``.
    """
    h, w = PANEL_SHAPE
    oy, ox = _MARGIN - dy, _MARGIN - dx
    iy, ix = math.floor(oy), math.floor(ox)
    fy, fx = oy - iy, ox - ix
    c00 = canvas[..., iy:iy + h, ix:ix + w]
    c01 = canvas[..., iy:iy + h, ix + 1:ix + 1 + w]
    c10 = canvas[..., iy + 1:iy + 1 + h, ix:ix + w]
    c11 = canvas[..., iy + 1:iy + 1 + h, ix + 1:ix + 1 + w]
    return np.asarray((1 - fy) * ((1 - fx) * c00 + fx * c01) + fy * ((1 - fx) * c10 + fx * c11))


def _to_display(power: NDArray[np.float32], dr_db: float) -> NDArray[np.uint8]:
    """Log compression ``g = round(255 (1 + 10 log10 P / DR))``, clipped to 0..255."""
    with np.errstate(divide="ignore"):
        g = np.log10(np.maximum(power, np.float32(1e-30)))
    g *= np.float32(2550.0 / dr_db)
    g += np.float32(255.0)
    np.rint(g, out=g)
    np.clip(g, 0.0, 255.0, out=g)
    return g.astype(np.uint8)


def motion_trace(spec: SimulationSpec, times_s: FloatArray) -> tuple[FloatArray, FloatArray]:
    """In-plane displacement of the anatomy (breathing plus drift), in px.

    Parameters
    ----------
    spec : SimulationSpec
        Uses ``motion_px`` and ``drift_px_per_s``.
    times_s : array, shape (T,)
        Frame times in seconds.

    Returns
    -------
    dx, dy : arrays, shape (T,)
        x right, y down: ``dy = m sin(2 pi t / 4 s) + 0.6 v t``,
        ``dx = 0.4 m sin(2 pi t / 4 s + 1) + 0.8 v t`` with ``m = motion_px``
        and ``v = drift_px_per_s``.
    """
    m = float(spec.motion_px)
    v = float(spec.drift_px_per_s)
    t = np.asarray(times_s, dtype=np.float64)
    phase = 2.0 * np.pi * t / _MOTION_PERIOD_S
    dy = m * np.sin(phase)
    dx = _MOTION_DX_RATIO * m * np.sin(phase + _MOTION_DX_PHASE)
    if v != 0.0:
        dx = dx + _DRIFT_DIRECTION[0] * v * t
        dy = dy + _DRIFT_DIRECTION[1] * v * t
    if getattr(spec, "mode", "contrast") == "cardiac":
        beat = np.sin(2.0 * np.pi * _CARDIAC_HZ * t)
        dy = dy + _CARDIAC_MOTION_PX * beat
        dx = dx + _MOTION_DX_RATIO * _CARDIAC_MOTION_PX * beat
    return dx, dy


def _out_of_plane(spec: SimulationSpec, rng: np.random.Generator) -> tuple[
        NDArray[np.int64], FloatArray]:
    """Indices of the out-of-plane frames (sorted) and their anatomy offsets (k, 2) as (dx, dy) px."""
    k = int(spec.out_of_plane_frames)
    if k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 2))
    idx = np.sort(rng.choice(spec.n_frames, size=k, replace=False)).astype(np.int64)
    radius = rng.uniform(*_OOP_OFFSET_PX, size=k)
    angle = rng.uniform(0.0, 2.0 * np.pi, size=k)
    return idx, np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])


def _render(spec: SimulationSpec, anat: _Anatomy, kin: dict[str, _Bolus],
            tissue_spec: NDArray[np.complex64], rng: np.random.Generator,
            times: FloatArray, dx: FloatArray, dy: FloatArray,
            oop: tuple[NDArray[np.int64], FloatArray] | None = None,
            rng_oop: np.random.Generator | None = None) -> NDArray[np.uint8]:
    h, w = PANEL_SHAPE
    view = (slice(_MARGIN, _MARGIN + h), slice(_MARGIN, _MARGIN + w))
    dr = float(spec.dynamic_range_db)
    noise = np.float32(10.0 ** (spec.noise_floor_db / 10.0))
    noise_b = np.float32(10.0 ** (_BMODE_NOISE_DB / 10.0))
    trace = np.float32(10.0 ** (_BMODE_TRACE_DB / 10.0))
    names = list(kin)
    amps_render = dict(anat.amplitude)
    if spec.blooming_px > 0 and "lumen" in amps_render:
        # Blooming: the lumen's signal spreads past its border, never dims inside it.
        lumen = anat.amplitude["lumen"]
        amps_render["lumen"] = np.maximum(lumen, gaussian_filter(lumen, float(spec.blooming_px)))
    amp_canvas = np.stack([amps_render[k] for k in names]).astype(np.float32)
    contrast_mode = spec.mode == "contrast"
    bubble_filter = _psf_filter(PANEL_SHAPE, float(spec.spacing_mm))
    oop_idx, oop_off = oop if oop is not None else (np.zeros(0, dtype=np.int64), np.zeros((0, 2)))
    moving = bool(np.any(dx != 0) or np.any(dy != 0) or oop_idx.size)
    # Where the anatomy maps are drawn: the in-plane motion, plus the offset
    # of the neighbouring slice in out-of-plane frames.
    map_dx, map_dy = np.array(dx, dtype=np.float64), np.array(dy, dtype=np.float64)
    map_dx[oop_idx] += oop_off[:, 0]
    map_dy[oop_idx] += oop_off[:, 1]
    fresh: dict[int, NDArray[np.complex64]] = {}

    if moving:
        ch, cw = tissue_spec.shape
        ky = scipy.fft.fftfreq(ch)
        kx = scipy.fft.fftfreq(cw)
        static_maps = np.stack([anat.leak, anat.echo]).astype(np.float32)
        if oop_idx.size:
            # Independent scatterers in the neighbouring slice: fresh speckle,
            # drawn from its own stream so that the other draws do not change.
            assert rng_oop is not None
            psf = _psf_filter((ch, cw), float(spec.spacing_mm))
            fresh = {int(j): _complex_white(rng_oop, (ch, cw)) * psf for j in oop_idx}
    else:
        st2 = np.abs(scipy.fft.ifft2(tissue_spec, norm="ortho")[view]) ** 2
        leak_st = (anat.leak[view] * st2).astype(np.float32)
        echo_st = (anat.echo[view] * st2).astype(np.float32)
        amp_panel = amp_canvas[(slice(None), *view)]

    frames = np.zeros((times.size, *FRAME_SHAPE), dtype=np.uint8)
    cx0, cy0, cx1, cy1 = CONTRAST_PANEL_XYXY
    bx0, by0, bx1, by1 = BMODE_PANEL_XYXY
    for start in range(0, times.size, _CHUNK):
        sl = slice(start, min(times.size, start + _CHUNK))
        n = sl.stop - sl.start
        curves = np.stack([kin[k](times[sl]) for k in names]).astype(np.float32)  # (K, n)
        if moving:
            # The tissue speckle moves with the anatomy: an exact sub-pixel
            # shift of the band-limited field is a phase ramp in Fourier space.
            ramp_y = np.exp(-2j * np.pi * np.outer(dy[sl], ky)).astype(np.complex64)
            ramp_x = np.exp(-2j * np.pi * np.outer(dx[sl], kx)).astype(np.complex64)
            shifted = tissue_spec[None] * ramp_y[:, :, None] * ramp_x[:, None, :]
            for i in range(n):
                if sl.start + i in fresh:
                    shifted[i] = fresh[sl.start + i]
            st2_t = np.abs(scipy.fft.ifft2(shifted, norm="ortho", workers=-1)
                           [(slice(None), *view)]) ** 2
            contrast_amp = np.empty((n, h, w), dtype=np.float32)
            leak_t = np.empty((n, h, w), dtype=np.float32)
            echo_t = np.empty((n, h, w), dtype=np.float32)
            for i in range(n):
                j = sl.start + i
                amps = _translate(amp_canvas, map_dy[j], map_dx[j])
                contrast_amp[i] = np.tensordot(curves[:, i], amps, axes=1)
                lm, em = _translate(static_maps, map_dy[j], map_dx[j])
                leak_t[i] = lm * st2_t[i]
                echo_t[i] = em * st2_t[i]
            c_map = contrast_amp
            leak_part: NDArray[np.float32] = leak_t
            echo_part: NDArray[np.float32] = echo_t
        else:
            c_map = np.tensordot(curves.T, amp_panel, axes=1)
            leak_part = leak_st
            echo_part = echo_st
        bubbles = scipy.fft.ifft2(_complex_white(rng, (n, h, w)) * bubble_filter,
                                  norm="ortho", workers=-1)
        sc2 = (bubbles.real**2 + bubbles.imag**2).astype(np.float32)
        contrast_signal = c_map * sc2
        if contrast_mode:
            p_c = contrast_signal + leak_part + noise * rng.standard_exponential(
                (n, h, w), dtype=np.float32)
        else:
            # No contrast-specific imaging: the "contrast" panel shows the
            # tissue's fundamental echo, like the B-mode panel.
            beat = (1.0 + _CARDIAC_DEPTH * np.sin(2.0 * np.pi * _CARDIAC_HZ * times[sl])
                    if spec.mode == "cardiac" else np.ones(n))
            echo_part = echo_part * beat.astype(np.float32)[:, None, None]
            p_c = echo_part + noise_b * rng.standard_exponential((n, h, w), dtype=np.float32)
        # B-mode sees the same bubbles, just faintly: they share the speckle.
        p_b = echo_part + trace * contrast_signal + noise_b * rng.standard_exponential(
            (n, h, w), dtype=np.float32)
        frames[sl, cy0:cy1, cx0:cx1] = _to_display(p_c, dr)
        frames[sl, by0:by1, bx0:bx1] = _to_display(p_b, dr)
    return frames


def _display_processing(frames: NDArray[np.uint8], spec: SimulationSpec) -> NDArray[np.uint8]:
    """The scanner's display processing after log compression, on both panels:
    spatial smoothing (`SimulationSpec.smoothing_px`), then persistence."""
    if spec.smoothing_px <= 0 and spec.persistence <= 0:
        return frames
    out = frames.copy()
    prev: list[NDArray[np.float32] | None] = [None, None]
    for t in range(frames.shape[0]):
        for k, (x0, y0, x1, y1) in enumerate((CONTRAST_PANEL_XYXY, BMODE_PANEL_XYXY)):
            g = frames[t, y0:y1, x0:x1].astype(np.float32)
            if spec.smoothing_px > 0:
                g = gaussian_filter(g, float(spec.smoothing_px), mode="reflect")
            if spec.persistence > 0:
                p = prev[k]
                g = g if p is None else np.float32(spec.persistence) * p + np.float32(
                    1.0 - spec.persistence) * g
                prev[k] = g
            out[t, y0:y1, x0:x1] = np.clip(np.rint(g), 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------- truth


def _roi_truth(name: str, role: str, mask: BoolArray, anat: _Anatomy,
               kin: dict[str, _Bolus], baseline_map: FloatArray, times: FloatArray,
               grid: FloatArray, t_end: float) -> tuple[dict[str, Any], FloatArray, float]:
    view = (slice(_MARGIN, _MARGIN + PANEL_SHAPE[0]), slice(_MARGIN, _MARGIN + PANEL_SHAPE[1]))
    weights = {k: float(anat.amplitude[k][view][mask].mean()) for k in kin}
    baseline = float(baseline_map[mask].mean())
    dense = baseline + np.sum([weights[k] * kin[k](grid) for k in kin], axis=0)
    at_frames = baseline + np.sum([weights[k] * kin[k](times) for k in kin], axis=0)
    desc = curve_descriptors(grid, np.asarray(dense), baseline, t_end_s=t_end)
    enhancing = any(weights[k] > 0 for k in kin)
    perfusion = {k: finite_or_none(v) for k, v in desc.items() if k != "peak_in_acquisition"}
    if not enhancing:
        # A flat curve has no arrival, peak time or slopes; only its (zero)
        # amplitude and areas mean something.
        perfusion = {k: (0.0 if k in ("peak_enhancement", "auc") else None) for k in perfusion}
    composition = {
        tissue: float(np.count_nonzero(anat.masks[tissue][view][mask]) / mask.sum())
        for tissue in ("viable", "necrosis", "thrombus", "lumen", "wall", "muscle")
    }
    out = {
        "role": role,
        "area_px": int(mask.sum()),
        "composition": composition,
        "tissue_weights": weights,
        "baseline": baseline,
        "enhancing": bool(enhancing),
        "model": "lognormal" if enhancing else "none",
        "peak_in_acquisition": bool(desc["peak_in_acquisition"] > 0),
        # Nested as in results.json, so truth and results compare key by key.
        "perfusion": perfusion,
        "tic_times_s": [float(t) for t in times],
        "tic_intensity": [float(v) for v in at_frames],
    }
    return out, np.asarray(dense), float(desc["peak_enhancement"])


def _build_truth(spec: SimulationSpec, anat: _Anatomy, kin: dict[str, _Bolus],
                 roi_doc: dict[str, Any], roi_masks: dict[str, BoolArray],
                 baseline_map: FloatArray, times: FloatArray, dx: FloatArray,
                 dy: FloatArray,
                 oop: tuple[NDArray[np.int64], FloatArray] | None = None) -> dict[str, Any]:
    view = (slice(_MARGIN, _MARGIN + PANEL_SHAPE[0]), slice(_MARGIN, _MARGIN + PANEL_SHAPE[1]))
    t_end = float(times[-1])
    grid = dense_grid(t_end, 0.01, extend_to_s=max(4.0 * t_end, 300.0))
    tumour = spec.scenario == "tumor"

    tissues: dict[str, Any] = {}
    for k, bolus in kin.items():
        if k == "tumor" and not tumour:
            continue
        tissues[k] = bolus.as_dict()
        tissues[k]["area_px"] = int(np.count_nonzero(anat.masks[
            "viable" if k == "tumor" else k][view]))
    non_enhancing = ["necrosis"] if tumour else ["thrombus"]
    for k in non_enhancing:
        tissues[k] = {"model": "none", "peak": 0.0, "area": 0.0,
                      "area_px": int(np.count_nonzero(anat.masks[k][view]))}
    tissues.get("tumor", {})["amplitude_field"] = {
        "kind": "lognormal", "sigma_log": _TUMOR_SIGMA_LOG, "mean": 1.0}
    tissues["muscle"]["amplitude_field"] = {
        "kind": "lognormal", "sigma_log": _MUSCLE_SIGMA_LOG, "mean": 1.0}

    rois_truth: dict[str, Any] = {}
    pe: dict[str, float] = {}
    dense: dict[str, FloatArray] = {}
    for entry in roi_doc["rois"]:
        name, role = entry["name"], entry["role"]
        rois_truth[name], dense[name], pe[name] = _roi_truth(
            name, role, roi_masks[name], anat, kin, baseline_map, times, grid, t_end)

    lesion_roi = roi_masks["lesion"]
    lesion_tissue = (anat.masks["mass"] | anat.masks["thrombus"])[view]
    non_enh = (anat.masks["necrosis"] | anat.masks["thrombus"])[view]
    nec_roi = float(np.count_nonzero(non_enh & lesion_roi) / lesion_roi.sum())
    n_mass = int(np.count_nonzero(anat.masks["mass"][view]))
    nec_mass = (float(np.count_nonzero(anat.masks["necrosis"][view]) / n_mass)
                if tumour else None)
    rois_truth["lesion"]["necrosis_fraction"] = nec_roi

    les, ref = rois_truth["lesion"], rois_truth["muscle"]
    pe_ratio = pe["lesion"] / pe["muscle"]
    curve = np.asarray(les["tic_intensity"]) - les["baseline"]
    # Wash-out is what the cine shows: the lesion curve, having peaked inside
    # the acquisition, ends below half its peak enhancement.
    washes_out = bool(les["enhancing"] and les["peak_in_acquisition"]
                      and curve[-1] < 0.5 * pe["lesion"])
    if tumour:
        viable_ratio = kin["tumor"].peak / kin["muscle"].peak
        if spec.kinetics == "malignant" and not (
                kin["tumor"].t0_s <= kin["muscle"].t0_s - 2.0 and viable_ratio >= 10 ** 0.6):
            raise RuntimeError("simulated tumour lost its defining kinetics; check the draws")
    else:
        viable_ratio = 0.0
    enhancing = bool(les["enhancing"])
    # Enhancement degree is that of the enhancing (viable) tissue, hyper by
    # construction; the necrotic share is reported apart, as the clinical
    # reading does.  Arrival and texture of enhancement do not apply to a
    # lesion that does not enhance (None).
    labelled = _truth_findings(spec, les, ref, grid, dense["lesion"], dense["muscle"], times,
                               t_end, nec_roi)
    malignant = spec.kinetics == "malignant"
    findings = {
        "intraluminal_enhancement": enhancing,
        "wash_in": ("rapid" if malignant else labelled["wash_in"]) if enhancing else None,
        "enhancement": ("hyper" if malignant else labelled["enhancement"]) if enhancing else "none",
        "homogeneity": "heterogeneous" if enhancing else None,
        "wash_out": {"present": washes_out},
        "necrosis_percent": 100.0 * nec_roi if tumour else None,
    }
    if enhancing:
        findings["arrival_lead_over_reference_s"] = (
            ref["perfusion"]["arrival_time_s"] - les["perfusion"]["arrival_time_s"])

    return {
        "generator": "ceuskit.simulate",
        "scenario": spec.scenario,
        "seed": int(spec.seed),
        "spec": {k: (int(v) if k == "seed" else v) for k, v in asdict(spec).items()},
        "n_frames": int(times.size),
        "frame_shape": list(FRAME_SHAPE),
        "panels": {"contrast": list(CONTRAST_PANEL_XYXY), "bmode": list(BMODE_PANEL_XYXY)},
        "panel_shape": list(PANEL_SHAPE),
        "spacing_mm": [float(spec.spacing_mm)] * 2,
        "dynamic_range_db": float(spec.dynamic_range_db),
        "display_processing": {"persistence": float(spec.persistence),
                               "smoothing_px": float(spec.smoothing_px)},
        "display": {
            "max_grey": 255,
            "formula": "g = round(255 * (1 + 10*log10(P) / DR)), clipped to 0..255",
            "linear_power_of_grey": "P = 10**((g/255 - 1) * DR / 10)",
        },
        "levels_db": {
            "contrast_noise_floor": float(spec.noise_floor_db),
            "contrast_tissue_leak_in_muscle": _LEAK_DB,
            "contrast_tissue_leak_cap": _LEAK_CAP_DB,
            "bmode_noise_floor": _BMODE_NOISE_DB,
            "bmode_bubble_trace": _BMODE_TRACE_DB,
            "bmode_echogenicity": dict(_ECHO_DB),
        },
        "speckle_psf_sigma_mm": {"axial": _PSF_AXIAL_MM, "lateral": _PSF_LATERAL_MM},
        "geometry": anat.geometry,
        "tissues": tissues,
        "rois": rois_truth,
        "roi_rasterisation": (
            "pixel (row r, col c) is inside when its centre (x=c, y=r) is: polygons by "
            "matplotlib.path.Path.contains_points, ellipses by "
            "((x-cx)/rx)^2 + ((y-cy)/ry)^2 <= 1; no pixel centre lies on a shape's border"),
        "truth_curves": (
            "expected ROI-mean linear contrast power without motion: sum over tissues of "
            "ROI-mean amplitude x lognormal bolus, plus the ROI mean of tissue leak "
            "(fixed speckle) and noise power; descriptors from curve_descriptors on "
            "dense_grid(t_end, 0.01 s, extend_to_s=max(4 t_end, 300 s)), t_end = last frame"),
        "necrosis_fraction": {"lesion_roi": nec_roi, "mass": nec_mass},
        "lesion_area_px": int(np.count_nonzero(lesion_tissue)),
        "pe_ratio_lesion_to_reference": pe_ratio,
        "pe_ratio_lesion_to_reference_db": (10.0 * math.log10(pe_ratio)
                                            if pe_ratio > 0 else None),
        "pe_ratio_viable_tumor_to_reference": viable_ratio,
        # The first summary of the scenario (its wash-out: the lesion curve
        # ends below half its peak); `findings` follows ceuskit.findings.
        "expected_findings": findings,
        "findings": labelled,
        "motion": {
            "model": "breathing: dy = m sin(2 pi t / T), dx = 0.4 m sin(2 pi t / T + 1); "
                     "plus drift: (dx, dy) += v t (0.8, 0.6)",
            "amplitude_px": float(spec.motion_px),
            "period_s": _MOTION_PERIOD_S,
            "drift_px_per_s": float(spec.drift_px_per_s),
            "drift_direction_xy": list(_DRIFT_DIRECTION),
            "convention": "anatomy displaced by (+dx, +dy) px (x right, y down) from the "
                          "reference that the ROIs and truth curves describe",
            "dx_px": [float(v) for v in dx],
            "dy_px": [float(v) for v in dy],
            "out_of_plane_model": (
                "a neighbouring slice: fresh tissue speckle, anatomy offset by the listed "
                "(dx, dy) px on top of the in-plane motion; dx_px/dy_px give the in-plane "
                "motion only"),
            "out_of_plane_frames": [] if oop is None else [int(i) for i in oop[0]],
            "out_of_plane_offsets_px": [] if oop is None else [
                [float(a), float(b)] for a, b in oop[1]],
        },
    }


def _truth_findings(spec: SimulationSpec, les: dict[str, Any], ref: dict[str, Any],
                    grid: FloatArray, dense_les: FloatArray, dense_ref: FloatArray,
                    times: FloatArray, t_end: float, nec_roi: float) -> dict[str, Any]:
    """``truth["findings"]``: labels clear of the findings' margins, and the exact values.

    The values and ``exact_labels`` are `ceuskit.findings`' definitions
    applied to the noise-free ROI curves at the frame times (what a perfect
    measurement of this cine would give).  A label is set only where the
    dense noise-free curves are clear of its threshold by `TRUTH_MARGINS`;
    otherwise it is None and named in ``ambiguous``.  The injection is at
    t = 0 (the cine starts with it).
    """
    none_wash_out = {"present": None, "timing": None, "degree": None}
    out: dict[str, Any] = {
        "kinetics": spec.kinetics if spec.scenario == "tumor" else None,
        "promise": (KINETICS_PROMISE[spec.kinetics] if spec.scenario == "tumor" else None),
        "intraluminal_enhancement": bool(les["enhancing"]),
        "wash_in": None,
        "enhancement": "none",
        "enhancement_whole_roi": "none",
        "wash_out": dict(none_wash_out),
        "necrosis_percent": 100.0 * nec_roi if spec.scenario == "tumor" else None,
        "values": {"arrival_difference_s": None, "enhancement_db": None, "wash_out_onset_s": None,
                   "wash_out_start_level_db": None, "wash_out_lowest_db": None,
                   "wash_out_lowest_db_within_120s": None},
        "exact_labels": {"wash_in": None, "enhancement": "none", "wash_out": dict(none_wash_out)},
        "ambiguous": [],
        "injection_time_s": 0.0,
        "margins": dict(TRUTH_MARGINS),
        "definitions": (
            "values and exact_labels: ceuskit.findings definitions on the noise-free ROI curves "
            "at the frame times; labels: only where the dense noise-free curves are clear of "
            "each threshold by 'margins' (else None, listed in 'ambiguous')"),
    }
    if not les["enhancing"]:
        return out
    lp, rp = les["perfusion"], ref["perfusion"]
    d = float(lp["arrival_time_s"] - rp["arrival_time_s"])
    e_db = enhancement_db(float(lp["peak_enhancement"]), float(rp["peak_enhancement"]))
    ttp = float(lp["time_to_peak_s"])
    enh_l = np.asarray(les["tic_intensity"]) - les["baseline"]
    enh_r = np.asarray(ref["tic_intensity"]) - ref["baseline"]
    w = assess_wash_out(times, enh_l, enh_r, ttp, e_db)
    def finite(v: float | None) -> float | None:
        return None if v is None or not math.isfinite(v) else float(v)

    out["values"] = {"arrival_difference_s": d, "enhancement_db": finite(e_db),
                     "wash_out_onset_s": w.onset_s, "wash_out_start_level_db": finite(w.start_level_db),
                     "wash_out_lowest_db": finite(w.lowest_db),
                     "wash_out_lowest_db_within_120s": finite(w.lowest_db_marked_window)}
    out["exact_labels"] = {"wash_in": classify_wash_in(d), "enhancement": classify_enhancement(e_db),
                           "wash_out": {"present": w.present, "onset_s": w.onset_s,
                                        "timing": w.timing, "degree": w.degree}}
    # The dense grid's uniform part (it reaches past the cine for the moments).
    keep = grid <= t_end + 1e-9
    with np.errstate(divide="ignore", invalid="ignore"):
        a = dense_les[keep] - les["baseline"]
        b = dense_ref[keep] - ref["baseline"]
        rel = np.where((a > 0) & (b > 0), 10.0 * np.log10(np.maximum(a, 1e-300) / np.maximum(b, 1e-300)),
                       np.where(a > 0, np.inf, -np.inf))
    out["wash_in"] = _clear_wash_in(d)
    # Degree on the viable part, as the findings grade it: necrotic pixels
    # carry no tumour signal, so the viable part's mean amplitude is the
    # ROI's divided by its viable share.
    viable_share = 1.0 - nec_roi if spec.scenario == "tumor" else 1.0
    e_viable = e_db - 10.0 * math.log10(viable_share) if viable_share > 0 else e_db
    out["values"]["enhancement_viable_db"] = finite(e_viable)
    out["exact_labels"]["enhancement_whole_roi"] = out["exact_labels"]["enhancement"]
    out["exact_labels"]["enhancement"] = classify_enhancement(e_viable)
    out["enhancement_whole_roi"] = _clear_enhancement(e_db)
    out["enhancement"] = _clear_enhancement(e_viable)
    out["wash_out"] = _clear_wash_out(grid[keep], rel, ttp, min(0.0, e_db), t_end)
    amb = [k for k in ("wash_in", "enhancement_whole_roi") if out[k] is None]
    wo = out["wash_out"]
    amb += [f"wash_out.{k}" for k in ("present", "timing", "degree")
            if wo[k] is None and (k == "present" or wo["present"] is True)]
    out["ambiguous"] = amb
    return out


def _truth_acquisition(spec: SimulationSpec, kin: dict[str, _Bolus]) -> dict[str, Any]:
    """``truth["acquisition"]``: the imaging mode and whether the cine can show a bolus.

    A bolus is visible when contrast was given (``mode="contrast"``), the
    cine lasts at least `ceuskit.enhancement.MIN_CINE_S` and the muscle's
    bolus peaks inside it after a pre-arrival baseline of at least 2 s.
    """
    from ceuskit.enhancement import MIN_CINE_S

    muscle = kin["muscle"]
    t_end = spec.n_frames / float(spec.fps) - 1.0 / float(spec.fps)
    visible = (spec.mode == "contrast" and t_end >= MIN_CINE_S and muscle.t0_s >= 2.0
               and muscle.t0_s + muscle.mode_s <= t_end)
    return {"mode": spec.mode, "contrast_given": spec.mode == "contrast",
            "contrast_bolus_visible": bool(visible), "blooming_px": float(spec.blooming_px),
            "duration_s": t_end}


# --------------------------------------------------------------------------- entry points


def simulate(spec: SimulationSpec | None = None) -> Phantom:
    """Render a phantom cine and its exact ground truth.

    Parameters
    ----------
    spec : SimulationSpec, optional
        What to simulate; default ``SimulationSpec()`` (a 90 s tumour cine at
        8 fps with 30 % necrosis and no motion).

    Returns
    -------
    Phantom
        Frames, times, panels, ROI file content, truth and reference masks.
    """
    spec = SimulationSpec() if spec is None else spec
    # A fifth stream for the out-of-plane frames leaves the first four (and so
    # every phantom without them) exactly as before.
    streams = np.random.SeedSequence(int(spec.seed)).spawn(5)
    rng_anat, rng_kin, rng_tissue, rng_frames, rng_oop = (
        np.random.default_rng(s) for s in streams)

    anat = _build_anatomy(spec, rng_anat)
    roi_doc, roi_masks = _build_rois(anat, spec)
    view = (slice(_MARGIN, _MARGIN + PANEL_SHAPE[0]), slice(_MARGIN, _MARGIN + PANEL_SHAPE[1]))
    tumour = spec.scenario == "tumor"
    # Families other than the default set the lesion ROI's peak relative to
    # the muscle ROI's, so they need the ROIs' mean amplitudes.
    weights = (float(anat.amplitude["tumor"][view][roi_masks["lesion"]].mean()),
               float(anat.amplitude["muscle"][view][roi_masks["muscle"]].mean()))
    # The bland thrombus ignores the family: its kinetics stay the default ones.
    kin = _draw_kinetics(rng_kin, spec.kinetics if tumour else "malignant", weights)
    if not tumour:
        kin["tumor"] = _Bolus(kin["tumor"].t0_s, kin["tumor"].mu, kin["tumor"].sigma, 0.0)
    # No contrast given: nothing arrives anywhere on screen.  The kinetics are
    # drawn anyway (the later random streams stay those of the contrast
    # phantom) and the truth is then emptied of enhancement.
    shown = kin if spec.mode == "contrast" else {
        k: _Bolus(b.t0_s, b.mu, b.sigma, 0.0) for k, b in kin.items()}

    canvas_shape = anat.echo.shape
    tissue_spec = (_complex_white(rng_tissue, canvas_shape)
                   * _psf_filter(canvas_shape, float(spec.spacing_mm)))
    st2_ref = np.abs(scipy.fft.ifft2(tissue_spec, norm="ortho")[view]) ** 2
    baseline_map = (anat.leak[view] * st2_ref.astype(np.float32).astype(np.float64)
                    + 10.0 ** (spec.noise_floor_db / 10.0))

    times = spec.times_s()
    dx, dy = motion_trace(spec, times)
    oop = _out_of_plane(spec, rng_oop)
    frames = _render(spec, anat, shown, tissue_spec, rng_frames, times, dx, dy, oop, rng_oop)
    frames = _display_processing(frames, spec)
    truth = _build_truth(spec, anat, kin, roi_doc, roi_masks, baseline_map, times, dx, dy, oop)
    truth["acquisition"] = _truth_acquisition(spec, kin)
    if spec.mode != "contrast":
        for roi in truth["rois"].values():
            roi["enhancing"] = False
            roi["model"] = "none"
            roi["perfusion"] = dict.fromkeys(roi["perfusion"])
            roi["tic_intensity"] = [roi["baseline"]] * len(roi["tic_intensity"])
        for key in ("wash_in", "enhancement", "homogeneity", "necrosis_percent"):
            truth["findings"][key] = None
        truth["findings"]["wash_out"] = {"present": None, "timing": None, "degree": None}
    if not truth["acquisition"]["contrast_bolus_visible"]:
        # What a perfect reader says: whether the lesion enhances cannot be told.
        truth["findings"]["intraluminal_enhancement"] = None

    s = float(spec.spacing_mm)
    contrast = Panel(*CONTRAST_PANEL_XYXY, spacing_mm=(s, s), kind="contrast", source="file")
    bmode = Panel(*BMODE_PANEL_XYXY, spacing_mm=(s, s), kind="bmode", source="file")
    masks = {k: np.ascontiguousarray(v[view]) for k, v in anat.masks.items()}
    amps = {k: np.ascontiguousarray(v[view]) for k, v in anat.amplitude.items()
            if k != "tumor" or spec.scenario == "tumor"}
    read_only: list[NDArray[Any]] = [frames, times, *masks.values(), *amps.values(),
                                     *roi_masks.values()]
    for arr in read_only:
        arr.flags.writeable = False
    return Phantom(frames=frames, times_s=times, contrast_panel=contrast, bmode_panel=bmode,
                   spacing_mm=(s, s), truth=truth, rois=roi_doc, masks=masks,
                   roi_masks=roi_masks, amplitude_maps=amps)


def write_phantom(phantom: Phantom, out_dir: str | PathLike[str], fmt: str = "dicom", *,
                  overwrite: bool = False) -> dict[str, Path]:
    """Write a phantom's cine, ``truth.json`` and ``rois.json``.

    Parameters
    ----------
    phantom : Phantom
        From `simulate`.
    out_dir : path-like
        Directory, created if missing.
    fmt : {"dicom", "mp4", "npz"}
        Cine format: DICOM US multi-frame (``cine.dcm``, with both panels as
        ultrasound regions, not saying which is contrast), H.264 MP4
        (``cine.mp4``, near-lossless) or NumPy archive (``cine.npz``).
    overwrite : bool
        Replace existing outputs; otherwise refuse to touch them.

    Returns
    -------
    dict of str to Path
        ``{"cine": ..., "truth": ..., "rois": ...}``.

    Raises
    ------
    ValueError
        For an unknown `fmt`.
    InputError
        If `out_dir` already holds any of the outputs and `overwrite` is false,
        or is not a directory.
    """
    paths = phantom_outputs(out_dir, {"cine": FORMATS[fmt]} if fmt in FORMATS else {}, fmt,
                            overwrite=overwrite)
    write_cine_file(paths["cine"], fmt, phantom.frames, phantom.times_s,
                    regions=(phantom.bmode_panel, phantom.contrast_panel),
                    spacing_mm=phantom.spacing_mm, description="ceuskit phantom")
    write_json_atomic(paths["truth"], phantom.truth)
    write_json_atomic(paths["rois"], phantom.rois)
    return paths


def phantom_outputs(out_dir: str | PathLike[str], cines: dict[str, str], fmt: str, *,
                    overwrite: bool = False) -> dict[str, Path]:
    """The output paths of a phantom (`cines`: key -> file name, plus truth and rois).

    Creates `out_dir`; refuses an unknown `fmt` (ValueError), a file in the
    way, or outputs already there without `overwrite` (InputError).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format (--format) must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(out, "is not a directory", "choose a directory for the phantom")
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / name for k, name in cines.items()}
    paths |= {"truth": out / "truth.json", "rois": out / "rois.json"}
    existing = [p.name for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise InputError(out, f"already holds {', '.join(existing)}",
                         "choose another directory or pass --overwrite")
    return paths


def write_cine_file(path: Path, fmt: str, frames: NDArray[Any], times_s: NDArray[np.float64], *,
                    regions: tuple[Panel, ...], spacing_mm: tuple[float, float],
                    description: str, acquisition_time_of_day_s: float | None = None,
                    study: tuple[str, str] | None = None) -> None:
    """Write a phantom's frames in `fmt` (each writer puts its file in place atomically).

    MP4 carries no regions, spacing or acquisition time; NPZ no acquisition time;
    `study` (Study Instance and Frame of Reference UIDs) is for DICOM.
    """
    if fmt == "dicom":
        from ceuskit.io.dicom_out import write_dicom_cine

        write_dicom_cine(path, frames, times_s, regions=regions, spacing_mm=spacing_mm,
                         description=description,
                         acquisition_time_of_day_s=acquisition_time_of_day_s, study=study)
    elif fmt == "mp4":
        from ceuskit.io.video import write_video

        write_video(path, frames, times_s, codec="libx264", crf=4)
    else:
        from ceuskit.io.arrays import write_npz

        write_npz(path, frames, times_s, regions=regions, spacing_mm=spacing_mm)


def confounder_specs(*, seeds: int = 2, fps: float = 2.0) -> list[tuple[str, SimulationSpec]]:
    """Phantoms with the confounders real cines have, labelled by what they test.

    Used by the enhancement-verdict tests and `benchmarks/enhancement_accuracy.py`:

    - ``bland``: bland thrombi beside the contrast-filled lumen with lumen
      blooming 0, 1.5 and 3 px and breathing motion 0, 3 and 8 px (with two
      out-of-plane frames when it moves);
    - ``tumour``: every kinetics family with necrosis 0 and 0.6;
    - ``non-contrast``: fundamental B-mode and cardiac-like pulsation (30 s);
    - ``short``: 4 s clips (an echo loop's length) of a tumour study.

    Parameters
    ----------
    seeds : int
        Seeds per combination.
    fps : float
        Frame rate of every phantom (frames/s).

    Returns
    -------
    list of (group, SimulationSpec)
    """
    out: list[tuple[str, SimulationSpec]] = []
    for s in range(seeds):
        for k, bloom in enumerate((0.0, 1.5, 3.0)):
            for j, motion in enumerate((0.0, 3.0, 8.0)):
                out.append(("bland", SimulationSpec(
                    scenario="bland", seed=3000 + 100 * s + 10 * k + j, fps=fps, duration_s=45.0,
                    motion_px=motion, blooming_px=bloom, out_of_plane_frames=2 if motion else 0)))
        for k, kinetics in enumerate(KINETICS):
            for j, necrosis in enumerate((0.0, 0.6)):
                out.append(("tumour", SimulationSpec(
                    scenario="tumor", kinetics=kinetics, seed=4000 + 100 * s + 10 * k + j, fps=fps,
                    duration_s=min(KINETICS_DURATION_S[kinetics], 90.0), necrosis=necrosis,
                    motion_px=3.0 * j, blooming_px=1.5 * j)))
        for mode in ("fundamental", "cardiac"):
            out.append(("non-contrast", SimulationSpec(scenario="tumor", seed=5000 + s, mode=mode,
                                                       fps=max(fps, 8.0), duration_s=30.0)))
        out.append(("short", SimulationSpec(scenario="tumor", seed=6000 + s, fps=max(fps, 8.0),
                                            duration_s=4.0)))
    return out
