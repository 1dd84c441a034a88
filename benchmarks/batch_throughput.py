"""Cases per minute of ``ceuskit batch``, and the batch layer's overhead.

One run, on one simulated 20-case cohort (10 tumours, 10 bland clots, NPZ
cines of 60 s at 4 frames/s, the simulator's ROIs), times side by side:

1. **single**: ``ceuskit analyze`` once per case, one after the other, each
   a fresh process with the same parameter file: the sum of their wall times
   is what a researcher pays with a shell loop.  Run before and after the
   batches (A B C A order), and the two loops averaged, because the
   machines here are shared and drift within minutes.
2. **none**: ``ceuskit batch --scheduler none --jobs 1`` (one case at a time,
   so it compares with the loop).  The batch layer's overhead (manifest,
   hashing, isolation, summary, provenance, database, cohort report) is
   measured two ways: against the loops, and -- immune to the drift --
   inside the same run, as the batch's wall time over the sum of its own
   cases' analysis times (``elapsed_s`` in each ``batch-case.json``: the
   ``ceuskit analyze`` child from start to exit).  Target: <= 10 %.
3. **local**: ``ceuskit batch --scheduler local`` (a Dask LocalCluster, one
   worker per core): cases per minute.

A warm-up analysis runs first (numba's kernel cache).  The parameter file
turns off the maps and the PDF (``maps: false``, ``pdf: false``) so that the
run is short; the batch layer's cost does not depend on what a case computes.

Usage::

    python benchmarks/batch_throughput.py [--cases 20] [--work DIR]

The last line reads ``batch_throughput: none N cases/min, local L cases/min,
overhead O % over its own analyses (loop: P %)``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ceuskit.simulate import SimulationSpec, simulate, write_phantom

PARAMS = "maps: false\npdf: false\n"


def make_cohort(root: Path, n: int) -> Path:
    rows = ["id,cine,roi,label"]
    for i in range(n):
        scenario = "tumor" if i % 2 == 0 else "bland"
        files = write_phantom(simulate(SimulationSpec(scenario=scenario, seed=100 + i, fps=4.0,
                                                      duration_s=60.0)), root / f"c{i:02d}", "npz")
        rows.append(f"B{i:02d},{files['cine'].relative_to(root)},{files['rois'].relative_to(root)},"
                    f"{scenario}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    (root / "params.yaml").write_text(PARAMS)
    return root / "manifest.csv"


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 3):
        sys.exit(f"batch_throughput: {' '.join(cmd[:4])} failed: {proc.stderr.strip()[-500:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20, help="cohort size (default 20)")
    ap.add_argument("--work", type=Path, default=None, help="keep the cohort in this directory")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ceuskit-batch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    manifest = make_cohort(work, args.cases)
    params = work / "params.yaml"
    cli = [sys.executable, "-m", "ceuskit.cli"]
    first = work / "c00"
    timed([*cli, "analyze", str(first / "cine.npz"), "--roi", str(first / "rois.json"), "--out",
           str(work / "warm"), "--params", str(params), "--overwrite", "--quiet"])

    def loop() -> float:
        total = 0.0
        for i in range(args.cases):
            case = work / f"c{i:02d}"
            total += timed([*cli, "analyze", str(case / "cine.npz"), "--roi", str(case / "rois.json"),
                            "--out", str(work / "single" / f"{i:02d}"), "--params", str(params),
                            "--overwrite", "--quiet"])
        return total

    single_a = loop()
    for name in ("none", "local"):
        shutil.rmtree(work / name, ignore_errors=True)
    none = timed([*cli, "batch", str(manifest), "--out", str(work / "none"), "--params", str(params),
                  "--scheduler", "none", "--jobs", "1", "--quiet"])
    own = sum(json.loads(p.read_text())["elapsed_s"]
              for p in (work / "none" / "cases").glob("*/batch-case.json"))
    local = timed([*cli, "batch", str(manifest), "--out", str(work / "local"), "--params",
                   str(params), "--scheduler", "local", "--quiet"])
    single_b = loop()
    single = 0.5 * (single_a + single_b)
    n = args.cases
    print(f"cores: {os.cpu_count()}, cases: {n}")
    print(f"{'run':<46} {'wall (s)':>9} {'cases/min':>10}")
    for label, wall in [("single analyses, one after the other (before)", single_a),
                        ("batch --scheduler none --jobs 1", none),
                        ("  of which its cases' analyses", own),
                        ("batch --scheduler local", local),
                        ("single analyses, one after the other (after)", single_b)]:
        print(f"{label:<46} {wall:9.2f} {60 * n / wall:10.1f}")
    overhead = 100.0 * (none / own - 1.0)
    vs_loop = 100.0 * (none / single - 1.0)
    print(f"batch_throughput: none {60 * n / none:.1f} cases/min, local {60 * n / local:.1f} "
          f"cases/min, overhead {overhead:.1f} % over its own analyses (loop: {vs_loop:+.1f} %)")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
