"""Motion-estimation throughput: a 1200-frame 240 x 320 B-mode panel.

The panel is synthetic B-mode: fully developed speckle (a complex Gaussian
field through a Gaussian PSF, the simulator's 0.16 x 0.32 mm at 0.2 mm
pixels) times a smooth echogenicity map, log-compressed to 8 bits over
60 dB, with fresh receiver noise.  Anatomy and speckle move together by an
exact sub-pixel shift (a phase ramp in Fourier space): breathing of 8 px
axial / 3.2 px lateral, period 4 s at 20 frames/s, plus a 0.05 px/s drift;
12 frames are out of plane (fresh speckle).  Only `estimate_motion` is timed
(frame generation is not).

Usage::

    python benchmarks/motion_throughput.py [--frames 1200] [--mode translation|rigid] [--repeat 3]

Prints frames/s, seconds, the residual RMS against the known displacement
(in-plane frames, up to the reference frame's own offset), out-of-plane
recall and false rejections; the last line reads
``motion_throughput: SECONDS s for N frames 240x320, RMS_RESIDUAL px``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.fft
from scipy.ndimage import gaussian_filter

from ceuskit.motion import estimate_motion

H, W = 240, 320
MARGIN = 24
FPS = 20.0
AMPLITUDE_PX = 8.0
DRIFT_PX_PER_S = 0.05
N_OUT_OF_PLANE = 12
DR_DB = 60.0


def _speckle_filter(shape: tuple[int, int]) -> np.ndarray:
    ky = scipy.fft.fftfreq(shape[0])[:, None]
    kx = scipy.fft.fftfreq(shape[1])[None, :]
    sy, sx = 0.8, 1.6  # PSF sigmas in px (0.16 / 0.32 mm at 0.2 mm)
    hf = np.exp(-2.0 * np.pi**2 * (sy**2 * ky**2 + sx**2 * kx**2))
    return hf * np.sqrt(hf.size / np.sum(hf**2))


def make_panel(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(frames uint8 (n, H, W), dx, dy (px), out-of-plane indices)."""
    rng = np.random.default_rng(seed)
    ch, cw = H + 2 * MARGIN, W + 2 * MARGIN
    hf = _speckle_filter((ch, cw))
    white = rng.standard_normal((ch, cw)) + 1j * rng.standard_normal((ch, cw))
    spec = scipy.fft.fft2(white / np.sqrt(2.0)) * hf
    echo_log = 1.2 * gaussian_filter(rng.standard_normal((ch, cw)), (2.0, 12.0))
    echo_log += 0.8 * gaussian_filter(rng.standard_normal((ch, cw)), 10.0)
    echo_spec = scipy.fft.fft2(np.exp(echo_log))
    t = np.arange(n) / FPS
    phase = 2.0 * np.pi * t / 4.0
    dy = AMPLITUDE_PX * np.sin(phase) + 0.6 * DRIFT_PX_PER_S * t
    dx = 0.4 * AMPLITUDE_PX * np.sin(phase + 1.0) + 0.8 * DRIFT_PX_PER_S * t
    oop = np.sort(rng.choice(n, N_OUT_OF_PLANE, replace=False))
    ky = scipy.fft.fftfreq(ch)[:, None]
    kx = scipy.fft.fftfreq(cw)[None, :]
    frames = np.empty((n, H, W), dtype=np.uint8)
    view = (slice(MARGIN, MARGIN + H), slice(MARGIN, MARGIN + W))
    for i in range(n):
        ramp = np.exp(-2j * np.pi * (ky * dy[i] + kx * dx[i]))
        s = spec if i not in oop else scipy.fft.fft2(
            (rng.standard_normal((ch, cw)) + 1j * rng.standard_normal((ch, cw))) / np.sqrt(2.0)) * hf
        field = scipy.fft.ifft2(s * ramp)[view]
        echo = scipy.fft.ifft2(echo_spec * ramp).real[view]
        power = 10 ** (-2.4) * np.maximum(echo, 1e-6) * np.abs(field) ** 2
        power += 10 ** (-5.8) * rng.standard_exponential((H, W))
        g = 255.0 * (1.0 + 10.0 * np.log10(power) / DR_DB)
        frames[i] = np.clip(np.rint(g), 0, 255).astype(np.uint8)
    return frames, dx, dy, oop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=1200)
    ap.add_argument("--mode", choices=("translation", "rigid"), default="translation")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    args = ap.parse_args()

    frames, dx, dy, oop = make_panel(args.frames)
    panel = frames.astype(np.float32)  # what the pipeline passes: display values as float32
    estimate_motion(panel[:32], mode=args.mode)  # warm-up (FFT plans, imports)
    times = []
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        est = estimate_motion(panel, mode=args.mode)
        times.append(time.perf_counter() - t0)
    best = min(times)
    r = est.reference_index
    inplane = np.ones(args.frames, dtype=bool)
    inplane[oop] = False
    ex = est.dx_px - (dx - dx[r])
    ey = est.dy_px - (dy - dy[r])
    rms = float(np.sqrt(np.mean(ex[inplane] ** 2 + ey[inplane] ** 2)))
    recall = float(np.mean(est.rejected[oop]))
    false_rej = int(np.count_nonzero(est.rejected & inplane))
    print(f"panel {args.frames} x {H} x {W}, mode {args.mode}, reference frame {r} "
          f"({est.reference_choice})")
    print(f"runs (s): {', '.join(f'{x:.2f}' for x in times)}")
    print(f"throughput: {args.frames / best:.0f} frames/s ({best:.2f} s best of {len(times)})")
    print(f"residual RMS {rms:.3f} px, max {float(np.max(np.hypot(ex, ey)[inplane])):.3f} px; "
          f"out-of-plane recall {recall:.0%} ({int(np.sum(est.rejected[oop]))}/{oop.size}), "
          f"false rejections {false_rej}; quality threshold {float(np.nanmax(est.quality_threshold)):.3f}")
    print(f"motion_throughput: {best:.2f} s for {args.frames} frames {H}x{W}, {rms:.3f} px")


if __name__ == "__main__":
    main()
