"""The public entry points the CLI, the web app and batch runs share."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ceuskit.cine import Cine
from ceuskit.errors import AnalysisWarning, InputError
from ceuskit.io import load_cine
from ceuskit.outputs import (
    check_out_dir,
    make_out_dir,
    remove_stale,
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
    resolve_dynamic_range,
    speckle_check_records,
)

if TYPE_CHECKING:  # the map modules import numba: load them only when mapping
    from ceuskit.clinical.case import ClinicalCase
    from ceuskit.maps import MapOptions
    from ceuskit.report.pdf_printer import PdfPrinter

__all__ = ["ASSESSMENT_FILES", "RESULT_FILES", "MapStudy", "analyze_to_dir", "assess_case",
           "assess_to_dir", "fit_tic_to_dir", "map_cine", "map_provenance", "map_to_dir", "read_results"]

#: What an analysis writes into its output directory (checked for earlier results).
RESULT_FILES = ("results.json", "report.html", "report.pdf", "maps")
#: Sub-directory of the analysis output that holds the parametric maps.
MAPS_DIR = "maps"
#: Sub-directory for the DICOM SEG, Parametric Maps and SR (``analyze_to_dir(dicom=True)``).
DICOM_DIR = "dicom"
#: Sub-directory of the FHIR bundle (``--fhir``).
FHIR_DIR = "fhir"
DICOM_SEG_ONLY = "dicom-seg-only"
PDF_NOT_WRITTEN = "pdf-not-written"


def analyze_to_dir(
    cine_path: str | PathLike[str] | Sequence[str | PathLike[str]],
    roi_path: str | PathLike[str],
    out_dir: str | PathLike[str],
    options: AnalysisOptions | None = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    pdf: bool = True,
    case: ClinicalCase | None = None,
    dicom: bool = False,
    fhir: bool = False,
    fhir_subject: str | None = None,
    clip_starts_s: Sequence[float] | None = None,
) -> tuple[Analysis, dict[str, Path]]:
    """Analyse a cine (or an exam's clips: `ceuskit.pipeline.analyze`) and write
    results.json, report.html, report.pdf and maps/ into a directory.

    The directory is checked before any work (writable; no earlier results
    unless ``overwrite``).  results.json is written as soon as the numbers
    are ready, then report.html, maps/ and report.pdf (the slowest); a step
    that adds to results.json afterwards (the ``pdf-not-written`` warning
    of a PDF engine that fails while printing, the ``dicom`` entry) writes
    it again.  Every file is written under a temporary name and renamed, so
    a failure leaves no half-written file, and each file is complete when
    it appears.  The figures and map images are rendered once and shared by
    the HTML, the PDF and maps/.  ``maps/`` holds the
    parametric maps (`ceuskit.maps_io`: NPY, NIfTI, PNG overlays, maps.json)
    when they were computed (``options.maps`` and a lesion ROI).

    A PDF engine that cannot run (WeasyPrint without its system libraries)
    does not fail the analysis: report.pdf is left out and the warning
    ``pdf-not-written`` says why and what to install.

    Parameters
    ----------
    pdf : bool
        Write report.pdf (default True).
    case : ClinicalCase, optional
        The clinical case (`ceuskit.clinical.case.load_case`); the assessment
        combines it with the CEUS findings.
    dicom : bool
        Also write a DICOM Segmentation (ROIs, necrosis), Parametric Maps and
        a TID 1500 measurement SR into ``dicom/`` (`ceuskit.io.dicom_derived`;
        DICOM input only).  Without parametric maps (``options.maps`` false,
        or no lesion ROI) only the SEG of the ROIs and the SR are written,
        with the warning ``dicom-seg-only``.
    fhir : bool
        Also write ``fhir/bundle.json``: a FHIR R4 Bundle of a preliminary
        DiagnosticReport and its Observations (`ceuskit.fhir.results_bundle`),
        without patient identifiers.
    fhir_subject : str, optional
        A FHIR reference to the patient (``Patient/123``) for the bundle:
        given explicitly or not at all.

    Returns
    -------
    (Analysis, paths)
        ``paths`` has ``"results"``, ``"report"``, and ``"pdf"`` /
        ``"maps"`` / ``"dicom"`` (the directories) / ``"fhir"`` (the bundle)
        when those were written.

    Raises
    ------
    InputError
        Bad input or options; earlier results in ``out_dir`` without
        ``overwrite``; ``dicom`` with a non-DICOM cine.
    """
    from ceuskit.report.pdf_printer import PdfPrinter

    # dicom/ and fhir/ count as earlier results only when asked for, so that an
    # old output is never replaced silently and plain runs ignore it.
    result_set = (*RESULT_FILES, *((DICOM_DIR,) if dicom else ()), *((FHIR_DIR,) if fhir else ()))
    if fhir_subject is not None:
        check_fhir_subject(fhir_subject)
    out = check_out_dir(out_dir, result_set, overwrite=overwrite)
    # The FHIR study reference points at the first clip; the DICOM objects at
    # the clip that holds the frame they belong to.
    clips = [cine_path] if isinstance(cine_path, str | PathLike) else list(cine_path)
    if dicom:
        from ceuskit.io.dicom_derived import check_dicom_source

        for clip in clips:
            check_dicom_source(clip)  # before the long work
    # WeasyPrint loads in a child process while the cine is analysed here.
    printer = PdfPrinter() if pdf else None
    try:
        return _analyze_and_write(cine_path, roi_path, options, out, result_set, printer,
                                  progress=progress, case=case, clip_starts_s=clip_starts_s,
                                  pdf=pdf, dicom=dicom, fhir=fhir, fhir_subject=fhir_subject,
                                  clips=clips)
    finally:
        if printer is not None:
            printer.close()


def _analyze_and_write(cine_path: str | PathLike[str] | Sequence[str | PathLike[str]],
                       roi_path: str | PathLike[str], options: AnalysisOptions | None,
                       out: Path, result_set: tuple[str, ...], printer: PdfPrinter | None, *,
                       progress: Progress | None, case: ClinicalCase | None,
                       clip_starts_s: Sequence[float] | None, pdf: bool, dicom: bool, fhir: bool,
                       fhir_subject: str | None, clips: list[str | PathLike[str]]
                       ) -> tuple[Analysis, dict[str, Path]]:
    """`analyze_to_dir` once its arguments are checked: analyse, then write the set."""
    from ceuskit.report.pdf import PdfUnavailableError

    analysis = analyze(cine_path, roi_path, options, progress=progress, case=case,
                       clip_starts_s=clip_starts_s)
    say = progress or (lambda _msg: None)
    if dicom and analysis.maps is None:
        analysis = replace(analysis, warnings=[*analysis.warnings, AnalysisWarning(
            DICOM_SEG_ONLY,
            "no parametric maps were computed (--no-maps, or no lesion ROI), so dicom/ holds the "
            "segmentation of the ROIs only (and the SR of their measurements): no necrosis segment and "
            "no Parametric Maps; run without "
            "--no-maps, with a lesion ROI, for those")])
    maps_entry: dict[str, Any] = {}
    if analysis.maps is not None:
        from ceuskit.maps_io import planned_files

        # Known before anything is written, so that results.json can go first.
        maps_entry = {"directory": MAPS_DIR,
                      "files": sorted(f"{MAPS_DIR}/{name}"
                                      for name in planned_files(analysis.maps.result))}

    from ceuskit.params import Parameters

    # The effective parameters, in a parameter file's terms (`ceuskit.params`):
    # rerunning with them as --params gives the same analysis.
    effective = Parameters.from_options(analysis.options, pdf=pdf, dicom=dicom, fhir=fhir).as_dict()
    effective.pop("case_timeout_s")

    def results_of(a: Analysis) -> dict[str, Any]:
        doc = a.results()
        doc["maps"].update(maps_entry)
        doc["parameters"] = effective
        return doc

    results = results_of(analysis)
    make_out_dir(out)
    paths: dict[str, Path] = {}
    # results.json first (the numbers are ready); the web app shows it while
    # the report, the maps and the PDF are still being written.
    say("writing results.json")
    paths["results"] = write_json_atomic(out / "results.json", results)
    written_results = results
    # After results.json, before the HTML (which repeats the warning when
    # there can be no PDF); waits for the printer to have loaded WeasyPrint.
    pdf_problem = printer.unavailable_reason() if printer is not None else None
    if pdf_problem is not None:
        analysis = _with_pdf_warning(analysis, pdf_problem)
        results = results_of(analysis)
    map_images = None
    if analysis.maps is not None:
        from ceuskit.report.figures import map_images as render_map_images

        say("drawing the parametric maps")
        # One rendering for report.html, report.pdf and maps/.
        map_images = render_map_images(analysis.maps, analysis.source_name)
    say("writing the report")
    # Imported here, not before the analysis: its ~0.4 s (Jinja2, matplotlib)
    # would otherwise delay results.json.
    from ceuskit.report.html import render_html

    html = render_html(analysis, results)
    paths["report"] = write_text_atomic(out / "report.html", html)
    pdf_job = None
    if printer is not None and pdf_problem is None:
        say("printing the PDF report")
        # The child prints while this process writes the maps.
        pdf_job = printer.submit(html)
    if analysis.maps is not None:
        from ceuskit.maps_io import write_map_outputs

        say("writing the parametric maps")
        study = analysis.maps
        write_map_outputs(
            out / MAPS_DIR, study.result, study.rois, background=study.background,
            background_label=study.background_label, display_max=study.display_max,
            source_name=analysis.source_name,
            provenance=map_provenance(study, analysis.options), images=map_images)
        paths["maps"] = out / MAPS_DIR
    if pdf_job is not None:
        if analysis.maps is not None:
            say("finishing the PDF report")
        try:
            paths["pdf"] = write_bytes_atomic(out / "report.pdf", pdf_job.result())
        except PdfUnavailableError as exc:
            # The warning belongs in results.json and the HTML report too.
            analysis = _with_pdf_warning(analysis, str(exc))
            results = results_of(analysis)
            paths["report"] = write_text_atomic(out / "report.html", render_html(analysis, results))
    if dicom:
        from ceuskit.clips import clip_frame
        from ceuskit.io.dicom_derived import derived_frame_index, write_dicom_derived

        clip, local = clip_frame(analysis.cine_meta, derived_frame_index(analysis))
        written = write_dicom_derived(analysis, clips[clip], out / DICOM_DIR, progress=progress,
                                      results=results, frame_index=local)
        results["dicom"] = {"directory": DICOM_DIR,
                            "files": sorted(f"{DICOM_DIR}/{p.name}" for p in written.values())}
        paths["dicom"] = out / DICOM_DIR
    if fhir:
        from ceuskit.fhir import FHIR_FILE, results_bundle

        say("writing the FHIR bundle")
        bundle = results_bundle(results, study_instance_uid=_study_instance_uid(clips[0]),
                                subject=fhir_subject)
        make_out_dir(out / FHIR_DIR)
        paths["fhir"] = write_json_atomic(out / FHIR_FILE, bundle)
    if results is not written_results or "dicom" in results:
        paths["results"] = write_json_atomic(out / "results.json", results)
    # The set is replaced as a whole: nothing of an earlier run stays beside it.
    remove_stale(out, result_set, [p.relative_to(out).parts[0] for p in paths.values()])
    return analysis, paths


#: A FHIR reference to the patient: ``ResourceType/id`` (FHIR ids: 1-64 of A-Z a-z 0-9 - .).
_FHIR_REFERENCE = re.compile(r"[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}")


def check_fhir_subject(subject: str) -> None:
    """Refuse a ``--fhir-subject`` that is not a FHIR reference such as ``Patient/123``."""
    if not _FHIR_REFERENCE.fullmatch(subject):
        raise InputError("--fhir-subject", f"{subject[:80]!r} is not a FHIR reference",
                         "give ResourceType/id, e.g. Patient/123 (the id as the record system has it)")


def _study_instance_uid(cine_path: str | PathLike[str]) -> str | None:
    """The Study Instance UID of a DICOM cine (None for video and NPZ)."""
    from ceuskit.io import sniff_format

    if sniff_format(cine_path) != "dicom":
        return None
    from pydicom import dcmread

    with Path(cine_path).open("rb") as fh:
        ds = dcmread(fh, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
    uid = ds.get("StudyInstanceUID")
    return str(uid) if uid else None


def _pdf_warning(problem: str, pdf_name: str, others: str) -> AnalysisWarning:
    return AnalysisWarning(
        PDF_NOT_WRITTEN,
        f"{pdf_name} was not written: {problem.rstrip('.')}. {others} complete; for the PDF "
        "install the Pango libraries WeasyPrint needs (Debian/Ubuntu: apt-get install "
        "libpango-1.0-0 libpangoft2-1.0-0) and run the command again",
    )


def _with_pdf_warning(analysis: Analysis, problem: str) -> Analysis:
    warning = _pdf_warning(problem, "report.pdf", "The HTML report and results.json are")
    return replace(analysis, warnings=[*analysis.warnings, warning])


def map_provenance(study: MapStudy, options: AnalysisOptions) -> dict[str, Any]:
    """What maps.json records about how a map was made (frame shown, settings, warnings)."""
    used = study.options or options
    return {"frame_shown_index": study.frame_index,
            "frame_shown_time_s": study.frame_time_s,
            "fits_ran": study.scheduler_used,
            "dynamic_range_db": used.dynamic_range_db,
            "dynamic_range_source": used.dynamic_range_source,
            **({"dynamic_range_ci_db": list(used.dynamic_range_ci_db)}
               if used.dynamic_range_ci_db is not None else {}),
            **speckle_check_records(used),
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
    cine, panels, rois, motion, warnings = prepare_cine(cine, roi_path, options,
                                                        source_name=source_name, progress=progress)
    options, dr_warnings = resolve_dynamic_range(cine, panels, options, progress)
    warnings = warnings + dr_warnings
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


#: What `assess_to_dir` writes (and refuses to overwrite silently).
ASSESSMENT_FILES = ("assessment.json", "assessment.html", "assessment.pdf")


def read_results(path: str | PathLike[str]) -> dict[str, Any]:
    """Read a results.json written by ``ceuskit analyze``.

    Raises
    ------
    InputError
        Unreadable, not JSON, or not a ceuskit results document.
    """
    import json

    p = Path(path)
    fix = "give the results.json that 'ceuskit analyze' wrote"
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(p, "no such file", fix) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(p, f"cannot be read as JSON ({type(exc).__name__})", fix) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rois"), dict):
        raise InputError(p, "is not a ceuskit results document (no 'rois')", fix)
    return doc


def assess_case(case: ClinicalCase | None = None,
                results: dict[str, Any] | None = None) -> dict[str, Any]:
    """The assessment from a clinical case, CEUS results, or both.

    Parameters
    ----------
    case : ClinicalCase, optional
    results : dict, optional
        A results.json document; its findings are derived again from the
        quantification it holds (`ceuskit.findings.derive_findings`).

    Returns
    -------
    dict
        ``findings`` (None without results), ``assessment`` (with its
        ``summary``), ``clinical_case``, ``disclaimer``.
    """
    from ceuskit import DISCLAIMER
    from ceuskit.findings import derive_findings
    from ceuskit.pipeline import assessment_sections

    findings = None if results is None else derive_findings(results)
    return {"disclaimer": DISCLAIMER, **assessment_sections(findings, case)}


def assess_to_dir(out_dir: str | PathLike[str], *, case_path: str | PathLike[str] | None = None,
                  results_path: str | PathLike[str] | None = None,
                  overwrite: bool = False, pdf: bool = True) -> tuple[dict[str, Any], dict[str, Path]]:
    """Write assessment.json, assessment.html and assessment.pdf for a case and/or CEUS results.

    Inputs are read and validated before anything is written; files are
    written under temporary names and renamed.

    Returns
    -------
    (document, paths)
        The `assess_case` document, and ``{"json", "html", "pdf"}`` paths
        (``"pdf"`` only when the PDF engine could run; otherwise the
        document's ``warnings`` holds ``pdf-not-written`` with the reason).

    Raises
    ------
    InputError
        Neither input given, an invalid case file or results.json, or
        earlier output in ``out_dir`` without ``overwrite``.
    """
    from ceuskit.clinical.case import load_case
    from ceuskit.report.html import render_assessment_html
    from ceuskit.report.pdf import PdfUnavailableError, pdf_unavailable_reason, render_pdf

    if case_path is None and results_path is None:
        raise InputError("ceuskit assess", "nothing to assess",
                         "give --case CASE.yaml, --results results.json, or both")
    out = check_out_dir(out_dir, ASSESSMENT_FILES, overwrite=overwrite)
    case = load_case(case_path) if case_path is not None else None
    results = read_results(results_path) if results_path is not None else None
    doc = assess_case(case, results)
    html = render_assessment_html(doc, source=None if results_path is None else Path(results_path).name)
    pdf_bytes = None
    problem = pdf_unavailable_reason() if pdf else None
    if pdf and problem is None:
        try:
            pdf_bytes = render_pdf(html)
        except PdfUnavailableError as exc:
            problem = str(exc)
    if problem is not None:
        # Said in the document (and by the CLI), never left out silently.
        doc["warnings"] = [_pdf_warning(problem, "assessment.pdf",
                                        "assessment.json and assessment.html are").as_dict()]
    make_out_dir(out)
    paths = {"json": write_json_atomic(out / "assessment.json", doc),
             "html": write_text_atomic(out / "assessment.html", html)}
    if pdf_bytes is not None:
        paths["pdf"] = write_bytes_atomic(out / "assessment.pdf", pdf_bytes)
    return doc, paths


#: What `fit_tic_to_dir` writes (and refuses to overwrite silently).
FIT_FILES = ("results.json", "report.html")


def fit_tic_to_dir(csv_path: str | PathLike[str], out_dir: str | PathLike[str], *,
                   model: str = "lognormal", dynamic_range_db: float | None = None,
                   linear: bool = False, overwrite: bool = False) -> tuple[dict[str, Any], dict[str, Path]]:
    """Fit the curves of a TIC CSV and write results.json and report.html (``ceuskit fit``).

    The CSV is read and checked (`ceuskit.tic_import.read_tic_csv`), its
    values made linear power (`ceuskit.tic_import.linear_curves`), and every
    column fitted with the engine of ``ceuskit analyze``
    (`ceuskit.tic_import.fit_tic_curves`).  Everything is checked before
    anything is written; files are written atomically.

    Parameters
    ----------
    csv_path : path
        The TIC CSV (time in s, one column per ROI).
    model : str
        ``lognormal`` (default), ``gamma``, ``ldrw`` or ``auto``.
    dynamic_range_db : float, optional
        The values are display values 0..255 on a display of this dynamic range (dB).
    linear : bool
        The values are linear echo power already.  Exactly one of the two.

    Returns
    -------
    (document, paths)
        The results document and ``{"results", "report"}`` paths.

    Raises
    ------
    InputError
        A bad CSV, neither or both of ``dynamic_range_db`` and ``linear``,
        an unknown model, or earlier results in ``out_dir`` without ``overwrite``.
    """
    from ceuskit import DISCLAIMER, __version__
    from ceuskit.kinetics.descriptors import DESCRIPTOR_UNITS
    from ceuskit.report.tic_report import render_fit_html
    from ceuskit.tic_import import fit_tic_curves, linear_curves, read_tic_csv

    out = check_out_dir(out_dir, FIT_FILES, overwrite=overwrite)
    table = read_tic_csv(csv_path)
    curves = linear_curves(table, dynamic_range_db=dynamic_range_db, linear=linear,
                           source=csv_path)
    fitted = fit_tic_curves(table.times_s, curves, table.names, model)
    t = table.times_s
    doc: dict[str, Any] = {
        "ceuskit_version": __version__,
        "disclaimer": DISCLAIMER,
        "input": {
            "file": table.source,
            "kind": "time-intensity curves (CSV)",
            "time_column": table.time_column,
            "rois": list(table.names),
            "n_samples": int(t.size),
            "t_first_s": float(t[0]),
            "t_last_s": float(t[-1]),
            "values": "linear" if linear else "display",
            "dynamic_range_db": None if linear else float(dynamic_range_db or 0.0),
            "linearization": None if linear else "P = 10 ** ((g / 255 - 1) * DR / 10); display 255 -> 1.0",
        },
        "analysis": {"model": model, "engine": "ceuskit analyze (enhancement test, fit, descriptors)"},
        "units": {**DESCRIPTOR_UNITS, "qof": "1", "intensity": "a.u. (linear echo power)"},
        "rois": fitted["rois"],
        "warnings": fitted["warnings"],
    }
    html = render_fit_html(doc)
    make_out_dir(out)
    paths = {"results": write_json_atomic(out / "results.json", doc),
             "report": write_text_atomic(out / "report.html", html)}
    return doc, paths
