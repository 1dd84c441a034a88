"""The PDF report: the HTML report printed by WeasyPrint, offline.

The HTML report is self-contained (figures are ``data:`` URLs), so the PDF
needs nothing from outside: the URL fetcher refuses every other scheme, and
a report that asks for one prints without it rather than reaching out.  The
print layout (A4, page numbers, the disclaimer in every page's footer) is
the ``@page`` / ``@media print`` part of the report's own stylesheet.

WeasyPrint needs the Pango libraries of the operating system; where they
are missing `render_pdf` raises `PdfUnavailableError` with what to install,
and `ceuskit.api.analyze_to_dir` turns that into the warning
``pdf-not-written`` instead of failing the analysis.
"""

from __future__ import annotations

import base64
import io
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

#: Loggers that report every font substitution and unfetched resource at
#: WARNING: noise for a report whose resources are all embedded.
_NOISY_LOGGERS = ("weasyprint", "weasyprint.progress", "fontTools", "fontTools.subset")
INSTALL_HINT = ("install the Pango libraries (Debian/Ubuntu: apt-get install libpango-1.0-0 "
                "libpangoft2-1.0-0; see WeasyPrint's installation notes for other systems)")


#: The report's PNG figures go into the PDF as JPEG at this quality, with
#: full-resolution colour (no chroma subsampling, so a map's colours stay
#: sharp at region edges): WeasyPrint embeds JPEG as it is but decodes and
#: re-compresses every PNG (twice with an alpha channel), which took ~0.5 s
#: of a ~2 s print of the demo-sized report.
PRINT_JPEG_QUALITY = 92
_PNG_DATA_URL = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def print_images(html: str) -> str:
    """`html` with its embedded PNG figures re-encoded as JPEG (alpha flattened on white)."""
    from PIL import Image

    def jpeg(match: re.Match[str]) -> str:
        image: Image.Image = Image.open(io.BytesIO(base64.b64decode(match.group(1))))
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
            flat = Image.new("RGB", image.size, (255, 255, 255))
            flat.paste(image, mask=image.getchannel("A"))
            image = flat
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="JPEG", quality=PRINT_JPEG_QUALITY, subsampling=0)
        return f'src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode("ascii")}"'

    return _PNG_DATA_URL.sub(jpeg, html)


class PdfUnavailableError(RuntimeError):
    """The PDF engine cannot run here (WeasyPrint or its system libraries are missing)."""


@cache
def _load_weasyprint() -> Any:
    """Import WeasyPrint once; a missing Pango shows up as OSError at import."""
    import weasyprint

    return weasyprint


def _weasyprint() -> Any:
    try:
        return _load_weasyprint()
    except (OSError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PdfUnavailableError(f"WeasyPrint cannot load its system libraries ({first}); "
                                  f"{INSTALL_HINT}") from None


def pdf_unavailable_reason() -> str | None:
    """Why a PDF cannot be made here, or None when it can (loads WeasyPrint)."""
    try:
        _weasyprint()
    except PdfUnavailableError as exc:
        return str(exc)
    return None


@contextmanager
def _quiet_logs() -> Iterator[None]:
    saved = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    try:
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _data_only_fetcher(weasyprint: Any) -> Any:
    """A URL fetcher for ``data:`` URLs only: the report never reaches the network or disk."""
    base = weasyprint.urls.URLFetcher

    class DataOnlyFetcher(base):  # type: ignore[misc, valid-type]
        def fetch(self, url: str, headers: Any = None) -> Any:
            if not url.startswith("data:"):
                raise ValueError(f"ceuskit reports embed everything; not fetching {url[:80]!r}")
            return super().fetch(url, headers)

    return DataOnlyFetcher(allowed_protocols=("data",), timeout=5)


def render_pdf(html: str) -> bytes:
    """Print an HTML report to PDF.

    Parameters
    ----------
    html : str
        A self-contained report (`ceuskit.report.html.render_html`).

    Returns
    -------
    bytes
        The PDF document (A4; see the report's print stylesheet).

    Raises
    ------
    PdfUnavailableError
        WeasyPrint or the Pango libraries it needs cannot be loaded.
    """
    weasyprint = _weasyprint()
    with _quiet_logs():
        document = weasyprint.HTML(string=print_images(html), url_fetcher=_data_only_fetcher(weasyprint),
                                   media_type="print")
        pdf: bytes = document.write_pdf()
    return pdf
