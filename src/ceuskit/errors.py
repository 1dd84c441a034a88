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


def read_user_text(path: str | PathLike[str], what: str, kind: str, *,
                   encoding: str = "utf-8") -> str:
    """The text of a file the user named, or one `InputError` line saying why not.

    Parameters
    ----------
    what : str
        What the file is, for "no such ..." (``"parameter file"``).
    kind : str
        The format expected, for the fix (``"YAML"``, ``"CSV"``).
    """
    from pathlib import Path

    p = Path(path)
    try:
        return p.read_text(encoding=encoding)
    except FileNotFoundError:
        raise InputError(p, f"no such {what}", "check the path") from None
    except IsADirectoryError:
        raise InputError(p, f"is a directory, not a {what}", f"give the {kind} file itself") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(p, f"cannot be read ({exc})", f"give a UTF-8 {kind} file") from None
