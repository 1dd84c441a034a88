"""analyze_to_dir writes results.json first: the numbers are there before the report, maps and PDF."""

from __future__ import annotations

import json
from typing import Any

from ceuskit.api import analyze_to_dir
from ceuskit.simulate import SimulationSpec, simulate, write_phantom


def test_results_json_is_written_before_the_report_maps_and_pdf(tmp_path):
    ph = simulate(SimulationSpec(scenario="tumor", seed=5, fps=2.0, duration_s=40.0))
    files = write_phantom(ph, tmp_path / "phantom", "npz")
    out = tmp_path / "out"
    first: dict[str, Any] = {}

    def progress(message: str) -> None:
        if first or not (out / "results.json").is_file():
            return
        first["files"] = {p.relative_to(out).as_posix() for p in out.rglob("*")
                          if not p.name.startswith(".")}
        first["results"] = json.loads((out / "results.json").read_text(encoding="utf-8"))

    _, paths = analyze_to_dir(files["cine"], files["rois"], out, progress=progress)
    assert first, "results.json never appeared before the last progress message"
    assert first["files"] == {"results.json"}  # before report.html, report.pdf and maps/
    # The early results.json is the final one: the maps' files were listed in advance.
    final = json.loads(paths["results"].read_text(encoding="utf-8"))
    assert first["results"] == final
    listed = set(final["maps"]["files"])
    assert listed and listed == {f"maps/{p.name}" for p in (out / "maps").iterdir()}
    assert (out / "report.html").is_file() and (out / "report.pdf").is_file()
