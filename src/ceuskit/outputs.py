"""Writing results: atomic files, refusal to overwrite, the output directory."""

from __future__ import annotations

import json
import math
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ceuskit.errors import InputError


def finite_or_none(value: Any) -> float | None:
    """``float(value)``, or None when it is not a finite number (JSON has no NaN or infinity)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def json_ready(x: Any) -> Any:
    """A JSON-ready copy of nested dicts/lists: NumPy scalars to Python, non-finite floats to None."""
    if isinstance(x, dict):
        return {str(k): json_ready(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_ready(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def check_out_dir(out_dir: str | PathLike[str], names: Iterable[str], *, overwrite: bool) -> Path:
    """Check an output directory before any work is done, without creating it.

    Raises
    ------
    InputError
        If the directory (or, when it does not exist yet, its nearest existing
        parent) is not a writable directory, or it already holds one of
        ``names`` and ``overwrite`` is false.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory", "choose another --out")
    taken = [n for n in names if (out / n).exists()]
    if taken and not overwrite:
        raise InputError(out, f"already holds {', '.join(taken)}",
                         "choose another --out, or pass --overwrite to replace them")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(out, f"output directory cannot be created ({probe} is a file)",
                         "choose another --out")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".ceuskit-write-test-"):
            pass
    except OSError as exc:
        raise InputError(out, f"output directory is not writable ({exc.strerror})",
                         "choose a directory you can write to with --out") from None
    return out


def make_out_dir(out_dir: str | PathLike[str]) -> Path:
    """Create the output directory (just before the first file is written)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(out, f"output directory cannot be created ({exc.strerror})",
                         "choose another --out") from None
    return out


@contextmanager
def atomic_path(path: str | PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it when the block succeeds.

    Readers (and a crash) never see a half-written file: the content is
    written under a hidden temporary name in the same directory, then renamed
    over the target in one step; on any error the temporary file is removed
    and the target is left as it was.  The temporary name keeps the target's
    suffix, for writers that choose a container from it.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.stem}.{secrets.token_hex(6)}.part{target.suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | PathLike[str], data: bytes) -> Path:
    """Write a file atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | PathLike[str], text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | PathLike[str], doc: Any) -> Path:
    return write_text_atomic(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")


def remove_stale(out_dir: str | PathLike[str], names: Iterable[str], written: Iterable[str]) -> list[str]:
    """Remove earlier outputs of a result set that this run did not write again.

    With ``--overwrite`` a run replaces the whole set: a ``maps/`` or a
    ``report.pdf`` left from an earlier run beside a results.json that says
    no maps (or no PDF) were made would be read as this run's.  Called after
    the new outputs are in place.

    Returns
    -------
    list of str
        The names removed.
    """
    import shutil

    out = Path(out_dir)
    keep = set(written)
    removed = []
    for name in names:
        path = out / name
        if name in keep or not (path.exists() or path.is_symlink()):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(name)
    return removed
