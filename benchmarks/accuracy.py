"""Accuracy of the ROI pipeline against the simulator's ground truth.

Simulates tumour and bland-thrombus phantoms over several seeds, writes each
as DICOM, NPZ and MP4, analyses them with ``ceuskit.pipeline.analyze`` and
prints the errors of the lesion and reference parameters against the
noise-free truth, per format.

Run:  python benchmarks/accuracy.py [--seeds 10]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from ceuskit.pipeline import analyze
from ceuskit.simulate import SimulationSpec, simulate, write_phantom


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args()
    errors: dict[str, dict[str, list[float]]] = {}
    bland_calls: dict[str, list[bool]] = {}
    tumour_calls: dict[str, list[bool]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for scenario in ("tumor", "bland"):
                spec = SimulationSpec(scenario=scenario, seed=seed, necrosis=0.05 * (seed % 8))
                phantom = simulate(spec)
                truth = phantom.truth
                for fmt in ("dicom", "npz", "mp4"):
                    d = Path(tmp) / f"{scenario}-{seed}-{fmt}"
                    files = write_phantom(phantom, d, fmt)
                    res = {r.roi.name: r for r in analyze(files["cine"], files["rois"]).rois}
                    calls = tumour_calls if scenario == "tumor" else bland_calls
                    calls.setdefault(fmt, []).append(res["lesion"].enhancing)
                    if scenario != "tumor":
                        continue
                    e = errors.setdefault(fmt, {})
                    for name in ("lesion", "muscle"):
                        p, tr = res[name].perfusion, truth["rois"][name]["perfusion"]
                        e.setdefault(f"{name} TTP abs err (s)", []).append(
                            abs(p["time_to_peak_s"] - tr["time_to_peak_s"]))
                        e.setdefault(f"{name} arrival abs err (s)", []).append(
                            abs(p["arrival_time_s"] - tr["arrival_time_s"]))
                        e.setdefault(f"{name} MTT rel err (%)", []).append(
                            100 * abs(p["mean_transit_time_s"] / tr["mean_transit_time_s"] - 1))
                    ratio = res["lesion"].relative["peak_enhancement_ratio"]
                    e.setdefault("lesion/ref PE ratio rel err (%)", []).append(
                        100 * abs(ratio / truth["pe_ratio_lesion_to_reference"] - 1))
    print(f"accuracy over {args.seeds} tumour seeds (median / max)")
    keys = list(next(iter(errors.values())))
    print(f"{'quantity':36s}" + "".join(f"{fmt:>18s}" for fmt in errors))
    for k in keys:
        cells = "".join(f"{np.median(errors[f][k]):8.3f} / {np.max(errors[f][k]):6.3f}" for f in errors)
        print(f"{k:36s}{cells}")
    for fmt in errors:
        print(f"{fmt}: tumour lesion enhancing {sum(tumour_calls[fmt])}/{len(tumour_calls[fmt])}, "
              f"bland lesion enhancing {sum(bland_calls[fmt])}/{len(bland_calls[fmt])}")


if __name__ == "__main__":
    main()
