"""Colour-map inversion against the grey original (issue 17, item 2).

For every library tint, with and without a colour bar, as lossless DICOM and
as H.264 MP4 (colour subsampled 4:2:0), the simulator's tumour phantom is
analysed tinted and grey; printed: the map found, how, the largest relative
difference of every ROI's PE, AUC, wash-in rate and TTP and of the lesion's
PE ratio from the grey analysis of the same format, and the time the
inversion adds.  Last line: ``colour_accuracy: max_rel_dicom=..., max_rel_mp4=...``.

    python benchmarks/colour_accuracy.py [--seed 1] [--fps 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ceuskit.colour_maps import TINTS
from ceuskit.pipeline import AnalysisOptions, analyze
from ceuskit.simulate import SimulationSpec, simulate, write_phantom
from ceuskit.simulate_tints import with_tint

KEYS = ("peak_enhancement", "auc", "wash_in_rate", "time_to_peak_s")


def _numbers(res: dict) -> dict:
    out = {(roi, k): res["rois"][roi]["perfusion"][k] for roi in res["rois"] for k in KEYS}
    out[("lesion", "pe_ratio")] = res["rois"]["lesion"]["relative_to_reference"][
        "peak_enhancement_ratio"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fps", type=float, default=2.0)
    args = ap.parse_args()
    phantom = simulate(SimulationSpec(seed=args.seed, fps=args.fps))
    worst = {"dicom": 0.0, "mp4": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        print("| format | tint | bar | map found | found by | max rel. diff | extra s |")
        print("|---|---|---|---|---|---:|---:|")
        for fmt in ("dicom", "mp4"):
            paths = write_phantom(phantom, base / f"grey-{fmt}", fmt)
            t0 = time.perf_counter()
            grey = _numbers(analyze(paths["cine"], paths["rois"], AnalysisOptions(maps=False))
                            .results())
            t_grey = time.perf_counter() - t0
            for name in sorted(TINTS):
                for bar in (False, True):
                    p = write_phantom(with_tint(phantom, name, colour_bar=bar),
                                      base / f"{name}-{bar}-{fmt}", fmt)
                    t0 = time.perf_counter()
                    res = analyze(p["cine"], p["rois"], AnalysisOptions(maps=False)).results()
                    dt = time.perf_counter() - t0 - t_grey
                    cm = res["linearization"]["colour_map"]
                    got = _numbers(res)
                    rel = max(abs(got[k] / grey[k] - 1.0) for k in grey if grey[k])
                    worst[fmt] = max(worst[fmt], rel)
                    print(f"| {fmt} | {name} | {'yes' if bar else 'no'} | {cm['name']} | "
                          f"{'bar + colours' if cm.get('colour_bar') else 'colours'} | "
                          f"{rel:.2e} | {dt:.2f} |")
    print(f"colour_accuracy: max_rel_dicom={worst['dicom']:.2e}, max_rel_mp4={worst['mp4']:.2e} "
          f"({phantom.frames.shape[0]} frames of {phantom.frames.shape[1]} x "
          f"{phantom.frames.shape[2]} px)")


if __name__ == "__main__":
    main()
