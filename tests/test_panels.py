import numpy as np
import pytest

from ceuskit.cine import Cine, Panel
from ceuskit.errors import InputError
from ceuskit.panels import choose_panels, colour_share, detect_dual_layout


def _dual_cine(contrast_left=True, regions=(), t_n=40, chroma=None):
    """Two 60x80 panels; the contrast one is dark, then brightens with a bolus."""
    rng = np.random.default_rng(0)
    frames = np.zeros((t_n, 90, 200), np.float32)
    tissue = rng.uniform(60, 160, size=(60, 80)).astype(np.float32)
    bolus = np.exp(-0.5 * ((np.arange(t_n) - 15) / 5.0) ** 2)
    cx, bx = (10, 110) if contrast_left else (110, 10)
    for i in range(t_n):
        frames[i, 20:80, bx:bx + 80] = tissue
        frames[i, 20:80, cx:cx + 80] = 20 + 120 * bolus[i] * rng.uniform(0.5, 1, (60, 80))
    return Cine(frames, np.arange(t_n) * 0.1, regions=tuple(regions), chroma=chroma)


@pytest.mark.parametrize("left", [True, False])
def test_dual_display_found_from_image(left):
    cine = _dual_cine(contrast_left=left)
    choice = choose_panels(cine)
    assert choice.method == "image"
    expected_x0 = 10 if left else 110
    assert choice.contrast.bounds == (expected_x0, 20, expected_x0 + 80, 80)
    assert choice.bmode is not None and choice.bmode.x0 == (110 if left else 10)
    assert choice.contrast.kind == "contrast" and choice.bmode.kind == "bmode"
    assert "brightens" in choice.reason


def test_regions_are_preferred_and_evidence_picks_contrast():
    regions = (Panel(110, 20, 190, 80, spacing_mm=(0.2, 0.2), source="dicom-region"),
               Panel(10, 20, 90, 80, spacing_mm=(0.2, 0.2), source="dicom-region"))
    choice = choose_panels(_dual_cine(True, regions))
    assert choice.method == "dicom-region"
    assert choice.contrast.bounds == (10, 20, 90, 80)
    assert choice.contrast.spacing_mm == (0.2, 0.2)
    assert choice.evidence["brightening_contrast"] > 20 > choice.evidence["brightening_other"]


def test_single_region_and_whole_frame():
    one = choose_panels(_dual_cine(True, [Panel(10, 20, 90, 80, source="dicom-region")]))
    assert one.contrast.bounds == (10, 20, 90, 80) and one.bmode is None
    frames = np.random.default_rng(1).uniform(50, 200, (5, 30, 40)).astype(np.float32)
    whole = choose_panels(Cine(frames, np.arange(5.0)))
    assert whole.method == "whole-frame" and whole.contrast.bounds == (0, 0, 40, 30)


def test_override_keeps_bmode_partner():
    choice = choose_panels(_dual_cine(True), override=(12, 22, 88, 78))
    assert choice.method == "user" and choice.contrast.bounds == (12, 22, 88, 78)
    assert choice.bmode is not None and choice.bmode.x0 == 110


@pytest.mark.parametrize("bad", [(0, 0, 0, 10), (10, 10, 5, 20), (0, 0, 500, 20)])
def test_bad_override(bad):
    with pytest.raises(InputError, match="--panel"):
        choose_panels(_dual_cine(True), override=bad)


def test_not_dual_when_one_panel():
    frames = np.zeros((4, 50, 100), np.float32)
    frames[:, 5:45, 10:90] = 100
    assert detect_dual_layout(frames) is None


def test_colour_share():
    chroma = np.zeros((90, 200), np.float32)
    chroma[20:80, 10:50] = 120  # half of the left panel coloured
    cine = _dual_cine(True, chroma=chroma)
    assert colour_share(cine, Panel(10, 20, 90, 80)) == pytest.approx(0.5)
    assert colour_share(cine, Panel(110, 20, 190, 80)) == 0.0
