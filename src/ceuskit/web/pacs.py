"""The web app's PACS actions: list nodes, query, retrieve a study, send an analysis' results.

A router over `ceuskit.io.dicom_net` (the same calls as ``ceuskit dicom``);
the nodes come from one settings file (``ceuskit serve --pacs-config``, or
``DIR/pacs.yaml``; see `ceuskit.io.dicom_net.load_nodes`).  The app's
middleware applies to these endpoints as to every other: state-changing
requests must be JSON from the app's own pages (or a script without an
Origin), and carry the token when one is set.

Sending an analysis that has no ``dicom/`` folder (it ran before a PACS was
configured) first writes its SEG, SR and Parametric Maps (`write_derived`);
a cine that is not DICOM has no study to file them into (409).

Queries ask for no patient attribute; the log names node names, counts and
ids only.  A node that refuses, cannot be reached or times out is a 502 with
the one-line reason.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from ceuskit.errors import InputError
from ceuskit.io import dicom_net
from ceuskit.io.dicom_net import DicomNode
from ceuskit.web import intake
from ceuskit.web.db import DONE, AnalysisRow, Store, Study, new_id
from ceuskit.web.security import ID_PATTERN, scrub_paths, stored_cine

log = logging.getLogger("ceuskit.web")
#: Settings file looked for in the data directory when ``--pacs-config`` is not given.
PACS_FILE = "pacs.yaml"
NodeName = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                                    description="a node name from GET /api/pacs/nodes")]
Id = Annotated[str, PathParam(pattern=ID_PATTERN, description="server-generated id (32 hex digits)")]


class RetrieveRequest(BaseModel):
    study_uid: str = Field(..., min_length=1, max_length=64, pattern=r"^[0-9]+(\.[0-9]+)*$",
                           description="Study Instance UID from the query")


class SendRequest(BaseModel):
    node: str = Field(..., min_length=1, max_length=64, description="a node name from GET /api/pacs/nodes")


def settings_file(data_dir: Path, given: Path | None) -> Path | None:
    """The PACS settings file in use: the one given, else ``DIR/pacs.yaml`` when it exists."""
    if given is not None:
        return Path(given)
    default = Path(data_dir) / PACS_FILE
    return default if default.is_file() else None


def node_json(node: DicomNode) -> dict[str, Any]:
    return {"name": node.name, "aet": node.aet, "host": node.host, "port": node.port,
            "calling_aet": node.calling_aet}


def make_router(data_dir: Path, store: Store, nodes: dict[str, DicomNode],
                study_json: Callable[[str], dict[str, Any]]) -> APIRouter:
    """The ``/api/pacs/...`` and ``/api/analyses/{id}/send`` endpoints.

    Parameters
    ----------
    study_json : callable
        A study's JSON document by id (the app's own).
    """
    router = APIRouter()

    def node_by_name(name: str) -> DicomNode:
        if name not in nodes:
            raise HTTPException(404, f"no PACS node named {name!r}; pick one from GET /api/pacs/nodes")
        return nodes[name]

    def derived_files(analysis_id: str, base: Path, study_id: str, fmt: str | None) -> list[Path]:
        """The analysis' SEG/SR/maps, written now from its stored cine and results when missing."""
        from ceuskit.api import DICOM_DIR

        folder = base / DICOM_DIR
        with _lock(analysis_id):
            files = sorted(folder.glob("*.dcm")) if folder.is_dir() else []
            if files:
                return files
            if fmt != "dicom":
                raise HTTPException(409, f"this analysis' cine is not DICOM (it is a {fmt or 'missing'} "
                                         "file), so there is no DICOM study to file a SEG, SR and "
                                         "Parametric Maps into; analyse the DICOM export of the cine")
            try:
                write_derived(Path(data_dir), base, stored_cine(intake.study_dir(data_dir, study_id), fmt))
            except InputError as exc:
                raise HTTPException(409, "the DICOM results of this analysis cannot be written: "
                                         + scrub_paths(str(exc), data_dir)) from None
            log.info("analysis %s: DICOM results written for sending", analysis_id)
            return sorted(folder.glob("*.dcm"))

    def network(exc: InputError) -> HTTPException:
        return HTTPException(502, scrub_paths(str(exc), data_dir))

    @router.get("/api/pacs/nodes", tags=["pacs"], summary="The configured DICOM nodes (PACS)")
    def list_nodes() -> list[dict[str, Any]]:
        return [node_json(n) for n in nodes.values()]

    @router.get("/api/pacs/nodes/{name}/studies", tags=["pacs"],
                summary="Query a node for studies (C-FIND; no patient attributes are asked for)")
    async def query(name: NodeName,
                    date: Annotated[str, Query(max_length=17, description="YYYYMMDD or a range "
                                               "YYYYMMDD-YYYYMMDD (either end open); empty = any")] = "",
                    modality: Annotated[str, Query(pattern=r"^[A-Z]{0,16}$")] = "US") -> list[dict[str, Any]]:
        node = node_by_name(name)
        try:
            found = await run_in_threadpool(dicom_net.find_studies, node, date=date, modality=modality)
        except InputError as exc:
            if exc.source == "date":
                raise HTTPException(422, str(exc)) from None
            raise network(exc) from None
        log.info("PACS query on %s: %d studies", name, len(found))
        return [m.as_dict() for m in found]

    @router.post("/api/pacs/nodes/{name}/retrieve", tags=["pacs"], status_code=201,
                 summary="Retrieve a study's ultrasound cines (C-GET); each becomes a study here")
    async def retrieve(name: NodeName, req: RetrieveRequest) -> dict[str, Any]:
        node = node_by_name(name)

        def run() -> list[str]:
            work = Path(data_dir) / "incoming" / f"get-{new_id()}"
            try:
                files = dicom_net.retrieve_study(node, req.study_uid, work)
                m = next(iter(dicom_net.find_studies(node, modality="", study_uid=req.study_uid)), None)
                label = " ".join(x for x in ((m.description if m else ""), (m.date if m else "")) if x)
                ids = []
                for i, f in enumerate(files, start=1):
                    suffix = f" #{i}" if len(files) > 1 else ""
                    study = intake.file_cine(store, data_dir, f,
                                             f"{name}: {label or 'study'}{suffix}"[:120])
                    ids.append(study.id)
                return ids
            finally:
                shutil.rmtree(work, ignore_errors=True)

        try:
            ids = await run_in_threadpool(run)
        except InputError as exc:
            raise network(exc) from None
        log.info("PACS retrieve from %s: %d studies created", name, len(ids))
        return {"studies": [study_json(i) for i in ids]}

    @router.post("/api/analyses/{analysis_id}/send", tags=["pacs"],
                 summary="Send an analysis' DICOM results (SEG, SR, Parametric Maps) to a node (C-STORE); "
                         "written first when missing (409 when the cine is not DICOM)")
    async def send(analysis_id: Id, req: SendRequest) -> dict[str, Any]:
        node = node_by_name(req.node)
        with store.session() as s:
            row = s.get(AnalysisRow, analysis_id)
            if row is None or row.status != DONE or not row.result_dir:
                raise HTTPException(404, "no finished analysis with this id")
            base = Path(data_dir) / row.result_dir
            study_id = row.study_id
            study = s.get(Study, study_id)
            fmt = None if study is None else study.format
        files = await run_in_threadpool(derived_files, analysis_id, base, study_id, fmt)
        try:
            results = await run_in_threadpool(dicom_net.send_files, files, node)
        except InputError as exc:
            raise network(exc) from None
        failed = sum(not r.ok for r in results)
        log.info("analysis %s sent to %s: %d stored, %d failed", analysis_id, req.node,
                 len(results) - failed, failed)
        return {"node": req.node, "stored": len(results) - failed, "failed": failed,
                "files": [{"name": r.path.name, "ok": r.ok, "status": r.status, "message": r.message,
                           "sop_class": r.sop_class} for r in results]}

    return router


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def _lock(key: str) -> threading.Lock:
    """One lock per analysis: two sends at once write its DICOM results once."""
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(key, threading.Lock())


def write_derived(data_dir: Path, base: Path, cine: Path) -> None:
    """Write ``dicom/`` (SEG, SR, Parametric Maps) of a finished analysis that has none.

    The analysis is run again from the stored cine with the ROIs, settings and
    case it ran with (kept in its folder); the SR's measurements and findings
    are those of its stored results.json, so what is sent matches the report.
    The folder appears complete or not at all.

    Raises
    ------
    InputError
        The cine cannot be read or its frames do not fit the analysis.
    """
    from ceuskit.api import DICOM_DIR
    from ceuskit.io.dicom_derived import write_dicom_derived
    from ceuskit.pipeline import analyze
    from ceuskit.web.jobs import _case_argument, options_from_settings

    def doc(name: str) -> Any:
        path = base / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    results = doc("results.json")
    if results is None or not (base / "rois.json").is_file():
        raise InputError(base.name, "the analysis' results.json or rois.json is missing",
                         "run the analysis again")
    analysis = analyze(cine, base / "rois.json", options_from_settings(doc("settings.json") or {}),
                       case=_case_argument(doc("case.json")))
    part = base / f".{DICOM_DIR}.part"
    shutil.rmtree(part, ignore_errors=True)
    try:
        write_dicom_derived(analysis, cine, part, results=results)
        os.replace(part, base / DICOM_DIR)
    finally:
        shutil.rmtree(part, ignore_errors=True)
