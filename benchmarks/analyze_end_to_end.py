"""End-to-end ``ceuskit analyze`` against reading the cine alone.

One run times, each in a fresh child process, on the same file:

1. **load**: ``python -c`` that imports ceuskit's reader and reads the cine
   with `ceuskit.io.load_cine` (what ``analyze`` reads it with).  Its wall
   time includes the interpreter start and the reader's imports, as the
   analysis pays them too; this wall time is the "load" the ratio divides
   by.  The pure read (the `load_cine` call alone) is printed beside it.
2. **analyze**: ``python -m ceuskit.cli analyze CINE --roi ROIS --out DIR
   --overwrite`` with the defaults (motion auto, parametric maps, HTML and
   PDF reports).  Its wall time is TOTAL.  The stage split comes from the
   progress messages, which ``CEUSKIT_PROGRESS_TIMES=1`` makes the command
   print with their wall-clock time (a stage lasts from its message to the
   next one; "start-up" is from the process start to the first message:
   interpreter, imports, argument parsing).  The benchmark polls the output
   directory for results.json while the command runs and records when it
   appears (it is written under a temporary name and renamed, so it appears
   complete).

The cine: the simulator's tumour phantom (``ceuskit simulate --format
dicom --fps 10 --duration 90``: 901 frames, two 256 x 192 px panels on a
544 x 216 frame, 0.2 mm pixels), each panel resized (bilinear) to
248 x 480 px and laid side by side on a 512 x 512 frame, written as an
uncompressed DICOM Ultrasound Multi-frame Image with the two panels as
ultrasound regions (their pixel size scaled with them: 0.08 mm rows,
0.206 mm columns).  The ROI polygons and ellipses are scaled the same way.

A warm-up analysis runs first, so that numba's kernel cache exists: the
first-run compilation (~30 s, said by the command) is not timed.  Then
``--repeats`` (default 2) rounds of load + analyze; the table shows each
round and the last line the best round (smallest TOTAL).

Usage::

    python benchmarks/analyze_end_to_end.py [--repeats 2] [--work DIR]

The last line reads ``analyze_end_to_end: TOTAL s, RATIO x load,
results_json=S s`` (TOTAL = analyze wall time, RATIO = TOTAL / load wall
time, S = seconds from the analyze process's start to results.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

FPS = 10.0
DURATION_S = 90.0
FRAME = (512, 512)
#: Each panel on the 512 x 512 frame: (x0, y0, x1, y1).
CONTRAST_BOUNDS = (4, 16, 252, 496)
BMODE_BOUNDS = (260, 16, 508, 496)

_STAMP = re.compile(r"^ceuskit: \[(\d+\.\d+)\] (.*?)(?: \.\.\.)?$")


def make_study(work: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write cine.dcm (512 x 512 dual display, 901 frames) and rois.json into `work`."""
    import cv2

    from ceuskit.cine import Panel
    from ceuskit.io.dicom_out import write_dicom_cine
    from ceuskit.simulate import SimulationSpec, simulate

    cine, rois = work / "cine.dcm", work / "rois.json"
    if cine.exists() and rois.exists():
        return cine, rois
    ph = simulate(SimulationSpec(fps=FPS, duration_s=DURATION_S, seed=seed))
    src_c, src_b = ph.contrast_panel, ph.bmode_panel
    x0, y0, x1, y1 = CONTRAST_BOUNDS
    w, h = x1 - x0, y1 - y0
    sy, sx = h / src_c.shape[0], w / src_c.shape[1]
    frames = np.zeros((ph.frames.shape[0], *FRAME), dtype=np.uint8)
    for src, (bx0, by0, bx1, by1) in ((src_c, CONTRAST_BOUNDS), (src_b, BMODE_BOUNDS)):
        for k in range(frames.shape[0]):
            frames[k, by0:by1, bx0:bx1] = cv2.resize(ph.frames[k][src.slices], (bx1 - bx0, by1 - by0),
                                                     interpolation=cv2.INTER_LINEAR)
    spacing = (ph.spacing_mm[0] / sy, ph.spacing_mm[1] / sx)
    regions = [Panel(*BMODE_BOUNDS, spacing_mm=spacing, kind="bmode"),
               Panel(*CONTRAST_BOUNDS, spacing_mm=spacing, kind="contrast")]
    write_dicom_cine(cine, frames, ph.times_s, regions=regions, spacing_mm=spacing,
                     description="ceuskit end-to-end benchmark")

    def x(v: float) -> float:  # pixel centres move with cv2.resize's half-pixel rule
        return round((v + 0.5) * sx - 0.5, 2)

    def y(v: float) -> float:
        return round((v + 0.5) * sy - 0.5, 2)

    out: list[dict[str, Any]] = []
    for r in ph.rois["rois"]:
        entry = {"name": r["name"], "role": r["role"]}
        if "polygon" in r:
            entry["polygon"] = [[x(px), y(py)] for px, py in r["polygon"]]
        else:
            cx, cy, rx, ry = r["ellipse"]
            entry["ellipse"] = [x(cx), y(cy), round(rx * sx, 2), round(ry * sy, 2)]
        out.append(entry)
    rois.write_text(json.dumps({"space": "panel", "rois": out}, indent=1), encoding="utf-8")
    return cine, rois


_LOAD = """
import time, json, sys
t0 = time.perf_counter()
from ceuskit.io import load_cine
t1 = time.perf_counter()
cine = load_cine(sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "read_s": t2 - t1, "shape": list(cine.frames.shape)}))
"""


def run_load(cine: Path) -> dict[str, float]:
    """Read the cine in a child process: its wall time, the reader's import and the read alone."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _LOAD, str(cine)], capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"reading failed:\n{proc.stderr}")
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "import_s": doc["import_s"], "read_s": doc["read_s"]}


def run_analyze(cine: Path, rois: Path, out: Path) -> dict[str, Any]:
    """``ceuskit analyze`` in a child process: wall time, stage split, results.json time."""
    shutil.rmtree(out, ignore_errors=True)  # results.json must be this run's
    env = {**os.environ, "CEUSKIT_PROGRESS_TIMES": "1"}
    cmd = [sys.executable, "-m", "ceuskit.cli", "analyze", str(cine), "--roi", str(rois),
           "--out", str(out), "--overwrite"]
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        target = out / "results.json"
        while not done.is_set():
            if target.exists():
                seen["results_json"] = time.time()
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    start_wall = time.time()
    start = time.perf_counter()
    watcher.start()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    total = time.perf_counter() - start
    end_wall = start_wall + total
    done.set()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"ceuskit analyze failed ({proc.returncode}):\n{proc.stderr}")
    marks: list[tuple[float, str]] = []
    for line in proc.stderr.splitlines():
        m = _STAMP.match(line)
        if m:
            marks.append((float(m.group(1)), m.group(2)))
    stages: list[tuple[str, float]] = []
    prev_t, prev_label = start_wall, "start-up (interpreter, imports, arguments)"
    for t, label in marks:
        stages.append((prev_label, t - prev_t))
        prev_t, prev_label = t, label
    stages.append((prev_label + " (to exit)", end_wall - prev_t))
    return {"total_s": total, "stages": stages,
            "results_json_s": seen.get("results_json", float("nan")) - start_wall}


def _short(label: str) -> str:
    label = re.sub(r"reading \S+", "reading the cine", label)
    return label if len(label) <= 70 else label[:67] + "..."


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None,
                    help="directory for the cine (kept and reused; default: a temporary one)")
    args = ap.parse_args(argv)
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="ceuskit-e2e-")
        work = Path(tmp.name)
    else:
        work = args.work
        work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        cine, rois = make_study(work)
        print(f"study: {cine} ({cine.stat().st_size / 2**20:.0f} MiB), made in "
              f"{time.perf_counter() - t0:.1f} s")
        run_analyze(cine, rois, work / "warmup")  # numba cache, OS file cache
        rounds = []
        for i in range(args.repeats):
            load = run_load(cine)
            ana = run_analyze(cine, rois, work / f"out{i}")
            rounds.append((load, ana))
            print(f"round {i + 1}: load {load['wall_s']:.2f} s (read alone {load['read_s']:.2f} s, "
                  f"reader import {load['import_s']:.2f} s); analyze {ana['total_s']:.2f} s; "
                  f"results.json at {ana['results_json_s']:.2f} s")
        load, ana = min(rounds, key=lambda r: r[1]["total_s"])
        ratio = ana["total_s"] / load["wall_s"]
        print()
        print("| stage (best round) | s | share |")
        print("|---|---:|---:|")
        for label, secs in ana["stages"]:
            print(f"| {_short(label)} | {secs:.2f} | {secs / ana['total_s']:.0%} |")
        print(f"| **analyze total** | **{ana['total_s']:.2f}** | |")
        print(f"| load (child process: interpreter + reader import + read) | {load['wall_s']:.2f} | |")
        print(f"| - read alone (`load_cine`) | {load['read_s']:.2f} | |")
        print(f"| results.json appeared at | {ana['results_json_s']:.2f} "
              f"| {ana['results_json_s'] / load['wall_s']:.1f} x load |")
        print()
        print(f"analyze_end_to_end: {ana['total_s']:.2f} s, {ratio:.2f} x load, "
              f"results_json={ana['results_json_s']:.2f} s")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
