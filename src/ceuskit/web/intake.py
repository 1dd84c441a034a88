"""Turn a cine file into a study of the web app's store.

One path for every way a cine arrives: an upload, the demo, a file of the
data directory, a DICOM association (``ceuskit dicom listen``) and a
retrieve from a PACS.  `register_cine` reads a cine already in its study
directory; `file_cine` first moves (or copies) a file there.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from ceuskit.errors import InputError
from ceuskit.web import studies
from ceuskit.web.db import Store, Study, new_id
from ceuskit.web.security import sniff_upload, stored_cine

log = logging.getLogger("ceuskit.web")
_HEAD_BYTES = 256


def study_dir(data_dir: Path, study_id: str) -> Path:
    return Path(data_dir) / "studies" / study_id


def register_cine(store: Store, data_dir: Path, cine_file: Path, fmt: str, name: str, study_id: str,
                  rois: dict[str, Any] | None = None) -> Study:
    """Read a cine already moved into its study directory and add the study to the store.

    On any failure the study directory is removed and nothing is stored.

    Raises
    ------
    InputError
        The cine cannot be read, or `rois` do not fit it.
    """
    settings = studies.default_settings()
    sdir = study_dir(data_dir, study_id)
    try:
        cine = studies.load(cine_file, settings)
        info = studies.describe(cine, settings)
        studies.write_frames(cine, sdir)
        del cine
        if rois:
            rois = studies.check_rois(rois, info)
    except BaseException:
        shutil.rmtree(sdir, ignore_errors=True)
        raise
    with store.session() as s:
        study = Study(id=study_id, display_name=name, format=fmt, settings=settings, info=info,
                      rois=rois or {"space": "panel", "rois": []})
        s.add(study)
        s.flush()
    log.info("study %s created (%s)", study_id, fmt)
    return study


def file_cine(store: Store, data_dir: Path, source: Path, name: str, *, move: bool = True) -> Study:
    """A new study from a cine file anywhere on disk (moved into the store, or copied).

    Raises
    ------
    InputError
        The file is not a cine ceuskit can read.
    """
    with Path(source).open("rb") as fh:
        fmt = sniff_upload(fh.read(_HEAD_BYTES))
    if fmt is None:
        raise InputError(Path(source).name, "not a DICOM file or a video ceuskit can read",
                         "send a DICOM or video cine")
    sid = new_id()
    sdir = study_dir(data_dir, sid)
    sdir.mkdir(parents=True)
    target = stored_cine(sdir, fmt)
    try:
        if move:
            shutil.move(str(source), target)
        else:
            shutil.copyfile(source, target)
    except BaseException:
        shutil.rmtree(sdir, ignore_errors=True)
        raise
    return register_cine(store, data_dir, target, fmt, name, sid)
