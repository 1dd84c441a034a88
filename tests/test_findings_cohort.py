"""The findings through the whole pipeline, on a simulated cohort with known labels.

Tumours from every kinetics family (`ceuskit.simulate.KINETICS`) with varied
receiver noise and necrosis, and bland thrombi, are simulated, analysed with
`ceuskit.pipeline.analyze_cine` (no motion) and read by
`ceuskit.findings.derive_findings`.  The truth labels are those the
simulator gives where its noise-free curves are clear of the findings'
margins (`truth["findings"]`); a label it leaves open (None) is not scored.

Requirements (issue 6): intraluminal enhancement right in every study; wash-in,
enhancement degree and wash-out labels right in >= 95 % of the tumours.  The
cines are kept short and at 2 frames/s (each analysis ~0.5-1 s here): a
family's shortest cine that still shows what it promises (the late wash-out
needs 150 s).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ceuskit.cine import Cine
from ceuskit.findings import derive_findings
from ceuskit.pipeline import AnalysisOptions, analyze_cine
from ceuskit.simulate import KINETICS, KINETICS_PROMISE, SimulationSpec, simulate

FPS = 2.0
#: Shortest cine (s) per family that shows every label it promises:
#: no-wash-out needs 60 s watched; early wash-out is clear well before 70 s.
DURATION_S = {"malignant": 70.0, "marked-washout": 75.0, "late-washout": 150.0,
              "synchronous-iso": 65.0, "slow-hypo": 65.0}
SEEDS_PER_FAMILY = 5
NOISE_FLOOR_DB = (-50.0, -45.0, -42.0, -40.0, -47.0)
NECROSIS = (0.0, 0.15, 0.3, 0.45, 0.55)
N_BLAND = 20
MIN_AGREEMENT = 0.95


def _study(spec: SimulationSpec, tmp: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    ph = simulate(spec)
    cine = Cine(frames=ph.frames.astype(np.float32), times_s=ph.times_s,
                regions=(ph.contrast_panel, ph.bmode_panel))
    roi_path = tmp / f"rois-{spec.scenario}-{spec.kinetics}-{spec.seed}.json"
    roi_path.write_text(json.dumps(ph.rois))
    results = analyze_cine(cine, roi_path, AnalysisOptions(motion="off")).results()
    return derive_findings(results), ph.truth["findings"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[str, dict[str, Any],
                                                                              dict[str, Any]]]]:
    tmp = tmp_path_factory.mktemp("cohort")
    tumours = []
    for k, kinetics in enumerate(KINETICS):
        for j in range(SEEDS_PER_FAMILY):
            spec = SimulationSpec(scenario="tumor", kinetics=kinetics, seed=1000 + 10 * k + j,
                                  fps=FPS, duration_s=DURATION_S[kinetics],
                                  necrosis=NECROSIS[(j + k) % len(NECROSIS)],
                                  noise_floor_db=NOISE_FLOOR_DB[j])
            tumours.append((kinetics, *_study(spec, tmp)))
    bland = []
    for j in range(N_BLAND):
        spec = SimulationSpec(scenario="bland", seed=2000 + j, fps=FPS, duration_s=40.0,
                              noise_floor_db=NOISE_FLOOR_DB[j % len(NOISE_FLOOR_DB)])
        bland.append(("bland", *_study(spec, tmp)))
    return {"tumour": tumours, "bland": bland}


def test_cohort_size(cohort: dict[str, list[Any]]) -> None:
    assert len(cohort["tumour"]) >= 20 and len(cohort["bland"]) >= 20
    assert {k for k, _, _ in cohort["tumour"]} == set(KINETICS)


def test_intraluminal_enhancement_is_always_right(cohort: dict[str, list[Any]]) -> None:
    for group, want in (("tumour", True), ("bland", False)):
        for kinetics, found, truth in cohort[group]:
            assert truth["intraluminal_enhancement"] is want
            assert found["intraluminal_enhancement"] is want, (kinetics, found["evidence"])
    for _, found, _ in cohort["bland"]:
        assert found["enhancement"] == "none" and found["wash_out"]["present"] is None


def _agreement(cohort: dict[str, list[Any]], key: str) -> tuple[int, int, list[Any]]:
    scored = right = 0
    wrong = []
    for kinetics, found, truth in cohort["tumour"]:
        if "." in key:
            outer, inner = key.split(".")
            want, got = truth[outer][inner], found[outer][inner]
        else:
            want, got = truth[key], found[key]
        if want is None:
            continue
        scored += 1
        if got == want:
            right += 1
        else:
            wrong.append((kinetics, want, got, found["evidence"].get(key.split(".")[0])))
    return scored, right, wrong


@pytest.mark.parametrize("key", ["wash_in", "enhancement", "enhancement_whole_roi", "wash_out.present",
                                 "wash_out.timing", "wash_out.degree"])
def test_labels_agree_with_truth(cohort: dict[str, list[Any]], key: str) -> None:
    scored, right, wrong = _agreement(cohort, key)
    assert right >= MIN_AGREEMENT * scored, wrong
    if key == "enhancement":
        # Graded on the viable part: the families' promises are for the whole
        # ROI (next key); necrosis moves some viable readings between margins.
        assert scored >= 0.6 * len(cohort["tumour"])
        return
    # Most tumours carry a clear label for each finding (the families promise them).
    promise_key = "enhancement" if key == "enhancement_whole_roi" else key
    promised = sum(1 for k, _, _ in cohort["tumour"] if _promised(k, promise_key) is not None)
    assert scored >= promised


def _promised(kinetics: str, key: str) -> Any:
    p = KINETICS_PROMISE[kinetics]
    if "." in key:
        outer, inner = key.split(".")
        return p[outer][inner]
    return p[key]


def test_every_label_of_the_vocabulary_is_exercised(cohort: dict[str, list[Any]]) -> None:
    seen: dict[str, set[Any]] = {"wash_in": set(), "enhancement": set(), "timing": set(),
                                 "degree": set(), "present": set()}
    for _, found, truth in cohort["tumour"]:
        for k in ("wash_in", "enhancement"):
            if truth[k] is not None and found[k] == truth[k]:
                seen[k].add(found[k])
        for k in ("present", "timing", "degree"):
            if truth["wash_out"][k] is not None and found["wash_out"][k] == truth["wash_out"][k]:
                seen[k].add(found["wash_out"][k])
    assert seen["wash_in"] == {"rapid", "synchronous", "slow"}
    assert seen["enhancement"] == {"hyper", "iso", "hypo"}
    assert seen["present"] == {True, False}
    assert seen["timing"] == {"early", "late"}
    assert seen["degree"] == {"mild", "marked"}


def test_homogeneity_and_necrosis_come_from_the_maps(cohort: dict[str, list[Any]]) -> None:
    """Through the pipeline the maps are on: every tumour gets a homogeneity label and a necrosis
    percentage, and a lesion with a clearly necrotic core is heterogeneous (the maps' rule)."""
    for kinetics, found, _ in cohort["tumour"]:
        assert found["homogeneity"] in ("homogeneous", "heterogeneous"), (kinetics, found["missing"])
        assert found["necrosis_percent"] is not None and 0.0 <= found["necrosis_percent"] <= 100.0
        if found["necrosis_percent"] >= 15.0:
            assert found["homogeneity"] == "heterogeneous", (kinetics, found["evidence"]["homogeneity"])
    for _, found, _ in cohort["bland"]:
        # No viable tissue to measure a necrotic share against: not a number, and said so.
        assert found["necrosis_percent"] is None and found["homogeneity"] is None
        assert any(m.startswith("necrosis:") for m in found["missing"])


def test_ceus_alone_classifies_every_study(cohort: dict[str, list[Any]]) -> None:
    """The assessment from CEUS alone (no case file): every tumour suspect, no bland thrombus."""
    from ceuskit.clinical.rules import assess

    for group, want in (("tumour", True), ("bland", False)):
        for kinetics, found, _ in cohort[group]:
            a = assess(found, None)
            assert a["suspect_neoplasm"] is want, (kinetics, a["level"], a["reasons"])
            assert "case" not in a["inputs_used"] and a["missing"]
