"""WeasyPrint loaded ahead of time in a child process, to print one PDF.

Importing WeasyPrint takes ~1-2 s and printing a report ~2-4 s, all of it
Python that holds one core.  ``ceuskit analyze`` starts a `PdfPrinter` as
soon as it knows a PDF is wanted, so that the import runs on the other core
while the cine is read and registered, and the print runs while the
parametric maps are written.

The child is ``python -m ceuskit.report.pdf_printer``: it imports WeasyPrint,
writes one status record (ready, or the reason it cannot print), then reads
one HTML document from its stdin and writes back the PDF or the error.  The
records on both pipes are an 8-byte big-endian length and that many bytes;
a status or error record is UTF-8 text after a one-byte tag.  No file is
written and nothing else is read, so patient data stays in the two pipes.

Whatever goes wrong with the child itself (it cannot start, dies, answers
garbage), the printer falls back to printing in this process
(`ceuskit.report.pdf.render_pdf`): the mechanism can cost time, never the PDF.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import IO

from ceuskit.report.pdf import PdfUnavailableError, pdf_unavailable_reason, render_pdf

_READY, _UNAVAILABLE, _PDF, _ERROR = b"R", b"U", b"P", b"E"
_LENGTH = struct.Struct(">Q")


def _send(pipe: IO[bytes], payload: bytes) -> None:
    pipe.write(_LENGTH.pack(len(payload)))
    pipe.write(payload)
    pipe.flush()


def _receive(pipe: IO[bytes]) -> bytes:
    head = pipe.read(_LENGTH.size)
    if len(head) != _LENGTH.size:
        raise EOFError("the PDF printer closed its pipe")
    (size,) = _LENGTH.unpack(head)
    body = pipe.read(size)
    if len(body) != size:
        raise EOFError("the PDF printer's answer was cut short")
    return body


class PdfPrinter:
    """Print one HTML report to PDF, with WeasyPrint loaded beforehand.

    Parameters
    ----------
    in_process : bool, optional
        Print in this process instead of a child.  Default: in this process
        when WeasyPrint is loaded here already (a long-lived process that has
        printed before), otherwise in a child.

    Notes
    -----
    Use as a context manager (or call `close`): the child exits when its
    stdin closes.  A printer prints one document (`submit` or `print`,
    once); `unavailable_reason` may be asked any time.
    """

    def __init__(self, *, in_process: bool | None = None) -> None:
        if in_process is None:
            in_process = "weasyprint" in sys.modules
        self._child: subprocess.Popen[bytes] | None = None
        self._status: tuple[bytes, str] | None = None
        if not in_process:
            self._child = _start_child()

    def __enter__(self) -> PdfPrinter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def in_child(self) -> bool:
        """Whether a child process prints (False once it failed and this process took over)."""
        return self._child is not None

    def _fall_back(self) -> None:
        """Give up on the child: this process prints from now on (`close` forgets the child)."""
        self.close()

    def unavailable_reason(self) -> str | None:
        """Why no PDF can be printed here, or None when it can.

        Waits for the child to have loaded WeasyPrint.
        """
        if self._child is None:
            return pdf_unavailable_reason()
        if self._status is None:
            try:
                assert self._child.stdout is not None
                record = _receive(self._child.stdout)
                tag, text = record[:1], record[1:].decode("utf-8")
                if tag not in (_READY, _UNAVAILABLE):
                    raise EOFError(f"unexpected status {tag!r}")
                self._status = (tag, text)
            except (OSError, EOFError, UnicodeDecodeError):
                self._fall_back()
                return pdf_unavailable_reason()
        return self._status[1] if self._status[0] == _UNAVAILABLE else None

    def submit(self, html: str) -> PdfJob:
        """Start printing `html`; the job's `PdfJob.result` is the PDF.

        In a child, the print runs while this process goes on; in this
        process, `PdfJob.result` prints.
        """
        return PdfJob(self, html, self._send_document(html))

    def print(self, html: str) -> bytes:
        """The PDF of `html` (`ceuskit.report.pdf.render_pdf`'s, printed by the child).

        Raises
        ------
        PdfUnavailableError
            WeasyPrint or the Pango libraries cannot be loaded.
        """
        return self.submit(html).result()

    def _send_document(self, html: str) -> bool:
        """Send `html` to the child; False when this process prints (no child, or it failed)."""
        if self.unavailable_reason() is not None or self._child is None:
            return False  # (asking may have replaced a dead child by this process)
        try:
            assert self._child.stdin is not None
            _send(self._child.stdin, html.encode("utf-8"))
        except OSError:
            self._fall_back()
            return False
        return True

    def _result(self, html: str, sent: bool) -> bytes:
        reason = self.unavailable_reason()
        if reason is not None:
            raise PdfUnavailableError(reason)
        if not sent or self._child is None:
            return render_pdf(html)
        try:
            assert self._child.stdout is not None
            record = _receive(self._child.stdout)
        except (OSError, EOFError):
            self._fall_back()
            return render_pdf(html)
        tag, body = record[:1], record[1:]
        if tag == _PDF:
            return body
        if tag == _ERROR:
            raise PdfUnavailableError(body.decode("utf-8", "replace"))
        self._fall_back()
        return render_pdf(html)

    def close(self) -> None:
        """Let the child exit (idempotent)."""
        child, self._child = self._child, None
        if child is None:
            return
        for pipe in (child.stdin, child.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


class PdfJob:
    """A PDF being printed by a `PdfPrinter`."""

    def __init__(self, printer: PdfPrinter, html: str, sent: bool) -> None:
        self._printer, self._html, self._sent = printer, html, sent

    def result(self) -> bytes:
        """The PDF document (waits for the print).

        Raises
        ------
        PdfUnavailableError
            WeasyPrint or the Pango libraries cannot be loaded.
        """
        return self._printer._result(self._html, self._sent)


def _start_child() -> subprocess.Popen[bytes] | None:
    """``python -m ceuskit.report.pdf_printer`` with this process's ceuskit, or None."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    # The child imports the same ceuskit as this process, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    try:
        return subprocess.Popen([sys.executable, "-m", "ceuskit.report.pdf_printer"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=env)
    except OSError:
        return None


def _serve(stdin: IO[bytes], stdout: IO[bytes]) -> int:
    """The child's side: load WeasyPrint, say so, print one document."""
    reason = pdf_unavailable_reason()
    if reason is not None:
        _send(stdout, _UNAVAILABLE + reason.encode("utf-8"))
        return 0
    _send(stdout, _READY)
    try:
        html = _receive(stdin).decode("utf-8")
    except EOFError:
        return 0  # the parent no longer needs a PDF
    try:
        _send(stdout, _PDF + render_pdf(html))
    except PdfUnavailableError as exc:
        _send(stdout, _ERROR + str(exc).encode("utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(_serve(sys.stdin.buffer, sys.stdout.buffer))
