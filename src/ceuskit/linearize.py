"""Display value -> linear echo power.

Scanners log-compress echo power for display.  On a display of dynamic range
``DR`` dB and maximum ``g_max`` (255 for 8 bits), a display value ``g`` shows

    P = 10 ** ((g / g_max - 1) * DR / 10)

relative to the power shown at full brightness, so ``g_max`` maps to 1.0 and
``0`` to ``10 ** (-DR / 10)``.  Quantification must run on ``P``: it is
proportional to microbubble concentration, while ``g`` is not.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Default display dynamic range in dB.  60 dB is a common CEUS preset
#: (contrast-specific modes usually run 50-70 dB); pass the scanner's own value
#: with ``--dynamic-range`` whenever it is known, because amplitude parameters
#: scale with it.
DEFAULT_DYNAMIC_RANGE_DB = 60.0


def check_dynamic_range(dynamic_range_db: float) -> float:
    """Return the dynamic range as float, refusing values no scanner uses."""
    dr = float(dynamic_range_db)
    if not (np.isfinite(dr) and 10.0 <= dr <= 120.0):
        raise ValueError(f"dynamic range {dynamic_range_db!r} dB is outside 10..120 dB")
    return dr


def to_linear_power(
    display: ArrayLike,
    dynamic_range_db: float = DEFAULT_DYNAMIC_RANGE_DB,
    display_max: float = 255.0,
    *,
    out: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """Convert log-compressed display values to linear echo power.

    Parameters
    ----------
    display : array_like
        Display values in ``0 .. display_max``; any shape.  A uint8 array is
        converted through a 256-entry table (`linear_power_table`), which
        gives the same float32 values as the formula, several times faster.
    dynamic_range_db : float
        Display dynamic range in dB.
    display_max : float
        Display value of full brightness; maps to power 1.0.
    out : float32 array, optional
        Where to write the result (C-contiguous, the shape of `display`):
        streaming stages reuse one buffer instead of touching fresh memory
        for every chunk.

    Returns
    -------
    ndarray of float32, same shape
        Linear echo power (a.u.), 1.0 at ``display_max`` (`out` when given).
    """
    dr = check_dynamic_range(dynamic_range_db)
    if out is not None and (out.shape != np.shape(display) or out.dtype != np.float32
                            or not out.flags.c_contiguous):
        raise ValueError("out must be a C-contiguous float32 array of the input's shape")
    if isinstance(display, np.ndarray) and display.dtype == np.uint8 and display.size >= _TABLE_MIN_SIZE:
        from ceuskit._lut import apply_table

        table = linear_power_table(dr, display_max)
        shape3 = (-1, *display.shape[-2:]) if display.ndim >= 2 else (1, 1, -1)
        values = display.reshape(shape3)
        result = np.empty(values.shape, dtype=np.float32) if out is None else out.reshape(values.shape)
        apply_table(values, table, result)
        return result.reshape(display.shape)
    return _formula(np.asarray(display, dtype=np.float32), dr, display_max, out)


#: Smaller uint8 arrays go through the formula (compiling or loading the
#: table kernel costs more than it saves).
_TABLE_MIN_SIZE = 1 << 16


def _formula(g: NDArray[np.float32], dr: float, display_max: float,
             out: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
    # One fused expression keeps a (T, H, W) cine to a single float32 copy.
    scale = np.float32(dr / 10.0 * np.log(10.0))
    out = np.multiply(g, scale / np.float32(display_max), dtype=np.float32, out=out)
    out -= scale
    np.exp(out, out=out)
    return out


@functools.lru_cache(maxsize=32)
def linear_power_table(dynamic_range_db: float, display_max: float = 255.0) -> NDArray[np.float32]:
    """Linear power of the display values 0..255 (float32, shape (256,), read-only).

    The formula of `to_linear_power` applied to each 8-bit value, so that a
    look-up gives bit-identical results.
    """
    table = _formula(np.arange(256, dtype=np.float32), check_dynamic_range(dynamic_range_db),
                     display_max)
    table.flags.writeable = False
    return table


def to_display(
    power: ArrayLike,
    dynamic_range_db: float = DEFAULT_DYNAMIC_RANGE_DB,
    display_max: float = 255.0,
) -> NDArray[np.floating[Any]]:
    """Inverse of `to_linear_power`, clipped to the display range (no rounding)."""
    dr = check_dynamic_range(dynamic_range_db)
    p = np.asarray(power, dtype=np.float64)
    with np.errstate(divide="ignore"):
        g = display_max * (1.0 + 10.0 * np.log10(p) / dr)
    return np.clip(np.nan_to_num(g, nan=0.0, neginf=0.0), 0.0, display_max)


@dataclass(frozen=True)
class CodedPower:
    """Linear power kept as 8-bit display values and their table (not yet expanded).

    ``table[values]`` is the linear power (`to_linear_power`, bit for bit);
    the compiled streaming kernels of `ceuskit.maps` look each value up as
    they read it, so a pass over an 8-bit cine writes no float32 copy.

    Attributes
    ----------
    values : uint8 array, shape (T, H, W)
        Display values (a view of the cine, read-only).
    table : float32 array, shape (256,)
        `linear_power_table` of the display's dynamic range.
    """

    values: NDArray[np.uint8]
    table: NDArray[np.float32]
