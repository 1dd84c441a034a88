"""The values the pipeline passes forward: options, per-ROI results, the analysis, the maps.

And the names results.json and the options rely on (perfusion keys, model
and motion choices, dynamic-range sources).  No stage runs here; the
options only check themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ceuskit.dynamic_range import DynamicRangeEstimate
from ceuskit.errors import AnalysisWarning, InputError
from ceuskit.kinetics.fit import FitResult
from ceuskit.linearize import DEFAULT_DYNAMIC_RANGE_DB, check_dynamic_range
from ceuskit.motion import MotionEstimate
from ceuskit.panels import PanelChoice
from ceuskit.roi import Roi

if TYPE_CHECKING:  # the map module compiles numba kernels: imported only when mapping
    from ceuskit.clinical.case import ClinicalCase
    from ceuskit.maps import MapOptions, MapResult


Progress = Callable[[str], None]


#: The perfusion keys every ROI carries in results.json (contract.md).
PERFUSION_KEYS = (
    "arrival_time_s", "time_to_peak_s", "rise_time_s", "mean_transit_time_s", "fall_time_s",
    "peak_enhancement", "auc", "wash_in_rate", "wash_out_rate", "wash_in_auc",
    "wash_out_auc", "wash_in_perfusion_index", "qof",
)


#: Lesion / reference ratios of amplitude parameters: these depend on gain and
#: depth, so their ratio to tissue at the same depth is what compares.
RATIO_KEYS = ("peak_enhancement", "auc", "wash_in_rate", "wash_in_auc",
              "wash_out_auc", "wash_in_perfusion_index")


#: Lesion - reference differences of time parameters (s).
DIFFERENCE_KEYS = ("arrival_time_s", "time_to_peak_s", "rise_time_s", "mean_transit_time_s")


#: Share of contrast-panel pixels in colour above which the panel is refused.
MAX_COLOUR_SHARE = 0.02


SUPPORTED_MODELS = ("lognormal", "gamma", "ldrw", "auto")


#: Candidates of ``--model auto`` (bolus models; replenishment is for
#: destruction-reperfusion cines, not a bolus).
AUTO_MODELS = ("lognormal", "gamma", "ldrw")


#: Motion compensation settings: "auto" tracks the B-mode panel (translation)
#: when there is one and falls back to the contrast panel otherwise.
MOTION_CHOICES = ("off", "auto", "translation", "rigid")


#: Where the dynamic range used to linearise comes from (results.json
#: ``linearization.dynamic_range_source``; ``"auto"`` only until resolved).
DYNAMIC_RANGE_SOURCES = ("user", "default", "auto", "estimated")


@dataclass(frozen=True)
class AnalysisOptions:
    """User settings of an analysis.

    Attributes
    ----------
    dynamic_range_db : float
        Display dynamic range used to linearise (dB).
    fps : float or None
        Frame rate (frames/s) for files without timing.
    panel : (x0, y0, x1, y1) or None
        Contrast panel override in frame pixels.
    model : str
        Perfusion model name.
    motion : str
        Motion compensation: ``"off"``, ``"auto"`` (translation, tracked on
        the B-mode panel, or on the contrast panel when there is none),
        ``"translation"`` or ``"rigid"`` (translation plus rotation).
    reference_frame : int or None
        Frame index (0-based) that motion is measured against; chosen
        automatically when None.
    maps : bool
        Also compute the parametric maps inside the ROIs (`ceuskit.maps`)
        when the ROI file has a lesion ROI; their pixel test is then the one
        that gives the lesion's necrosis fraction.
    block_px : int or None
        Block size of the maps (pixels per side); None = the maps' default
        (`ceuskit.maps.BLOCK_PX`, 4 px: about one resolution cell).
    injection_time_s : float
        When the contrast was injected, on the cine clock (s from the first
        frame; negative when the recording started after the injection).
        Wash-out timing (early < 60 s) and degree (within 120 s) count from it.
    dynamic_range_source : {"user", "default", "auto", "estimated"} or None
        Where `dynamic_range_db` comes from.  ``"auto"`` asks for the
        estimate from the cine's speckle (`resolve_dynamic_range`, which
        turns it into ``"estimated"``, or ``"default"`` with a warning when
        no estimate is possible).  None: ``"default"`` when the value is
        `DEFAULT_DYNAMIC_RANGE_DB`, else ``"user"``.
    dynamic_range_ci_db : (float, float) or None
        95 % interval of an estimated dynamic range (dB).
    dynamic_range_check : DynamicRangeEstimate or None
        The speckle estimate made to check a given or default dynamic range
        (`resolve_dynamic_range`); None before the check and for ``auto``.
    dynamic_range_estimate : DynamicRangeEstimate or None
        For ``auto``: the speckle estimate, used or refused (with the
        reason and the display-persistence check); None otherwise.
    colour_map : str
        How a contrast panel exported through a colour map is turned back
        into display values (`decolour_cine`): ``"auto"`` (default: colour
        bar and library tints, `ceuskit.colour_maps.resolve_colour_map`), a
        library tint (``"hot"``, ``"gold"``, ...), a path to a 256 x 3 table,
        or ``"off"`` (refuse colour panels).
    """

    dynamic_range_db: float = DEFAULT_DYNAMIC_RANGE_DB
    fps: float | None = None
    panel: tuple[int, int, int, int] | None = None
    model: str = "lognormal"
    motion: str = "auto"
    reference_frame: int | None = None
    maps: bool = True
    block_px: int | None = None
    injection_time_s: float = 0.0
    dynamic_range_source: str | None = None
    dynamic_range_ci_db: tuple[float, float] | None = None
    colour_map: str = "auto"
    dynamic_range_check: DynamicRangeEstimate | None = None
    dynamic_range_estimate: DynamicRangeEstimate | None = None

    def __post_init__(self) -> None:
        if self.dynamic_range_source is None:
            object.__setattr__(self, "dynamic_range_source",
                               "default" if self.dynamic_range_db == DEFAULT_DYNAMIC_RANGE_DB
                               else "user")
        if self.dynamic_range_source not in DYNAMIC_RANGE_SOURCES:
            raise ValueError(f"dynamic_range_source must be one of {', '.join(DYNAMIC_RANGE_SOURCES)}")
        inj = self.injection_time_s
        if isinstance(inj, bool) or not isinstance(inj, int | float) or not math.isfinite(inj) \
                or not -3600.0 <= inj <= 3600.0:
            raise InputError("--injection-time", f"{inj!r} is not a time on the cine clock",
                             "give seconds from the first frame, e.g. --injection-time -5 for an "
                             "injection 5 s before the recording started")
        try:
            check_dynamic_range(self.dynamic_range_db)
        except ValueError as exc:
            raise InputError("--dynamic-range", str(exc), "give the scanner's value in dB") from None
        if self.fps is not None and not (math.isfinite(self.fps) and 0 < self.fps <= 1000):
            raise InputError("--fps", f"{self.fps} is not a frame rate",
                             "give frames per second, e.g. --fps 10")
        if self.model not in SUPPORTED_MODELS:
            raise InputError("--model", f"model {self.model!r} is not available yet",
                             f"use one of {', '.join(SUPPORTED_MODELS)}")
        if self.motion not in MOTION_CHOICES:
            raise InputError("--motion", f"{self.motion!r} is not a motion setting",
                             f"use one of {', '.join(MOTION_CHOICES)}")
        ref = self.reference_frame
        if ref is not None and (isinstance(ref, bool) or not isinstance(ref, int | np.integer)
                                or ref < 0):
            raise InputError("--reference-frame", f"{ref!r} is not a frame index",
                             "give a frame number counted from 0, e.g. --reference-frame 0")
        if self.block_px is not None:
            self.map_options()  # validates the block size now, before any work
        if not isinstance(self.colour_map, str) or not self.colour_map.strip():
            raise InputError("--colour-map", f"{self.colour_map!r} is not a colour-map setting",
                             "use auto, off, a library tint or a 256 x 3 table file")

    def map_options(self) -> MapOptions:
        """The parametric-map settings these options imply (block size, model).

        Raises
        ------
        InputError
            A block size the maps do not accept.
        """
        from ceuskit.maps import BLOCK_PX, MapOptions

        try:
            return MapOptions(block_px=BLOCK_PX if self.block_px is None else self.block_px,
                              model=self.model)
        except ValueError as exc:
            raise InputError("--block", str(exc), "give a block size such as --block 4") from None


@dataclass(frozen=True)
class RoiResult:
    """Everything measured in one ROI.

    Attributes
    ----------
    roi : Roi
    intensity : ndarray, shape (T,)
        Mean linear power per frame (a.u.).
    enhancing : bool
        Outcome of the enhancement test.
    enhancement : dict
        The test's statistic, threshold and description.
    fit : FitResult or None
        The model fit (None when the ROI does not enhance).
    perfusion : dict
        `PERFUSION_KEYS` -> value (None where undefined).
    """

    roi: Roi
    intensity: NDArray[np.float64]
    enhancing: bool
    enhancement: dict[str, Any]
    fit: FitResult | None
    perfusion: dict[str, float | None]
    fit_status: str
    relative: dict[str, float | None] = field(default_factory=dict)
    selection: dict[str, Any] | None = None
    #: Lesion ROIs: the pixel enhancement test's necrosis figures
    #: (`ceuskit.maps.lesion_necrosis`); None for other roles.
    necrosis: dict[str, Any] | None = None
    #: Lesion ROIs: the intraluminal-enhancement verdict
    #: (`ceuskit.enhancement.enhancement_verdict`); None for other roles.
    verdict: dict[str, Any] | None = None
    #: Lesion ROIs: peak enhancement of the viable (enhancing) part (`with_viable_part`).
    viable: dict[str, Any] | None = None
    #: The peak-enhancement ratio's range (low, high) over the dynamic range's
    #: interval, measured at its ends; None for a DR the user gave.
    ratio_range: tuple[float, float] | None = None
    #: Why a ratio has no range where the DR has an interval (a fit at an end failed).
    ratio_range_reason: str | None = None


@dataclass(frozen=True)
class Analysis:
    """The outcome of `analyze`: inputs' provenance, panels, curves and warnings."""

    source_name: str
    cine_meta: dict[str, Any]
    times_s: NDArray[np.float64]
    panels: PanelChoice
    options: AnalysisOptions
    rois: list[RoiResult]
    warnings: list[AnalysisWarning]
    peak_frame_index: int
    contrast_frame: NDArray[np.float32]
    bmode_frame: NDArray[np.float32] | None
    motion: MotionEstimate | None = None
    #: The parametric maps (None when turned off or without a lesion ROI).
    maps: MapStudy | None = None
    #: The clinical case the assessment combines with the CEUS findings.
    case: ClinicalCase | None = None
    #: Whether a contrast bolus was seen anywhere (`ceuskit.enhancement.contrast_bolus_seen`).
    bolus: dict[str, Any] = field(default_factory=dict)
    #: The frame the ROIs are drawn on when motion compensation ran (the motion reference
    #: frame): (index, contrast panel, B-mode panel or None); None without motion compensation.
    roi_frame: tuple[int, NDArray[np.float32], NDArray[np.float32] | None] | None = None

    @property
    def reference(self) -> RoiResult | None:
        return next((r for r in self.rois if r.roi.role == "reference"), None)

    def results(self) -> dict[str, Any]:
        """The results.json document (stable keys: see contract.md)."""
        from ceuskit.pipeline.results import build_results  # (results.py imports this module)

        return build_results(self)


@dataclass(frozen=True, eq=False)
class MapStudy:
    """A parametric map with what is needed to show it.

    Attributes
    ----------
    result : MapResult
    panels : PanelChoice
    rois : list of Roi
    background : ndarray (rows, cols), float32
        Display frame shown under the maps (aligned to the motion reference).
    background_label : str
        ``"B-mode"`` or ``"contrast"``.
    frame_index : int
        Index of that frame.
    warnings : list of AnalysisWarning
    scheduler_used : str
        Where the fits ran (``"in-process"``, ``"local-cluster"`` or an address).
    display_max : float
        Display value of full brightness (grey scale of `background`).
    """

    result: MapResult
    panels: PanelChoice
    rois: list[Roi]
    background: NDArray[np.float32]
    background_label: str
    frame_index: int
    warnings: list[AnalysisWarning]
    scheduler_used: str
    display_max: float = 255.0
    #: The options the maps were made with (a dynamic range asked as ``auto`` resolved).
    options: AnalysisOptions | None = None

    @property
    def frame_time_s(self) -> float:
        """Cine time (s) of the frame shown under the maps."""
        return float(self.result.times_s[self.frame_index])
