"""Writing parametric maps: NPY and NIfTI arrays, PNG overlays and maps.json.

For every map (each perfusion parameter, the fit status, the model used,
the necrosis mask and the DVP class) `write_map_outputs` writes:

- ``<name>.npy``: the map, shape (rows, cols) of the contrast panel (float32
  with NaN where there is no value; int8 codes; uint8 0/1 masks);
- ``<name>.nii.gz``: the same values as a 2-D NIfTI-1 image with voxel
  axes (i, j) = (column, row) of the panel, pixel size in ``pixdim`` and in
  the affine (mm; x to the right, y downwards, origin at the centre of the
  panel's top-left pixel), units "mm" in the header;
- ``<name>.png``: the map over the grey frame at the lesion's peak
  (B-mode when the cine has a B-mode panel of the same size, else the
  contrast panel), enlarged, with a colour bar with units (or a legend),
  the ROI outlines and names, and mm axes ("lateral" / "depth") when the
  spacing is known; drawn from the arrays (`render_map`, no figure
  library).  A continuous map's colour scale comes from the lesion and
  reference ROIs; pixels beyond it (typically the vessel lumen) are clipped
  to the end colours, and the image says so.

``maps.json`` holds `MapResult.summary` (rules, windows, per-ROI necrosis,
heterogeneity and DVP figures), the file list (with each PNG's colour scale
or legend, ``png_colours``) and provenance;
``dvp_curves.npy`` (block curves x frames, a.u.) and ``segments.npy``
(each pixel's row in it) hold the DVP signal.  Every file is written
atomically (`ceuskit.outputs.atomic_path`).
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ceuskit import DISCLAIMER, __version__
from ceuskit.kinetics.fit import FitStatus
from ceuskit.maps import DVP_CLASSES, MAP_PARAMETERS, MAP_UNITS, MapResult
from ceuskit.outputs import json_ready, make_out_dir, write_bytes_atomic, write_json_atomic
from ceuskit.roi import Roi

#: Titles of the maps in figures.
TITLES = {
    "arrival_time_s": "Arrival time", "time_to_peak_s": "Time to peak",
    "rise_time_s": "Rise time", "mean_transit_time_s": "Mean transit time",
    "peak_enhancement": "Peak enhancement", "auc": "Area under the curve",
    "wash_in_rate": "Wash-in rate", "wash_out_rate": "Wash-out rate",
    "qof": "Quality of fit", "status": "Fit status", "model": "Model used",
    "necrosis": "Necrosis (non-enhancing lesion pixels)", "dvp_class": "Dynamic vascular pattern",
}
CATEGORICAL = ("status", "model", "necrosis", "dvp_class")
MAP_NAMES = (*MAP_PARAMETERS, *CATEGORICAL)
EXTRA_FILES = ("maps.json", "segments.npy", "dvp_curves.npy")


def output_names(names: Sequence[str] = MAP_NAMES) -> list[str]:
    """Every file name `write_map_outputs` may write (for `check_out_dir`)."""
    return [f"{n}.{ext}" for n in names for ext in ("npy", "nii.gz", "png")] + list(EXTRA_FILES)


def planned_files(result: MapResult, *, png: bool = True) -> list[str]:
    """The names of the files `write_map_outputs` writes for `result` (known before writing)."""
    exts = ("npy", "nii.gz", "png") if png else ("npy", "nii.gz")
    names = [f"{n}.{ext}" for n in map_arrays(result) for ext in exts]
    names.append("segments.npy")
    if result.dvp_curves is not None:
        names.append("dvp_curves.npy")
    return [*names, "maps.json"]


def map_arrays(result: MapResult) -> dict[str, NDArray[Any]]:
    """Every map of `result` by output name."""
    out: dict[str, NDArray[Any]] = dict(result.params)
    out["status"] = result.status
    out["model"] = result.model
    out["necrosis"] = result.necrosis.astype(np.uint8)
    out["dvp_class"] = result.dvp_class
    return out


def nifti_bytes(array: NDArray[Any], spacing_mm: tuple[float, float] | None,
                description: str = "") -> bytes:
    """A (rows, cols) map as gzip-compressed NIfTI-1 bytes (axes and spacing as above)."""
    import nibabel as nib

    data = np.ascontiguousarray(np.asarray(array).T)  # (i, j) = (column, row)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    sy, sx = spacing_mm if spacing_mm is not None else (1.0, 1.0)
    affine = np.diag([float(sx), float(sy), 1.0, 1.0])
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm" if spacing_mm is not None else "unknown")
    img.header["descrip"] = description.encode("ascii", "replace")[:79]
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def _categories(name: str, result: MapResult) -> list[tuple[int, str]]:
    if name == "status":
        return [(int(s), s.label) for s in FitStatus]
    if name == "model":
        return list(enumerate(result.model_names))
    if name == "necrosis":
        return [(0, "enhancing"), (1, "non-enhancing")]
    return list(enumerate(DVP_CLASSES))


#: Percentiles of the continuous maps' colour scale, over the scale's pixels (`scale_pixels`).
SCALE_PERCENTILES = (2.0, 98.0)
#: Fewest finite map pixels inside the lesion and reference ROIs for the colour
#: scale to be taken from them; with fewer, every mapped pixel sets it.
SCALE_MIN_PX = 16
#: Colour tables of the continuous maps (`ceuskit._colormaps`): times, amplitudes, fit quality.
TIME_COLOURS, AMPLITUDE_COLOURS, QOF_COLOURS = "viridis", "magma", "cividis"
#: Categorical palettes: necrosis (blue = enhancing, red = non-enhancing), else tab10.
NECROSIS_COLOURS = ("#2c7bb6", "#d7191c")
OVERLAY_ALPHA = {"continuous": 0.85, "categorical": 0.8}


@dataclass(frozen=True)
class MapImage:
    """A rendered map: the PNG and how its colours were set.

    Attributes
    ----------
    png : bytes
    scale : dict
        Continuous maps: ``kind``, ``colour_map``, ``min``, ``max`` (the
        colour scale's ends, in the map's unit), ``unit``, ``basis`` (which
        pixels set it), ``pixels_above_max`` / ``pixels_below_min`` (mapped
        pixels drawn in the end colours: clipped), ``statement`` (the
        caption's sentence).  Categorical maps: ``kind`` and ``legend``
        (label -> colour).  Recorded in maps.json.
    """

    png: bytes
    scale: dict[str, Any]


def scale_pixels(rois: Sequence[Roi], shape: tuple[int, ...]) -> NDArray[np.bool_]:
    """The pixels that set a continuous map's colour scale: the lesion and reference ROIs.

    The vessel lumen, far brighter and earlier than the tissue, would take
    most of the scale; its values above the scale are drawn in the top
    colour and said to be clipped.
    """
    m = np.zeros(shape, dtype=bool)
    for r in rois:
        if r.role in ("lesion", "reference"):
            m |= r.mask
    return m


def colour_scale(values: NDArray[Any], rois: Sequence[Roi]) -> tuple[float, float, str]:
    """(lo, hi, basis) of a continuous map's colour scale (see `SCALE_PERCENTILES`)."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    inside = finite & scale_pixels(rois, v.shape)
    p_lo, p_hi = SCALE_PERCENTILES
    pct = f"{p_lo:g}nd-{p_hi:g}th percentile" if (p_lo, p_hi) == (2.0, 98.0) else \
        f"{p_lo:g}-{p_hi:g} percentiles"
    if int(inside.sum()) >= SCALE_MIN_PX:
        sel, basis = v[inside], f"{pct} of the values in the lesion and reference ROIs"
    else:
        sel, basis = v[finite], f"{pct} of every mapped pixel"
    lo, hi = (float(x) for x in np.percentile(sel, [p_lo, p_hi])) if sel.size else (0.0, 1.0)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi, basis


def _colour_table(name: str) -> tuple[str, NDArray[np.uint8]]:
    from ceuskit._colormaps import lut

    cmap = TIME_COLOURS if name.endswith("_s") else QOF_COLOURS if name == "qof" else AMPLITUDE_COLOURS
    return cmap, lut(cmap)


def _palette(name: str, n: int) -> list[tuple[int, int, int]]:
    from ceuskit._colormaps import lut
    from ceuskit.map_image import parse_hex

    if name == "necrosis":
        return [parse_hex(c) for c in NECROSIS_COLOURS]
    tab = lut("tab10")
    return [(int(tab[i % 10, 0]), int(tab[i % 10, 1]), int(tab[i % 10, 2])) for i in range(n)]


def render_map(name: str, values: NDArray[Any], result: MapResult, rois: Sequence[Roi],
               background: NDArray[Any] | None, display_max: float = 255.0, *,
               background_label: str = "contrast", source_name: str = "") -> MapImage:
    """One map as a readable PNG overlay, drawn straight from the arrays.

    The map over the grey frame (nearest-neighbour enlarged), the ROI
    outlines and names, mm axes ("lateral" / "depth"), and a colour bar with
    units (continuous maps) or a legend (categorical maps).  A continuous
    map's colours span the `SCALE_PERCENTILES` of its values inside the
    lesion and reference ROIs (`colour_scale`); pixels beyond are drawn in
    the end colours, the bar's ends say so (``≥`` / ``≤``) and the caption
    counts them.
    """
    from ceuskit.map_image import ColourBar, Legend, Outline, blend, compose, fmt_value, hex_colour

    shape = values.shape
    block = result.options.block_px
    title = [f"{TITLES[name]} - {source_name}" if source_name else TITLES[name],
             f"{block} x {block} px blocks, over the {background_label} frame"]
    outlines = [Outline(np.asarray(r.outline, dtype=np.float64), f"{r.name} ({r.role})")
                for r in rois if r.outline.size]
    caption: list[str] = []
    scale_bar: ColourBar | Legend
    if name in CATEGORICAL:
        cats = _categories(name, result)
        palette = _palette(name, len(cats))
        codes = np.asarray(values)
        valid = codes >= 0
        if name == "necrosis":
            valid = result.tested & _lesion_mask(rois, shape)
        lookup = np.zeros((256, 3), dtype=np.uint8)
        for (code, _), colour in zip(cats, palette, strict=True):
            lookup[int(code) % 256] = colour
        known = np.isin(codes, [c for c, _ in cats])
        valid = valid & known
        colours = lookup[codes.astype(np.int64) % 256]
        rgb = blend(background, display_max, colours, valid, OVERLAY_ALPHA["categorical"])
        scale_bar = Legend([(colour, label) for (_, label), colour in zip(cats, palette, strict=True)],
                           TITLES[name])
        info: dict[str, Any] = {"kind": "categorical",
                                "legend": {label: hex_colour(colour)
                                           for (_, label), colour in zip(cats, palette, strict=True)}}
    else:
        v = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(v)
        lo, hi, basis = colour_scale(v, rois)
        cmap, table = _colour_table(name)
        n = table.shape[0]
        with np.errstate(invalid="ignore"):
            idx = np.clip(np.floor((np.where(finite, v, lo) - lo) / (hi - lo) * n), 0, n - 1)
        colours = table[idx.astype(np.int64)]
        rgb = blend(background, display_max, colours, finite, OVERLAY_ALPHA["continuous"])
        above = int(np.sum(finite & (v > hi)))
        below = int(np.sum(finite & (v < lo)))
        unit = MAP_UNITS[name]
        statement = f"Colour scale {fmt_value(lo)} to {fmt_value(hi)} {unit}: the {basis}"
        clips = []
        if above:
            clips.append(f"clipped at {fmt_value(hi)} above ({above} px)")
        if below:
            clips.append(f"clipped at {fmt_value(lo)} below ({below} px)")
        statement += ("; " + " and ".join(clips) + ", drawn in the end colours." if clips
                      else "; no mapped pixel lies outside it.")
        caption.append(statement)
        scale_bar = ColourBar(table, lo, hi, f"{TITLES[name]} ({unit})",
                              clipped_low=below > 0, clipped_high=above > 0)
        info = {"kind": "continuous", "colour_map": cmap, "min": lo, "max": hi, "unit": unit,
                "basis": basis, "pixels_above_max": above, "pixels_below_min": below,
                "statement": statement}
    png = compose(rgb, spacing_mm=result.spacing_mm, title=title, scale=scale_bar,
                  outlines=outlines, caption=caption, footnote=DISCLAIMER)
    return MapImage(png, info)


def render_png(name: str, values: NDArray[Any], result: MapResult, rois: Sequence[Roi],
               background: NDArray[Any] | None, display_max: float = 255.0, *,
               background_label: str = "contrast", source_name: str = "") -> bytes:
    """One map as a PNG overlay (bytes): `render_map`'s image."""
    return render_map(name, values, result, rois, background, display_max,
                      background_label=background_label, source_name=source_name).png


def render_maps(result: MapResult, rois: Sequence[Roi], background: NDArray[Any] | None,
                display_max: float = 255.0, *, background_label: str = "contrast",
                source_name: str = "", names: Sequence[str] | None = None) -> dict[str, MapImage]:
    """`render_map` of every map (or of `names`), by output name."""
    arrays = map_arrays(result)
    return {name: render_map(name, arrays[name], result, rois, background, display_max,
                             background_label=background_label, source_name=source_name)
            for name in (names if names is not None else arrays)}


def _lesion_mask(rois: Sequence[Roi], shape: tuple[int, ...]) -> NDArray[np.bool_]:
    m = np.zeros(shape, dtype=bool)
    for r in rois:
        if r.role == "lesion":
            m |= r.mask
    return m


def _npy_bytes(array: NDArray[Any]) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def write_map_outputs(
    out_dir: str | Path,
    result: MapResult,
    rois: Sequence[Roi],
    *,
    background: NDArray[Any] | None = None,
    background_label: str = "contrast",
    display_max: float = 255.0,
    source_name: str = "cine",
    provenance: dict[str, Any] | None = None,
    png: bool = True,
    images: Mapping[str, MapImage] | None = None,
) -> dict[str, Path]:
    """Write every map as NPY, NIfTI and PNG, plus maps.json and the DVP arrays.

    The directory is created if needed; the caller checks it first
    (`ceuskit.outputs.check_out_dir` with `output_names`).  `images` are
    PNGs already rendered (`render_maps`, e.g. shared with the report); the
    others are rendered here.  The files are exactly `planned_files`.

    Returns
    -------
    dict of str to Path
        ``"<name>.<ext>"`` -> path of every file written.
    """
    out = make_out_dir(out_dir)
    written: dict[str, Path] = {}

    def put(fname: str, data: bytes) -> None:
        written[fname] = write_bytes_atomic(out / fname, data)

    arrays = map_arrays(result)
    scales: dict[str, dict[str, Any]] = {}
    for name, arr in arrays.items():
        unit = MAP_UNITS.get(name, "code")
        put(f"{name}.npy", _npy_bytes(arr))
        put(f"{name}.nii.gz", nifti_bytes(arr, result.spacing_mm, f"ceuskit {name} ({unit})"))
        if png:
            image = (images or {}).get(name) or render_map(
                name, arr, result, rois, background, display_max,
                background_label=background_label, source_name=source_name)
            scales[name] = image.scale
            put(f"{name}.png", image.png)
    put("segments.npy", _npy_bytes(result.segments))
    if result.dvp_curves is not None:
        put("dvp_curves.npy", _npy_bytes(result.dvp_curves))
    doc = {
        "ceuskit_version": __version__,
        "disclaimer": DISCLAIMER,
        "source": {"file": source_name, **(provenance or {})},
        "times_s": [round(float(v), 6) for v in result.times_s],
        "background": background_label,
        **result.summary(),
        "files": {
            "maps": {name: {"npy": f"{name}.npy", "nifti": f"{name}.nii.gz",
                            "png": f"{name}.png" if png else None,
                            "png_colours": scales.get(name),
                            "unit": MAP_UNITS.get(name, "code")} for name in arrays},
            "segments": "segments.npy",
            "dvp_curves": "dvp_curves.npy" if result.dvp_curves is not None else None,
            "layout": ("arrays are (rows, cols) of the contrast panel; NIfTI voxel (i, j) = "
                       "(column, row), pixdim and affine in mm; dvp_curves[segments[row, col]] is "
                       "the DVP signal of a pixel (a.u., at times_s)"),
        },
    }
    written["maps.json"] = write_json_atomic(out / "maps.json", json_ready(doc))
    return written
