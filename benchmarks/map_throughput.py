"""Parametric-map throughput: ``ceuskit map`` against a per-window scipy ``curve_fit`` loop.

One run prints both side by side:

1. **ceuskit**: the full lognormal map of a simulated 512 x 512 x 900 cine
   (10 frames/s, 90 s) inside one ROI covering the whole panel, run as the
   command line does it -- ``ceuskit map CINE --roi ROIS.json --out DIR
   --motion off --no-png`` in a child process under ``/usr/bin/time -v``:
   wall time and peak resident memory (``Maximum resident set size``) of
   the whole command, reading the cine, the three streaming passes, the
   16,384 block fits (4 x 4 px blocks, the default) and writing every map as
   NPY and NIfTI.  Motion compensation is off (the synthetic cine does not
   move) and the PNG overlays are left out (rendering figures is not
   mapping); both are measured apart by ``--extras``.
2. **the peer tool's approach**: a Python loop that, for each window, takes
   the window's mean curve and fits it with ``scipy.optimize.curve_fit``
   (``method="trf"``, 2-point finite-difference Jacobian), timed on a random
   subset of windows and extrapolated linearly.  Two variants:

   - *peer-style*: the peer tool's recipe (reference notes): the curve is
     normalised to its maximum and fitted with a 4-parameter lognormal
     (area, mu, sigma, t0) from a fixed generic start, bounds ``[0, inf)``;
   - *fair*: ceuskit's 5-parameter lognormal with ceuskit's own starting
     point and box (`LognormalModel.initial_guess` / `bounds`, computed
     before the clock starts), as in ``fit_throughput.py``.

   The peer tool computes one window per map pixel (its sliding window
   at full overlap gives a 512 x 512 map from 262,144 fits: ~75 min at its
   measured 59 fits/s), so the loop is extrapolated to 262,144 windows; the
   ratio against the same 16,384 block curves ceuskit fits is printed too.

The synthetic cine (`ceuskit.map_phantom.benchmark_kinetics`): per-pixel
lognormal boluses whose peak (12-35 dB above baseline), onset (5-15 s),
time to peak (3-12 s after onset) and width vary smoothly over the panel;
single-look bubble speckle (unit exponential, fresh every frame and pixel)
and receiver noise; 8-bit log-compressed display (60 dB).  It is written as
an uncompressed NPZ with its ROI file in a temporary directory.

Usage::

    python benchmarks/map_throughput.py [--size 512] [--frames 900] [--loop-n 150] [--extras]

The last line reads ``map_throughput: SECONDS s, PEAK_MB MB peak, RATIO x loop``
(ceuskit's wall time and peak RSS; RATIO = the peer-style loop extrapolated
to the 262,144 windows of a 512 x 512 map over ceuskit's wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import optimize

from ceuskit.kinetics.models import LognormalModel
from ceuskit.linearize import to_linear_power
from ceuskit.map_phantom import benchmark_kinetics, render

MODEL = LognormalModel()
FPS = 10.0
DR_DB = 60.0
#: The peer tool's map: one window per pixel of a 512 x 512 map.
PEER_WINDOWS = 512 * 512


def make_study(work: Path, size: int, frames: int, seed: int) -> tuple[Path, Path, NDArray[np.uint8]]:
    """Write cine.npz (uncompressed) and rois.json (one ROI = the whole panel)."""
    k = benchmark_kinetics((size, size), seed)
    times = np.arange(frames) / FPS
    video = render(k, times, seed=seed + 1, dynamic_range_db=DR_DB)
    cine = work / "cine.npz"
    np.savez(cine, frames=video, times_s=times, spacing_mm=np.array([0.2, 0.2]),
             regions=np.array([[0, 0, size, size]]), region_kinds=np.array(["contrast"]))
    e = size - 0.5
    rois = work / "rois.json"
    rois.write_text(json.dumps({"space": "panel", "rois": [
        {"name": "panel", "role": "lesion", "polygon": [[-0.5, -0.5], [e, -0.5], [e, e], [-0.5, e]]},
    ]}))
    return cine, rois, video


def run_ceuskit(cine: Path, rois: Path, out: Path, extra: list[str] | None = None) -> dict[str, float]:
    """``ceuskit map`` under /usr/bin/time -v: wall seconds and peak RSS (MB)."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "ceuskit.cli", "map", str(cine), "--roi",
           str(rois), "--out", str(out), "--overwrite", "--quiet", *(extra or [])]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"ceuskit map failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    el = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr)
    secs = wall
    if el:
        parts = [float(v) for v in el.group(1).split(":")]
        secs = sum(v * 60.0**i for i, v in enumerate(reversed(parts)))
    curves = re.search(r"ceuskit map: (\d+) block curves", proc.stdout)
    return {"seconds": secs, "peak_mb": int(rss.group(1)) / 1024.0 if rss else float("nan"),
            "curves": float(curves.group(1)) if curves else float("nan")}


def peer_lognormal(t: NDArray[np.float64], area: float, mu: float, sigma: float,
                   t0: float) -> NDArray[np.float64]:
    """4-parameter lognormal bolus (no baseline), zero before ``t0``."""
    tau = t - t0
    pos = tau > 0
    safe = np.where(pos, tau, 1.0)
    with np.errstate(all="ignore"):
        f = area / (sigma * np.sqrt(2.0 * np.pi) * safe) * np.exp(-((np.log(safe) - mu) ** 2)
                                                                    / (2.0 * sigma**2))
    return np.where(pos, f, 0.0)


def run_loop(video: NDArray[np.uint8], times: NDArray[np.float64], block: int, n: int, seed: int,
             variant: str) -> dict[str, float]:
    """Per-window scipy loop on ``n`` random windows: seconds per window and failures."""
    rng = np.random.default_rng(seed)
    size = video.shape[1]
    rows = rng.integers(0, size - block + 1, n)
    cols = rng.integers(0, size - block + 1, n)
    # Window extraction is part of the loop's work; linearising the windows'
    # pixels first keeps it per window, as a per-window tool does.
    windows = [to_linear_power(video[:, r:r + block, c:c + block], DR_DB) for r, c in zip(rows, cols,
                                                                                        strict=True)]
    if variant == "fair":
        curves = np.stack([w.mean(axis=(1, 2), dtype=np.float64) for w in windows])
        lo, hi = MODEL.bounds(times, curves)
        p0 = np.clip(MODEL.initial_guess(times, curves), lo, hi)
    failed = 0
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, w in enumerate(windows):
            y = w.mean(axis=(1, 2), dtype=np.float64)
            try:
                if variant == "fair":
                    optimize.curve_fit(lambda tt, *p: MODEL.predict(np.array(p), tt), times, y,
                                       p0=p0[i], bounds=(lo[i], hi[i]), method="trf")
                else:
                    yn = y / np.max(y)
                    optimize.curve_fit(peer_lognormal, times, yn, p0=(1.0, 1.0, 1.0, 1.0),
                                       bounds=([0.0, 0.0, 0.0, 0.0], [np.inf] * 4), method="trf")
            except (RuntimeError, ValueError):
                failed += 1
    seconds = time.perf_counter() - start
    return {"per_window_s": seconds / n, "failed": failed, "n": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512, help="panel rows = cols (px)")
    ap.add_argument("--frames", type=int, default=900)
    ap.add_argument("--block", type=int, default=4, help="ceuskit block size and loop window (px)")
    ap.add_argument("--loop-n", type=int, default=150, help="windows timed per loop variant")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extras", action="store_true",
                    help="also time the map with PNG overlays and with --motion auto")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the cine and maps here")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="ceuskit-map-bench-")
    work = args.workdir or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    try:
        import numba

        threads = f"numba threads={numba.get_num_threads()}"
    except ImportError:
        threads = "numba not installed"
    print(f"map_throughput: {args.size} x {args.size} x {args.frames} cine, {FPS:g} frames/s, "
          f"block {args.block} px, {os.cpu_count()} CPUs, {threads}")
    t0 = time.perf_counter()
    cine, rois, video = make_study(work, args.size, args.frames, args.seed)
    print(f"generated and wrote the cine ({video.nbytes / 2**20:.0f} MiB uint8) in "
          f"{time.perf_counter() - t0:.1f} s")

    # Warm-up on a small cine: numba compiles once per environment and
    # caches on disk; no timing below includes compilation.
    small_dir = work / "warmup"
    small_dir.mkdir(exist_ok=True)
    small, small_rois, _ = make_study(small_dir, 32, 120, args.seed)
    t_w = time.perf_counter()
    run_ceuskit(small, small_rois, small_dir / "maps", ["--motion", "off", "--no-png"])
    print(f"warm-up (compile or cache load, small cine): {time.perf_counter() - t_w:.1f} s")

    block = ["--block", str(args.block)]
    ours = run_ceuskit(cine, rois, work / "maps", ["--motion", "off", "--no-png", *block])
    times = np.arange(args.frames) / FPS
    peer = run_loop(video, times, args.block, args.loop_n, args.seed, "peer")
    fair = run_loop(video, times, args.block, args.loop_n, args.seed, "fair")
    n_curves = ours["curves"]

    print(f"\n{'engine':44s} {'windows':>9s} {'time_s':>9s} {'peak_MB':>8s} {'x loop':>8s}")
    print(f"{'ceuskit map (whole command, arrays)':44s} {n_curves:9.0f} {ours['seconds']:9.2f} "
          f"{ours['peak_mb']:8.0f} {'':>8s}")
    for name, loop in (("peer-style", peer), ("fair", fair)):
        for label, windows in (("per map pixel", PEER_WINDOWS * (args.size / 512) ** 2),
                               ("per ceuskit block", n_curves)):
            est = loop["per_window_s"] * windows
            print(f"{'scipy loop, ' + name + ', ' + label:44s} {windows:9.0f} {est:9.1f} {'':>8s} "
                  f"{est / ours['seconds']:8.1f}   (timed on {loop['n']} windows, "
                  f"{1.0 / loop['per_window_s']:.0f} fits/s, {loop['failed']} failed)")
    if args.extras:
        png = run_ceuskit(cine, rois, work / "maps_png", ["--motion", "off", *block])
        print(f"with PNG overlays: {png['seconds']:.2f} s, {png['peak_mb']:.0f} MB peak")
        mot = run_ceuskit(cine, rois, work / "maps_motion", ["--motion", "auto", "--no-png", *block])
        print(f"with --motion auto (tracked on the contrast panel): {mot['seconds']:.2f} s, "
              f"{mot['peak_mb']:.0f} MB peak")
    ratio = peer["per_window_s"] * PEER_WINDOWS * (args.size / 512) ** 2 / ours["seconds"]
    print(f"map_throughput: {ours['seconds']:.2f} s, {ours['peak_mb']:.0f} MB peak, {ratio:.0f} x loop")
    tmp.cleanup()


if __name__ == "__main__":
    main()
