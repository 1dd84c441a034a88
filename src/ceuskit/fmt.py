"""Numbers and durations as a clinician reads them: one formatter for every report.

`fmt` writes a number with a fixed count of significant figures in plain
positional notation (never ``1.17e+05``), followed by its unit; `fmt_days`
writes a duration stored in days the way it was most likely entered (days,
whole months or whole years), never as ``1.97 months``.  The report, the web
results page and the clinical summaries all use these two, so a value reads
the same everywhere.
"""

from __future__ import annotations

import math
from typing import Any

#: Significant figures of a measured value in the clinician's part of a report.
SIG_FIGS = 3
#: Below this many days a duration is written in days.
DAYS_BELOW = 90.0
#: Days per month and per year used to recognise a duration entered in months or years.
DAYS_PER_MONTH = 365.25 / 12
DAYS_PER_YEAR = 365.25
#: A duration within this many days of a whole number of months (or years) is written in them.
ROUND_TOLERANCE_DAYS = 3.0
#: Magnitudes below `SMALLEST` or from `LARGEST` up are written as ``1.23 × 10⁻⁷``.
SMALLEST = 1e-6
LARGEST = 1e12
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
#: Units written without a space or not at all.
_NO_UNIT = ("", "1", None)


def fmt_number(value: float, sig: int = SIG_FIGS) -> str:
    """``value`` with `sig` significant figures, positional notation, no exponent.

    Large values keep all their integer digits (``117355``); small ones get
    the zeros they need (``0.000575``).  Magnitudes below 1e-6 or from 1e12
    up, unreadable that way, are written as ``2.00 × 10⁻²⁹⁹`` (`fmt_scientific`).
    """
    if not math.isfinite(value):
        return "—"
    if value == 0:
        return "0"
    # Positional notation stops being readable here: hundreds of zeros or digits
    # (an AUC ratio of 2e-299 from a failed fit once filled a report cell).
    if not SMALLEST <= abs(value) < LARGEST:
        return fmt_scientific(value, sig)
    exponent = math.floor(math.log10(abs(value)))
    decimals = max(0, sig - 1 - exponent)
    rounded = round(value, decimals)
    # Rounding may carry into the next power of ten (9.996 -> 10.0): one decimal fewer then.
    if rounded != 0 and math.floor(math.log10(abs(rounded))) > exponent and decimals > 0:
        decimals -= 1
    text = f"{value:.{decimals}f}"
    return "0" if text in ("-0", "-0.0") else text


def fmt_scientific(value: float, sig: int = SIG_FIGS) -> str:
    """``value`` as ``1.17 × 10⁵``: `sig` significant figures and a power of ten."""
    if not math.isfinite(value):
        return "—"
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)))
    mantissa = value / 10.0**exponent
    if round(abs(mantissa), sig - 1) >= 10:  # 9.996e4 -> 1.00 × 10⁵
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:.{sig - 1}f} × 10{str(exponent).translate(_SUPERSCRIPT)}"


def fmt(value: Any, unit: str | None = None, sig: int = SIG_FIGS) -> str:
    """A value for a reader: ``—`` for none, yes/no, integers as they are, floats by `fmt_number`.

    Parameters
    ----------
    value : any
        None, bool, int, float or anything with a ``str``.
    unit : str, optional
        Appended after a space (``"s"``, ``"dB"``, ``"%"``); ``"1"`` and ``""`` add nothing.
    sig : int
        Significant figures of a float.
    """
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        text = fmt_number(value, sig)
    else:
        return str(value)
    return text if unit in _NO_UNIT else f"{text} {unit}"


def fmt_days(days: float) -> str:
    """A duration stored in days, as it was most likely entered.

    Under `DAYS_BELOW` days: days (``60 days``).  Otherwise whole years or
    whole months when the value is within `ROUND_TOLERANCE_DAYS` of one
    (``730`` -> ``2 years``, ``548`` -> ``18 months``, ``180`` -> ``6 months``);
    anything else stays in days, with years beside it from two years on
    (``1000 days (about 2.7 years)``).
    """
    d = float(days)
    if d < DAYS_BELOW:
        return _plural(d, "day")
    years = round(d / DAYS_PER_YEAR)
    if years >= 1 and abs(d - years * DAYS_PER_YEAR) <= ROUND_TOLERANCE_DAYS:
        return _plural(years, "year")
    months = round(d / DAYS_PER_MONTH)
    if abs(d - months * DAYS_PER_MONTH) <= ROUND_TOLERANCE_DAYS:
        return _plural(months, "month")
    text = _plural(d, "day")
    if d >= 2 * DAYS_PER_YEAR:
        text += f" (about {d / DAYS_PER_YEAR:.1f} years)"
    return text


def _plural(n: float, word: str) -> str:
    number = f"{n:g}" if not float(n).is_integer() else str(int(n))
    return f"{number} {word}" + ("" if number == "1" else "s")
