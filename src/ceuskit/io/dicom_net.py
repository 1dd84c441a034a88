"""DICOM networking over pynetdicom: send (C-STORE), query (C-FIND), retrieve (C-GET), receive.

The command line (``ceuskit dicom send|listen``) and the web app's PACS
actions are thin shells over these functions.

* `parse_node` reads ``AET@HOST:PORT`` and checks the AE title;
* `send_files` C-STOREs files with presentation contexts for exactly the
  SOP classes and transfer syntaxes being sent (one context per pair), and
  returns a result per file;
* `find_studies` / `find_series` are Study Root C-FINDs that ask for no
  patient identifiers at all (no name, id or birth date is requested, so
  none can reach a log or a page);
* `retrieve_study` C-GETs a study's US series into a folder (C-GET needs no
  move destination configured on the PACS);
* `StorageSCP` is a Storage SCP that hands received US cines to a callback
  and refuses every other object with status 0x0122 (SOP class not
  supported).

Failures of the association (refused, unreachable host, timeout) raise
`ceuskit.errors.InputError` with one line that names the node and the fix;
a rejected object is a failed `SendResult`, the others go on.  Logs name
SOP classes, statuses, AE titles and UIDs only, never patient attributes.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from ceuskit.errors import InputError

log = logging.getLogger("ceuskit.dicom")

__all__ = ["CALLING_AET", "DEFAULT_TIMEOUT_S", "US_CINE_CLASSES", "DicomNode", "SendResult",
           "StorageSCP", "check_aet", "dicom_files", "find_series", "find_studies", "load_nodes",
           "parse_node", "retrieve_study", "send_files"]

#: Our AE title when none is given.
CALLING_AET = "CEUSKIT"
#: Seconds to wait for a connection, an association answer or a DIMSE reply.
DEFAULT_TIMEOUT_S = 10.0
#: Presentation contexts one association may propose (PS3.8: odd ids 1..255).
MAX_CONTEXTS = 128
#: Ultrasound Multi-frame Image Storage and Ultrasound Image Storage: what becomes a study.
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_CINE_CLASSES = (US_MULTIFRAME, US_IMAGE)
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
VERIFICATION = "1.2.840.10008.1.1"
#: Transfer syntaxes proposed for C-GET sub-operations, one context each.
RETRIEVE_SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50",
                     "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.5",
                     "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.80",
                     "1.2.840.10008.1.2.4.81")
#: C-STORE statuses the SCP returns.
STATUS_SUCCESS = 0x0000
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_OUT_OF_RESOURCES = 0xA700

_NODE_RE = re.compile(r"^(?P<aet>[^@]*)@(?P<host>\[[^\]]+\]|[^:@\[\]]+):(?P<port>[0-9]+)$")
_UID_RE = re.compile(r"^[0-9]+(?:\.[0-9]+)*$")
_DATE_RE = re.compile(r"^(?:[0-9]{8})?(?:-(?:[0-9]{8})?)?$")


def check_aet(value: str, what: str = "AE title") -> str:
    """Return a valid AE title (surrounding spaces removed) or raise InputError.

    PS3.5: at most 16 characters of the default character repertoire, no
    backslash, no control characters, not only spaces.
    """
    text = str(value)
    stripped = text.strip(" ")
    if not stripped:
        raise InputError(what, "an AE title cannot be empty or only spaces",
                         "give 1 to 16 characters, e.g. CEUSKIT")
    if len(stripped) > 16:
        raise InputError(what, f"AE title {stripped!r} is {len(stripped)} characters long",
                         "give at most 16 characters")
    bad = [ch for ch in stripped if ch == "\\" or not 0x20 <= ord(ch) < 0x7F]
    if bad:
        raise InputError(what, f"AE title {stripped!r} holds {bad[0]!r}",
                         "use printable ASCII characters without backslash")
    return stripped


def check_uid(value: str, what: str = "UID") -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 64 or not _UID_RE.match(value):
        raise InputError(what, f"{str(value)[:70]!r} is not a DICOM UID", "give digits and dots, "
                         "at most 64 characters")
    return value


@dataclass(frozen=True)
class DicomNode:
    """A remote DICOM application entity.

    Attributes
    ----------
    aet : str
        Its AE title (the called AE title).
    host : str
        Host name or address.
    port : int
        TCP port.
    name : str
        What the user calls it (config files); defaults to the AE title.
    calling_aet : str
        Our own AE title towards it.
    timeout_s : float
        Connection, association and DIMSE timeout.
    """

    aet: str
    host: str
    port: int
    name: str = ""
    calling_aet: str = CALLING_AET
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


def parse_node(text: str, *, calling_aet: str = CALLING_AET,
               timeout_s: float = DEFAULT_TIMEOUT_S, what: str = "--to") -> DicomNode:
    """A node from ``AET@HOST:PORT`` (IPv6 addresses in brackets: ``AET@[::1]:104``)."""
    m = _NODE_RE.match(str(text).strip())
    if m is None:
        raise InputError(what, f"{str(text)[:80]!r} is not AET@HOST:PORT",
                         "write e.g. ORTHANC@127.0.0.1:4242")
    port = int(m["port"])
    if not 0 < port < 65536:
        raise InputError(what, f"port {port} is not a TCP port", "give a number from 1 to 65535")
    aet = check_aet(m["aet"], what)
    return DicomNode(aet=aet, host=m["host"].strip("[]"), port=port, name=aet,
                     calling_aet=check_aet(calling_aet, "calling AE title"), timeout_s=float(timeout_s))


# --------------------------------------------------------------------------- associations


def _ae(node: DicomNode) -> Any:
    from pynetdicom import AE

    ae = AE(ae_title=node.calling_aet)
    t = float(node.timeout_s)
    ae.connection_timeout = t
    ae.acse_timeout = t
    ae.dimse_timeout = t
    ae.network_timeout = t
    return ae


class _Association:
    """An association to `node` as a context manager; refusal and unreachability as InputError."""

    def __init__(self, ae: Any, node: DicomNode, handlers: Sequence[Any] = (), **kwargs: Any) -> None:
        self.ae = ae
        self.node = node
        self.handlers = list(handlers)
        self.kwargs = kwargs
        self.assoc: Any = None

    def __enter__(self) -> Any:
        from pynetdicom import evt

        seen: dict[str, Any] = {"connected": False, "reason": None}

        def opened(_event: Any) -> None:
            seen["connected"] = True

        def acse(event: Any) -> None:
            prim: Any = getattr(event, "primitive", None)
            if prim is not None and getattr(prim, "result", None) in (0x01, 0x02):
                try:
                    seen["reason"] = f"{prim.reason_str} ({prim.source_str})"
                except Exception:  # a malformed rejection still is a rejection
                    seen["reason"] = "no reason given"

        handlers = [(evt.EVT_CONN_OPEN, opened), (evt.EVT_ACSE_RECV, acse), *self.handlers]
        node = self.node
        try:
            assoc = self.ae.associate(node.host, node.port, ae_title=node.aet, evt_handlers=handlers,
                                      **self.kwargs)
        except OSError as exc:  # name resolution and the like
            raise InputError(str(node), f"cannot reach the host ({exc.strerror or exc})",
                             "check the host name and port") from None
        if assoc.is_established:
            self.assoc = assoc
            return assoc
        if assoc.is_rejected:
            raise InputError(str(node), f"association refused: {seen['reason'] or 'no reason given'}",
                             f"check that the node knows the called AE title {node.aet!r} and our "
                             f"calling AE title {node.calling_aet!r}")
        if not seen["connected"]:
            raise InputError(str(node), f"no connection within {node.timeout_s:g} s (host unreachable "
                             "or nothing listening on that port)",
                             "check the host, the port and that the DICOM node is running")
        if not assoc.accepted_contexts and assoc.rejected_contexts:
            raise InputError(str(node), "the node accepted none of the proposed SOP classes and "
                             "transfer syntaxes", "check what the node stores, or convert the files")
        raise InputError(str(node), f"no answer to the association request within {node.timeout_s:g} s "
                         "(or the node aborted it)", "check that this is a DICOM port and the node's "
                         "AE settings")

    def __exit__(self, *_exc: Any) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()


# --------------------------------------------------------------------------- C-STORE


@dataclass(frozen=True)
class SendResult:
    """The outcome of sending one file.

    Attributes
    ----------
    path : Path
    ok : bool
        The node answered Success (or a Warning status, which stores the object).
    status : int or None
        The C-STORE status; None when the file was never sent.
    message : str
        One line: what happened.
    sop_class : str
        The file's SOP class name (or UID).
    """

    path: Path
    ok: bool
    status: int | None
    message: str
    sop_class: str = ""


def _is_part10(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def dicom_files(paths: Iterable[str | PathLike[str]]) -> list[Path]:
    """The files to send: each file given, and every DICOM (Part 10) file under each folder.

    Raises
    ------
    InputError
        A path that does not exist, or a folder without DICOM files.
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and _is_part10(q))
            if not found:
                raise InputError(p, "no DICOM files in this folder", "give DICOM files or a folder "
                                 "that holds some")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(p, "no such file or folder", "check the path")
    return out


def _sop_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name and name != uid else uid


def _header(path: Path) -> tuple[str, str]:
    """(SOP Class UID, Transfer Syntax UID) of a Part 10 file, read without its pixel data."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise ValueError(f"not a readable DICOM file ({type(exc).__name__})") from None
    sop = str(getattr(ds, "SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    ts = str(ds.file_meta.get("TransferSyntaxUID", "") if hasattr(ds, "file_meta") else "")
    if not sop or not ts:
        raise ValueError("no SOP Class UID or Transfer Syntax UID in its header (not a DICOM Part 10 file)")
    return sop, ts


def send_files(paths: Sequence[str | PathLike[str]], node: DicomNode,
               progress: Callable[[SendResult], None] | None = None) -> list[SendResult]:
    """C-STORE files to `node`, with contexts for exactly the SOP classes and transfer syntaxes sent.

    Files that are not readable DICOM fail on their own; the others are sent
    over as few associations as the 128-context limit allows.

    Parameters
    ----------
    paths : sequence of path-like
        DICOM Part 10 files (see `dicom_files` for folders).
    node : DicomNode
    progress : callable, optional
        Receives each file's result as soon as it is known.

    Returns
    -------
    list of SendResult
        One per file, in the order given.

    Raises
    ------
    InputError
        The association was refused, or the node is unreachable or silent.
    """
    say = progress or (lambda _r: None)
    results: dict[int, SendResult] = {}
    headers: dict[int, tuple[str, str]] = {}
    for i, raw in enumerate(paths):
        p = Path(raw)
        try:
            headers[i] = _header(p)
        except ValueError as exc:
            results[i] = SendResult(p, False, None, f"not sent: {exc}")
            say(results[i])
    # Batches of files whose (SOP class, transfer syntax) pairs fit one association.
    batches: list[tuple[list[tuple[str, str]], list[int]]] = []
    for i, pair in headers.items():
        for pairs, members in batches:
            if pair in pairs or len(pairs) < MAX_CONTEXTS:
                if pair not in pairs:
                    pairs.append(pair)
                members.append(i)
                break
        else:
            batches.append(([pair], [i]))
    for pairs, members in batches:
        ae = _ae(node)
        for sop, ts in pairs:
            ae.add_requested_context(sop, ts)
        with _Association(ae, node) as assoc:
            accepted = {(cx.abstract_syntax, ts) for cx in assoc.accepted_contexts
                        for ts in cx.transfer_syntax}
            for i in members:
                p = Path(paths[i])
                sop, ts = headers[i]
                name = _sop_name(sop)
                if (sop, ts) not in accepted:
                    results[i] = SendResult(p, False, None, f"not sent: the node refused {name} in "
                                            f"transfer syntax {_sop_name(ts)}", name)
                elif not assoc.is_established:
                    results[i] = SendResult(p, False, None, "not sent: the node ended the association",
                                            name)
                else:
                    results[i] = _store_one(assoc, p, name)
                say(results[i])
    return [results[i] for i in range(len(paths))]


def _store_one(assoc: Any, path: Path, name: str) -> SendResult:
    from pynetdicom.status import code_to_category

    try:
        rsp = assoc.send_c_store(path)
    except (ValueError, OSError, AttributeError) as exc:
        return SendResult(path, False, None, f"not sent: {type(exc).__name__}: {exc}"[:200], name)
    status = getattr(rsp, "Status", None) if rsp is not None else None
    if status is None:
        return SendResult(path, False, None, "no answer from the node (timeout or aborted association)",
                          name)
    category = code_to_category(int(status))
    if category in ("Success", "Warning"):
        extra = "" if category == "Success" else f" with warning 0x{int(status):04X}"
        return SendResult(path, True, int(status), f"stored{extra}", name)
    comment = str(getattr(rsp, "ErrorComment", "") or "").strip()
    return SendResult(path, False, int(status), f"rejected with status 0x{int(status):04X} ({category})"
                      + (f": {comment}" if comment else ""), name)


# --------------------------------------------------------------------------- C-FIND


@dataclass(frozen=True)
class StudyMatch:
    """One study a C-FIND found (no patient attributes)."""

    study_uid: str
    date: str
    time: str
    description: str
    modalities: str
    accession: str
    n_series: int | None
    n_instances: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"study_uid": self.study_uid, "date": self.date, "time": self.time,
                "description": self.description, "modalities": self.modalities,
                "accession": self.accession, "n_series": self.n_series, "n_instances": self.n_instances}


def _as_int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _find(node: DicomNode, query: Any) -> Iterator[Any]:
    from pynetdicom.status import code_to_category

    ae = _ae(node)
    ae.add_requested_context(STUDY_ROOT_FIND)
    with _Association(ae, node) as assoc:
        for status, identifier in assoc.send_c_find(query, STUDY_ROOT_FIND):
            code = getattr(status, "Status", None)
            if code is None:
                raise InputError(str(node), "no answer to the query (timeout or aborted association)",
                                 "try again, or raise the node's timeout")
            category = code_to_category(int(code))
            if category == "Pending" and identifier is not None:
                yield identifier
            elif category not in ("Success", "Pending"):
                raise InputError(str(node), f"query refused with status 0x{int(code):04X} ({category})",
                                 "check that the node allows C-FIND from our AE title")


def find_studies(node: DicomNode, *, date: str = "", modality: str = "US", study_uid: str = "",
                 limit: int = 500) -> list[StudyMatch]:
    """Studies on `node` (Study Root C-FIND), without any patient attribute.

    Parameters
    ----------
    date : str
        ``YYYYMMDD``, a range ``YYYYMMDD-YYYYMMDD`` (either end open), or "" (any).
    modality : str
        Modalities in Study to match ("" = any).
    study_uid : str
        One study's Study Instance UID ("" = any).
    limit : int
        At most this many matches are returned.
    """
    from pydicom.dataset import Dataset

    date = date.replace("/", "").strip()
    if not _DATE_RE.match(date):
        raise InputError("date", f"{date[:40]!r} is not YYYYMMDD or a range YYYYMMDD-YYYYMMDD",
                         "write e.g. 20260101-20261231")
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = check_uid(study_uid, "study UID") if study_uid else ""
    q.StudyDate = date
    q.StudyTime = ""
    q.StudyDescription = ""
    q.AccessionNumber = ""
    q.ModalitiesInStudy = modality
    q.NumberOfStudyRelatedSeries = ""
    q.NumberOfStudyRelatedInstances = ""
    out: list[StudyMatch] = []
    for ds in _find(node, q):
        uid = str(ds.get("StudyInstanceUID", "") or "")
        if not uid:
            continue
        mods = ds.get("ModalitiesInStudy", "")
        mods_text = "\\".join(str(m) for m in mods) if not isinstance(mods, str) else mods
        out.append(StudyMatch(uid, str(ds.get("StudyDate", "") or ""), str(ds.get("StudyTime", "") or ""),
                              str(ds.get("StudyDescription", "") or ""), mods_text,
                              str(ds.get("AccessionNumber", "") or ""),
                              _as_int(ds.get("NumberOfStudyRelatedSeries")),
                              _as_int(ds.get("NumberOfStudyRelatedInstances"))))
        if len(out) >= limit:
            break
    log.info("C-FIND on %s: %d studies", node.aet, len(out))
    return out


def find_series(node: DicomNode, study_uid: str) -> list[dict[str, Any]]:
    """The series of one study: uid, modality, number, description, instances."""
    from pydicom.dataset import Dataset

    q = Dataset()
    q.QueryRetrieveLevel = "SERIES"
    q.StudyInstanceUID = check_uid(study_uid, "study UID")
    q.SeriesInstanceUID = ""
    q.Modality = ""
    q.SeriesNumber = ""
    q.SeriesDescription = ""
    q.NumberOfSeriesRelatedInstances = ""
    out = []
    for ds in _find(node, q):
        out.append({"series_uid": str(ds.get("SeriesInstanceUID", "") or ""),
                    "modality": str(ds.get("Modality", "") or ""),
                    "number": _as_int(ds.get("SeriesNumber")),
                    "description": str(ds.get("SeriesDescription", "") or ""),
                    "n_instances": _as_int(ds.get("NumberOfSeriesRelatedInstances"))})
    return out


# --------------------------------------------------------------------------- C-GET


def retrieve_study(node: DicomNode, study_uid: str, dest: str | PathLike[str]) -> list[Path]:
    """C-GET a study's ultrasound series from `node` into `dest` (one file per instance).

    Only US series are asked for (a study may also hold earlier results:
    SEG, SR, Parametric Maps), and only the US storage classes are offered
    for the sub-operations.

    Returns
    -------
    list of Path
        The received files (``<SOP Instance UID>.dcm``).

    Raises
    ------
    InputError
        No US series in the study, a refused association or retrieve, an
        unreachable node.
    """
    from pydicom.dataset import Dataset
    from pynetdicom import build_role, evt
    from pynetdicom.status import code_to_category

    check_uid(study_uid, "study UID")
    series = [s for s in find_series(node, study_uid) if s["modality"] == "US" and s["series_uid"]]
    if not series:
        raise InputError(str(node), f"study {study_uid} has no ultrasound series",
                         "pick a study with modality US")
    out_dir = Path(dest)
    out_dir.mkdir(parents=True, exist_ok=True)
    received: list[Path] = []
    lock = threading.Lock()

    def on_store(event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        if not _UID_RE.match(uid) or event.request.AffectedSOPClassUID not in US_CINE_CLASSES:
            return STATUS_SOP_CLASS_NOT_SUPPORTED
        target = out_dir / f"{uid}.dcm"
        part = target.with_suffix(".part")
        try:
            part.write_bytes(event.encoded_dataset())
            part.replace(target)
        except OSError:
            part.unlink(missing_ok=True)
            return STATUS_OUT_OF_RESOURCES
        with lock:
            received.append(target)
        return STATUS_SUCCESS

    ae = _ae(node)
    ae.add_requested_context(STUDY_ROOT_GET)
    roles = []
    for sop in US_CINE_CLASSES:
        for ts in RETRIEVE_SYNTAXES:
            ae.add_requested_context(sop, ts)
        roles.append(build_role(sop, scp_role=True))
    failed = 0
    with _Association(ae, node, handlers=[(evt.EVT_C_STORE, on_store)], ext_neg=roles) as assoc:
        for s in series:
            q = Dataset()
            q.QueryRetrieveLevel = "SERIES"
            q.StudyInstanceUID = study_uid
            q.SeriesInstanceUID = s["series_uid"]
            for status, _identifier in assoc.send_c_get(q, STUDY_ROOT_GET):
                code = getattr(status, "Status", None)
                if code is None:
                    raise InputError(str(node), "no answer to the retrieve (timeout or aborted "
                                     "association)", "try again, or raise the node's timeout")
                category = code_to_category(int(code))
                if category in ("Failure", "Cancel"):
                    raise InputError(str(node), f"retrieve refused with status 0x{int(code):04X}",
                                     "check that the node allows C-GET from our AE title")
                if category == "Warning":
                    failed += _as_int(getattr(status, "NumberOfFailedSuboperations", 0)) or 0
    log.info("C-GET from %s: %d instances received, %d failed", node.aet, len(received), failed)
    if not received:
        raise InputError(str(node), f"study {study_uid}: no ultrasound instance was received",
                         "check the node's transfer syntaxes and its C-GET settings")
    return sorted(received)


# --------------------------------------------------------------------------- Storage SCP


@dataclass
class StorageSCP:
    """A Storage SCP that hands received US cines to `on_cine` and refuses everything else.

    Every storage SOP class is negotiated (so that a sender learns per object
    why it was refused, instead of a rejected context), but only
    `US_CINE_CLASSES` are kept: others get status 0x0122 (SOP Class Not
    Supported) and a log line naming the SOP class and the calling AE title.

    Parameters
    ----------
    aet : str
        Our AE title.
    port : int
        TCP port to listen on.
    incoming : Path
        Folder for received files (written under a temporary name, renamed
        when complete, and passed to `on_cine`).
    on_cine : callable
        ``on_cine(path, calling_aet) -> str``: files the cine (e.g. as a web
        study) and returns a short description for the log; raising
        `InputError` refuses the object with status 0xC000.
    host : str
        Address to bind (default loopback).
    """

    aet: str
    port: int
    incoming: Path
    on_cine: Callable[[Path, str], str]
    host: str = "127.0.0.1"
    timeout_s: float = 60.0
    received: list[Path] = field(default_factory=list)
    _server: Any = None

    def _handle_store(self, event: Any) -> int:
        sop = str(event.request.AffectedSOPClassUID)
        uid = str(event.request.AffectedSOPInstanceUID)
        calling = str(event.assoc.requestor.ae_title).strip()
        if sop not in US_CINE_CLASSES:
            log.warning("refused an object of SOP class %s (%s) from %s: only ultrasound cines are "
                        "filed (status 0x0122)", _sop_name(sop), sop, calling)
            return STATUS_SOP_CLASS_NOT_SUPPORTED
        if not _UID_RE.match(uid):
            log.warning("refused an object with an invalid SOP Instance UID from %s", calling)
            return STATUS_CANNOT_UNDERSTAND
        self.incoming.mkdir(parents=True, exist_ok=True)
        target = self.incoming / f"{uid}.dcm"
        part = self.incoming / f"{uid}.part"
        try:
            part.write_bytes(event.encoded_dataset())
            part.replace(target)
        except OSError as exc:
            part.unlink(missing_ok=True)
            log.error("could not write a received cine: %s", exc.strerror)
            return STATUS_OUT_OF_RESOURCES
        try:
            what = self.on_cine(target, calling)
        except InputError as exc:
            log.warning("refused a cine from %s that cannot be read: %s", calling, exc.problem)
            target.unlink(missing_ok=True)
            return STATUS_CANNOT_UNDERSTAND
        except Exception:
            log.exception("filing a received cine failed")
            target.unlink(missing_ok=True)
            return STATUS_OUT_OF_RESOURCES
        self.received.append(target)
        log.info("received %s from %s: %s", _sop_name(sop), calling, what)
        return STATUS_SUCCESS

    def _ae(self) -> Any:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts

        ae = AE(ae_title=check_aet(self.aet, "--aet"))
        ae.acse_timeout = self.timeout_s
        ae.dimse_timeout = self.timeout_s
        ae.network_timeout = self.timeout_s
        ae.maximum_associations = 4
        ae.add_supported_context(VERIFICATION)
        for cx in AllStoragePresentationContexts:
            if cx.abstract_syntax is not None:
                ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        return ae

    def start(self) -> None:
        """Listen in background threads (`stop` ends it)."""
        from pynetdicom import evt

        ae = self._ae()
        try:
            self._server = ae.start_server((self.host, int(self.port)), block=False,
                                           evt_handlers=[(evt.EVT_C_STORE, self._handle_store)])
        except OSError as exc:
            raise InputError("--port", f"cannot listen on {self.host}:{self.port} ({exc.strerror})",
                             "choose a free port (ports below 1024 need privileges)") from None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


# --------------------------------------------------------------------------- node settings

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NODE_KEYS = {"aet", "host", "port", "calling_aet", "timeout_s"}


def load_nodes(path: str | PathLike[str]) -> dict[str, DicomNode]:
    """The DICOM nodes of a settings file (YAML or JSON), by name.

    Format::

        calling_aet: CEUSKIT        # our AE title (optional)
        timeout_s: 10               # optional
        nodes:
          orthanc:                  # the name the web app shows
            aet: ORTHANC
            host: 127.0.0.1
            port: 4242
            calling_aet: CEUSKIT    # optional, per node
            timeout_s: 30           # optional, per node

    Raises
    ------
    InputError
        A missing file, bad YAML, unknown keys, an invalid AE title, host,
        port, timeout or name; one line naming the file and the field.
    """
    import yaml

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(p, f"cannot read the PACS settings ({exc.strerror})", "check the path") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(p, f"not valid YAML{where}", "fix the file's syntax") from None
    if not isinstance(doc, dict):
        raise InputError(p, "the PACS settings must be a mapping with 'nodes'", "see the README's "
                         "'Connecting to a PACS'")
    unknown = sorted(set(doc) - {"calling_aet", "timeout_s", "nodes"})
    if unknown:
        raise InputError(p, f"unknown key(s) {', '.join(map(str, unknown))}",
                         "use calling_aet, timeout_s and nodes")
    calling = check_aet(str(doc.get("calling_aet", CALLING_AET)), f"{p}: calling_aet")
    timeout = _timeout(doc.get("timeout_s", DEFAULT_TIMEOUT_S), f"{p}: timeout_s")
    nodes_doc = doc.get("nodes") or {}
    if not isinstance(nodes_doc, dict):
        raise InputError(p, "'nodes' must map names to node settings", "see the README")
    out: dict[str, DicomNode] = {}
    for name, spec in nodes_doc.items():
        where = f"{p}: nodes.{name}"
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise InputError(where, "a node name is 1-64 letters, digits, '.', '_' or '-'",
                             "rename the node")
        if not isinstance(spec, dict):
            raise InputError(where, "must be a mapping with aet, host and port", "see the README")
        extra = sorted(set(spec) - _NODE_KEYS)
        missing = sorted({"aet", "host", "port"} - set(spec))
        if extra or missing:
            raise InputError(where, f"unknown key(s) {', '.join(map(str, extra))}" if extra
                             else f"missing {', '.join(missing)}", f"use {', '.join(sorted(_NODE_KEYS))}")
        host = str(spec["host"]).strip()
        if not host or any(ch.isspace() or ch in "/@" for ch in host):
            raise InputError(f"{where}.host", f"{host[:60]!r} is not a host name or address",
                             "give e.g. 127.0.0.1 or pacs.example.org")
        port = spec["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise InputError(f"{where}.port", f"{port!r} is not a TCP port", "give a number from 1 to 65535")
        out[name] = DicomNode(aet=check_aet(str(spec["aet"]), f"{where}.aet"), host=host, port=port,
                              name=name,
                              calling_aet=check_aet(str(spec.get("calling_aet", calling)),
                                                    f"{where}.calling_aet"),
                              timeout_s=_timeout(spec.get("timeout_s", timeout), f"{where}.timeout_s"))
    return out


def _timeout(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
        raise InputError(what, f"{value!r} is not a timeout in seconds", "give a number from 0.1 to 3600")
    return float(value)
