"""Analysis jobs: run the pipeline off the request thread.

`JobRunner` hands each analysis to a small pool (worker processes by
default, so that two analyses run side by side and a busy one never holds
the web server's interpreter); `run_analysis` is what a worker runs.  The
worker records its stage in the database, which the page polls.

An analysis writes into ``analyses/<id>.part`` under the study's directory
and is renamed to ``analyses/<id>`` only when every file is written: a
failed run leaves the study and its previous results as they were.  While it
runs, the analysis' ``result_dir`` points at the ``.part`` directory as soon
as results.json is in it (written first, complete when it appears), so that
the page shows the results while the report, the maps and the PDF follow.

This module imports nothing of the web framework, so that worker processes
start quickly.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ceuskit.errors import InputError
from ceuskit.web.db import DONE, FAILED, RUNNING, Store
from ceuskit.web.security import scrub_paths

log = logging.getLogger("ceuskit.web")


@dataclass(frozen=True)
class AnalysisJob:
    """Everything a worker needs (plain values: it crosses a process boundary).

    Attributes
    ----------
    analysis_id, study_id : str
        Server-generated ids.
    db_url : str
        Database the worker reports to.
    data_dir : str
        The app's data directory; the paths below are relative to it.
    cine_path : str
        Stored cine, relative to `data_dir`.
    rois : dict
        ROI document (contract format).
    settings : dict
        Keyword arguments of `ceuskit.pipeline.AnalysisOptions`.
    case : dict or None
        Clinical case data (validated again in the worker).
    dicom : bool
        Also write the DICOM SEG, SR and Parametric Maps into ``dicom/`` (a
        DICOM cine and a configured PACS to send them to); a failure there
        leaves ``dicom/`` out and does not fail the analysis.
    """

    analysis_id: str
    study_id: str
    db_url: str
    data_dir: str
    cine_path: str
    rois: dict[str, Any]
    settings: dict[str, Any]
    case: dict[str, Any] | None = None
    dicom: bool = False


_STORES: dict[str, Store] = {}
_STORES_LOCK = threading.Lock()


def _store(url: str) -> Store:
    # One engine per database and process: workers are reused across jobs.
    with _STORES_LOCK:
        if url not in _STORES:
            _STORES[url] = Store(url)
        return _STORES[url]


def options_from_settings(settings: dict[str, Any]) -> Any:
    """`AnalysisOptions` from a study's stored settings (InputError when invalid)."""
    from ceuskit.linearize import DEFAULT_DYNAMIC_RANGE_DB
    from ceuskit.pipeline import AnalysisOptions

    panel = settings.get("panel")
    dr = settings.get("dynamic_range_db", DEFAULT_DYNAMIC_RANGE_DB)
    auto = dr == "auto"
    return AnalysisOptions(
        dynamic_range_db=DEFAULT_DYNAMIC_RANGE_DB if auto else float(dr),
        dynamic_range_source="auto" if auto else None,
        colour_map=str(settings.get("colour_map", "auto")),
        fps=None if settings.get("fps") is None else float(settings["fps"]),
        panel=None if panel is None else (int(panel[0]), int(panel[1]), int(panel[2]), int(panel[3])),
        model=str(settings.get("model", "lognormal")),
        motion=str(settings.get("motion", "auto")),
        reference_frame=None if settings.get("reference_frame") is None
        else int(settings["reference_frame"]),
        injection_time_s=float(settings.get("injection_time_s") or 0.0),
    )


def _case_argument(case: dict[str, Any] | None) -> Any:
    """The study's case as `ClinicalCase`, or None when there is none (or no case module)."""
    if not case:
        return None
    try:
        from ceuskit.clinical.case import parse_case  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return parse_case(case, "clinical case")


def one_line(exc: BaseException) -> str:
    """A one-line message for the page: InputError's own text, else the exception's type."""
    if isinstance(exc, InputError):
        return str(exc)
    text = " ".join(str(exc).split())
    return f"internal error: {type(exc).__name__}: {text}"[:500]


def run_analysis(job: AnalysisJob) -> str:
    """Run one analysis and record its outcome; never raises.

    Returns
    -------
    str
        The final status (``"done"`` or ``"failed"``).
    """
    store = _store(job.db_url)
    data = Path(job.data_dir)
    study_dir = data / "studies" / job.study_id
    final = study_dir / "analyses" / job.analysis_id
    part = final.with_name(final.name + ".part")
    last = {"stage": ""}
    shown = {"partial": False}

    def progress(message: str) -> None:
        # The cine's file name is server-chosen, so stage messages carry no identifiers.
        if message != last["stage"]:
            last["stage"] = message
            partial = None
            if not shown["partial"] and (part / "results.json").is_file():
                # results.json is written first (and complete when it appears): the
                # page shows it while the report, the maps and the PDF are written.
                shown["partial"] = True
                partial = str(part.relative_to(data))
            store.set_stage(job.analysis_id, RUNNING, message[:200], result_dir=partial)

    try:
        from ceuskit.api import analyze_to_dir

        progress("starting")
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        roi_path = part / "rois.json"
        roi_path.write_text(json.dumps(job.rois, indent=2), encoding="utf-8")
        (part / "settings.json").write_text(json.dumps(job.settings, indent=2), encoding="utf-8")
        options = options_from_settings(job.settings)
        case = _case_argument(job.case)
        if case is not None:
            (part / "case.json").write_text(json.dumps(job.case, indent=2), encoding="utf-8")
        analysis, _paths = analyze_to_dir(data / job.cine_path, roi_path, part, options, overwrite=False,
                                          progress=progress, case=case)
        if job.dicom:
            _write_dicom(analysis, data / job.cine_path, part, progress)
        os.replace(part, final)
        store.set_stage(job.analysis_id, DONE, None, finished=True,
                        result_dir=str(final.relative_to(data)))
        log.info("analysis %s done", job.analysis_id)
        return DONE
    except BaseException as exc:  # the worker must survive anything one study does
        shutil.rmtree(part, ignore_errors=True)
        msg = scrub_paths(one_line(exc), data)
        if not isinstance(exc, InputError):
            log.exception("analysis %s failed", job.analysis_id)
        store.set_stage(job.analysis_id, FAILED, None, error=msg, finished=True)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return FAILED


def _write_dicom(analysis: Any, cine: Path, part: Path, progress: Callable[[str], None]) -> None:
    """DICOM SEG/SR/maps of a finished analysis into ``part/dicom`` (left out if they cannot be written)."""
    from ceuskit.api import DICOM_DIR
    from ceuskit.io.dicom_derived import write_dicom_derived

    out = part / DICOM_DIR
    try:
        results = json.loads((part / "results.json").read_text(encoding="utf-8"))
        write_dicom_derived(analysis, cine, out, progress=progress, results=results)
    except Exception as exc:
        shutil.rmtree(out, ignore_errors=True)
        log.warning("DICOM objects of an analysis not written: %s", one_line(exc))


class JobRunner:
    """A small pool that runs `run_analysis` jobs.

    Parameters
    ----------
    workers : int
        Analyses that run at once.
    mode : {"process", "thread"}
        Worker processes (default: an analysis cannot slow the server's
        interpreter, and matplotlib's global state stays per process) or
        threads (lighter; for tests and tiny deployments).
    """

    def __init__(self, workers: int = 2, mode: str = "process") -> None:
        if mode not in ("process", "thread"):
            raise ValueError(f"mode must be 'process' or 'thread', got {mode!r}")
        self.mode = mode
        self.workers = max(1, int(workers))
        self._executor: Executor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> Executor:
        with self._lock:
            if self._executor is None:
                if self.mode == "process":
                    # spawn: forking a server that runs threads can deadlock the child.
                    ctx = multiprocessing.get_context("spawn")
                    self._executor = ProcessPoolExecutor(self.workers, mp_context=ctx)
                else:
                    self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="ceuskit-job")
            return self._executor

    def submit(self, job: AnalysisJob, on_lost: Callable[[AnalysisJob, str], None]) -> Future[str]:
        """Queue a job; `on_lost` records a failure if the worker itself dies."""
        future = self._pool().submit(run_analysis, job)

        def done(f: Future[str]) -> None:
            exc = f.exception() if not f.cancelled() else None
            if f.cancelled() or exc is not None:
                on_lost(job, "the analysis worker stopped unexpectedly; run it again"
                        if exc is not None else "cancelled: the server stopped")
                if exc is not None:
                    # A dead process pool cannot take new work: start a fresh one next time.
                    with self._lock:
                        self._executor = None

        future.add_done_callback(done)
        return future

    def shutdown(self) -> None:
        with self._lock:
            ex, self._executor = self._executor, None
        if ex is not None:
            ex.shutdown(wait=False, cancel_futures=True)


def job_dict(job: AnalysisJob) -> dict[str, Any]:
    return asdict(job)
