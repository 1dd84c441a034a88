"""Synthetic cines with known per-pixel kinetics, for map tests and benchmarks.

`ceuskit.simulate` renders a realistic study (one bolus per tissue, speckle
with a point-spread function, a B-mode panel, motion).  Parametric maps also
need truth that varies from pixel to pixel -- arrival, time to peak and peak
enhancement all changing across a lesion -- and cines far larger than a
scanner panel (512 x 512 x 900 for the throughput benchmark).  This module
renders such cines directly from per-pixel parameter maps:

    P(x, t) = b(x) + f(t; x) * S(x, t) + N * E(x, t)

with ``f`` the lognormal bolus of pixel x (peak enhancement ``peak``, onset
``t0``, mode ``mode`` after onset, shape ``sigma``), ``S`` bubble speckle
(mean of ``looks`` unit exponentials, drawn afresh every frame and pixel),
``b`` a static tissue baseline and ``N * E`` fresh receiver noise
(exponential, mean ``N``).  Display values are
``round(255 (1 + 10 log10 P / DR))`` clipped to 0..255, as in the simulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class KineticsMaps:
    """Per-pixel lognormal kinetics, each map of shape (rows, cols).

    Attributes
    ----------
    peak : peak enhancement above the baseline (linear power, a.u.); 0 = no bolus
    t0 : onset (s)
    mode : time to peak after the onset (s)
    sigma : lognormal shape (dimensionless)
    baseline : static tissue signal (a.u.)
    """

    peak: FloatArray
    t0: FloatArray
    mode: FloatArray
    sigma: FloatArray
    baseline: FloatArray

    @property
    def time_to_peak_s(self) -> FloatArray:
        """True TTP (s, cine clock), NaN where there is no bolus."""
        return np.where(self.peak > 0, self.t0 + self.mode, np.nan)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], corr_px: float) -> FloatArray:
    """Zero-mean, unit-variance Gaussian random field with correlation length ``corr_px``."""
    z = gaussian_filter(rng.standard_normal(shape), corr_px, mode="wrap")
    return np.asarray((z - z.mean()) / z.std(), dtype=np.float64)


def expected_power(k: KineticsMaps, t: float) -> NDArray[np.float32]:
    """Noise-free power ``b + f(t)`` of every pixel at time ``t`` (s)."""
    tau = np.maximum(t - k.t0, 1e-9)
    mu = np.log(k.mode) + k.sigma**2
    # Peak-normalised lognormal: f(mode) = peak.
    with np.errstate(under="ignore"):
        shape = np.exp(-((np.log(tau) - mu) ** 2 - (np.log(k.mode) - mu) ** 2) / (2.0 * k.sigma**2)) \
            * (k.mode / tau)
    f = np.where(t > k.t0, k.peak * shape, 0.0)
    return np.asarray(k.baseline + f, dtype=np.float32)


def render(k: KineticsMaps, times_s: FloatArray, *, seed: int = 0, looks: float = 1.0,
           noise: float = 1e-5, dynamic_range_db: float = 60.0,
           chunk: int = 16) -> NDArray[np.uint8]:
    """Display frames (T, rows, cols) uint8 of the model in the module docstring."""
    rng = np.random.default_rng(seed)
    t = np.asarray(times_s, dtype=np.float64)
    h, w = k.peak.shape
    out = np.empty((t.size, h, w), dtype=np.uint8)
    mu = (np.log(k.mode) + k.sigma**2).astype(np.float32)
    lmode = np.log(k.mode).astype(np.float32)
    inv2s2 = (1.0 / (2.0 * k.sigma**2)).astype(np.float32)
    peak = k.peak.astype(np.float32)
    mode = k.mode.astype(np.float32)
    t0 = k.t0.astype(np.float32)
    base = k.baseline.astype(np.float32)
    scale = np.float32(2550.0 / dynamic_range_db)
    for start in range(0, t.size, chunk):
        tc = t[start:start + chunk].astype(np.float32)[:, None, None]
        tau = np.maximum(tc - t0, np.float32(1e-6))
        lt = np.log(tau)
        with np.errstate(under="ignore"):
            f = np.exp(-((lt - mu) ** 2 - (lmode - mu) ** 2) * inv2s2) * (mode / tau) * peak
        f = np.where(tc > t0, f, np.float32(0.0))
        if looks == 1.0:
            s = rng.standard_exponential(f.shape, dtype=np.float32)
        else:
            s = rng.gamma(looks, 1.0 / looks, f.shape).astype(np.float32)
        p = base + f * s + np.float32(noise) * rng.standard_exponential(f.shape, dtype=np.float32)
        g = np.log10(np.maximum(p, np.float32(1e-30)))
        g *= scale
        g += np.float32(255.0)
        np.rint(g, out=g)
        np.clip(g, 0.0, 255.0, out=g)
        out[start:start + chunk] = g.astype(np.uint8)
    return out


@dataclass(frozen=True)
class MapPhantom:
    """A synthetic cine with its ROIs and per-pixel truth.

    Attributes
    ----------
    frames : uint8 (T, rows, cols)
        The whole frame is the contrast panel.
    times_s : (T,)
    kinetics : KineticsMaps
    masks : dict of bool arrays
        ``lesion``, ``reference``, ``necrosis`` (non-enhancing part of the lesion).
    rois : dict
        ROI file content (``space: "panel"``): ``lesion`` (ellipse), ``reference``.
    spacing_mm : (float, float)
    """

    frames: NDArray[np.uint8]
    times_s: FloatArray
    kinetics: KineticsMaps
    masks: dict[str, NDArray[np.bool_]]
    rois: dict[str, Any]
    spacing_mm: tuple[float, float]


def lesion_phantom(
    *,
    shape: tuple[int, int] = (96, 160),
    fps: float = 4.0,
    duration_s: float = 60.0,
    seed: int = 0,
    lesion_sigma_log: float = 0.5,
    kinetics_spread: float = 1.0,
    necrosis_radius: float = 0.0,
    same_as_reference: bool = False,
    looks: float = 1.0,
    spacing_mm: float = 0.2,
) -> MapPhantom:
    """A lesion (ellipse, right) and a reference tissue (ellipse, left) in a flat background.

    Parameters
    ----------
    lesion_sigma_log : float
        Std of log peak enhancement across the lesion (0 = homogeneous
        amplitude; 0.5 = the simulator's tumour).
    kinetics_spread : float
        Scale of the smooth spatial variation of the lesion's onset (+-2 s)
        and time to peak (+-1.5 s); 0 = one bolus for the whole lesion.
    necrosis_radius : float
        Radius of a central non-enhancing disc, as a share of the lesion's
        semi-axes (0 = none).
    same_as_reference : bool
        Give the lesion exactly the reference's kinetics and amplitude
        (its DVP must be flat).
    """
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    lcx, lcy, lrx, lry = 0.68 * w, 0.5 * h, 0.24 * w + 0.5, 0.36 * h + 0.5
    rcx, rcy, rrx, rry = 0.2 * w, 0.5 * h, 0.12 * w + 0.5, 0.25 * h + 0.5
    rho_l = ((xx - lcx) / lrx) ** 2 + ((yy - lcy) / lry) ** 2
    lesion = rho_l <= 1.0
    reference = ((xx - rcx) / rrx) ** 2 + ((yy - rcy) / rry) ** 2 <= 1.0
    necrosis = lesion & (rho_l <= necrosis_radius**2)

    ref_peak, ref_t0, ref_mode, ref_sigma = 0.01, 12.0, 10.0, 0.5
    les_peak, les_t0, les_mode, les_sigma = 0.06, 8.0, 5.0, 0.55
    base = np.full(shape, 10.0 ** (-4.5))
    peak = np.zeros(shape)
    t0 = np.full(shape, ref_t0)
    mode = np.full(shape, ref_mode)
    sigma = np.full(shape, ref_sigma)
    f_amp = smooth_field(rng, shape, 6.0)
    f_t0 = smooth_field(rng, shape, 10.0)
    f_mode = smooth_field(rng, shape, 10.0)
    peak[reference] = ref_peak * np.exp(0.05 * f_amp[reference])
    if same_as_reference:
        peak[lesion] = ref_peak * np.exp(0.05 * f_amp[lesion])
    else:
        amp = les_peak * np.exp(lesion_sigma_log * f_amp - 0.5 * lesion_sigma_log**2)
        peak[lesion] = amp[lesion]
        t0[lesion] = les_t0 + kinetics_spread * 2.0 * np.tanh(f_t0[lesion] / 1.5)
        mode[lesion] = les_mode + kinetics_spread * 1.5 * np.tanh(f_mode[lesion] / 1.5)
        sigma[lesion] = les_sigma
    peak[necrosis] = 0.0
    k = KineticsMaps(peak=peak, t0=t0, mode=mode, sigma=sigma, baseline=base)
    times = np.arange(math.floor(duration_s * fps + 1e-9) + 1) / fps
    frames = render(k, times, seed=seed + 1000, looks=looks)
    rois = {"space": "panel", "rois": [
        {"name": "lesion", "role": "lesion", "ellipse": [lcx, lcy, lrx, lry]},
        {"name": "reference", "role": "reference", "ellipse": [rcx, rcy, rrx, rry]},
    ]}
    return MapPhantom(frames=frames, times_s=times, kinetics=k,
                      masks={"lesion": lesion, "reference": reference, "necrosis": necrosis},
                      rois=rois, spacing_mm=(spacing_mm, spacing_mm))


def benchmark_kinetics(shape: tuple[int, int] = (512, 512), seed: int = 0) -> KineticsMaps:
    """Smoothly varying kinetics over a whole panel (the map throughput benchmark).

    Peak enhancement 12-35 dB above the baseline (lognormal field, std of log
    0.5), onset 5-15 s, time to peak 3-12 s after onset, sigma 0.35-0.8,
    each a smooth random field (correlation ~12 px).
    """
    rng = np.random.default_rng(seed)

    def unit(corr: float) -> FloatArray:
        return np.asarray(0.5 * (1.0 + np.tanh(smooth_field(rng, shape, corr) / 1.2)))

    base = np.full(shape, 10.0 ** (-4.5))
    peak_db = 12.0 + 23.0 * unit(12.0)
    return KineticsMaps(
        peak=base * 10.0 ** (peak_db / 10.0),
        t0=5.0 + 10.0 * unit(16.0),
        mode=3.0 + 9.0 * unit(16.0),
        sigma=0.35 + 0.45 * unit(16.0),
        baseline=base,
    )
