"""The study table's dynamic-range line: the speckle check and what refused it."""

from __future__ import annotations

from ceuskit.report.content import _dr_check_text


def test_check_text_names_an_estimate_its_absence_and_the_display_processing() -> None:
    assert _dr_check_text({}) == ""
    shown = _dr_check_text({"estimate_db": 50.3, "ci_db": [45.5, 55.2]})
    assert "speckle estimate 50.3 dB" in shown and "45.5" in shown and "55.2" in shown
    refused = {"estimate_db": None, "ci_db": None, "method": "not estimated: ..."}
    assert _dr_check_text(refused) == "; no speckle estimate to check it against"
    averaged = {**refused, "persistence": {"detected": True, "weight_lower": 0.27}}
    assert _dr_check_text(averaged).endswith("(the display averages frames: persistence)")
    resized = {**refused, "persistence": {"detected": False}, "resampling": {"detected": True}}
    assert _dr_check_text(resized).endswith("(the display was resampled or block-compressed)")
    checked = {**refused, "persistence": {"detected": False, "weight_lower": 0.0}}
    assert "persistence" not in _dr_check_text(checked)
    # A refused `auto` says it was asked for.
    assert _dr_check_text(averaged, asked_auto=True).startswith(
        "; --dynamic-range auto was asked, but the speckle gave no estimate (the display averages")
