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


def test_ratio_range_names_the_presets_when_the_default_is_unchecked() -> None:
    from ceuskit.report.content import _interval_words, _relative_cell

    rel = {"peak_enhancement_ratio": 21.66, "peak_enhancement_ratio_interval": [6.6, 78.25]}
    unchecked = {"linearization": {"level_scale": {"source": "unchecked",
                                                   "interval_db": [40.0, 80.0]}}}
    cell = _relative_cell(rel, "peak_enhancement_ratio", _interval_words(unchecked))
    assert cell.startswith("21.7 (6.6") and "over contrast presets' 40–80 dB" in cell
    assert "default dynamic range is unchecked" in cell
    checked = {"linearization": {"level_scale": {"source": "default", "interval_db": [55.6, 70.5]}}}
    assert _interval_words(checked) == "over the dynamic range's interval, 55.6–70.5 dB"
    assert _interval_words({}) == "over the dynamic range's interval"


def test_a_lossy_cine_says_why_its_interval_reaches_80_db() -> None:
    from ceuskit.report.content import _dr_source_text

    lossy = {"lossy": True, "file": "video codec h264", "quantisation": None}
    shown = _dr_check_text({"estimate_db": 53.1, "ci_db": [45.9, 80.0], "compression": lossy})
    assert ("(interval 45.9–80.0 dB, from the speckle's 95 % lower bound to the contrast presets' "
            "top: the cine was lossy-compressed, which makes the speckle read low)") in shown
    plain = _dr_check_text({"estimate_db": 53.1, "ci_db": [45.9, 60.3],
                            "compression": {**lossy, "lossy": False}})
    assert "lossy" not in plain
    refused = {"estimate_db": None, "ci_db": None, "compression": lossy}
    assert _dr_check_text(refused).endswith("(the cine was lossy-compressed)")
    lin = {"dynamic_range_source": "estimated", "dynamic_range_ci_db": [45.9, 80.0],
           "dynamic_range_estimate": {"compression": lossy}}
    assert _dr_source_text(lin).startswith(" (estimated, interval 45.9–80.0 dB, from the speckle's "
                                           "95 % lower bound")


def test_a_ratio_whose_range_failed_says_so() -> None:
    from ceuskit.report.content import _relative_cell

    rel = {"peak_enhancement_ratio": 47.96, "peak_enhancement_ratio_interval": None,
           "peak_enhancement_ratio_interval_reason": "not measured: ..."}
    cell = _relative_cell(rel, "peak_enhancement_ratio")
    assert cell.startswith("48.0 (range") and "not measured: a fit there failed" in cell
    # A user-given DR has no interval and no reason: the bare ratio.
    assert _relative_cell({"peak_enhancement_ratio": 47.96}, "peak_enhancement_ratio") == "48.0"
