"""The FastAPI application: pages and the HTTP API they use.

`create_app` builds it from a `WebConfig`.  Every page works through the
JSON API under ``/api`` (documented at ``/docs``), so a script can do what
the browser does: upload a cine, set ROIs, settings and the clinical case,
start an analysis, poll it and fetch its files.

Security: ids in URLs are server-generated hex and checked by pattern;
client file names are only displayed; uploads are size-limited and sniffed;
when a token is configured, every request must present it (``Authorization:
Bearer``, the cookie set by ``/login``, or ``?token=`` once); the log names
ids and status codes only, never file names or metadata.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, unquote, urlencode

from fastapi import Body, FastAPI, Header, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from sqlalchemy import select

from ceuskit import DISCLAIMER, __version__
from ceuskit.errors import InputError
from ceuskit.io.dicom_net import load_nodes
from ceuskit.web import casefile, intake, pacs, studies
from ceuskit.web.db import DONE, FAILED, QUEUED, RUNNING, AnalysisRow, Store, Study, new_id, utcnow
from ceuskit.web.jobs import AnalysisJob, JobRunner
from ceuskit.web.security import (
    ID_PATTERN,
    SECURITY_HEADERS,
    SIMPLE_FORM_TYPES,
    STATE_CHANGING,
    TOKEN_COOKIE,
    LoginThrottle,
    cross_site,
    display_name,
    scrub_paths,
    sniff_upload,
    stored_cine,
    token_matches,
    valid_result_name,
)

log = logging.getLogger("ceuskit.web")
HERE = Path(__file__).parent
Id = Annotated[str, PathParam(pattern=ID_PATTERN, description="server-generated id (32 hex digits)")]
#: Files an analysis directory may hold that the app serves, by media type.
MEDIA_TYPES = {".json": "application/json", ".html": "text/html; charset=utf-8", ".pdf": "application/pdf",
               ".png": "image/png", ".csv": "text/csv", ".npy": "application/octet-stream",
               ".gz": "application/gzip", ".txt": "text/plain; charset=utf-8"}
#: Files in the data directory that the library listing never offers.
_NOT_CINES = {"ceuskit.db", "ceuskit.db-wal", "ceuskit.db-shm", "ceuskit.db-journal"}
_HEAD_BYTES = 256
#: Wrong login tokens allowed per client address and window (s) before it must wait.
LOGIN_ATTEMPTS = 5
LOGIN_WINDOW_S = 60.0


@dataclass
class WebConfig:
    """How the app runs.

    Attributes
    ----------
    data_dir : Path
        Studies, results and (by default) the SQLite database.
    db_url : str or None
        SQLAlchemy URL; None = ``sqlite:///DATA_DIR/ceuskit.db``.
    token : str or None
        Access token every request must present; None = no token (loopback only:
        ``ceuskit serve`` refuses other addresses without one).
    max_upload_mb : float
        Largest accepted upload in MiB.
    workers : int
        Analyses that run at once.
    job_mode : {"process", "thread"}
        How analyses run (see `ceuskit.web.jobs.JobRunner`).
    allowed_hosts : list of str or None
        Host names the Host header may carry (a guard against DNS rebinding
        when bound to loopback); None = any.
    demo : dict
        Overrides of `ceuskit.simulate.SimulationSpec` for "load demo study"
        (a shorter cine keeps tests quick).
    pacs_config : Path or None
        DICOM nodes the app may query, retrieve from and send results to
        (`ceuskit.io.dicom_net.load_nodes`); None = ``DATA_DIR/pacs.yaml``
        when it exists.  With nodes, analyses of DICOM cines also write their
        SEG, SR and Parametric Maps (``dicom/``) so that they can be sent.
    """

    data_dir: Path
    db_url: str | None = None
    token: str | None = None
    max_upload_mb: float = 2048.0
    workers: int = 2
    job_mode: str = "process"
    allowed_hosts: list[str] | None = None
    demo: dict[str, Any] = field(default_factory=dict)
    pacs_config: Path | None = None

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{(Path(self.data_dir) / 'ceuskit.db').resolve()}"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class DemoRequest(BaseModel):
    """Options of a simulated demo study (a venous tumour with a necrotic core)."""

    seed: int = Field(0, ge=0, le=2**31 - 1)
    with_rois: bool = Field(True, description="start with the phantom's own ROIs")
    new: bool = Field(False, description="simulate a new copy even when this demo study exists "
                                         "(by default the existing one is returned, status 200)")


class ImportRequest(BaseModel):
    name: str = Field(..., min_length=1, max_length=255, description="a file name from GET /api/library")


def _error(status: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail=message)


def _iso(dt: Any) -> str | None:
    return None if dt is None else dt.isoformat()


def analysis_json(row: AnalysisRow, data_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id, "study_id": row.study_id, "status": row.status, "stage": row.stage,
        "created": _iso(row.created), "finished": _iso(row.finished), "error": row.error,
        "files": [],
    }
    base = result_base(row, data_dir)
    if base is not None:
        out["files"] = studies.result_files(base)
    # Running with results.json already written: report, PDF and maps still to come.
    out["partial"] = row.status == RUNNING and base is not None
    return out


def result_base(row: AnalysisRow, data_dir: Path) -> Path | None:
    """Where an analysis' files are: its directory when done, its ``.part`` directory while
    running once results.json is written (`ceuskit.web.jobs`); None otherwise."""
    if not row.result_dir or row.status not in (DONE, RUNNING):
        return None
    base = data_dir / row.result_dir
    if row.status == RUNNING and not base.is_dir():
        # Renamed into place a moment before the status says done.
        final = base.with_name(base.name.removesuffix(".part"))
        base = final if final.is_dir() else base
    return base


def create_app(config: WebConfig) -> FastAPI:
    """Build the web app for a data directory.

    The database tables are created when missing; analyses a previous server
    left queued or running are marked failed (their results were never
    swapped in, so the study's last good analysis is still shown).
    """
    data_dir = Path(config.data_dir)
    (data_dir / "studies").mkdir(parents=True, exist_ok=True)
    store = Store(config.database_url)
    interrupted = store.interrupt_unfinished()
    if interrupted:
        log.info("%d unfinished analyses from an earlier run marked failed", interrupted)
    for part in (data_dir / "studies").glob("*/analyses/*.part"):
        shutil.rmtree(part, ignore_errors=True)
    pacs_file = pacs.settings_file(data_dir, config.pacs_config)
    pacs_nodes = {} if pacs_file is None else load_nodes(pacs_file)
    runner = JobRunner(config.workers, config.job_mode)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            runner.shutdown()
            store.dispose()

    app = FastAPI(
        title="ceuskit", version=__version__, lifespan=lifespan,
        description="Quantitative CEUS and venous-mass work-up. " + DISCLAIMER,
    )
    app.state.config = config
    app.state.store = store
    app.state.runner = runner
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(disclaimer=DISCLAIMER, version=__version__)

    # ------------------------------------------------------------------ middleware

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await _checked(request, call_next)
        # Ids and status only: no query strings (tokens) and no file names.
        log.info("%s %s %d %.0f ms", request.method, request.url.path, response.status_code,
                 1000 * (time.perf_counter() - started))
        return response

    async def _checked(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await _guarded(request, call_next)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    async def _guarded(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Host, cross-site and token checks, then the endpoint."""
        host_header = request.headers.get("host") or ""
        if config.allowed_hosts is not None:
            host = host_header.rsplit(":", 1)[0].strip("[]").lower() if not host_header.startswith("[") \
                else host_header[1:].split("]", 1)[0].lower()
            if host not in config.allowed_hosts:
                return JSONResponse({"detail": "unknown Host header; open the app by the address it "
                                               "was started on (or add it with --allowed-host)"},
                                    status_code=400)
        path = request.url.path
        if request.method in STATE_CHANGING:
            if cross_site(request.headers.get("origin"), request.headers.get("referer"),
                          request.url.scheme, host_header):
                return JSONResponse({"detail": "cross-site request refused: changes are accepted only "
                                               "from the app's own pages"}, status_code=403)
            ctype = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
            if ctype in SIMPLE_FORM_TYPES and path != "/login":
                return JSONResponse({"detail": f"content type {ctype} is not accepted here: send "
                                               "application/json (or multipart/form-data for uploads)"},
                                    status_code=415)
        if config.token is not None and not _public(path):
            given = _presented_token(request)
            if not token_matches(given, config.token):
                if path.startswith("/api/") or request.method != "GET":
                    return JSONResponse({"detail": "a token is required: send 'Authorization: Bearer "
                                                   "TOKEN' or log in at /login"}, status_code=401)
                return RedirectResponse("/login?" + urlencode({"next": path}), status_code=303)
            if request.query_params.get("token") and request.method == "GET" and not path.startswith("/api/"):
                # Swap the token in the address for a cookie, so it leaves the address bar.
                rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                target = path + ("?" + urlencode(rest) if rest else "")
                resp: Response = RedirectResponse(target, status_code=303)
                _set_cookie(resp, config.token)
                return resp
        return await call_next(request)

    @app.exception_handler(InputError)
    async def input_error(_request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": scrub_paths(str(exc), data_dir)}, status_code=422)

    # ------------------------------------------------------------------ helpers

    def get_study(s: Any, study_id: str) -> Study:
        study = s.get(Study, study_id)
        if study is None:
            raise _error(404, f"study {study_id} not found")
        return study

    def study_dir(study_id: str) -> Path:
        return data_dir / "studies" / study_id

    def study_json(study: Study, s: Any) -> dict[str, Any]:
        latest = s.scalars(select(AnalysisRow).where(AnalysisRow.study_id == study.id)
                           .order_by(AnalysisRow.created.desc()).limit(1)).first()
        current = s.get(AnalysisRow, study.current_analysis_id) if study.current_analysis_id else None
        return {
            "id": study.id, "created": _iso(study.created), "display_name": study.display_name,
            "format": study.format, "settings": study.settings, "rois": study.rois or
            {"space": "panel", "rois": []}, "case": study.case, "info": study.info,
            "current_analysis": None if current is None else analysis_json(current, data_dir),
            "latest_analysis": None if latest is None else analysis_json(latest, data_dir),
        }

    def create_study(cine_file: Path, fmt: str, name: str, study_id: str,
                     rois: dict[str, Any] | None = None) -> dict[str, Any]:
        """Register a cine already moved into its study directory (runs in a worker thread)."""
        intake.register_cine(store, data_dir, cine_file, fmt, name, study_id, rois)
        with store.session() as s:
            return study_json(get_study(s, study_id), s)

    def library_files() -> list[dict[str, Any]]:
        out = []
        for p in sorted(data_dir.iterdir()):
            if p.is_file() and not p.name.startswith(".") and p.name not in _NOT_CINES:
                out.append({"name": p.name, "size_bytes": p.stat().st_size})
        return out

    # ------------------------------------------------------------------ pages

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> Response:
        with store.session() as s:
            rows = s.scalars(select(Study).order_by(Study.created.desc())).all()
            listing = [study_json(r, s) for r in rows]
        return templates.TemplateResponse(request, "index.html", {
            "studies": listing, "library": library_files(),
            "max_upload_mb": config.max_upload_mb, "pacs_nodes": list(pacs_nodes)})

    @app.get("/studies/{study_id}", response_class=HTMLResponse, include_in_schema=False)
    def study_page(request: Request, study_id: Id) -> Response:
        with store.session() as s:
            doc = study_json(get_study(s, study_id), s)
        return templates.TemplateResponse(request, "study.html", {
            "study": doc, "case_form": casefile.form_fields(), "case_available": casefile.available(),
            "pacs_nodes": list(pacs_nodes)})

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request, next: str = "/") -> Response:
        return templates.TemplateResponse(request, "login.html", {"next": _safe_next(next), "error": None})

    throttle = LoginThrottle(LOGIN_ATTEMPTS, LOGIN_WINDOW_S)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await request.form()
        token = str(form.get("token") or "")
        nxt = _safe_next(str(form.get("next") or "/"))
        if config.token is None:
            return RedirectResponse(nxt, status_code=303)
        client = request.client.host if request.client is not None else "?"
        wait = throttle.retry_after_s(client, time.monotonic())
        if wait > 0:
            return templates.TemplateResponse(request, "login.html", {
                "next": nxt, "error": f"Too many wrong tokens; try again in {math.ceil(wait)} s."},
                status_code=429, headers={"Retry-After": str(math.ceil(wait))})
        if not token_matches(token, config.token):
            throttle.failed(client, time.monotonic())
            return templates.TemplateResponse(request, "login.html", {
                "next": nxt, "error": "That token is not right; copy it from the server's console."},
                status_code=401)
        resp = RedirectResponse(nxt, status_code=303)
        _set_cookie(resp, config.token)
        return resp

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> Response:
        import plotly

        path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
        return FileResponse(path, media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    # ------------------------------------------------------------------ API: studies

    @app.get("/api/studies", tags=["studies"], summary="List studies, newest first")
    def list_studies() -> list[dict[str, Any]]:
        with store.session() as s:
            rows = s.scalars(select(Study).order_by(Study.created.desc())).all()
            return [{"id": r.id, "display_name": r.display_name, "format": r.format,
                     "created": _iso(r.created), "current_analysis_id": r.current_analysis_id}
                    for r in rows]

    @app.post("/api/studies", tags=["studies"], status_code=201,
              summary="Upload a cine (DICOM or video) as the raw request body",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def upload_study(
        request: Request,
        x_filename: Annotated[str | None, Header(description="original file name, URL-encoded; "
                                                  "shown only, never used as a path")] = None,
    ) -> dict[str, Any]:
        limit = config.max_upload_bytes
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/"):
            raise _error(415, "send the file itself as the request body (Content-Type: "
                              "application/octet-stream), not as a multipart form")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _error(413, f"the file is larger than the upload limit ({config.max_upload_mb:g} MiB); "
                              "start the server with a larger --max-upload-mb")
        sid = new_id()
        sdir = study_dir(sid)
        sdir.mkdir(parents=True)
        part = sdir / "upload.part"
        total = 0
        head = b""
        try:
            with part.open("wb") as fh:
                async for chunk in request.stream():
                    total += len(chunk)
                    if total > limit:
                        raise _error(413, f"the file is larger than the upload limit "
                                          f"({config.max_upload_mb:g} MiB); start the server with a "
                                          "larger --max-upload-mb")
                    if len(head) < _HEAD_BYTES:
                        head += chunk[:_HEAD_BYTES - len(head)]
                    fh.write(chunk)
            if total == 0:
                raise _error(400, "the upload is empty; send the cine file as the request body")
            fmt = sniff_upload(head)
            if fmt is None:
                raise _error(415, "this is not a DICOM file or a video ceuskit can read (MP4, MOV, "
                                  "AVI, MKV/WebM, MPEG); export the cine as DICOM or video")
            target = stored_cine(sdir, fmt)
            part.rename(target)
        except BaseException:
            shutil.rmtree(sdir, ignore_errors=True)
            raise
        name = display_name(unquote(x_filename) if x_filename else None)
        return await run_in_threadpool(create_study, target, fmt, name, sid)

    @app.post("/api/studies/demo", tags=["studies"], status_code=201,
              summary="Create a study from a simulated venous tumour (needs no input)")
    async def demo_study(response: Response,
                         req: Annotated[DemoRequest | None, Body()] = None) -> dict[str, Any]:
        req = req or DemoRequest(seed=0, with_rois=True, new=False)
        name = f"demo (simulated tumour, seed {req.seed}{'' if req.with_rois else ', no ROIs'})"
        if not req.new:
            # One demo study per variant: loading it again opens it instead of piling up copies.
            with store.session() as s:
                existing = s.scalars(select(Study).where(Study.display_name == name)
                                     .order_by(Study.created)).first()
                if existing is not None:
                    response.status_code = 200
                    return study_json(existing, s)

        def build() -> dict[str, Any]:
            from ceuskit.simulate import SimulationSpec, simulate, write_phantom

            spec = SimulationSpec(**{"scenario": "tumor", **config.demo, "seed": req.seed})
            phantom = simulate(spec)
            sid = new_id()
            sdir = study_dir(sid)
            files = write_phantom(phantom, sdir / "phantom", "dicom")
            target = stored_cine(sdir, "dicom")
            files["cine"].rename(target)
            return create_study(target, "dicom", name, sid, phantom.rois if req.with_rois else None)

        return await run_in_threadpool(build)

    @app.get("/api/library", tags=["studies"], summary="Cine files placed in the data directory")
    def library() -> list[dict[str, Any]]:
        return library_files()

    @app.post("/api/studies/import", tags=["studies"], status_code=201,
              summary="Create a study from a file in the data directory (see GET /api/library)")
    async def import_study(req: ImportRequest) -> dict[str, Any]:
        # Only names the listing offers: no separators, no '..', nothing outside DIR.
        names = {f["name"] for f in library_files()}
        if req.name not in names:
            raise _error(404, "no such file in the data directory; pick one from GET /api/library")
        src = data_dir / req.name
        with src.open("rb") as fh:
            fmt = sniff_upload(fh.read(_HEAD_BYTES))
        if fmt is None:
            raise _error(415, "this file is not a DICOM file or a video ceuskit can read")
        sid = new_id()
        sdir = study_dir(sid)
        sdir.mkdir(parents=True)
        target = stored_cine(sdir, fmt)
        try:
            await run_in_threadpool(shutil.copyfile, src, target)
        except BaseException:
            shutil.rmtree(sdir, ignore_errors=True)
            raise
        return await run_in_threadpool(create_study, target, fmt, display_name(req.name), sid)

    @app.get("/api/studies/{study_id}", tags=["studies"],
             summary="A study: metadata, panels, settings, ROIs, case, last analysis")
    def get_study_api(study_id: Id) -> dict[str, Any]:
        with store.session() as s:
            return study_json(get_study(s, study_id), s)

    @app.delete("/api/studies/{study_id}", tags=["studies"], status_code=204,
                summary="Delete a study with its files and analyses")
    def delete_study(study_id: Id) -> Response:
        with store.session() as s:
            study = get_study(s, study_id)
            busy = s.scalars(select(AnalysisRow).where(AnalysisRow.study_id == study_id,
                                                       AnalysisRow.status.in_((QUEUED, RUNNING)))).first()
            if busy is not None:
                raise _error(409, "an analysis of this study is running; wait for it to finish")
            for row in s.scalars(select(AnalysisRow).where(AnalysisRow.study_id == study_id)).all():
                s.delete(row)
            s.delete(study)
        shutil.rmtree(study_dir(study_id), ignore_errors=True)
        return Response(status_code=204)

    @app.put("/api/studies/{study_id}/settings", tags=["studies"],
             summary="Set the linearisation settings (dynamic range dB, fps, panel, model, motion)")
    async def put_settings(study_id: Id, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
        settings = studies.check_settings(body)
        with store.session() as s:
            study = get_study(s, study_id)
            fmt = study.format

        def probe() -> dict[str, Any]:
            cine = studies.load(stored_cine(study_dir(study_id), fmt), settings)
            return studies.describe(cine, settings)

        info = await run_in_threadpool(probe)
        with store.session() as s:
            study = get_study(s, study_id)
            study.settings = settings
            study.info = info
            return study_json(study, s)

    @app.get("/api/studies/{study_id}/frames/{index}.png", tags=["frames"],
             response_class=Response, summary="One frame as PNG: the contrast or B-mode panel, or all")
    def frame(study_id: Id, index: int, panel: str = "contrast") -> Response:
        if panel not in ("contrast", "bmode", "frame"):
            raise _error(422, "panel must be contrast, bmode or frame")
        with store.session() as s:
            info = get_study(s, study_id).info
        png = studies.frame_png(study_dir(study_id), info, index, panel)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/studies/{study_id}/rois", tags=["rois"],
             summary="The study's ROIs as the contract's ROI file (space: panel)")
    def get_rois(study_id: Id, download: bool = False) -> Response:
        with store.session() as s:
            doc = get_study(s, study_id).rois or {"space": "panel", "rois": []}
        name = f"rois-{study_id[:8]}.json"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'} if download else {}
        return Response(json.dumps(doc, indent=2), media_type="application/json", headers=headers)

    @app.put("/api/studies/{study_id}/rois", tags=["rois"],
             summary="Replace the study's ROIs (an ROI file: polygons and ellipses, panel or frame space)")
    def put_rois(study_id: Id, body: Annotated[Any, Body()]) -> dict[str, Any]:
        with store.session() as s:
            study = get_study(s, study_id)
            study.rois = studies.check_rois(body, study.info)
            return study.rois

    @app.get("/api/studies/{study_id}/tic-preview", tags=["rois"],
             summary="Mean linear power per frame in each ROI (no motion correction, no fit)")
    def tic_preview(study_id: Id) -> dict[str, Any]:
        with store.session() as s:
            study = get_study(s, study_id)
            info, rois, dr = study.info, study.rois or {}, study.settings["dynamic_range_db"]
        return studies.tic_preview(study_dir(study_id), info, rois, dr)

    # ------------------------------------------------------------------ API: clinical case

    @app.get("/api/case/schema", tags=["case"], summary="JSON schema of the clinical case")
    def case_schema() -> dict[str, Any]:
        if not casefile.available():
            raise _error(404, "the clinical case module is not installed in this version")
        return casefile.schema()

    @app.put("/api/studies/{study_id}/case", tags=["case"],
             summary="Set the clinical case (the fields of a case file); 422 names the bad fields")
    def put_case(study_id: Id, body: Annotated[Any, Body()]) -> Any:
        if not casefile.available():
            raise _error(404, "the clinical case module is not installed in this version")
        clean, errors = casefile.validate(body)
        if errors:
            return JSONResponse({"detail": next(iter(errors.values())), "fields": errors}, status_code=422)
        with store.session() as s:
            study = get_study(s, study_id)
            study.case = clean or None
            return {"case": study.case}

    # ------------------------------------------------------------------ API: analyses

    def lost(job: AnalysisJob, message: str) -> None:
        store.set_stage(job.analysis_id, FAILED, None, error=message, finished=True)

    @app.post("/api/studies/{study_id}/analyses", tags=["analyses"], status_code=202,
              summary="Start an analysis of the study with its current settings, ROIs and case")
    def start_analysis(study_id: Id) -> dict[str, Any]:
        with store.session() as s:
            study = get_study(s, study_id)
            rois = study.rois or {}
            if not rois.get("rois"):
                raise _error(422, "the study has no ROIs; draw at least a lesion ROI first")
            busy = s.scalars(select(AnalysisRow).where(AnalysisRow.study_id == study_id,
                                                       AnalysisRow.status.in_((QUEUED, RUNNING)))).first()
            if busy is not None:
                raise _error(409, "an analysis of this study is already running; wait for it")
            row = AnalysisRow(id=new_id(), study_id=study_id, status=QUEUED, created=utcnow())
            s.add(row)
            s.flush()
            job = AnalysisJob(
                analysis_id=row.id, study_id=study_id, db_url=config.database_url,
                data_dir=str(data_dir.resolve()),
                cine_path=str(stored_cine(study_dir(study_id), study.format).relative_to(data_dir)),
                rois=dict(rois), settings=dict(study.settings), case=study.case,
                dicom=bool(pacs_nodes) and study.format == "dicom")
            out = analysis_json(row, data_dir)
        runner.submit(job, lost)
        log.info("analysis %s queued for study %s", job.analysis_id, study_id)
        return out

    @app.get("/api/studies/{study_id}/analyses", tags=["analyses"],
             summary="The study's analyses, newest first")
    def list_analyses(study_id: Id) -> list[dict[str, Any]]:
        with store.session() as s:
            get_study(s, study_id)
            rows = s.scalars(select(AnalysisRow).where(AnalysisRow.study_id == study_id)
                             .order_by(AnalysisRow.created.desc())).all()
            return [analysis_json(r, data_dir) for r in rows]

    @app.get("/api/analyses/{analysis_id}", tags=["analyses"],
             summary="An analysis' state: queued, running (stage), done (files) or failed (error)")
    def get_analysis(analysis_id: Id) -> dict[str, Any]:
        with store.session() as s:
            row = s.get(AnalysisRow, analysis_id)
            if row is None:
                raise _error(404, f"analysis {analysis_id} not found")
            return analysis_json(row, data_dir)

    @app.get("/api/studies/{study_id}/results", tags=["analyses"],
             summary="results.json of the study's last finished analysis")
    def study_results(study_id: Id) -> Response:
        with store.session() as s:
            study = get_study(s, study_id)
            row = s.get(AnalysisRow, study.current_analysis_id) if study.current_analysis_id else None
            if row is None or not row.result_dir:
                raise _error(404, "this study has no finished analysis yet")
            path = data_dir / row.result_dir / "results.json"
        return FileResponse(path, media_type="application/json")

    @app.get("/api/analyses/{analysis_id}/report-content", tags=["analyses"], response_class=HTMLResponse,
             summary="The analysis' results as the report presents them (an HTML fragment)")
    def report_content(analysis_id: Id) -> Response:
        from ceuskit.report.html import render_web_content

        with store.session() as s:
            row = s.get(AnalysisRow, analysis_id)
            # A running analysis has content as soon as its results.json is written.
            base = None if row is None else result_base(row, data_dir)
            if base is None or not (base / "results.json").is_file():
                raise _error(404, "no finished analysis with this id (or none with results yet)")
        results = json.loads((base / "results.json").read_text(encoding="utf-8"))
        html = render_web_content(results, f"/api/analyses/{analysis_id}/files/", studies.result_files(base))
        return HTMLResponse(html)

    @app.get("/api/analyses/{analysis_id}/files/{name:path}", tags=["analyses"],
             summary="A file of a finished analysis (results.json, report.html, report.pdf, "
                     "rois.json, maps/...)")
    def analysis_file(analysis_id: Id, name: str, download: bool = False) -> Response:
        if not valid_result_name(name):
            raise _error(404, "no such file")
        with store.session() as s:
            row = s.get(AnalysisRow, analysis_id)
            base = None if row is None else result_base(row, data_dir)
            if base is None:
                raise _error(404, "no finished analysis with this id (or none with results yet)")
        if name not in studies.result_files(base):
            raise _error(404, "no such file in this analysis")
        path = base / name
        media = MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
        headers = {}
        if download:
            headers["Content-Disposition"] = f"attachment; filename=\"{quote(path.name)}\""
        return FileResponse(path, media_type=media, headers=headers)

    def study_doc(study_id: str) -> dict[str, Any]:
        with store.session() as s:
            return study_json(get_study(s, study_id), s)

    app.include_router(pacs.make_router(data_dir, store, pacs_nodes, study_doc))
    return app


def _public(path: str) -> bool:
    """Paths open without a token: the login page and static assets (no data in them)."""
    return path == "/login" or path.startswith("/static/")


def _presented_token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.cookies.get(TOKEN_COOKIE) or request.query_params.get("token")


def _set_cookie(resp: Response, token: str) -> None:
    resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", max_age=30 * 24 * 3600)


def _safe_next(target: str) -> str:
    """A local path to return to after login (never another site)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
