"""What the web app does with a study's files: ingest, frames, panels, ROIs, TIC preview.

Everything here goes through ceuskit's own readers and stages
(`ceuskit.io.load_cine`, `ceuskit.panels.choose_panels`,
`ceuskit.roi.parse_rois`, `ceuskit.linearize.to_linear_power`); the web app
adds only storage and display.

A study's directory (``DIR/studies/<id>/``) holds the stored cine
(``cine.dcm`` / ``cine.npz`` / ``cine.video``), ``frames.npy`` (the display
frames as uint8, memory-mapped to serve single frames quickly) and
``analyses/<analysis id>/`` (one directory per finished analysis).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ceuskit.cine import Cine, Panel
from ceuskit.errors import InputError
from ceuskit.outputs import atomic_path

#: Settings a study starts with (the CLI's defaults).
DEFAULT_SETTINGS: dict[str, Any] = {
    "dynamic_range_db": 60.0, "fps": None, "panel": None, "model": "lognormal", "motion": "auto",
    "reference_frame": None, "injection_time_s": 0.0, "colour_map": "auto",
}
SETTING_KEYS = tuple(DEFAULT_SETTINGS)
#: Frames converted to uint8 at a time while writing ``frames.npy``.
_CHUNK_FRAMES = 64


def default_settings() -> dict[str, Any]:
    from ceuskit.linearize import DEFAULT_DYNAMIC_RANGE_DB

    return {**DEFAULT_SETTINGS, "dynamic_range_db": DEFAULT_DYNAMIC_RANGE_DB}


def check_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate settings by building `AnalysisOptions` from them.

    Raises
    ------
    InputError
        Unknown keys, wrong types or values the pipeline refuses.
    """
    from ceuskit.web.jobs import options_from_settings

    unknown = sorted(set(raw) - set(SETTING_KEYS))
    if unknown:
        raise InputError("settings", f"unknown setting(s) {', '.join(unknown)}",
                         f"use {', '.join(SETTING_KEYS)}")
    settings = {**default_settings(), **raw}
    panel = settings.get("panel")
    if panel is not None and (not isinstance(panel, list | tuple) or len(panel) != 4
                              or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                         and math.isfinite(v) for v in panel)):
        raise InputError("panel", f"{panel!r} is not [x0, y0, x1, y1]",
                         "give four frame pixel coordinates, or null for automatic")
    dr = settings.get("dynamic_range_db")
    if dr != "auto" and (isinstance(dr, bool) or not isinstance(dr, int | float)):
        raise InputError("dynamic_range_db", f"{dr!r} is neither a number of dB nor \"auto\"",
                         "give the scanner's dynamic range in dB, or \"auto\" to estimate it "
                         "from the speckle")
    from ceuskit.colour_maps import TINTS

    # The CLI's choices less table files: no server-side paths from a web form.
    colour_maps = ("auto", "off", *TINTS)
    cmap = settings.get("colour_map")
    if cmap not in colour_maps:
        raise InputError("colour_map", f"{cmap!r} is not a colour-map setting",
                         f"pick one of {', '.join(colour_maps)}")
    for key in ("fps", "injection_time_s"):
        v = settings.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise InputError(key, f"{v!r} is not a number", "give a number")
    ref = settings.get("reference_frame")
    if ref is not None and (isinstance(ref, bool) or not isinstance(ref, int)):
        raise InputError("reference_frame", f"{ref!r} is not a frame index", "give a whole number or null")
    for key in ("model", "motion"):
        if not isinstance(settings.get(key), str):
            raise InputError(key, f"{settings.get(key)!r} is not a choice", "pick one from the list")
    options = options_from_settings(settings)
    return {
        "dynamic_range_db": "auto" if options.dynamic_range_source == "auto"
        else options.dynamic_range_db, "fps": options.fps,
        "panel": None if options.panel is None else list(options.panel),
        "model": options.model, "motion": options.motion,
        "reference_frame": options.reference_frame,
        "injection_time_s": options.injection_time_s, "colour_map": options.colour_map,
    }


def load(cine_path: Path, settings: Mapping[str, Any]) -> Cine:
    from ceuskit.io import load_cine

    fps = settings.get("fps")
    return load_cine(cine_path, fps=None if fps is None else float(fps))


def describe(cine: Cine, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What the study page shows about a cine: metadata, timing, panels, reader warnings.

    Raises
    ------
    InputError
        If the panel override does not fit the frame, or the reference frame
        is beyond the last frame.
    """
    from ceuskit.panels import choose_panels

    panel = settings.get("panel")
    override = None if panel is None else (int(panel[0]), int(panel[1]), int(panel[2]), int(panel[3]))
    choice = choose_panels(cine, override)
    ref = settings.get("reference_frame")
    if ref is not None and int(ref) >= cine.n_frames:
        raise InputError("reference_frame", f"frame {ref} is beyond the last frame ({cine.n_frames - 1})",
                         "pick a frame of the cine")
    meta = {k: v for k, v in cine.meta.items() if isinstance(v, str | int | float | bool)}
    dt = np.diff(cine.times_s)
    return {
        "n_frames": cine.n_frames,
        "frame_shape": list(cine.frame_shape),
        "duration_s": cine.duration_s,
        "frame_rate_hz": float(1.0 / np.median(dt)),
        "times_s": [round(float(t), 6) for t in cine.times_s],
        "spacing_mm": None if cine.spacing_mm is None else list(cine.spacing_mm),
        "meta": meta,
        "panels": choice.as_dict(),
        "warnings": [w.as_dict() for w in cine.warnings],
    }


def write_frames(cine: Cine, study_dir: Path) -> Path:
    """Store the display frames as uint8 ``frames.npy`` (atomically, in chunks)."""
    target = study_dir / "frames.npy"
    scale = 255.0 / float(cine.display_max)
    with atomic_path(target) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=cine.frames.shape)
        for start in range(0, cine.n_frames, _CHUNK_FRAMES):
            chunk = cine.frames[start:start + _CHUNK_FRAMES]
            out[start:start + chunk.shape[0]] = np.clip(np.rint(chunk * scale), 0, 255).astype(np.uint8)
        out.flush()
        del out
    return target


def frames(study_dir: Path) -> NDArray[np.uint8]:
    """The stored display frames, memory-mapped (T, H, W) uint8."""
    arr: NDArray[np.uint8] = np.load(study_dir / "frames.npy", mmap_mode="r")
    return arr


def panel_of(info: Mapping[str, Any], which: str) -> tuple[int, int, int, int] | None:
    """Bounds (x0, y0, x1, y1) of the ``contrast`` or ``bmode`` panel, ``frame`` for all."""
    if which == "frame":
        h, w = info["frame_shape"]
        return (0, 0, int(w), int(h))
    p = info["panels"].get(which)
    if p is None:
        return None
    x0, y0, x1, y1 = p["bounds_xyxy"]
    return (int(x0), int(y0), int(x1), int(y1))


def frame_png(study_dir: Path, info: Mapping[str, Any], index: int, which: str) -> bytes:
    """One frame (or one panel of it) as a grey PNG.

    Raises
    ------
    InputError
        Frame index out of range, or no such panel.
    """
    from PIL import Image

    n = int(info["n_frames"])
    if not 0 <= index < n:
        raise InputError("frame", f"index {index} is outside 0..{n - 1}", "pick a frame of the cine")
    bounds = panel_of(info, which)
    if bounds is None:
        raise InputError("panel", f"this study has no {which} panel", "ask for the contrast panel")
    x0, y0, x1, y1 = bounds
    img = np.ascontiguousarray(frames(study_dir)[index, y0:y1, x0:x1])
    buf = io.BytesIO()
    # Speed over size: these are served to one local browser while scrubbing.
    Image.fromarray(img, mode="L").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def contrast_panel(info: Mapping[str, Any]) -> Panel:
    c = info["panels"]["contrast"]
    x0, y0, x1, y1 = c["bounds_xyxy"]
    sp = c.get("spacing_mm")
    return Panel(int(x0), int(y0), int(x1), int(y1),
                 spacing_mm=None if sp is None else (float(sp[0]), float(sp[1])), kind="contrast")


def check_rois(doc: Any, info: Mapping[str, Any]) -> dict[str, Any]:
    """Validate an ROI document against the study's contrast panel.

    Accepts the contract's format with polygons and ellipses in ``panel``
    or ``frame`` space (mask files cannot travel in a JSON body) and returns
    it in ``panel`` space, the form the editor and the export use.  An
    empty ``rois`` list is allowed here (a study before any drawing).

    Raises
    ------
    InputError
        Anything `ceuskit.roi.parse_rois` refuses, plus masks.
    """
    from ceuskit.roi import parse_rois

    if not isinstance(doc, Mapping):
        raise InputError("ROI file", "must hold a JSON object with 'space' and 'rois'",
                         "see the ROI file format in the README")
    items = doc.get("rois")
    if isinstance(items, list) and not items:
        return {"space": "panel", "rois": []}
    if isinstance(items, list) and any(isinstance(i, Mapping) and "mask" in i for i in items):
        raise InputError("ROI file", "mask ROIs cannot be uploaded to the web app",
                         "use polygons or ellipses, or analyse with the command line")
    panel = contrast_panel(info)
    h, w = info["frame_shape"]
    parse_rois(doc, panel=panel, frame_shape=(int(h), int(w)), source="ROI file")
    space = doc.get("space", "panel")
    dx, dy = (panel.x0, panel.y0) if space == "frame" else (0, 0)
    out = []
    assert isinstance(items, list)  # parse_rois refused anything else
    for item in items:
        entry: dict[str, Any] = {"name": str(item["name"]), "role": str(item["role"])}
        if "polygon" in item:
            entry["polygon"] = [[round(float(x) - dx, 2), round(float(y) - dy, 2)]
                                for x, y in item["polygon"]]
        else:
            cx, cy, rx, ry = (float(v) for v in item["ellipse"])
            entry["ellipse"] = [round(cx - dx, 2), round(cy - dy, 2), round(rx, 2), round(ry, 2)]
        out.append(entry)
    return {"space": "panel", "rois": out}


def tic_preview(study_dir: Path, info: Mapping[str, Any], rois: Mapping[str, Any],
                dynamic_range_db: float | str) -> dict[str, Any]:
    """Mean linear power per frame in each ROI, before any analysis.

    No motion compensation and no fit: a quick look while drawing.  Frames
    are the stored uint8 display values (display maximum 255).  With
    ``dynamic_range_db == "auto"`` the preview uses the default dynamic
    range (the estimate is made by the analysis) and says so in ``note``.
    """
    from ceuskit.linearize import DEFAULT_DYNAMIC_RANGE_DB, to_linear_power
    from ceuskit.roi import parse_rois

    note = None
    if dynamic_range_db == "auto":
        dynamic_range_db = DEFAULT_DYNAMIC_RANGE_DB
        note = (f"preview at the default {DEFAULT_DYNAMIC_RANGE_DB:g} dB: the analysis estimates "
                "the dynamic range from the speckle")
    dynamic_range_db = float(dynamic_range_db)
    items = rois.get("rois") or []
    if not items:
        return {"times_s": info["times_s"], "rois": {}, "dynamic_range_db": dynamic_range_db,
                "note": note}
    panel = contrast_panel(info)
    h, w = info["frame_shape"]
    parsed = parse_rois(dict(rois), panel=panel, frame_shape=(int(h), int(w)), source="ROI file")
    stack = frames(study_dir)
    out: dict[str, Any] = {}
    # The power of each display level, looked up once: mean power = table[counts] / n.
    table = to_linear_power(np.arange(256, dtype=np.float32), dynamic_range_db, 255.0).astype(np.float64)
    sums = {r.name: np.zeros(stack.shape[0]) for r in parsed}
    for start in range(0, stack.shape[0], _CHUNK_FRAMES):
        block = np.asarray(stack[start:start + _CHUNK_FRAMES][(slice(None), *panel.slices)])
        for r in parsed:
            vals = block[:, r.mask]
            sums[r.name][start:start + block.shape[0]] = table[vals].mean(axis=1)
    for r in parsed:
        out[r.name] = {"role": r.role, "intensity": [float(f"{v:.6g}") for v in sums[r.name]]}
    return {"times_s": info["times_s"], "rois": out, "dynamic_range_db": dynamic_range_db, "note": note}


def result_files(result_dir: Path) -> list[str]:
    """Names of the files an analysis left (one folder level, e.g. ``maps/pe.png``)."""
    names: list[str] = []
    if not result_dir.is_dir():
        return names
    for p in sorted(result_dir.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            names.append(p.name)
        elif p.is_dir() and not p.name.startswith("."):
            names.extend(f"{p.name}/{q.name}" for q in sorted(p.iterdir())
                         if q.is_file() and not q.name.startswith("."))
    return names
