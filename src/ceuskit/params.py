"""Parameter files: every analysis option in one validated YAML document.

A parameter file makes an analysis (or a cohort, `ceuskit.batch`)
reproducible: the same file gives the same options, and the effective
values are written into every results.json under ``parameters``.  The keys
are the ``analyze`` options with their units in the name::

    dynamic_range_db: 60        # display dynamic range used to linearise (dB), or auto
    fps: null                   # frame rate for files without timing (frames/s)
    panel: auto                 # or [x0, y0, x1, y1] in frame pixels
    model: lognormal            # lognormal | gamma | ldrw | auto
    motion: auto                # off | auto | translation | rigid
    reference_frame: null       # frame index (from 0) motion is measured against
    injection_time_s: 0         # injection on the cine clock (s)
    maps: true                  # parametric maps (needs a lesion ROI)
    block_px: null              # map block size (pixels per side; null = 4)
    colour_map: auto            # tinted contrast panels: auto | off | hot | gold | ... | FILE
    pdf: true                   # write report.pdf
    dicom: false                # write DICOM SEG, SR and Parametric Maps
    fhir: false                 # write fhir/bundle.json
    case_timeout_s: 600         # batch only: a case running longer is stopped

Every key is optional; an unknown key, a wrong type or a value out of range
is refused with one line naming the file and the field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from os import PathLike
from pathlib import Path
from typing import Any

from ceuskit.errors import InputError, read_user_text
from ceuskit.linearize import DEFAULT_DYNAMIC_RANGE_DB

__all__ = ["PARAMETER_HELP", "Parameters", "load_params", "parse_params"]

MODELS = ("lognormal", "gamma", "ldrw", "auto")
MOTIONS = ("off", "auto", "translation", "rigid")
#: A batch case that runs longer than this is stopped and reported as ``timeout`` (s).
DEFAULT_CASE_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Parameters:
    """The options of one analysis, as a parameter file gives them.

    Attributes mirror `ceuskit.pipeline.AnalysisOptions` (``dynamic_range_db``
    ... ``injection_time_s``) plus the outputs (``pdf``, ``dicom``, ``fhir``)
    and the batch runner's per-case limit ``case_timeout_s`` (s).
    """

    dynamic_range_db: float | str = DEFAULT_DYNAMIC_RANGE_DB  # a number (dB) or "auto"
    fps: float | None = None
    panel: tuple[int, int, int, int] | None = None
    model: str = "lognormal"
    motion: str = "auto"
    reference_frame: int | None = None
    injection_time_s: float = 0.0
    maps: bool = True
    block_px: int | None = None
    colour_map: str = "auto"
    pdf: bool = True
    dicom: bool = False
    fhir: bool = False
    case_timeout_s: float = DEFAULT_CASE_TIMEOUT_S

    def analysis_options(self) -> Any:
        """The `ceuskit.pipeline.AnalysisOptions` these parameters give (validated there too)."""
        from ceuskit.pipeline import AnalysisOptions

        auto = self.dynamic_range_db == "auto"
        return AnalysisOptions(dynamic_range_db=(DEFAULT_DYNAMIC_RANGE_DB if auto
                                                 else float(self.dynamic_range_db)),
                               dynamic_range_source="auto" if auto else None, fps=self.fps,
                               panel=self.panel, model=self.model, motion=self.motion,
                               reference_frame=self.reference_frame, maps=self.maps,
                               block_px=self.block_px, injection_time_s=self.injection_time_s,
                               colour_map=self.colour_map)

    @classmethod
    def from_options(cls, options: Any, *, pdf: bool = True, dicom: bool = False,
                     fhir: bool = False) -> Parameters:
        """The parameters of an `AnalysisOptions` and the outputs asked for."""
        # An estimated value is reproduced by asking for the estimate again.
        auto = options.dynamic_range_source in ("auto", "estimated")
        return cls(dynamic_range_db="auto" if auto else float(options.dynamic_range_db),
                   fps=options.fps,
                   panel=options.panel, model=options.model, motion=options.motion,
                   reference_frame=options.reference_frame, injection_time_s=float(
                       options.injection_time_s), maps=bool(options.maps),
                   block_px=options.block_px, colour_map=options.colour_map, pdf=pdf,
                   dicom=dicom, fhir=fhir)

    def as_dict(self) -> dict[str, Any]:
        """The parameters as a JSON/YAML-ready mapping (``panel`` as a list or ``"auto"``)."""
        doc: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        doc["panel"] = "auto" if self.panel is None else list(self.panel)
        return doc


def _number(lo: float, hi: float, *, integer: bool = False, nullable: bool = False,
            unit: str = "") -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if v is None and nullable:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError(f"{v!r} is not a number" + (" (or null)" if nullable else ""))
        if integer and v != int(v):
            raise ValueError(f"{v!r} is not a whole number")
        if not lo <= v <= hi:
            raise ValueError(f"{v!r} is outside {lo:g}..{hi:g}{(' ' + unit) if unit else ''}")
        return int(v) if integer else float(v)
    return check


def _choice(options: tuple[str, ...]) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if v not in options:
            raise ValueError(f"{v!r} is not one of {', '.join(options)}")
        return v
    return check


def _motion(v: Any) -> Any:
    # YAML 1.1 reads an unquoted ``off`` as false: that is what the user meant.
    return _choice(MOTIONS)("off" if v is False else v)


def _colour_map(v: Any) -> Any:
    # YAML reads an unquoted ``off`` as false.
    v = "off" if v is False else v
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"{v!r} is not auto, off, a library tint or a table file")
    return v


def _bool(v: Any) -> Any:
    if not isinstance(v, bool):
        raise ValueError(f"{v!r} is not true or false")
    return v


def _panel(v: Any) -> Any:
    if v is None or v == "auto":
        return None
    if not isinstance(v, list | tuple) or len(v) != 4 or any(
            isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in v):
        raise ValueError(f"{v!r} is not auto or [x0, y0, x1, y1] in whole frame pixels")
    x0, y0, x1, y1 = (int(x) for x in v)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"{v!r} is empty: x1 must exceed x0 and y1 exceed y0")
    return (x0, y0, x1, y1)


def _auto_or(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def either(v: Any) -> Any:
        return "auto" if v == "auto" else check(v)
    return either


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "dynamic_range_db": _auto_or(_number(10.0, 120.0, unit="dB")),
    "fps": _number(1e-3, 1000.0, nullable=True, unit="frames/s"),
    "panel": _panel,
    "model": _choice(MODELS),
    "motion": _motion,
    "reference_frame": _number(0, 10**9, integer=True, nullable=True),
    "injection_time_s": _number(-3600.0, 3600.0, unit="s"),
    "maps": _bool,
    "block_px": _number(1, 64, integer=True, nullable=True, unit="px"),
    "colour_map": _colour_map,
    "pdf": _bool,
    "dicom": _bool,
    "fhir": _bool,
    "case_timeout_s": _number(1.0, 7 * 24 * 3600.0, unit="s"),
}

#: One line per key, for the documentation and the error for an unknown key.
PARAMETER_HELP: dict[str, str] = {
    "dynamic_range_db": "display dynamic range used to linearise (dB), or auto (estimated from the speckle)",
    "fps": "frame rate for files without timing (frames/s), or null",
    "panel": "contrast panel: auto, or [x0, y0, x1, y1] in frame pixels",
    "model": "bolus model: " + " | ".join(MODELS),
    "motion": "motion compensation: " + " | ".join(MOTIONS),
    "reference_frame": "frame (from 0) motion is measured against, or null (automatic)",
    "injection_time_s": "injection time on the cine clock (s)",
    "maps": "compute parametric maps (true/false)",
    "block_px": "map block size in pixels (1..64), or null (default 4)",
    "colour_map": "tinted contrast panels: auto (colour bar, library tints), off (refuse), a "
                  "library tint (hot, gold, sepia, ice) or a 256 x 3 table file",
    "pdf": "write report.pdf (true/false)",
    "dicom": "write DICOM SEG, SR and Parametric Maps (true/false)",
    "fhir": "write fhir/bundle.json (true/false)",
    "case_timeout_s": "batch: stop a case that runs longer than this (s)",
}


def parse_params(doc: Any, source: str | PathLike[str] = "parameter file") -> Parameters:
    """Validate a parameter mapping (as read from YAML) into `Parameters`.

    Raises
    ------
    InputError
        Not a mapping, an unknown key (the nearest known key is suggested), or
        a value of the wrong type or out of range; the message names the field.
    """
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise InputError(source, "is not a mapping of parameter names to values",
                         "write one 'name: value' per line, e.g. 'dynamic_range_db: 50'")
    values: dict[str, Any] = {}
    for key, raw in doc.items():
        check = _CHECKS.get(str(key))
        if check is None:
            import difflib

            near = difflib.get_close_matches(str(key), list(_CHECKS), n=1)
            hint = f"did you mean '{near[0]}'?" if near else \
                f"known fields: {', '.join(_CHECKS)}"
            raise InputError(source, f"unknown field '{key}'", hint)
        try:
            values[str(key)] = check(raw)
        except ValueError as exc:
            raise InputError(source, f"field '{key}': {exc}",
                             f"give {PARAMETER_HELP[str(key)]}") from None
    return Parameters(**values)


def load_params(path: str | PathLike[str]) -> Parameters:
    """Read and validate a YAML parameter file.

    Raises
    ------
    InputError
        The file cannot be read, is not YAML, or fails validation.
    """
    import yaml

    p = Path(path)
    text = read_user_text(p, "parameter file", "YAML")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(p, f"is not valid YAML{where}",
                         "fix the syntax (one 'name: value' per line)") from None
    return parse_params(doc, p)
