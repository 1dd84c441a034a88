"""Compiled table look-up for 8-bit cines (imported on first use: numba is slow to import)."""

from __future__ import annotations

from typing import Any

from numba import njit, prange


@njit(cache=True, parallel=True)
def apply_table(values: Any, table: Any, out: Any) -> None:  # pragma: no cover - compiled
    """``out[...] = table[values[...]]`` for a (T, H, W) uint8 array, frames over threads.

    NumPy's fancy indexing does the same ~5x slower (it widens every index
    to intp first); a cine of 236 M pixels takes ~0.05 s here.
    """
    for f in prange(values.shape[0]):
        for i in range(values.shape[1]):
            for j in range(values.shape[2]):
                out[f, i, j] = table[values[f, i, j]]
