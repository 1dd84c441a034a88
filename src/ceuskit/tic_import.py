"""Time-intensity curves exported as CSV: reading, checking and fitting them.

``ceuskit fit TIC.csv`` fits curves measured elsewhere (another program's ROI
means, or a TIC exported by ceuskit) with the engine of ``ceuskit analyze``:
the same enhancement test, models, descriptors and parameter definitions
(`ceuskit.pipeline.PERFUSION_KEYS`).

The CSV has a header row.  The first column is time in seconds, named one of
`TIME_COLUMNS` (case-insensitive); every other column is one ROI's curve,
named by its header.  Values are either linear echo power (``--linear``) or
log-compressed display values 0..255 (``--dynamic-range DB``), linearised with
`ceuskit.linearize.to_linear_power` as cines are.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ceuskit.errors import InputError
from ceuskit.linearize import check_dynamic_range, to_linear_power

#: Accepted names of the time column (first column; compared case-insensitively).
TIME_COLUMNS = ("time_s", "time", "t", "t_s", "time (s)", "time [s]", "seconds")
#: Fewest samples a curve needs (baseline, rise, peak and fall for a 5-parameter model).
MIN_SAMPLES = 10
#: Largest display value (8-bit display).
DISPLAY_MAX = 255.0


@dataclass(frozen=True)
class TicTable:
    """Curves read from a TIC CSV.

    Attributes
    ----------
    source : str
        The file name.
    times_s : ndarray, shape (T,)
        Sample times (s), strictly increasing.
    names : tuple of str
        ROI names (the column headers), in file order.
    values : ndarray, shape (len(names), T)
        The values as read (linear power or display values).
    time_column : str
        The header of the time column as written.
    """

    source: str
    times_s: NDArray[np.float64]
    names: tuple[str, ...]
    values: NDArray[np.float64]
    time_column: str
    extra: dict[str, Any] = field(default_factory=dict)


def _fix() -> str:
    return ("give a CSV with a header row: the first column time in s (named "
            + "/".join(TIME_COLUMNS[:3]) + "), then one column of numbers per ROI")


def read_tic_csv(path: str | PathLike[str]) -> TicTable:
    """Read and check a TIC CSV (see the module docstring for the layout).

    Raises
    ------
    InputError
        Unreadable file; no header or no time column; no ROI column; an
        empty, non-numeric or non-finite cell (the column and the row are
        named; rows count from 1 at the header); times that do not increase;
        fewer than `MIN_SAMPLES` samples; duplicated ROI names.
    """
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh)]
    except FileNotFoundError:
        raise InputError(p, "no such file", "give the path of the TIC CSV") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(p, f"cannot be read as CSV ({type(exc).__name__})", _fix()) from None
    # Blank lines carry nothing (csv gives []).
    numbered = [(i + 1, r) for i, r in enumerate(rows) if any(c.strip() for c in r)]
    if not numbered:
        raise InputError(p, "is empty", _fix())
    _, header = numbered[0]
    header = [h.strip() for h in header]
    if len(header) == 1 and ";" in header[0]:
        raise InputError(p, "is separated by ';', not ','",
                         "export the CSV with commas between cells and '.' as the decimal point")
    if header[0].lower() not in TIME_COLUMNS:
        raise InputError(p, f"has no time column (the first column is named {header[0][:40]!r})",
                         "name the first column time_s (or time, t) and give the times in s")
    names = header[1:]
    if not names:
        raise InputError(p, "has no ROI column", "add one column per ROI after the time column")
    if any(not n for n in names):
        col = next(i for i, n in enumerate(names) if not n) + 2
        raise InputError(p, f"column {col} has no name", "give every ROI column a header (its ROI name)")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(p, f"ROI name {dup[0][:40]!r} is used by more than one column",
                         "give each ROI column its own name")
    body = numbered[1:]
    width = len(header)
    data = np.empty((len(body), width), dtype=np.float64)
    for j, (line, row) in enumerate(body):
        if len(row) > width and any(c.strip() for c in row[width:]):
            raise InputError(p, f"row {line} has {len(row)} cells but the header has {width}",
                             "give every row one value per header column")
        cells = [c.strip() for c in row[:width]] + [""] * max(0, width - len(row))
        for k, cell in enumerate(cells):
            col_name = header[k][:40]
            if cell == "":
                raise InputError(p, f"column {col_name!r}, row {line} is empty",
                                 "fill every cell with a number (leave no gaps or NaN)")
            try:
                v = float(cell)
            except ValueError:
                raise InputError(p, f"column {col_name!r}, row {line}: {cell[:30]!r} is not a number",
                                 "give plain numbers (decimal point '.', no units in cells)") from None
            if not math.isfinite(v):
                raise InputError(p, f"column {col_name!r}, row {line} is {cell[:30]!r}, not a finite number",
                                 "fill every cell with a finite number (no NaN or inf)")
            data[j, k] = v
    if data.shape[0] < MIN_SAMPLES:
        raise InputError(p, f"has {data.shape[0]} samples; a curve fit needs at least {MIN_SAMPLES}",
                         "export the whole acquisition (every frame's time and values)")
    t = data[:, 0]
    steps = np.diff(t)
    if np.any(steps <= 0):
        k = int(np.flatnonzero(steps <= 0)[0])
        line = body[k + 1][0]
        what = "repeats" if steps[k] == 0 else "is earlier than"
        raise InputError(p, f"time {t[k + 1]:g} s at row {line} {what} the row before ({t[k]:g} s)",
                         "give strictly increasing times in s (one row per frame, sorted, no duplicates)")
    return TicTable(source=p.name, times_s=t.copy(), names=tuple(names),
                    values=np.ascontiguousarray(data[:, 1:].T), time_column=header[0])


def linear_curves(table: TicTable, *, dynamic_range_db: float | None = None,
                  linear: bool = False, source: str | PathLike[str] | None = None,
                  ) -> NDArray[np.float64]:
    """The table's curves as linear echo power (a.u.).

    Parameters
    ----------
    dynamic_range_db : float, optional
        Display dynamic range (dB): the values are display values 0..255 and
        are linearised with `ceuskit.linearize.to_linear_power`.
    linear : bool
        The values are linear power already (must not be negative).

    Raises
    ------
    InputError
        Neither or both of the two given; negative linear values; display
        values outside 0..255; a dynamic range outside 10..120 dB.
    """
    src = source if source is not None else table.source
    if linear == (dynamic_range_db is not None):
        raise InputError("ceuskit fit", "say what the values are",
                         "pass --linear (linear echo power) or --dynamic-range DB "
                         "(display values 0..255 on a display of DB dB), one of the two")
    v = table.values
    if linear:
        if np.any(v < 0):
            i, k = np.unravel_index(int(np.argmax(v < 0)), v.shape)
            raise InputError(src, f"column {table.names[i][:40]!r}, sample {k + 1} is negative "
                             f"({v[i, k]:g}); linear echo power is never negative",
                             "give linear power (not dB or baseline-subtracted values), or display "
                             "values with --dynamic-range DB")
        return v.astype(np.float64, copy=True)
    assert dynamic_range_db is not None
    try:
        dr = check_dynamic_range(dynamic_range_db)
    except ValueError as exc:
        raise InputError("--dynamic-range", str(exc), "give the scanner's display dynamic range") from None
    bad = (v < 0) | (v > DISPLAY_MAX)
    if np.any(bad):
        i, k = np.unravel_index(int(np.argmax(bad)), v.shape)
        raise InputError(src, f"column {table.names[i][:40]!r}, sample {k + 1} is {v[i, k]:g}, "
                         "outside the display range 0..255",
                         "give 8-bit display values with --dynamic-range, or linear power with --linear")
    return to_linear_power(v, dr).astype(np.float64)


def fit_tic_curves(times_s: NDArray[np.float64], curves: NDArray[np.float64],
                   names: tuple[str, ...], model: str = "lognormal") -> dict[str, Any]:
    """Fit linear-power curves as ``ceuskit analyze`` fits its ROI curves.

    The enhancement test (`ceuskit.kinetics.fit.enhancement_test`), the fit of
    the enhancing curves (one model, or ``auto``: AICc over the bolus models)
    and the descriptors (`ceuskit.kinetics.fast.fast_descriptors`) are the
    pipeline's own (`ceuskit.pipeline.measure_rois`).

    Parameters
    ----------
    times_s : ndarray, shape (T,)
        Sample times (s).
    curves : ndarray, shape (R, T)
        Linear echo power (a.u.).
    names : tuple of str
        One ROI name per curve.
    model : str
        ``lognormal``, ``gamma``, ``ldrw`` or ``auto``.

    Returns
    -------
    dict
        ``rois``: name -> the results.json ROI entry (``enhancing``,
        ``enhancement_test``, ``model``, ``fit``, ``perfusion``, ``tic``);
        ``warnings``: list of warning dicts.
    """
    from ceuskit.kinetics.fast import fast_descriptors
    from ceuskit.kinetics.fit import FitStatus, enhancement_test
    from ceuskit.outputs import finite_or_none
    from ceuskit.pipeline import (
        PERFUSION_KEYS,
        SUPPORTED_MODELS,
        enhancement_dict,
        fit_enhancing,
        json_array,
    )

    if model not in SUPPORTED_MODELS:
        raise InputError("--model", f"{model!r} is not a model", f"use one of {', '.join(SUPPORTED_MODELS)}")
    t = np.asarray(times_s, dtype=np.float64)
    y = np.asarray(curves, dtype=np.float64).reshape(len(names), t.size)
    enh, stat, details = enhancement_test(t, y)
    enh = np.asarray(enh, dtype=bool).reshape(len(names))
    stat = np.asarray(stat, dtype=np.float64).reshape(len(names))
    fits, selections = fit_enhancing(t, y[enh], model, lambda _m: None)
    rois: dict[str, Any] = {}
    warnings: list[dict[str, str]] = []
    j = 0
    for i, name in enumerate(names):
        per_curve = {k: (v[i] if isinstance(v, np.ndarray) and v.shape[:1] == (len(names),) else v)
                     for k, v in (details.items() if isinstance(details, dict) else [])}
        perfusion: dict[str, float | None] = dict.fromkeys(PERFUSION_KEYS)
        entry: dict[str, Any] = {"enhancing": bool(enh[i]),
                                 "enhancement_test": enhancement_dict(bool(enh[i]), float(stat[i]),
                                                                       per_curve),
                                 "model": "none", "fit": None}
        fitted = None
        if enh[i]:
            one, selection = fits[j], selections[j]
            j += 1
            status = FitStatus(int(np.asarray(one.status).reshape(-1)[0]))
            desc = fast_descriptors(one, float(t[-1]))
            for k in PERFUSION_KEYS:
                perfusion[k] = finite_or_none(one.qof if k == "qof" else desc[k])
            if status is not FitStatus.OK:
                warnings.append({"code": f"fit-{status.label}",
                                 "message": f"ROI '{name}': the {one.model.name} fit ended with status "
                                            f"'{status.label}'; its perfusion parameters are less reliable"})
            entry["model"] = one.model.name
            entry["fit"] = {
                "status": status.label,
                "parameters": {n: finite_or_none(v) for n, v in
                               zip(one.model.param_names, np.asarray(one.params).reshape(-1), strict=True)},
                "standard_errors": {n: finite_or_none(v) for n, v in
                                    zip(one.model.param_names, np.asarray(one.stderr).reshape(-1),
                                        strict=True)},
                "iterations": int(np.asarray(one.n_iter).reshape(-1)[0]),
                "model_selection": selection,
            }
            fitted = np.asarray(one.predict(t), dtype=np.float64).reshape(-1)
        entry["perfusion"] = perfusion
        entry["tic"] = {"times_s": json_array(t, 8), "intensity": json_array(y[i]),
                        "fitted": None if fitted is None else json_array(fitted)}
        rois[name] = entry
    return {"rois": rois, "warnings": warnings}
