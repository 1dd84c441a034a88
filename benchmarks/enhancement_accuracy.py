"""Confusion tables of the intraluminal-enhancement verdict on confounded phantoms.

Runs every phantom of `ceuskit.simulate.confounder_specs` (bland thrombi with
lumen blooming and breathing motion, tumours of every kinetics family with
and without heavy necrosis, non-contrast cines, short clips) through
`ceuskit.pipeline.analyze_cine` (motion compensation on, maps on) and
prints, per group, how often ``findings.intraluminal_enhancement`` was
True / False / None, next to the old significance-only reading
(``rois.<lesion>.enhancing``), plus the assessment levels and the
enhancement degree of the necrotic tumours.

    python benchmarks/enhancement_accuracy.py [--seeds N] [--fps F] [--no-maps]

The last line is machine-readable: ``enhancement_accuracy: bland_false=A/N
tumour_true=B/M noncontrast_null=C/K short_null=D/L old_bland_true=E/N``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from ceuskit.cine import Cine
from ceuskit.pipeline import AnalysisOptions, analyze_cine
from ceuskit.simulate import confounder_specs, simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--fps", type=float, default=2.0)
    ap.add_argument("--no-maps", action="store_true")
    args = ap.parse_args()
    new: dict[str, Counter[str]] = defaultdict(Counter)
    old: dict[str, Counter[str]] = defaultdict(Counter)
    levels: dict[str, Counter[str]] = defaultdict(Counter)
    degree: list[tuple[str, float, str | None, str | None, str | None]] = []
    wrong: list[str] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for group, spec in confounder_specs(seeds=args.seeds, fps=args.fps):
            ph = simulate(spec)
            cine = Cine(frames=ph.frames, times_s=ph.times_s, regions=(ph.contrast_panel, ph.bmode_panel))
            roi = Path(tmp) / "rois.json"
            roi.write_text(json.dumps(ph.rois))
            res = analyze_cine(cine, roi, AnalysisOptions(maps=not args.no_maps)).results()
            f = res["findings"]
            got = f["intraluminal_enhancement"]
            new[group][str(got)] += 1
            old[group][str(res["rois"]["lesion"]["enhancing"])] += 1
            levels[group][res["assessment"]["level"]] += 1
            want = {"bland": False, "tumour": True}.get(group)
            if got is not want:
                wrong.append(f"{group} seed {spec.seed} (blooming {spec.blooming_px:g} px, motion "
                             f"{spec.motion_px:g} px, {spec.kinetics}, necrosis {spec.necrosis:g}, "
                             f"{spec.mode}): {got} - "
                             + res["rois"]["lesion"]["enhancement_verdict"]["reason"])
            if group == "tumour" and spec.necrosis > 0:
                degree.append((spec.kinetics, spec.necrosis, ph.truth["findings"]["enhancement"],
                               f["enhancement"], f["enhancement_whole_roi"]))
    print(f"{'group':14s} {'verdict':>10s}  True False None   | significance only: True False")
    for group in new:
        n, o = new[group], old[group]
        print(f"{group:14s} {'':>10s}  {n['True']:4d} {n['False']:5d} {n['None']:4d}   |"
              f"                    {o['True']:4d} {o['False']:5d}")
    print("\nassessment levels:", {g: dict(c) for g, c in levels.items()})
    print("\nenhancement degree of necrotic tumours (kinetics, necrosis, truth, viable part, whole ROI):")
    for row in degree:
        print("  ", row)
    scored = [row for row in degree if row[2] is not None]  # truth None: between margins
    agree = sum(1 for _, _, t, v, _ in scored if t == v)
    agree_whole = sum(1 for _, _, t, _, w in scored if t == w)
    print(f"   truth (viable part) clear of the margins in {len(scored)} of {len(degree)}: the viable-part "
          f"reading agrees in {agree}, the whole-ROI reading in {agree_whole}")
    if wrong:
        print("\nnot as expected:")
        for w in wrong:
            print("  ", w)
    print(f"\n{time.perf_counter() - t0:.0f} s for {sum(sum(c.values()) for c in new.values())} studies")
    nb, nt = sum(new["bland"].values()), sum(new["tumour"].values())
    nn, ns = sum(new["non-contrast"].values()), sum(new["short"].values())
    print(f"enhancement_accuracy: bland_false={new['bland']['False']}/{nb} "
          f"tumour_true={new['tumour']['True']}/{nt} noncontrast_null={new['non-contrast']['None']}/{nn} "
          f"short_null={new['short']['None']}/{ns} old_bland_true={old['bland']['True']}/{nb}")


if __name__ == "__main__":
    main()
