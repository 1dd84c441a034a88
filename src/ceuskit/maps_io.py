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
  contrast panel), with a colour bar with units, the ROI outlines and
  names, and mm axes when the spacing is known.

``maps.json`` holds `MapResult.summary` (rules, windows, per-ROI necrosis,
heterogeneity and DVP figures), the file list and provenance;
``dvp_curves.npy`` (block curves x frames, a.u.) and ``segments.npy``
(each pixel's row in it) hold the DVP signal.  Every file is written
atomically (`ceuskit.outputs.atomic_path`).
"""

from __future__ import annotations

import gzip
import io
import textwrap
from collections.abc import Sequence
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


def render_png(name: str, values: NDArray[Any], result: MapResult, rois: Sequence[Roi],
               background: NDArray[Any] | None, display_max: float = 255.0, *,
               background_label: str = "contrast", source_name: str = "") -> bytes:
    """One map as a PNG overlay (bytes): colour bar with units, ROI outlines, mm axes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import colors
    from matplotlib.figure import Figure

    h, w = values.shape
    sy, sx = result.spacing_mm if result.spacing_mm is not None else (1.0, 1.0)
    unit_axes = "mm" if result.spacing_mm is not None else "px"
    extent = (-0.5 * sx, (w - 0.5) * sx, (h - 0.5) * sy, -0.5 * sy)
    fig = Figure(figsize=(7.0, 7.0 * h / w * 0.85 + 1.2), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    if background is not None:
        ax.imshow(background, cmap="gray", vmin=0.0, vmax=display_max, extent=extent,
                  interpolation="nearest")
    if name in CATEGORICAL:
        cats = _categories(name, result)
        codes = [c for c, _ in cats]
        palette = (["#2c7bb6", "#d7191c"] if name == "necrosis" else
                   [matplotlib.colormaps["tab10"](i % 10) for i in range(len(cats))])
        cmap = colors.ListedColormap(palette)
        edges = [c - 0.5 for c in codes] + [codes[-1] + 0.5]
        norm = colors.BoundaryNorm(edges, cmap.N)
        shown = np.where(values >= 0, values, np.nan).astype(np.float64)
        if name == "necrosis":
            shown = np.where(result.tested & _lesion_mask(rois, values.shape), values, np.nan)
        im = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, extent=extent,
                       interpolation="nearest", alpha=0.8)
        cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, ticks=codes)
        cbar.ax.set_yticklabels([label for _, label in cats], fontsize=8)
        cbar.set_label(TITLES[name], fontsize=9)
    else:
        v = np.asarray(values, dtype=np.float64)
        finite = v[np.isfinite(v)]
        lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        cmap_name = "viridis" if name.endswith("_s") else "magma" if name != "qof" else "cividis"
        im = ax.imshow(np.ma.masked_invalid(v), cmap=cmap_name, vmin=lo, vmax=hi, extent=extent,
                       interpolation="nearest", alpha=0.85)
        cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        cbar.set_label(f"{TITLES[name]} ({MAP_UNITS[name]})", fontsize=9)
    for r in rois:
        if r.outline.size:
            ax.plot(r.outline[:, 0] * sx, r.outline[:, 1] * sy, color="white", lw=1.0)
            x, y = r.outline[:, 0].min() * sx, r.outline[:, 1].min() * sy
            ax.annotate(f"{r.name} ({r.role})", (x, y), color="white", fontsize=7,
                        xytext=(0, 2), textcoords="offset points", va="bottom")
    ax.set_xlabel(f"x ({unit_axes})")
    ax.set_ylabel(f"y ({unit_axes})")
    block = result.options.block_px
    ax.set_title(f"{TITLES[name]} - {source_name}\n{block} x {block} px blocks, over the "
                 f"{background_label} frame", fontsize=9)
    # Wrapped by character count: matplotlib's wrap=True measures every word
    # (~50 ms a figure).
    fig.text(0.01, 0.005, textwrap.fill(DISCLAIMER, 160), fontsize=5)
    buf = io.BytesIO()
    # zlib level 1: ~4x faster than the default 6 for a few per cent more bytes.
    fig.savefig(buf, format="png", bbox_inches="tight", pil_kwargs={"compress_level": 1})
    return buf.getvalue()


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
) -> dict[str, Path]:
    """Write every map as NPY, NIfTI and PNG, plus maps.json and the DVP arrays.

    The directory is created if needed; the caller checks it first
    (`ceuskit.outputs.check_out_dir` with `output_names`).

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
    for name, arr in arrays.items():
        unit = MAP_UNITS.get(name, "code")
        put(f"{name}.npy", _npy_bytes(arr))
        put(f"{name}.nii.gz", nifti_bytes(arr, result.spacing_mm, f"ceuskit {name} ({unit})"))
        if png:
            put(f"{name}.png", render_png(name, arr, result, rois, background, display_max,
                                          background_label=background_label,
                                          source_name=source_name))
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
