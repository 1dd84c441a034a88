"""A phantom exam recorded as several clips with gaps between them.

`write_clips` cuts a phantom's cine at the given spans (s on the exam
clock) and writes one cine per clip, each with its own clock starting at 0;
DICOM clips carry their acquisition time of day, so that ``ceuskit analyze
clip-1.dcm clip-2.dcm ...`` puts them back on one clock (`ceuskit.clips`);
MP4 and NPZ clips need ``--clip-start-s``.  truth.json is the whole exam's.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from ceuskit.outputs import write_json_atomic
from ceuskit.simulate import FORMATS, Phantom, phantom_outputs, write_cine_file

#: Time of day (s after midnight) of the exam's first frame in DICOM clips.
EXAM_START_TIME_OF_DAY_S = 10 * 3600.0


def parse_spans(text: str) -> list[tuple[float, float]]:
    """``"0-60,90-110"`` -> [(0, 60), (90, 110)] (s); increasing, not overlapping."""
    spans: list[tuple[float, float]] = []
    for part in text.split(","):
        try:
            a, b = (float(v) for v in part.strip().split("-"))
        except ValueError:
            raise ValueError(f"clip span {part.strip()!r} is not START-END in s") from None
        if not 0 <= a < b:
            raise ValueError(f"clip span {part.strip()!r} must have 0 <= START < END")
        if spans and a <= spans[-1][1]:
            raise ValueError(f"clip span {part.strip()!r} starts before the previous one ends")
        spans.append((a, b))
    return spans


def write_clips(phantom: Phantom, out_dir: str | PathLike[str], spans: list[tuple[float, float]],
                fmt: str = "dicom", *, overwrite: bool = False) -> dict[str, Path]:
    """Write the phantom as clips ``clip-1.<ext>``, ... plus truth.json and rois.json.

    Returns
    -------
    dict of str to Path
        ``{"clip-1": ..., ..., "truth": ..., "rois": ...}``.

    Raises
    ------
    ValueError
        A span with fewer than two frames, or an unknown format.
    InputError
        Outputs already there without `overwrite`.
    """
    t = phantom.times_s
    # Every span is checked before any file is written: no partial exam.
    selected = []
    for a, b in spans:
        idx = np.flatnonzero((t >= a - 1e-9) & (t <= b + 1e-9))
        if idx.size < 2:
            raise ValueError(f"clip {a:g}-{b:g} s holds fewer than two frames of the cine "
                             f"(0-{float(t[-1]):g} s)")
        selected.append(idx)
    ext = Path(FORMATS[fmt]).suffix if fmt in FORMATS else ""
    paths = phantom_outputs(out_dir, {f"clip-{k + 1}": f"clip-{k + 1}{ext}"
                                      for k in range(len(spans))}, fmt, overwrite=overwrite)
    regions = (phantom.bmode_panel, phantom.contrast_panel)
    # One exam: one study and one frame of reference (the probe stays put).
    from pydicom.uid import generate_uid

    study = (generate_uid(), generate_uid())
    clips = []
    for k, idx in enumerate(selected):
        frames = np.asarray(phantom.frames[idx])
        local = t[idx] - t[idx[0]]
        path = paths[f"clip-{k + 1}"]
        write_cine_file(path, fmt, frames, local, regions=regions, spacing_mm=phantom.spacing_mm,
                        description=f"ceuskit phantom clip {k + 1}",
                        acquisition_time_of_day_s=(EXAM_START_TIME_OF_DAY_S + float(t[idx[0]])
                                                   if fmt == "dicom" else None),
                        study=study if fmt == "dicom" else None)
        clips.append({"file": path.name, "start_s": float(t[idx[0]]), "n_frames": int(idx.size)})
    write_json_atomic(paths["truth"], {**phantom.truth, "clips": clips})
    write_json_atomic(paths["rois"], phantom.rois)
    return paths


__all__ = ["EXAM_START_TIME_OF_DAY_S", "parse_spans", "write_clips"]
