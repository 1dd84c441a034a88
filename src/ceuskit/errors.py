"""Errors and warnings that travel through the pipeline.

`InputError` is the one exception a user is meant to see: the command line
prints its message on one line and exits with status 2.  Everything else is an
internal error (exit status 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike


class CeuskitError(Exception):
    """Base class of ceuskit's own exceptions."""


class InputError(CeuskitError):
    """Bad input or usage.

    The message is a single line that names the offending file (or option)
    and says how to fix it.
    """

    def __init__(self, source: str | PathLike[str] | None, problem: str, fix: str = "") -> None:
        self.source = None if source is None else str(source)
        self.problem = problem
        self.fix = fix
        parts = [f"{self.source}: {problem}" if self.source else problem]
        if fix:
            parts.append(fix)
        message = ". ".join(p.rstrip(".") for p in parts) + "."
        super().__init__(" ".join(message.split()))


@dataclass(frozen=True)
class AnalysisWarning:
    """A quality or provenance warning carried into results.json and the report.

    Attributes
    ----------
    code : str
        Stable machine-readable identifier, e.g. ``"timing-from-cine-rate"``.
    message : str
        What happened and what it means for the numbers.
    """

    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}
