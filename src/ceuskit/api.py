"""The public entry points the CLI, the web app and batch runs share."""

from __future__ import annotations

from dataclasses import replace
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ceuskit.cine import Cine
from ceuskit.errors import AnalysisWarning
from ceuskit.io import load_cine
from ceuskit.outputs import (
    check_out_dir,
    make_out_dir,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from ceuskit.pipeline import (
    Analysis,
    AnalysisOptions,
    MapStudy,
    Progress,
    analyze,
    map_prepared,
    prepare_cine,
)

if TYPE_CHECKING:  # the map modules import numba: load them only when mapping
    from ceuskit.maps import MapOptions

__all__ = ["RESULT_FILES", "MapStudy", "analyze_to_dir", "map_cine", "map_provenance", "map_to_dir"]

#: What an analysis writes into its output directory (checked for earlier results).
RESULT_FILES = ("results.json", "report.html", "report.pdf", "maps")
#: Sub-directory of the analysis output that holds the parametric maps.
MAPS_DIR = "maps"
PDF_NOT_WRITTEN = "pdf-not-written"


def analyze_to_dir(
    cine_path: str | PathLike[str],
    roi_path: str | PathLike[str],
    out_dir: str | PathLike[str],
    options: AnalysisOptions | None = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    pdf: bool = True,
) -> tuple[Analysis, dict[str, Path]]:
    """Analyse a cine and write results.json, report.html, report.pdf and maps/ into a directory.

    The directory is checked before any work (writable; no earlier results
    unless ``overwrite``).  results.json, the HTML and the PDF are rendered
    in memory first, and every file is written under a temporary name and
    renamed, so a failure leaves no half-written file.  ``maps/`` holds the
    parametric maps (`ceuskit.maps_io`: NPY, NIfTI, PNG overlays, maps.json)
    when they were computed (``options.maps`` and a lesion ROI).

    A PDF engine that cannot run (WeasyPrint without its system libraries)
    does not fail the analysis: report.pdf is left out and the warning
    ``pdf-not-written`` says why and what to install.

    Parameters
    ----------
    pdf : bool
        Write report.pdf (default True).

    Returns
    -------
    (Analysis, paths)
        ``paths`` has ``"results"``, ``"report"``, and ``"pdf"`` /
        ``"maps"`` (the directory) when those were written.
    """
    from ceuskit.report.html import render_html
    from ceuskit.report.pdf import PdfUnavailableError, pdf_unavailable_reason, render_pdf

    out = check_out_dir(out_dir, RESULT_FILES, overwrite=overwrite)
    analysis = analyze(cine_path, roi_path, options, progress=progress)
    say = progress or (lambda _msg: None)
    say("writing the report")
    pdf_problem = pdf_unavailable_reason() if pdf else None
    if pdf_problem is not None:
        analysis = _with_pdf_warning(analysis, pdf_problem)
    results = analysis.results()
    html = render_html(analysis, results)
    pdf_bytes = None
    if pdf and pdf_problem is None:
        try:
            pdf_bytes = render_pdf(html)
        except PdfUnavailableError as exc:
            # The warning belongs in results.json and the HTML report too.
            analysis = _with_pdf_warning(analysis, str(exc))
            results = analysis.results()
            html = render_html(analysis, results)
    make_out_dir(out)
    paths: dict[str, Path] = {}
    if analysis.maps is not None:
        from ceuskit.maps_io import write_map_outputs

        say("writing the parametric maps")
        study = analysis.maps
        written = write_map_outputs(
            out / MAPS_DIR, study.result, study.rois, background=study.background,
            background_label=study.background_label, display_max=study.display_max,
            source_name=analysis.source_name,
            provenance=map_provenance(study, analysis.options))
        results["maps"]["directory"] = MAPS_DIR
        results["maps"]["files"] = sorted(f"{MAPS_DIR}/{name}" for name in written)
        paths["maps"] = out / MAPS_DIR
    paths["results"] = write_json_atomic(out / "results.json", results)
    paths["report"] = write_text_atomic(out / "report.html", html)
    if pdf_bytes is not None:
        paths["pdf"] = write_bytes_atomic(out / "report.pdf", pdf_bytes)
    return analysis, paths


def _with_pdf_warning(analysis: Analysis, problem: str) -> Analysis:
    warning = AnalysisWarning(
        PDF_NOT_WRITTEN,
        f"report.pdf was not written: {problem.rstrip('.')}. The HTML report and results.json are "
        "complete; for the PDF install the Pango libraries WeasyPrint needs (Debian/Ubuntu: "
        "apt-get install libpango-1.0-0 libpangoft2-1.0-0) and run the analysis again",
    )
    return replace(analysis, warnings=[*analysis.warnings, warning])


def map_provenance(study: MapStudy, options: AnalysisOptions) -> dict[str, Any]:
    """What maps.json records about how a map was made (frame shown, settings, warnings)."""
    return {"frame_shown_index": study.frame_index,
            "frame_shown_time_s": study.frame_time_s,
            "fits_ran": study.scheduler_used,
            "dynamic_range_db": options.dynamic_range_db,
            "motion": options.motion,
            "panels": study.panels.as_dict(),
            "warnings": [w.as_dict() for w in study.warnings]}


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
    (`ceuskit.pipeline.prepare_cine`) and map them (`ceuskit.pipeline.map_prepared`,
    the mapping path ``ceuskit analyze`` uses too).  ``options.model`` is the model fitted to every block
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
    options = options or AnalysisOptions()
    panels, rois, motion, warnings = prepare_cine(cine, roi_path, options, source_name=source_name,
                                                  progress=progress)
    return map_prepared(cine, panels, rois, motion, options, map_options,
                        warnings=list(cine.warnings) + warnings, scheduler=scheduler,
                        progress=progress)


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
        source_name=Path(cine_path).name, png=png, provenance=map_provenance(study, options),
    )
    return study, paths
