"""Access token, safe names and upload content checks for the web app.

The app trusts nothing a client sends as a path: files are stored under
server-generated ids, the uploaded file's name is only shown (after
sanitising), and every id is checked against `ID_PATTERN` before use.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
import unicodedata
from pathlib import Path
from urllib.parse import urlsplit

#: Study and analysis ids: UUID4 hex, as `ceuskit.web.db.new_id` makes them.
ID_PATTERN = r"^[0-9a-f]{32}$"
_ID_RE = re.compile(ID_PATTERN)
#: Names of files served from a result directory (``maps/pe.png`` and the like).
_RESULT_NAME_RE = re.compile(r"^(?:[A-Za-z0-9_-][A-Za-z0-9_.-]{0,80}/)?[A-Za-z0-9_-][A-Za-z0-9_.-]{0,80}$")
TOKEN_COOKIE = "ceuskit_token"
LOOPBACK_NAMES = ("localhost",)

#: Container signatures of the video formats FFmpeg is asked to read:
#: (offset, bytes).  Anything else is refused before it reaches a decoder.
_VIDEO_MAGIC: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"),             # MP4, MOV, M4V, 3GP
    (4, b"moov"), (4, b"mdat"), (4, b"wide"), (4, b"free"), (4, b"skip"),  # older QuickTime
    (0, b"RIFF"),             # AVI (checked further below)
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (0, b"\x00\x00\x01\xba"),  # MPEG program stream
    (0, b"\x00\x00\x01\xb3"),  # MPEG video
    (0, b"G"),                # MPEG transport stream (checked further below)
    (0, b"OggS"),
)


def is_loopback(host: str) -> bool:
    """True when `host` (an address or ``localhost``) is on the loopback interface."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token with the server's."""
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def valid_id(value: str) -> bool:
    return bool(_ID_RE.match(value))


def valid_result_name(name: str) -> bool:
    """A file name inside a result directory: at most one folder level, no ``..``."""
    return bool(_RESULT_NAME_RE.match(name)) and ".." not in name


def display_name(raw: str | None, fallback: str = "cine") -> str:
    """A file name fit for showing: last path component, printable, at most 80 characters.

    Never used as a path: uploads are stored under server-chosen names.
    """
    if not raw:
        return fallback
    name = re.split(r"[\\/]", raw)[-1]
    name = unicodedata.normalize("NFKC", name)
    name = "".join(ch for ch in name if ch.isprintable() and ch not in "<>\"'`&;|$")
    name = name.strip().strip(".").strip()
    return name[:80] or fallback


def sniff_upload(head: bytes) -> str | None:
    """The kind of an uploaded cine from its first bytes.

    Parameters
    ----------
    head : bytes
        At least the first 188 bytes of the file (fewer if it is shorter).

    Returns
    -------
    str or None
        ``"dicom"`` (Part 10 preamble), ``"npz"`` (ZIP, confirmed later by the
        reader), ``"video"`` (a known container signature), or None for
        anything else.
    """
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:4] == b"PK\x03\x04":
        return "npz"
    for offset, magic in _VIDEO_MAGIC:
        if head[offset:offset + len(magic)] != magic:
            continue
        if magic == b"RIFF" and head[8:12] != b"AVI ":
            continue
        if magic == b"G" and not (len(head) >= 189 and head[188:189] == b"G"):
            continue
        return "video"
    return None


#: File name each stored cine gets (the reader picks the format from content;
#: the suffix only helps `ceuskit.io.sniff_format` recognise NPZ archives).
STORED_NAMES = {"dicom": "cine.dcm", "npz": "cine.npz", "video": "cine.video"}


def stored_cine(study_dir: Path, fmt: str) -> Path:
    return study_dir / STORED_NAMES[fmt]


def scrub_paths(text: str, data_dir: Path) -> str:
    """A message without the server's directories (``.../studies/<id>/cine.dcm`` -> ``cine.dcm``)."""
    inner = r"/(?:studies/[0-9a-f]{32}/(?:analyses/[0-9a-f]{32}(?:\.part)?/)?)?"
    for base in {str(data_dir), str(data_dir.resolve())}:
        text = re.sub(re.escape(base.rstrip("/")) + inner, "", text)
    return text


# --------------------------------------------------------------------------- cross-site requests

#: Methods that change state: they must come from the app's own pages (or
#: from a client that sends no Origin/Referer at all, such as a script).
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Content types a cross-site HTML form (or a "simple" fetch) can send without
#: a CORS preflight; the API accepts none of them except for the login form.
SIMPLE_FORM_TYPES = ("text/plain", "application/x-www-form-urlencoded")

#: Response headers on every page and API answer: no framing by other sites,
#: no content sniffing, no referrer leaking ids to other sites, and scripts
#: only from the app itself (plotly needs inline styles and data:/blob: images).
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
                                "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL (lower case), or None when it has none."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def cross_site(origin: str | None, referer: str | None, scheme: str, host: str) -> bool:
    """True when a request's Origin (or, without one, its Referer) is not the app's own.

    Parameters
    ----------
    origin, referer : str or None
        The request's headers.
    scheme, host : str
        The app's own scheme and Host header (``host[:port]``).
    """
    own = f"{scheme.lower()}://{host.lower()}"
    if origin:
        # "null" (sandboxed frames, file: pages) is never the app.
        return origin.strip().lower() != own
    if referer:
        return origin_of(referer) != own
    return False


class LoginThrottle:
    """Wrong-token attempts per client address: after `limit` within `window_s`, wait.

    Parameters
    ----------
    limit : int
        Wrong attempts allowed per window.
    window_s : float
        Window length (s); the client is refused until its oldest counted
        attempt is this old.
    """

    def __init__(self, limit: int = 5, window_s: float = 60.0) -> None:
        self.limit = int(limit)
        self.window_s = float(window_s)
        self._failures: dict[str, list[float]] = {}

    def _recent(self, client: str, now: float) -> list[float]:
        kept = [t for t in self._failures.get(client, []) if now - t < self.window_s]
        if kept:
            self._failures[client] = kept
        else:
            self._failures.pop(client, None)
        return kept

    def retry_after_s(self, client: str, now: float) -> float:
        """Seconds the client must wait (0 when it may try)."""
        recent = self._recent(client, now)
        if len(recent) < self.limit:
            return 0.0
        return max(0.0, self.window_s - (now - recent[0]))

    def failed(self, client: str, now: float) -> None:
        self._recent(client, now)
        self._failures.setdefault(client, []).append(now)
        if len(self._failures) > 10_000:  # bounded memory under a flood of addresses
            self._failures.pop(next(iter(self._failures)))
