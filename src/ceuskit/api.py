"""The public entry points the CLI, the web app and batch runs share."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

from ceuskit.outputs import check_out_dir, make_out_dir, write_json_atomic, write_text_atomic
from ceuskit.pipeline import Analysis, AnalysisOptions, Progress, analyze

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
