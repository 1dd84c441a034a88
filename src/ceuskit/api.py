"""The public entry points the CLI, the web app and batch runs share."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ceuskit.cine import Cine
from ceuskit.errors import AnalysisWarning
from ceuskit.io import load_cine
from ceuskit.motion import warp_frame
from ceuskit.outputs import check_out_dir, make_out_dir, write_json_atomic, write_text_atomic
from ceuskit.panels import PanelChoice
from ceuskit.pipeline import (
    Analysis,
    AnalysisOptions,
    Progress,
    analyze,
    contrast_power_chunks,
    prepare_cine,
)
from ceuskit.roi import Roi

if TYPE_CHECKING:  # the map modules import numba: load them only when mapping
    from ceuskit.maps import MapOptions, MapResult

RESULT_FILES = ("results.json", "report.html")


def analyze_to_dir(
    cine_path: str | PathLike[str],
    roi_path: str | PathLike[str],
    out_dir: str | PathLike[str],
    options: AnalysisOptions | None = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> tuple[Analysis, dict[str, Path]]:
    """Analyse a cine and write results.json and report.html into a directory.

    The directory is checked before any work (writable; no earlier results
    unless ``overwrite``), and both files are rendered in memory first and
    then written under temporary names and renamed, so a failure leaves no
    half-written output.

    Returns
    -------
    (Analysis, {"results": path, "report": path})
    """
    from ceuskit.report.html import render_html

    out = check_out_dir(out_dir, RESULT_FILES, overwrite=overwrite)
    analysis = analyze(cine_path, roi_path, options, progress=progress)
    if progress:
        progress("writing the report")
    results = analysis.results()
    html = render_html(analysis, results)
    make_out_dir(out)
    paths = {
        "results": write_json_atomic(out / "results.json", results),
        "report": write_text_atomic(out / "report.html", html),
    }
    return analysis, paths


@dataclass(frozen=True, eq=False)
class MapStudy:
    """A parametric map with what is needed to show it.

    Attributes
    ----------
    result : MapResult
    panels : PanelChoice
    rois : list of Roi
    background : ndarray (rows, cols), float32
        Display frame at the lesion's peak (aligned to the motion reference).
    background_label : str
        ``"B-mode"`` or ``"contrast"``.
    frame_index : int
        Index of that frame.
    warnings : list of AnalysisWarning
    scheduler_used : str
        Where the fits ran (``"in-process"``, ``"local-cluster"`` or an address).
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


def map_cine(
    cine: Cine,
    roi_path: str | PathLike[str],
    options: AnalysisOptions | None = None,
    map_options: MapOptions | None = None,
    *,
    source_name: str = "cine",
    progress: Progress | None = None,
    scheduler: Any = None,
) -> MapStudy:
    """Parametric maps of a loaded cine inside the ROIs of an ROI file.

    The pipeline's own stages choose the panel, read the ROIs, estimate motion
    (`ceuskit.pipeline.prepare_cine`) and stream the aligned linear power
    (`ceuskit.pipeline.contrast_power_chunks`); `ceuskit.maps.compute_maps`
    does the rest.  ``options.model`` is the model fitted to every block
    unless `map_options` says otherwise.

    Parameters
    ----------
    scheduler : distributed.Client, str or None
        Where the block fits run (`ceuskit.maps_dask.DaskRunner`): None or
        ``"auto"`` (in-process, a LocalCluster for very large maps),
        ``"local"``, ``"none"`` or a scheduler address.

    Raises
    ------
    InputError
        Bad options, ROIs or scheduler address.
    """
    from ceuskit.maps import MapOptions, compute_maps
    from ceuskit.maps_dask import DaskRunner

    options = options or AnalysisOptions()
    map_options = map_options or MapOptions(model=options.model)
    panels, rois, motion, warnings = prepare_cine(cine, roi_path, options, source_name=source_name,
                                                  progress=progress)
    valid = None if motion is None else ~np.asarray(motion.rejected)

    def source() -> Iterator[tuple[slice, NDArray[np.float32]]]:
        return contrast_power_chunks(cine, panels, options, motion,
                                     chunk_frames=map_options.frame_chunk)

    def nearest_source() -> Iterator[tuple[slice, NDArray[np.float32]]]:
        return contrast_power_chunks(cine, panels, options, motion,
                                     chunk_frames=map_options.frame_chunk, order=0)

    with DaskRunner(scheduler) as runner:
        result = compute_maps(source, cine.times_s, rois, map_options, valid_frames=valid,
                              spacing_mm=panels.contrast.spacing_mm, runner=runner,
                              progress=progress,
                              pixel_source=nearest_source if motion is not None else None)
        used = runner.used
    # The frame shown under the maps: the lesion's fitted peak, a kept frame.
    lesion = next((r for r in rois if r.role == "lesion"), rois[0])
    ttp = result.rois[lesion.name]["roi_curve"].get("time_to_peak_s")
    t = np.asarray(cine.times_s)
    ok = np.ones(t.size, dtype=bool) if valid is None else valid
    target = float(ttp) if ttp is not None else float(t[np.argmax(ok)])
    frame = int(np.flatnonzero(ok)[np.argmin(np.abs(t[ok] - target))]) if ok.any() else 0
    bmode = panels.bmode
    use_bmode = bmode is not None and bmode.shape == panels.contrast.shape
    panel = bmode if use_bmode and bmode is not None else panels.contrast
    background = np.array(cine.frames[frame][panel.slices], dtype=np.float32)
    if motion is not None:
        background = warp_frame(background, motion, frame)
    return MapStudy(result=result, panels=panels, rois=rois, background=background,
                    background_label="B-mode" if use_bmode else "contrast", frame_index=frame,
                    warnings=list(cine.warnings) + warnings, scheduler_used=used,
                    display_max=float(cine.display_max))


def map_to_dir(
    cine_path: str | PathLike[str],
    roi_path: str | PathLike[str],
    out_dir: str | PathLike[str],
    options: AnalysisOptions | None = None,
    map_options: MapOptions | None = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    scheduler: Any = None,
    png: bool = True,
) -> tuple[MapStudy, dict[str, Path]]:
    """Map a cine file and write the maps (NPY, NIfTI, PNG) and maps.json into a directory.

    The directory is checked before any work (writable; no earlier maps
    unless ``overwrite``); every file is written atomically.  See
    `ceuskit.maps_io` for the files and `map_cine` for the parameters.

    Returns
    -------
    (MapStudy, {file name: path})
    """
    from ceuskit.maps_io import output_names, write_map_outputs

    out = check_out_dir(out_dir, output_names(), overwrite=overwrite)
    options = options or AnalysisOptions()
    say = progress or (lambda _msg: None)
    say(f"reading {Path(cine_path).name}")
    cine = load_cine(cine_path, fps=options.fps)
    study = map_cine(cine, roi_path, options, map_options, source_name=Path(cine_path).name,
                     progress=progress, scheduler=scheduler)
    say("writing the maps")
    paths = write_map_outputs(
        out, study.result, study.rois, background=study.background,
        background_label=study.background_label, display_max=study.display_max,
        source_name=Path(cine_path).name, png=png,
        provenance={"frame_shown_index": study.frame_index,
                    "frame_shown_time_s": float(cine.times_s[study.frame_index]),
                    "fits_ran": study.scheduler_used,
                    "dynamic_range_db": options.dynamic_range_db,
                    "motion": options.motion,
                    "panels": study.panels.as_dict(),
                    "warnings": [w.as_dict() for w in study.warnings]},
    )
    return study, paths
