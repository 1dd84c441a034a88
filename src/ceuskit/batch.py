"""Cohorts: one analysis per manifest row, isolated, resumable, on Dask when asked.

``ceuskit batch MANIFEST.csv --out DIR`` reads the manifest (`read_manifest`),
decides which cases need running (`plan`: a case whose inputs and parameters
hash to the key recorded beside its results is skipped), runs the others
(`run_case`, each in its own ``ceuskit analyze`` child process, so that a
crash, a hang or a memory blow-up stays inside its case and a time limit can
stop it), and writes what the cohort is: ``cases/<id>/`` (what ``analyze``
writes, plus ``batch-case.json``), ``summary.csv`` (`ceuskit.batch_summary`),
``provenance.json``, the results database and ``cohort.html``.

Schedulers: ``none`` runs the cases from this process (``--jobs`` at a
time); ``local`` starts a Dask LocalCluster sized to the machine;
``tcp://HOST:PORT`` submits to an existing Dask cluster, whose workers must
see the manifest's files and DIR at the same paths (shared storage) and have
the same ceuskit installed.  A case's results do not depend on where it ran.

Every file is written under a temporary name and renamed; a case's directory
is swapped in whole, so a run stopped at any point leaves only complete cases
(and hidden ``.tmp-*`` directories, removed by the next run).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path
from typing import Any

from ceuskit import __version__
from ceuskit.cohort_db import file_case_study, open_store, store_cohort
from ceuskit.errors import InputError, read_user_text
from ceuskit.outputs import write_json_atomic, write_text_atomic
from ceuskit.params import Parameters, load_params
from ceuskit.web.db import Store

__all__ = ["CASE_RECORD", "BatchResult", "CaseSpec", "plan", "read_manifest", "run_batch",
           "run_case"]

#: Beside a case's results: its status, the key of its inputs, times (`run_case`).
CASE_RECORD = "batch-case.json"
CASES_DIR = "cases"
#: The database file in DIR when no ``--db`` is given: the web app's default name, so
#: ``ceuskit serve --data DIR`` opens the cohort's cases.
DEFAULT_DB_NAME = "ceuskit.db"
_ID = re.compile(r"[A-Za-z0-9._-]+")
LABELS = ("tumor", "bland", "other")
REQUIRED_COLUMNS = ("id", "cine", "roi")
OPTIONAL_COLUMNS = ("case", "label", "clip_start_s")
#: Separates the clips of one exam in the manifest's ``cine`` and ``clip_start_s`` cells.
CLIP_SEPARATOR = ";"
OK, FAILED, TIMEOUT = "ok", "failed", "timeout"


@dataclass(frozen=True)
class CaseSpec:
    """One manifest row: a case to analyse.

    Attributes
    ----------
    id : str
        Unique case id (``[A-Za-z0-9._-]+``), the name of ``cases/<id>/``.
    cine, roi : Path
        The cine (an exam's first clip) and its ROI file (absolute).
    clips : tuple of Path
        An exam's further clips, in recording order (absolute; empty for a
        single cine).  `cines` gives them all.
    clip_starts_s : tuple of float or None
        Each clip's start on the exam clock (s), when the manifest gives them
        (``--clip-start-s``); otherwise DICOM clips' acquisition times place them.
    case : Path or None
        The clinical case file (YAML), if given.
    label : str or None
        ``tumor``, ``bland`` or ``other``: for the cohort statistics only.
    extra : dict
        The manifest's other columns, copied into summary.csv.
    row : int
        Line number in the manifest (for messages).
    """

    id: str
    cine: Path
    roi: Path
    case: Path | None = None
    label: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    row: int = 0
    clips: tuple[Path, ...] = ()
    clip_starts_s: tuple[float, ...] | None = None

    @property
    def cines(self) -> tuple[Path, ...]:
        """Every clip of the case, in order (one for a single cine)."""
        return (self.cine, *self.clips)

    def inputs(self) -> dict[str, Path]:
        """The input files by role (``cine``, then ``cine_2``, ... for further
        clips, ``roi``, and ``case`` when given)."""
        files = {"cine": self.cine}
        files.update({f"cine_{k}": clip for k, clip in enumerate(self.clips, start=2)})
        files["roi"] = self.roi
        if self.case is not None:
            files["case"] = self.case
        return files


def read_manifest(path: str | PathLike[str]) -> list[CaseSpec]:
    """Read and check a cohort manifest (CSV with a header row).

    Columns ``id``, ``cine``, ``roi`` and optionally ``case``, ``label`` and
    ``clip_start_s``; paths are relative to the manifest's folder.  An exam
    recorded as several clips is one row: its clips in the ``cine`` cell,
    separated by ``;`` in recording order, and optionally their start times
    (s on the exam clock, ``;``-separated, one per clip) in ``clip_start_s``
    (what ``ceuskit analyze CLIP1 CLIP2 ... --clip-start-s`` takes).  Missing input files are
    not an error here: such a case fails alone when it runs.

    Raises
    ------
    InputError
        No such file, not CSV, a required column missing, an empty or
        malformed or duplicated id, an empty cine/roi cell (or an empty clip
        in it), a label other than tumor/bland/other, or clip start times
        that are not numbers, one per clip; the message names the line.
    """
    p = Path(path)
    text = read_user_text(p, "manifest", "CSV", encoding="utf-8-sig")
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise InputError(p, f"has no {', '.join(repr(c) for c in missing)} column"
                         f"{'s' if len(missing) > 1 else ''} (header: {', '.join(header) or 'empty'})",
                         "the first line must name the columns: id,cine,roi[,case][,label]")
    base = p.resolve().parent
    cases: list[CaseSpec] = []
    seen: dict[str, int] = {}
    for line, raw in enumerate(reader, start=2):
        row = {str(k).strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(row.values()):
            continue
        cid = row.get("id", "")
        if not _ID.fullmatch(cid):
            raise InputError(p, f"line {line}: id {cid!r} is not made of letters, digits, '.', '_' "
                             "and '-'", "give every case a short unique id such as P001")
        if cid in seen:
            raise InputError(p, f"line {line}: id {cid!r} is used again (first on line {seen[cid]})",
                             "give every case a unique id")
        seen[cid] = line
        for col in ("cine", "roi"):
            if not row.get(col):
                raise InputError(p, f"line {line} (case {cid}): the {col} cell is empty",
                                 f"give the {col} file's path, relative to the manifest")
        label = row.get("label") or None
        if label is not None and label not in LABELS:
            raise InputError(p, f"line {line} (case {cid}): label {label!r} is not one of "
                             f"{', '.join(LABELS)}", "use tumor, bland or other, or leave it empty")
        extra = {k: v for k, v in row.items() if k not in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)}
        cines, starts = _clips(p, line, cid, row["cine"], row.get("clip_start_s", ""))
        cases.append(CaseSpec(id=cid, cine=base / cines[0], roi=base / row["roi"],
                              case=(base / row["case"]) if row.get("case") else None,
                              label=label, extra=extra, row=line,
                              clips=tuple(base / c for c in cines[1:]), clip_starts_s=starts))
    if not cases:
        raise InputError(p, "lists no cases", "add one row per case under the header")
    return cases


def _clips(manifest: Path, line: int, cid: str, cell: str, starts_cell: str
           ) -> tuple[list[str], tuple[float, ...] | None]:
    """The clips of a ``cine`` cell and the start times of a ``clip_start_s`` cell."""
    where = f"line {line} (case {cid})"
    cines = [c.strip() for c in cell.split(CLIP_SEPARATOR)]
    if not all(cines):
        raise InputError(manifest, f"{where}: the cine cell {cell!r} has an empty clip",
                         f"list an exam's clips as CLIP1{CLIP_SEPARATOR}CLIP2{CLIP_SEPARATOR}..., "
                         "each a path relative to the manifest")
    if not starts_cell.strip():
        return cines, None
    if len(cines) == 1:
        raise InputError(manifest, f"{where}: clip_start_s is given for a single cine",
                         "clip start times are only with several clips in the cine cell; "
                         "leave it empty")
    parts = [v.strip() for v in starts_cell.split(CLIP_SEPARATOR)]
    try:
        starts = tuple(float(v) for v in parts)
    except ValueError:
        starts = ()
    if len(starts) != len(parts) or not all(map(math.isfinite, starts)):
        raise InputError(manifest, f"{where}: clip_start_s {starts_cell!r} is not a finite number "
                         "per clip", f"give each clip's start in s, such as 0{CLIP_SEPARATOR}90")
    if len(starts) != len(cines):
        raise InputError(manifest, f"{where}: {len(cines)} clips but {len(starts)} clip "
                         f"start{'s' if len(starts) != 1 else ''} ({starts_cell!r})",
                         "give one finite start time (s) per clip, in the order of the clips")
    return cines, starts


def sha256_file(path: Path, chunk: int = 1 << 22) -> str | None:
    """SHA-256 of a file's bytes (hex), or None when it cannot be read."""
    h = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def parameters_for_cases(params: Parameters) -> dict[str, Any]:
    """The parameters that decide a case's results (the time limit does not)."""
    doc = params.as_dict()
    doc.pop("case_timeout_s")
    return doc


def case_key(spec: CaseSpec, params: Parameters, hashes: dict[str, str | None]) -> str:
    """The key a case's results are valid for: its inputs' hashes, the parameters, the version."""
    doc: dict[str, Any] = {"inputs": hashes, "parameters": parameters_for_cases(params),
                           "ceuskit": __version__}
    if spec.clip_starts_s is not None:  # (absent otherwise: earlier cohorts' keys stay valid)
        doc["clip_starts_s"] = list(spec.clip_starts_s)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class PlannedCase:
    """A case and what the run does with it (``run`` or ``skip``)."""

    spec: CaseSpec
    key: str
    hashes: dict[str, str | None]
    action: str
    record: dict[str, Any] | None = None


def read_case_record(case_dir: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((case_dir / CASE_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def plan(cases: Sequence[CaseSpec], params: Parameters, out: Path) -> list[PlannedCase]:
    """Decide per case: ``skip`` when its recorded results are ``ok`` for the same key, else ``run``."""
    planned = []
    for spec in cases:
        hashes = {role: sha256_file(p) for role, p in spec.inputs().items()}
        key = case_key(spec, params, hashes)
        record = read_case_record(out / CASES_DIR / spec.id)
        done = record is not None and record.get("status") == OK and record.get("key") == key \
            and (out / CASES_DIR / spec.id / "results.json").is_file()
        planned.append(PlannedCase(spec, key, hashes, "skip" if done else "run", record))
    return planned


def _error_line(stderr: str, returncode: int) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if not lines:
        return f"the analysis stopped with exit status {returncode} and no message"
    last = lines[-1]
    for prefix in ("ceuskit: error: ", "ceuskit: "):
        if last.startswith(prefix):
            last = last[len(prefix):]
            break
    return last[:1000]


def _swap_in(tmp: Path, final: Path) -> None:
    """Replace ``final`` by the complete directory ``tmp`` (the old one removed after)."""
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{secrets.token_hex(4)}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def run_case(job: dict[str, Any]) -> dict[str, Any]:
    """Run one case in a ``ceuskit analyze`` child process and file its results.

    Runs where the scheduler puts it (this process, or a Dask worker): every
    path in ``job`` must be valid there.  The results go to a hidden
    temporary directory beside ``cases/<id>``, with ``batch-case.json``, and
    are swapped in whole; a failed or timed-out case gets a directory with its
    record only.

    Parameters
    ----------
    job : dict
        ``id``, ``cines`` (the clips, one for a single cine), ``clip_starts_s``
        (or None), ``roi``, ``case`` (or None), ``params_file`` (the
        effective parameter file in DIR), ``cases_dir``, ``key``, ``hashes``,
        ``timeout_s`` (s).

    Returns
    -------
    dict
        The case record: ``id``, ``status`` (ok|failed|timeout), ``error``,
        ``key``, ``inputs``, ``started``, ``finished``, ``elapsed_s``, ``host``.
    """
    import platform

    cases_dir = Path(job["cases_dir"])
    tmp = cases_dir / f".tmp-{job['id']}-{secrets.token_hex(4)}"
    tmp.mkdir(parents=True)
    cmd = [sys.executable, "-m", "ceuskit.cli", "analyze", *map(str, job["cines"]), "--roi",
           str(job["roi"]), "--out", str(tmp / "out"), "--params", str(job["params_file"]), "--quiet"]
    if job.get("clip_starts_s"):
        cmd += ["--clip-start-s", *(repr(float(v)) for v in job["clip_starts_s"])]
    if job.get("case"):
        cmd += ["--case", str(job["case"])]
    started = datetime.now(UTC)
    t0 = time.monotonic()
    status, error = OK, None
    env = {k: v for k, v in os.environ.items() if k != "CEUSKIT_PROGRESS_TIMES"}
    try:
        # In the batch's process group: stopping the batch (Ctrl-C, a kill of the group)
        # stops its cases too, so no orphan writes into a directory the next run removes.
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=env)
        try:
            _, stderr = proc.communicate(timeout=float(job["timeout_s"]))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            status, error = TIMEOUT, (f"stopped after {float(job['timeout_s']):g} s (the case "
                                      "time limit, case_timeout_s in the parameter file)")
        else:
            if proc.returncode != 0:
                status, error = FAILED, _error_line(stderr, proc.returncode)
    except OSError as exc:
        status, error = FAILED, f"the analysis could not be started ({exc})"
    record = {"id": job["id"], "status": status, "error": error, "key": job["key"],
              "inputs": job["hashes"], "started": started.isoformat(timespec="seconds"),
              "finished": datetime.now(UTC).isoformat(timespec="seconds"),
              "elapsed_s": round(time.monotonic() - t0, 3), "host": platform.node()}
    case_tmp = tmp / "case"
    if status == OK:
        os.replace(tmp / "out", case_tmp)
    else:
        shutil.rmtree(tmp / "out", ignore_errors=True)
        case_tmp.mkdir()
    write_json_atomic(case_tmp / CASE_RECORD, record)
    _swap_in(case_tmp, cases_dir / job["id"])
    shutil.rmtree(tmp, ignore_errors=True)
    return record


@dataclass
class BatchResult:
    """What a batch run did.

    Attributes
    ----------
    records : dict
        The case record of every case (`run_case`), by id, in manifest order.
    ran, skipped : list of str
        Ids of the cases run this time and of those whose results were kept.
    paths : dict
        ``summary``, ``provenance``, ``cohort`` (HTML), ``db`` (the URL as text).
    """

    records: dict[str, dict[str, Any]]
    ran: list[str]
    skipped: list[str]
    paths: dict[str, Any]

    @property
    def n_failed(self) -> int:
        return sum(r.get("status") != OK for r in self.records.values())


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory", "choose another --out")
    if out.is_dir():
        entries = [e.name for e in out.iterdir()]
        is_batch = (out / "provenance.json").is_file() or (out / CASES_DIR).is_dir()
        if entries and not is_batch:
            raise InputError(out, "is not empty and holds no earlier batch run",
                             "choose a new --out (a batch directory is resumed, anything else is "
                             "never written into)")


def _progress_bar(total: int) -> Callable[[int, int], None] | None:
    if not sys.stderr.isatty():
        return None

    def show(done: int, failed: int) -> None:
        width = 30
        filled = int(width * done / max(total, 1))
        extra = f", {failed} failed" if failed else ""
        end = "\n" if done >= total else ""
        print(f"\rceuskit batch: [{'#' * filled}{' ' * (width - filled)}] {done}/{total} cases{extra}",
              end=end, file=sys.stderr, flush=True)

    return show


def _execute(jobs: list[dict[str, Any]], scheduler: str, n_jobs: int | None,
             on_done: Callable[[dict[str, Any]], None]) -> str:
    """Run the jobs on the scheduler; returns a description of where they ran."""
    if not jobs:
        return scheduler
    if scheduler == "none":
        from concurrent.futures import ThreadPoolExecutor, as_completed

        # Each case is a child process: threads here only wait for them.
        with ThreadPoolExecutor(max_workers=max(1, n_jobs or 1)) as pool:
            futures = [pool.submit(run_case, j) for j in jobs]
            for fut in as_completed(futures):
                on_done(fut.result())
        return f"none (in-process, {max(1, n_jobs or 1)} at a time)"
    from dask.distributed import Client, LocalCluster
    from dask.distributed import as_completed as dask_completed

    cluster = None
    if scheduler == "local":
        n = n_jobs or os.cpu_count() or 1
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
        where = f"local (Dask LocalCluster, {n} workers)"
    else:
        try:
            client = Client(scheduler, timeout=10)
        except (OSError, TimeoutError) as exc:
            raise InputError("--scheduler", f"cannot reach the Dask scheduler at {scheduler} ({exc})",
                             "start it (dask scheduler) or give its tcp://HOST:PORT") from None
        where = f"{scheduler} (Dask cluster)"
    try:
        tasks = [client.submit(run_case, j, key=f"ceuskit-case-{j['id']}-{secrets.token_hex(3)}",
                               pure=False) for j in jobs]
        for task in dask_completed(tasks):
            on_done(task.result())
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return where


def _versions() -> dict[str, str]:
    from importlib import metadata

    names = ("numpy", "scipy", "numba", "pydicom", "highdicom", "av", "opencv-python-headless",
             "scikit-image", "dask", "distributed", "sqlalchemy", "matplotlib", "weasyprint",
             "pyyaml")
    out = {"ceuskit": __version__, "python": sys.version.split()[0]}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return out


def run_batch(manifest: str | PathLike[str], out_dir: str | PathLike[str], *,
              params_path: str | PathLike[str] | None = None, scheduler: str = "none",
              db_url: str | None = None, jobs: int | None = None, report: bool = True,
              progress: Callable[[str], None] | None = None) -> BatchResult:
    """Run a cohort: every manifest row that needs it, then the summary, provenance, database, report.

    Parameters
    ----------
    manifest : path
        The cohort's CSV (`read_manifest`).
    out_dir : path
        The batch directory; a directory of an earlier run is resumed (cases
        whose inputs and parameters are unchanged are skipped; changed and
        failed ones run again).
    params_path : path, optional
        A parameter file (`ceuskit.params`); the defaults otherwise.
    scheduler : str
        ``none``, ``local`` or ``tcp://HOST:PORT``.
    db_url : str, optional
        SQLAlchemy URL of the results database; default SQLite
        ``DIR/ceuskit.db``.
    jobs : int, optional
        Cases at a time (``none``) or workers (``local``).
    report : bool
        Write cohort.html (and cohort.pdf).

    Raises
    ------
    InputError
        A bad manifest, parameter file, scheduler or output directory.
    """
    say = progress or (lambda _m: None)
    if scheduler not in ("none", "local") and not re.fullmatch(r"tcp://[^\s/:]+:\d{1,5}", scheduler):
        raise InputError("--scheduler", f"{scheduler!r} is not none, local or tcp://HOST:PORT",
                         "e.g. --scheduler local, or --scheduler tcp://10.0.0.5:8786")
    cases = read_manifest(manifest)
    params = load_params(params_path) if params_path is not None else Parameters()
    params.analysis_options()  # validated before any case runs
    out = Path(out_dir).resolve()
    _check_out(out)
    # A bad --db fails now, before anything is written (the default SQLite file
    # lives in DIR, so it is opened once DIR exists).
    store = open_store(db_url) if db_url is not None else None
    cases_dir = out / CASES_DIR
    cases_dir.mkdir(parents=True, exist_ok=True)
    for leftover in cases_dir.glob(".tmp-*"):  # from a run that was stopped
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in cases_dir.glob(".old-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    import yaml

    params_file = write_text_atomic(out / "parameters.yaml", yaml.safe_dump(
        parameters_for_cases(params), sort_keys=False))
    url = db_url or f"sqlite:///{out / DEFAULT_DB_NAME}"
    if store is None:
        store = open_store(url)
    try:
        return _run(cases, params, params_path, manifest, out, store, url, scheduler, jobs,
                    report, say, params_file)
    finally:
        store.dispose()


def _run(cases: list[CaseSpec], params: Parameters, params_path: str | PathLike[str] | None,
         manifest: str | PathLike[str], out: Path, store: Store, url: str, scheduler: str,
         jobs: int | None, report: bool, say: Callable[[str], None], params_file: Path) -> BatchResult:
    """The run itself (`run_batch`, once the inputs are checked and the database is open)."""
    import platform

    cases_dir = out / CASES_DIR
    specs = {c.id: c for c in cases}
    filed: dict[str, str | None] = {}
    started = datetime.now(UTC)
    say(f"checking {len(cases)} cases")
    planned = plan(cases, params, out)
    to_run = [pc for pc in planned if pc.action == "run"]
    records: dict[str, dict[str, Any]] = {pc.spec.id: pc.record or {} for pc in planned}
    bar = _progress_bar(len(to_run))
    done = [0, 0]

    def on_done(rec: dict[str, Any]) -> None:
        records[rec["id"]] = rec
        if rec["status"] == OK:
            # Filed while the next cases run: the web study costs no extra wall time.
            filed[rec["id"]] = file_case_study(store, out, specs[rec["id"]])
        done[0] += 1
        done[1] += rec["status"] != OK
        if bar is not None:
            bar(done[0], done[1])
        else:
            say(f"case {rec['id']}: {rec['status']}" + (f" ({rec['error']})" if rec["error"] else ""))

    say(f"running {len(to_run)} cases, keeping {len(planned) - len(to_run)} unchanged")
    jobs_list = [{"id": pc.spec.id, "cines": [str(c) for c in pc.spec.cines],
                  "clip_starts_s": (None if pc.spec.clip_starts_s is None
                                    else list(pc.spec.clip_starts_s)),
                  "roi": str(pc.spec.roi),
                  "case": str(pc.spec.case) if pc.spec.case else None,
                  "params_file": str(params_file), "cases_dir": str(cases_dir), "key": pc.key,
                  "hashes": pc.hashes, "timeout_s": params.case_timeout_s} for pc in to_run]
    where = _execute(jobs_list, scheduler, jobs, on_done)
    finished = datetime.now(UTC)

    from ceuskit.batch_summary import summary_rows, write_summary

    rows = summary_rows(cases, records, cases_dir)
    paths: dict[str, Any] = {"summary": write_summary(out / "summary.csv", rows)}
    provenance = {
        "ceuskit_version": __version__,
        "versions": _versions(),
        "manifest": {"path": str(Path(manifest).resolve()),
                     "sha256": sha256_file(Path(manifest))},
        "parameters": params.as_dict(),
        "parameter_file": None if params_path is None else {
            "path": str(Path(params_path).resolve()), "sha256": sha256_file(Path(params_path))},
        "scheduler": where,
        "host": platform.node(),
        "platform": platform.platform(),
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "cases": {cid: {"status": r.get("status"), "inputs": r.get("inputs"),
                        "key": r.get("key"), "ran_this_time": cid in {p.spec.id for p in to_run},
                        "elapsed_s": r.get("elapsed_s"), "host": r.get("host")}
                  for cid, r in records.items()},
        "disclaimer": _disclaimer(),
    }
    paths["provenance"] = write_json_atomic(out / "provenance.json", provenance)
    say("writing the results database")
    store_cohort(store, out, cases, records, rows, filed)
    paths["db"] = url
    if report:
        from ceuskit.cohort_report import write_cohort_report

        say("writing the cohort report")
        paths.update({f"cohort_{k}": v for k, v in write_cohort_report(rows, out).items()})
    return BatchResult(records=records, ran=[pc.spec.id for pc in to_run],
                       skipped=[pc.spec.id for pc in planned if pc.action == "skip"], paths=paths)


def _disclaimer() -> str:
    from ceuskit import DISCLAIMER

    return DISCLAIMER

