"""The case form's labels: clinical abbreviations and units, as a clinician reads them."""

from __future__ import annotations

import re
from typing import Any

from ceuskit.web.casefile import form_fields


def _labels(fields: list[dict[str, Any]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in fields:
        out[f["name"]] = f["label"]
        if f["kind"] == "fieldset":
            out.update(_labels(f["fields"]))
    return out


def test_laboratory_fields_use_clinical_abbreviations_and_units() -> None:
    labels = _labels(form_fields())
    assert labels["pt_s"].startswith("PT") and labels["pt_s"].endswith("(s)")
    assert labels["inr"] == "INR"
    assert labels["aptt_s"].startswith("APTT") and labels["aptt_s"].endswith("(s)")
    # The cut-off has a unit: the one given with the value.
    assert "unit" in labels["d_dimer.lab_cutoff"] and "cut-off" in labels["d_dimer.lab_cutoff"]
    assert labels["symptom_duration_days"].endswith("(days)")


def test_every_label_is_written_out_not_derived_from_the_field_name() -> None:
    labels = _labels(form_fields())
    for name, label in labels.items():
        # A label made from the name reads "Lab Cutoff", "Pt S", "Aptt": mid-label capitals.
        words = re.sub(r"\(.*?\)", "", label).split()
        capitals = [w for w in words[1:] if w[0].isupper() and not w.isupper()
                    and w not in {"DVT", "Doppler", "B-mode", "May-Thurner", "D-dimer", "Wells"}]
        assert not capitals, (name, label)
        assert "_" not in label, (name, label)
