"""The PDF printer's child process (`ceuskit.report.pdf_printer`)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import zlib

import pytest

from ceuskit.report import pdf as pdf_module
from ceuskit.report import pdf_printer
from ceuskit.report.pdf import PdfUnavailableError, render_pdf
from ceuskit.report.pdf_printer import PdfPrinter

HTML = ("<html><head><style>@page { size: A4 }</style></head><body>"
        + "".join(f"<h2>Section {i}</h2><p>{'word ' * 400}</p>" for i in range(6))
        + "</body></html>")


def _pages(pdf: bytes) -> int:
    """Page objects in a PDF, those in compressed object streams included."""
    text = pdf
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, flags=re.S):
        try:
            text += zlib.decompress(stream)
        except zlib.error:
            pass
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", text))


def test_the_child_prints_what_this_process_prints() -> None:
    with PdfPrinter(in_process=False) as printer:
        assert printer.in_child
        assert printer.unavailable_reason() is None
        job = printer.submit(HTML)
        child_pdf = job.result()
        assert printer.in_child  # no fallback was needed
    here = render_pdf(HTML)
    assert child_pdf.startswith(b"%PDF-")
    assert _pages(child_pdf) == _pages(here) >= 2


def test_a_child_without_pango_reports_why(monkeypatch) -> None:
    def no_pango():
        raise OSError("cannot load library 'libpango-1.0-0'")

    monkeypatch.setattr(pdf_module, "_load_weasyprint", no_pango)
    out = io.BytesIO()
    assert pdf_printer._serve(io.BytesIO(), out) == 0
    record = pdf_printer._receive(io.BytesIO(out.getvalue()))
    assert record[:1] == b"U" and b"libpango-1.0-0" in record and b"apt-get install" in record


def test_the_child_prints_one_document_from_its_stdin() -> None:
    stdin = io.BytesIO()
    pdf_printer._send(stdin, HTML.encode("utf-8"))
    out = io.BytesIO()
    assert pdf_printer._serve(io.BytesIO(stdin.getvalue()), out) == 0
    answers = io.BytesIO(out.getvalue())
    assert pdf_printer._receive(answers) == b"R"
    record = pdf_printer._receive(answers)
    assert record[:1] == b"P" and record[1:].startswith(b"%PDF-")


def test_a_child_that_dies_costs_time_not_the_pdf(monkeypatch) -> None:
    monkeypatch.setattr(pdf_printer, "_start_child", lambda: subprocess.Popen(
        [sys.executable, "-c", "pass"], stdin=subprocess.PIPE, stdout=subprocess.PIPE))
    with PdfPrinter(in_process=False) as printer:
        pdf = printer.print(HTML)
        assert not printer.in_child  # this process took over
    assert pdf.startswith(b"%PDF-") and _pages(pdf) >= 2


def test_a_child_that_cannot_start_falls_back(monkeypatch) -> None:
    monkeypatch.setattr(pdf_printer, "_start_child", lambda: None)
    printer = PdfPrinter(in_process=False)
    assert not printer.in_child
    assert printer.unavailable_reason() is None
    assert printer.print(HTML).startswith(b"%PDF-")
    printer.close()
    printer.close()  # idempotent


def test_without_pango_in_this_process_printing_says_why(monkeypatch) -> None:
    def no_pango():
        raise OSError("cannot load library 'libpango-1.0-0'")

    monkeypatch.setattr(pdf_module, "_load_weasyprint", no_pango)
    with PdfPrinter(in_process=True) as printer:
        assert "libpango-1.0-0" in (printer.unavailable_reason() or "")
        with pytest.raises(PdfUnavailableError, match="apt-get install"):
            printer.print(HTML)
