"""Dual-display detection on the layouts scanners export (issue 12, item 4)."""

import numpy as np
import pytest

from ceuskit.io import load_cine
from ceuskit.io.video import write_video
from ceuskit.panels import choose_panels
from ceuskit.pipeline import analyze
from ceuskit.simulate import SimulationSpec, simulate
from ceuskit.simulate_layouts import LAYOUTS, relayout, with_layout, write_layout_phantom

MIN_IOU = 0.95
TTP_TOL_S = 2.0


def iou(a, b):
    ix = max(0, min(a.x1, b.x1) - max(a.x0, b.x0))
    iy = max(0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = ix * iy
    area = a.shape[0] * a.shape[1] + b.shape[0] * b.shape[1] - inter
    return inter / area


@pytest.fixture(scope="module")
def phantom():
    return simulate(SimulationSpec(duration_s=30, fps=4, seed=3, motion_px=4))


@pytest.fixture(scope="module")
def written(phantom, tmp_path_factory):
    """Every layout as DICOM without regions and as MP4: {(layout, fmt): (phantom, files)}."""
    out = {}
    for name in LAYOUTS:
        laid = with_layout(phantom, name)
        for fmt in ("dicom", "mp4"):
            files = write_layout_phantom(laid, tmp_path_factory.mktemp(f"{name}-{fmt}"), fmt)
            out[name, fmt] = (laid, files)
    return out


def test_relayout_keeps_the_contrast_panel_pixels(phantom):
    original = phantom.frames[(slice(None), *phantom.contrast_panel.slices)]
    for name in LAYOUTS:
        lay = relayout(phantom, name)
        assert lay.contrast.shape == phantom.contrast_panel.shape
        moved = lay.frames[(slice(None), *lay.contrast.slices)]
        if name == "text-overlay":  # a caliper mark is burned into the panel
            assert np.mean(moved == original) > 0.99
        else:
            np.testing.assert_array_equal(moved, original, err_msg=name)
    assert relayout(phantom, "unequal").bmode.shape[1] == round(0.6 * 256)
    with pytest.raises(ValueError, match="layout"):
        relayout(phantom, "sideways")


def test_dicom_without_regions_has_none(written):
    cine = load_cine(written["side-by-side-gap", "dicom"][1]["cine"])
    assert cine.regions == ()


@pytest.mark.parametrize("fmt", ["dicom", "mp4"])
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_layout_found_from_the_image(written, name, fmt):
    laid, files = written[name, fmt]
    choice = choose_panels(load_cine(files["cine"]))
    assert choice.method == "image", choice.reason
    assert iou(choice.contrast, laid.contrast_panel) >= MIN_IOU, (choice.contrast, laid.contrast_panel)
    assert choice.bmode is not None
    assert iou(choice.bmode, laid.bmode_panel) >= MIN_IOU, (choice.bmode, laid.bmode_panel)
    assert choice.evidence["layout"] == LAYOUTS[name]
    assert choice.evidence["separator"] is (name in ("side-by-side-gap", "stacked"))
    assert LAYOUTS[name].replace("-", " ") in choice.reason


@pytest.mark.parametrize("which", ["contrast", "bmode"])
def test_single_panel_is_not_split(phantom, tmp_path, which):
    panel = phantom.contrast_panel if which == "contrast" else phantom.bmode_panel
    frames = np.zeros((phantom.frames.shape[0], 240, 320), np.uint8)
    frames[:, 24:216, 32:288] = phantom.frames[(slice(None), *panel.slices)]
    path = write_video(tmp_path / "single.mp4", frames, phantom.times_s)
    choice = choose_panels(load_cine(path))
    assert choice.method == "whole-frame", choice.reason
    assert choice.bmode is None
    assert choice.evidence["layout"] == "single"


def test_analysis_of_a_plain_side_by_side_mp4(written):
    laid, files = written["side-by-side-nogap", "mp4"]
    analysis = analyze(files["cine"], files["rois"])
    assert analysis.panels.method == "image"
    assert analysis.panels.contrast.bounds == laid.contrast_panel.bounds
    lesion = next(r for r in analysis.rois if r.roi.name == "lesion")
    truth = laid.truth["rois"]["lesion"]["perfusion"]["time_to_peak_s"]
    assert abs(lesion.perfusion["time_to_peak_s"] - truth) <= TTP_TOL_S, (lesion.perfusion, truth)


def test_cli_simulate_layout(tmp_path, capsys):
    from ceuskit.cli import main

    out = tmp_path / "stacked"
    code = main(["simulate", str(out), "--layout", "stacked-nogap", "--fps", "4", "--duration", "20"])
    assert code == 0, capsys.readouterr().err
    cine = load_cine(out / "cine.dcm")
    assert cine.regions == () and cine.frame_shape == (416, 320)
    choice = choose_panels(cine)
    assert choice.evidence["layout"] == "stacked" and choice.contrast.bounds == (32, 16, 288, 208)
    assert main(["simulate", str(tmp_path / "bad"), "--layout", "sideways"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--layout" in err[0]
