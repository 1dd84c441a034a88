"""Readers and writers for cine loops.

`load_cine` looks at a file's content (not its name) and hands it to the
matching reader: DICOM (``read_dicom``), NumPy archives (``read_npz``) or
video containers through FFmpeg (``read_video``).
"""

from __future__ import annotations

import zipfile
from os import PathLike
from pathlib import Path

from ceuskit.cine import Cine
from ceuskit.errors import InputError


def _zip_of_arrays(path: Path) -> bool:
    """True for a ZIP whose members are all ``.npy`` arrays (an NPZ under another name)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return bool(names) and all(n.endswith(".npy") for n in names)


def sniff_format(path: str | PathLike[str]) -> str:
    """Guess a cine file's format from its first bytes.

    Returns
    -------
    str
        ``"dicom"``, ``"npz"`` or ``"video"`` (anything else; the video reader
        refuses what FFmpeg cannot open).

    Raises
    ------
    InputError
        If the file does not exist, is not a regular file or is empty.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file", "check the path")
    if not p.is_file():
        raise InputError(p, "is not a regular file", "give the path of a DICOM or video cine")
    with p.open("rb") as fh:
        head = fh.read(132)
    if not head:
        raise InputError(p, "is empty", "re-export the cine")
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[:4] == b"PK\x03\x04" and (p.suffix.lower() == ".npz" or _zip_of_arrays(p)):
        return "npz"
    if p.suffix.lower() in {".dcm", ".dicom"}:
        return "dicom"
    return "video"


def load_cine(path: str | PathLike[str], *, fps: float | None = None) -> Cine:
    """Load a cine loop from a DICOM, video or NPZ file.

    Parameters
    ----------
    path : path-like
        The file.
    fps : float, optional
        Frame rate in frames per second, used only when the file carries no
        timing of its own (or to impose a constant rate on a file whose
        timestamps are unusable).

    Returns
    -------
    Cine

    Raises
    ------
    InputError
        For anything wrong with the file, with a one-line message naming it.
    """
    fmt = sniff_format(path)
    if fmt == "dicom":
        from ceuskit.io.dicom import read_dicom

        return read_dicom(path, fps=fps)
    if fmt == "npz":
        from ceuskit.io.arrays import read_npz

        return read_npz(path, fps=fps)
    from ceuskit.io.video import read_video

    return read_video(path, fps=fps)


__all__ = ["load_cine", "sniff_format"]
