"""Regions of interest: shapes, masks and the ROI file.

The ROI file (JSON, see ``contract.md``) lists named regions with a role and a
shape: a polygon, an ellipse, or a mask file.  Shapes are given in ``panel``
space (pixel coordinates of the contrast panel) or ``frame`` space (of the
whole stored frame); x is the column and y the row, origin top-left.

Rasterisation rule, shared with the simulator: pixel (row r, col c) belongs to
a shape when its centre, the point (x = c, y = r), lies inside the shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.path import Path as MplPath
from numpy.typing import NDArray

from ceuskit.cine import Panel
from ceuskit.errors import InputError

ROLES = ("lesion", "reference", "vessel", "other")
SPACES = ("panel", "frame")
#: Keys an ROI entry may have (a typo such as "polgon" is named, not ignored).
ROI_KEYS = frozenset({"name", "role", "polygon", "ellipse", "mask"})
#: Keys of the ROI file's top level: a misspelt 'space' must not silently
#: read frame coordinates as panel coordinates.
FILE_KEYS = frozenset({"space", "rois"})
#: Most ROIs per file: an analysis needs a handful (lesion, reference, vessel).
MAX_ROIS = 64
#: Longest ROI name (characters): names label plots, tables and DICOM segments.
MAX_NAME_CHARS = 64
#: Most polygon vertices: a hand-drawn outline has tens to hundreds.
MAX_POLYGON_VERTICES = 5000

ArrayLike2D = Sequence[Sequence[float]] | NDArray[Any]


@dataclass(frozen=True)
class Roi:
    """A region of interest rasterised on the contrast panel.

    Attributes
    ----------
    name : str
        Unique name from the ROI file.
    role : str
        One of `ROLES`.
    kind : str
        ``"polygon"``, ``"ellipse"`` or ``"mask"``.
    mask : ndarray of bool, shape (rows, cols) of the panel
        Pixels inside the ROI.
    outline : ndarray, shape (K, 2)
        Closed outline in panel coordinates (x, y) for drawing; for masks, the
        corners of the mask's pixels' bounding box.
    spacing_mm : tuple of float or None
        Pixel size (row, col) in mm.
    """

    name: str
    role: str
    kind: str
    mask: NDArray[np.bool_] = field(repr=False)
    outline: NDArray[np.float64] = field(repr=False)
    spacing_mm: tuple[float, float] | None = None

    @property
    def area_px(self) -> int:
        return int(np.count_nonzero(self.mask))

    @property
    def area_mm2(self) -> float | None:
        if self.spacing_mm is None:
            return None
        return self.area_px * self.spacing_mm[0] * self.spacing_mm[1]

    @property
    def centroid_xy(self) -> tuple[float, float]:
        rows, cols = np.nonzero(self.mask)
        return (float(cols.mean()), float(rows.mean()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "shape": self.kind,
            "area_px": self.area_px,
            "area_mm2": self.area_mm2,
            "centroid_panel_xy": list(self.centroid_xy),
        }


def polygon_mask(vertices: ArrayLike2D, shape: tuple[int, int]) -> NDArray[np.bool_]:
    """Pixels of a (rows, cols) grid whose centres lie inside a polygon.

    Parameters
    ----------
    vertices : array, shape (K, 2)
        Polygon vertices (x = column, y = row), in pixels.
    shape : (rows, cols)
        Grid shape.
    """
    v = np.asarray(vertices, dtype=np.float64)
    rows, cols = shape
    mask = np.zeros(shape, dtype=bool)
    x0 = max(int(np.floor(v[:, 0].min())), 0)
    x1 = min(int(np.ceil(v[:, 0].max())), cols - 1)
    y0 = max(int(np.floor(v[:, 1].min())), 0)
    y1 = min(int(np.ceil(v[:, 1].max())), rows - 1)
    if x1 < x0 or y1 < y0:
        return mask
    yy, xx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
    inside = MplPath(v).contains_points(np.column_stack([xx.ravel(), yy.ravel()]))
    mask[y0 : y1 + 1, x0 : x1 + 1] = inside.reshape(yy.shape)
    return mask


def ellipse_mask(
    cx: float, cy: float, rx: float, ry: float, shape: tuple[int, int]
) -> NDArray[np.bool_]:
    """Pixels whose centres satisfy ((x - cx)/rx)^2 + ((y - cy)/ry)^2 <= 1."""
    rows, cols = shape
    yy, xx = np.ogrid[0:rows, 0:cols]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0


def ellipse_outline(cx: float, cy: float, rx: float, ry: float, n: int = 72) -> NDArray[np.float64]:
    a = np.linspace(0.0, 2.0 * np.pi, n)
    return np.column_stack([cx + rx * np.cos(a), cy + ry * np.sin(a)])



def _read_mask_file(path: Path, roi_file: Path, label: str) -> NDArray[np.bool_]:
    if not path.is_file():
        raise InputError(roi_file, f"{label}: mask file {path.name} not found",
                         "give a path relative to the ROI file")
    name = path.name.lower()
    try:
        if name.endswith(".npy"):
            arr = np.load(path, allow_pickle=False)
        elif name.endswith(".png"):
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im.convert("L"))
        elif name.endswith(".nii") or name.endswith(".nii.gz"):
            import nibabel

            img = nibabel.load(str(path))
            # NIfTI stores (i, j) = (x, y) = (column, row): transpose to (row, col).
            arr = np.squeeze(np.asarray(img.dataobj)).T  # type: ignore[attr-defined]
        else:
            raise InputError(roi_file, f"{label}: mask {path.name} has an unknown format",
                             "use .npy, .png or .nii.gz")
    except InputError:
        raise
    except Exception as exc:  # any decoder failure is the user's file, not our bug
        raise InputError(roi_file, f"{label}: mask {path.name} cannot be read ({exc})",
                         "re-save it as a 2-D .npy, .png or .nii.gz") from exc
    if arr.ndim != 2:
        raise InputError(roi_file, f"{label}: mask {path.name} is {arr.ndim}-D",
                         "save a 2-D mask the shape of the panel or frame")
    return np.asarray(arr != 0)


def _number_list(value: Any, n: int | None, roi_file: Path, label: str, what: str) -> list[float]:
    if not isinstance(value, list) or (n is not None and len(value) != n):
        want = f"{n} numbers" if n else "a list"
        raise InputError(roi_file, f"{label}: '{what}' must be {want}", "fix the ROI file")
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        raise InputError(roi_file, f"{label}: '{what}' holds a non-number",
                         "fix the ROI file") from None
    if not all(np.isfinite(out)):
        raise InputError(roi_file, f"{label}: '{what}' holds a non-finite number",
                         "fix the ROI file")
    return out


def parse_rois(
    doc: Any,
    *,
    panel: Panel,
    frame_shape: tuple[int, int],
    source: str | PathLike[str] = "ROI file",
    base_dir: str | PathLike[str] = ".",
) -> list[Roi]:
    """Turn an ROI document (the parsed JSON) into rasterised ROIs.

    Parameters
    ----------
    doc : object
        The parsed ROI file.
    panel : Panel
        The contrast panel the analysis runs on (frame coordinates).
    frame_shape : (rows, cols)
        Shape of the whole stored frame.
    source : path-like
        Name of the ROI file, for messages.
    base_dir : path-like
        Directory that mask paths are relative to.

    Returns
    -------
    list of Roi
        In file order, masks in panel space.

    Raises
    ------
    InputError
        Missing or malformed fields, unknown roles, duplicate names, shapes
        that leave the panel, empty ROIs, masks of the wrong shape.
    """
    src = Path(source)
    if not isinstance(doc, Mapping):
        raise InputError(src, "must hold a JSON object with 'space' and 'rois'",
                         "see the ROI file format in the README")
    unknown_top = sorted(set(map(str, doc)) - FILE_KEYS)
    if unknown_top:
        raise InputError(src, f"has unknown top-level key(s) {', '.join(map(repr, unknown_top))}",
                         "use only 'space' (panel or frame) and 'rois'")
    space = doc.get("space", "panel")
    if space not in SPACES:
        raise InputError(src, f"'space' is {space!r}", "use 'panel' or 'frame'")
    items = doc.get("rois")
    if not isinstance(items, list) or not items:
        raise InputError(src, "has no 'rois' list (or it is empty)",
                         "add at least one ROI with name, role and a shape")
    rows, cols = panel.shape
    # Frame-space shapes are moved into the panel; anything that leaves it is refused.
    off_x, off_y = (panel.x0, panel.y0) if space == "frame" else (0, 0)
    space_shape = frame_shape if space == "frame" else panel.shape
    if len(items) > MAX_ROIS:
        raise InputError(src, f"has {len(items)} ROIs; at most {MAX_ROIS} are accepted",
                         "keep the ROIs the analysis needs (lesion, reference, vessel)")
    out: list[Roi] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        label = f"ROI #{i + 1}"
        if not isinstance(item, Mapping):
            raise InputError(src, f"{label} is not a JSON object", "fix the ROI file")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InputError(src, f"{label} has no 'name'", "give every ROI a unique name")
        if len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise InputError(src, f"{label}'s name is {len(name)} characters long or holds control "
                             f"characters", f"use a short printable name (at most {MAX_NAME_CHARS})")
        label = f"ROI '{name}'"
        unknown = sorted(set(item) - ROI_KEYS)
        if unknown:
            raise InputError(src, f"{label} has unknown key(s) {', '.join(map(repr, unknown))}",
                             f"use only {', '.join(sorted(ROI_KEYS))}")
        if name in seen:
            raise InputError(src, f"{label} appears twice", "give every ROI a unique name")
        seen.add(name)
        role = item.get("role")
        if role not in ROLES:
            raise InputError(src, f"{label} has role {role!r}",
                             f"use one of {', '.join(ROLES)}")
        shapes = [k for k in ("polygon", "ellipse", "mask") if k in item]
        if len(shapes) != 1:
            raise InputError(src, f"{label} needs exactly one of 'polygon', 'ellipse', 'mask'",
                             "fix the ROI file")
        kind = shapes[0]
        if kind == "polygon":
            pts = item["polygon"]
            if not isinstance(pts, list) or len(pts) < 3:
                raise InputError(src, f"{label}: 'polygon' needs at least 3 [x, y] points",
                                 "fix the ROI file")
            if len(pts) > MAX_POLYGON_VERTICES:
                raise InputError(src, f"{label}: 'polygon' has {len(pts)} vertices; at most "
                                 f"{MAX_POLYGON_VERTICES} are accepted", "simplify the outline")
            v = np.array([_number_list(p, 2, src, label, "polygon") for p in pts])
            v -= (off_x, off_y)
            lo, hi = v.min(axis=0), v.max(axis=0)
            if lo[0] < -0.5 or lo[1] < -0.5 or hi[0] > cols - 0.5 or hi[1] > rows - 0.5:
                raise InputError(src, f"{label} reaches outside the contrast panel "
                                 f"({cols}x{rows} px, {space} space)",
                                 "redraw it inside the panel or check 'space'")
            mask = polygon_mask(v, (rows, cols))
            outline = np.vstack([v, v[:1]])
        elif kind == "ellipse":
            cx, cy, rx, ry = _number_list(item["ellipse"], 4, src, label, "ellipse")
            if rx <= 0 or ry <= 0:
                raise InputError(src, f"{label}: ellipse radii must be positive",
                                 "fix the ROI file")
            cx, cy = cx - off_x, cy - off_y
            if cx - rx < -0.5 or cy - ry < -0.5 or cx + rx > cols - 0.5 or cy + ry > rows - 0.5:
                raise InputError(src, f"{label} reaches outside the contrast panel "
                                 f"({cols}x{rows} px, {space} space)",
                                 "redraw it inside the panel or check 'space'")
            mask = ellipse_mask(cx, cy, rx, ry, (rows, cols))
            outline = ellipse_outline(cx, cy, rx, ry)
        else:
            ref = item["mask"]
            if not isinstance(ref, str):
                raise InputError(src, f"{label}: 'mask' must be a file path", "fix the ROI file")
            full = _read_mask_file(Path(base_dir) / ref, src, label)
            if full.shape != tuple(space_shape):
                raise InputError(src, f"{label}: mask shape {full.shape} does not match the "
                                 f"{space} shape {tuple(space_shape)}",
                                 "save the mask at the panel's (or frame's) size")
            if space == "frame":
                inside = np.zeros_like(full)
                inside[panel.slices] = True
                if np.any(full & ~inside):
                    raise InputError(src, f"{label} reaches outside the contrast panel",
                                     "restrict the mask to the contrast panel")
                mask = full[panel.slices].copy()
            else:
                mask = full
            r, c = np.nonzero(mask)
            outline = (np.array([[c.min(), r.min()], [c.max(), r.min()], [c.max(), r.max()],
                                 [c.min(), r.max()], [c.min(), r.min()]], dtype=np.float64)
                       if r.size else np.zeros((0, 2)))
        if not mask.any():
            raise InputError(src, f"{label} encloses no pixel", "draw it larger")
        out.append(Roi(name=name, role=role, kind=kind, mask=mask, outline=outline,
                       spacing_mm=panel.spacing_mm))
    return out


def load_roi_file(
    path: str | PathLike[str], *, panel: Panel, frame_shape: tuple[int, int]
) -> list[Roi]:
    """Read and rasterise an ROI file (see `parse_rois`).

    Raises
    ------
    InputError
        If the file is missing, not valid JSON, or describes invalid ROIs.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "ROI file not found", "check the --roi path")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(p, f"is not valid JSON ({exc})", "fix the ROI file") from None
    return parse_rois(doc, panel=panel, frame_shape=frame_shape, source=p, base_dir=p.parent)
