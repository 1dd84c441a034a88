"""Acquisition quality control: each warning fires on a damaged phantom, none on clean ones."""

import cv2
import numpy as np
import pytest

from ceuskit import qc
from ceuskit.cine import Cine
from ceuskit.kinetics.fit import enhancement_test
from ceuskit.linearize import to_linear_power
from ceuskit.panels import choose_panels
from ceuskit.roi import parse_rois
from ceuskit.simulate import SimulationSpec, simulate
from ceuskit.tic import roi_means

DR_DB = 60.0


def _grey(db):
    """Display grey levels of a `db` gain change at the phantoms' dynamic range."""
    return db * 255.0 / DR_DB


def _inputs(phantom, frames=None, times=None, chroma=None):
    """Everything `acquisition_warnings` takes, measured as the pipeline does."""
    frames = phantom.frames if frames is None else frames
    times = phantom.times_s if times is None else np.asarray(times, dtype=np.float64)
    cine = Cine(np.asarray(frames, dtype=np.float32), times - times[0],
                regions=(phantom.bmode_panel, phantom.contrast_panel),
                spacing_mm=phantom.spacing_mm, chroma=chroma)
    panels = choose_panels(cine)
    rois = parse_rois(phantom.rois, panel=panels.contrast, frame_shape=cine.frame_shape)
    power = to_linear_power(cine.frames[(slice(None), *panels.contrast.slices)], DR_DB)
    curves = roi_means(power, [r.mask for r in rois])
    enhancing = [bool(e) for e in np.asarray(enhancement_test(cine.times_s, curves)[0]).ravel()]
    return cine, panels, rois, curves, enhancing


def _run(phantom, frames=None, times=None, chroma=None, valid_frames=None):
    cine, panels, rois, curves, enhancing = _inputs(phantom, frames, times, chroma)
    return qc.acquisition_warnings(cine, panels, rois, curves, enhancing, dynamic_range_db=DR_DB,
                                   valid_frames=valid_frames)


def _codes(warnings):
    return [w.code for w in warnings]


def _only(warnings, code):
    hits = [w for w in warnings if w.code == code]
    assert hits, (code, _codes(warnings))
    return hits


def _edit(phantom):
    """A writable float copy of the phantom's frames."""
    return phantom.frames.astype(np.float32)


def _add(frames, panel, grey, start=0, stop=None):
    frames[start:stop, panel.y0:panel.y1, panel.x0:panel.x1] += np.float32(grey)
    np.clip(frames, 0.0, 255.0, out=frames)
    np.rint(frames, out=frames)
    return frames


@pytest.fixture(scope="module")
def tumour():
    """The damaged cines of this file are all made from this clean phantom."""
    return simulate(SimulationSpec(scenario="tumor", seed=0))


# --------------------------------------------------------------------------- clean phantoms

# With the `tumour` fixture (seed 0, no motion): two seeds of each scenario,
# one of each with breathing motion.
CLEAN = [
    dict(scenario="tumor", seed=1, necrosis=0.5, motion_px=3.0),
    dict(scenario="bland", seed=0),
    dict(scenario="bland", seed=3, motion_px=3.0),
]


def _assert_clean(phantom):
    cine, panels, rois, curves, enhancing = _inputs(phantom)
    warnings = qc.acquisition_warnings(cine, panels, rois, curves, enhancing,
                                       dynamic_range_db=DR_DB)
    assert warnings == [], [w.message for w in warnings]
    # ... and with room to spare (margins reported in the module's comments).
    contrast = cine.frames[(slice(None), *panels.contrast.slices)]
    sat, _ = qc.saturation_shares(contrast, rois, curves, cine.times_s)
    assert sat.max() < qc.SATURATION_MAX_SHARE / 2
    assert qc.floor_shares(contrast, rois).max() < qc.FLOOR_MAX_SHARE / 4
    assert not qc.overlay_mask(contrast).any()
    assert qc.duplicate_frame_indices(contrast).size == 0


def test_clean_reference_phantom_raises_no_warning(tumour):
    _assert_clean(tumour)


@pytest.mark.parametrize("spec", CLEAN, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
def test_clean_phantoms_raise_no_warning(spec):
    _assert_clean(simulate(SimulationSpec(**spec)))


def test_clean_phantom_at_a_low_frame_rate_is_not_a_gain_change():
    # At 1 frame/s the muscle bolus lifts every block of the panel by ~3.5 dB in
    # one frame: only the abruptness test tells it from a gain step.
    phantom = simulate(SimulationSpec(scenario="tumor", seed=3, fps=1.0))
    assert _run(phantom) == []


# --------------------------------------------------------------------------- timing


def test_short_cine(tumour):
    keep = tumour.times_s <= 40.0
    warnings = _run(tumour, tumour.frames[keep], tumour.times_s[keep])
    (w,) = _only(warnings, qc.SHORT_CINE)
    assert "40.1 s" in w.message and "extrapolat" in w.message


def test_sixty_seconds_at_eight_frames_per_second_is_long_enough():
    assert qc.duration_warnings(np.arange(480) / 8.0) == []
    assert _codes(qc.duration_warnings(np.arange(470) / 8.0)) == [qc.SHORT_CINE]


def test_ends_before_washout(tumour):
    keep = tumour.times_s <= 25.0
    warnings = _run(tumour, tumour.frames[keep], tumour.times_s[keep])
    hits = _only(warnings, qc.ENDS_BEFORE_WASHOUT)
    # Muscle peaks ~23 s after the start: its wash-out is not in the cine.
    assert any("'muscle'" in w.message for w in hits)
    assert all("extrapolated" in w.message for w in hits)


def test_arrival_not_captured(tumour):
    t0 = tumour.truth["tissues"]["tumor"]["t0_s"]
    keep = tumour.times_s >= t0 + 2.0
    warnings = _run(tumour, tumour.frames[keep], tumour.times_s[keep])
    hits = _only(warnings, qc.ARRIVAL_NOT_CAPTURED)
    assert any("'lesion'" in w.message for w in hits)
    assert "baseline" in hits[0].message


def test_curves_too_noisy_to_judge_are_left_alone():
    # Shape checks need a clear rise: flat noise (even if called enhancing) is not judged.
    t = np.arange(720) / 8.0
    rng = np.random.default_rng(0)
    noise = 1e-3 * (1.0 + 0.2 * rng.standard_normal((50, t.size)))
    names = [f"roi{i}" for i in range(50)]
    assert qc.arrival_warnings(t, noise, [True] * 50, names) == []
    assert qc.washout_warnings(t, noise, [True] * 50, names) == []


def test_time_gap(tumour):
    keep = np.ones(tumour.times_s.size, dtype=bool)
    keep[300:330] = False  # 30 frames (3.75 s) lost
    (w,) = _only(_run(tumour, tumour.frames[keep], tumour.times_s[keep]), qc.TIME_GAP)
    assert "3.88 s" in w.message and "interpolated" in w.message


def test_declared_clip_gaps_are_not_warned_about():
    # Three clips 0-60, 90-110, 130-150 s at 2 fps, and one dropped stretch inside clip 1.
    t = np.concatenate([np.arange(0, 60.25, 0.5), np.arange(90, 110.25, 0.5),
                        np.arange(130, 150.25, 0.5)])
    t = t[(t < 20) | (t > 25)]
    (w,) = qc.time_gap_warnings(t, [[60.0, 90.0], [110.0, 130.0]])
    assert "1 gap(s)" in w.message and "after 19.5 s" in w.message
    assert qc.time_gap_warnings(t[t > 30], [[60.0, 90.0], [110.0, 130.0]]) == []
    assert "3 gap(s)" in qc.time_gap_warnings(t)[0].message  # undeclared: all three


def test_variable_frame_clock_is_not_a_gap():
    t = np.cumsum(np.random.default_rng(0).uniform(0.08, 0.17, 600))
    assert qc.time_gap_warnings(t - t[0]) == []


def test_duplicate_frames(tumour):
    frames = _edit(tumour)
    for k in (100, 101, 400):
        frames[k] = frames[k - 1]
    (w,) = _only(_run(tumour, frames), qc.DUPLICATE_FRAMES)
    assert w.message.startswith("3 frame(s)")
    np.testing.assert_array_equal(
        qc.duplicate_frame_indices(frames[(slice(None), *tumour.contrast_panel.slices)]),
        [100, 101, 400])


def test_blank_frames_are_not_duplicates():
    frames = np.zeros((10, 20, 30), np.float32)
    assert qc.duplicate_frame_indices(frames).size == 0


# --------------------------------------------------------------------------- gain


@pytest.mark.parametrize("at_s", [13.0, 50.0])
def test_gain_step_in_both_panels(tumour, at_s):
    # 13 s is during the lesion's wash-in, 50 s in the wash-out.
    k = int(np.searchsorted(tumour.times_s, at_s))
    frames = _edit(tumour)
    for panel in (tumour.contrast_panel, tumour.bmode_panel):
        _add(frames, panel, _grey(4.0), start=k)
    (w,) = _only(_run(tumour, frames), qc.GAIN_CHANGE)
    assert f"{tumour.times_s[k]:.1f} s" in w.message
    assert "B-mode tissue level by +4" in w.message and "distorted" in w.message


def test_gain_step_in_the_contrast_panel_alone(tumour):
    k = int(np.searchsorted(tumour.times_s, 50.0))
    frames = _add(_edit(tumour), tumour.contrast_panel, _grey(-3.0), start=k)
    (w,) = _only(_run(tumour, frames), qc.GAIN_CHANGE)
    assert "whole contrast panel by -3" in w.message and "x0.49" in w.message


def test_gain_step_in_the_bmode_panel_alone(tumour):
    k = int(np.searchsorted(tumour.times_s, 30.0))
    frames = _add(_edit(tumour), tumour.bmode_panel, _grey(3.0), start=k)
    (w,) = _only(_run(tumour, frames), qc.GAIN_CHANGE)
    assert "B-mode panel's gain" in w.message and "probably unaffected" in w.message


def test_slow_gain_drift(tumour):
    # Autoscaling that brightens B-mode tissue by 5 dB over the cine, no step.
    frames = _edit(tumour)
    ramp = np.linspace(0.0, _grey(5.0), frames.shape[0], dtype=np.float32)
    p = tumour.bmode_panel
    frames[:, p.y0:p.y1, p.x0:p.x1] += ramp[:, None, None]
    np.clip(frames, 0, 255, out=frames)
    (w,) = _only(_run(tumour, np.rint(frames)), qc.GAIN_CHANGE)
    assert "drifts by +" in w.message


def test_gain_step_on_a_sector_image_with_a_black_surround():
    # 70 % of the B-mode panel is black: the level is taken over the live sector.
    rng = np.random.default_rng(0)
    n = 60
    bmode = np.zeros((n, 60, 80), np.float32)
    bmode[:, :, :24] = rng.uniform(60, 160, (60, 24)).astype(np.float32)
    bmode[30:, :, :24] += np.float32(_grey(2.0))
    contrast = rng.uniform(0, 120, (n, 60, 80)).astype(np.float32)
    t = np.arange(n) / 8.0
    (w,) = qc.gain_change_warnings(contrast, bmode, t, dynamic_range_db=DR_DB)
    assert "B-mode panel's gain" in w.message and f"{t[30]:.1f} s" in w.message
    whole = qc.panel_levels_db(bmode, dynamic_range_db=DR_DB)
    assert np.all(whole == 0.0)  # what a plain panel median would have seen


def test_bmode_step_while_the_contrast_panel_is_black():
    # Before the bolus, with reject on, the contrast panel is black: it cannot
    # tell whether its gain followed the B-mode step, and the warning says so.
    rng = np.random.default_rng(1)
    tissue = rng.uniform(60, 160, (60, 80)).astype(np.float32)
    bmode = np.repeat(tissue[None], 40, axis=0) + rng.normal(0, 2, (40, 60, 80)).astype(np.float32)
    bmode[20:] += np.float32(_grey(3.0))
    contrast = np.zeros_like(bmode)
    (w,) = qc.gain_change_warnings(contrast, bmode, np.arange(40) / 8.0, dynamic_range_db=DR_DB)
    assert "too dark (or too bright) there to tell" in w.message
    assert "x2" in w.message  # +3 dB is a doubling of linear power


def test_excluded_frames_are_ignored(tumour):
    # A one-frame flash of both panels: a gain event unless the frame is excluded.
    frames = _edit(tumour)
    for panel in (tumour.contrast_panel, tumour.bmode_panel):
        _add(frames, panel, _grey(6.0), start=200, stop=201)
    assert qc.GAIN_CHANGE in _codes(_run(tumour, frames))
    valid = np.ones(frames.shape[0], dtype=bool)
    valid[200] = False
    assert _run(tumour, frames, valid_frames=valid) == []


# --------------------------------------------------------------------------- ROI pixels


def test_saturation(tumour):
    frames = _edit(tumour)
    p = tumour.contrast_panel
    lesion = tumour.roi_masks["lesion"]
    view = frames[:, p.y0:p.y1, p.x0:p.x1]
    view[:, lesion] += np.float32(_grey(12.0))  # lesion peak ~ -10 dB -> +2 dB
    np.clip(frames, 0, 255, out=frames)
    hits = _only(_run(tumour, frames), qc.SATURATION)
    assert [w.message.split(":")[0] for w in hits] == ["ROI 'lesion'"]
    assert "underestimated" in hits[0].message


def test_floor_clipping(tumour):
    # Noise floor brought to the display floor: a gain 15 dB too low.
    frames = _add(_edit(tumour), tumour.contrast_panel, _grey(-15.0))
    hits = _only(_run(tumour, frames), qc.FLOOR_CLIPPING)
    assert {w.message.split(":")[0] for w in hits} >= {"ROI 'lesion'", "ROI 'lumen'"}
    assert "truncated" in hits[0].message


# --------------------------------------------------------------------------- overlays and colour


def _text_mask(shape, org, text="RT LEG 4.2 cm", scale=0.5):
    mask = np.zeros(shape, np.uint8)
    cv2.putText(mask, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, 1, cv2.LINE_8)
    return mask > 0


def test_overlay_away_from_the_rois(tumour):
    p = tumour.contrast_panel
    text = _text_mask(p.shape, (6, 16))
    assert not any((text & m).any() for m in tumour.roi_masks.values())
    frames = _edit(tumour)
    frames[:, p.y0:p.y1, p.x0:p.x1][:, text] = 255.0
    warnings = _run(tumour, frames)
    (w,) = _only(warnings, qc.OVERLAY_IN_PANEL)
    rows, cols = np.nonzero(text)
    assert f"x {cols.min()}-{cols.max()}, y {rows.min()}-{rows.max()}" in w.message
    assert "no ROI overlaps the overlay" in w.message
    # The overlay's constant 255s are not reported as saturation.
    assert qc.SATURATION not in _codes(warnings)


def test_overlay_over_the_lesion(tumour):
    p = tumour.contrast_panel
    rows, cols = np.nonzero(tumour.roi_masks["lesion"])
    org = (int(cols.min()), int(rows.mean()) + 5)
    text = _text_mask(p.shape, org, "+ 12.3 mm", scale=0.6)
    assert (text & tumour.roi_masks["lesion"]).any()
    frames = _edit(tumour)
    frames[:, p.y0:p.y1, p.x0:p.x1][:, text] = 255.0
    (w,) = _only(_run(tumour, frames), qc.OVERLAY_IN_PANEL)
    assert "ROI 'lesion' (" in w.message and "contaminated" in w.message


def test_colour_marks_in_the_contrast_panel(tumour):
    chroma = np.zeros(tumour.frames.shape[1:], np.float32)
    p = tumour.contrast_panel
    chroma[p.y0 + 10:p.y0 + 15, p.x0 + 10:p.x0 + 15] = 120.0  # a small yellow marker
    chroma[p.y0:p.y1, p.x0:p.x1][tumour.roi_masks["muscle"]] = 0.0
    (w,) = _only(_run(tumour, chroma=chroma), qc.COLOUR_IN_PANEL)
    assert "25 coloured pixels" in w.message and "no ROI overlaps" in w.message
    # A marker on the reference ROI contaminates it.
    rows, cols = np.nonzero(tumour.roi_masks["muscle"])
    chroma[p.y0 + rows[:12], p.x0 + cols[:12]] = 120.0
    (w,) = _only(_run(tumour, chroma=chroma), qc.COLOUR_IN_PANEL)
    assert "ROI 'muscle' (12 px" in w.message and "contaminated" in w.message


def test_colour_outside_the_contrast_panel_or_grey_chroma_is_silent(tumour):
    chroma = np.zeros(tumour.frames.shape[1:], np.float32)
    b = tumour.bmode_panel
    chroma[b.y0:b.y0 + 20, b.x0:b.x0 + 20] = 120.0  # colour in the B-mode panel only
    chroma[tumour.contrast_panel.slices] = 12.0  # codec chroma noise in the contrast panel
    assert qc.COLOUR_IN_PANEL not in _codes(_run(tumour, chroma=chroma))
    assert qc.colour_warnings(None, []) == []


# --------------------------------------------------------------------------- entry point


def test_every_code_has_a_triggering_test():
    # Keeps this file honest when a check is added to the module.
    names = {name for name in globals() if name.startswith("test_")}
    expected = {
        qc.SHORT_CINE: "test_short_cine", qc.TIME_GAP: "test_time_gap",
        qc.DUPLICATE_FRAMES: "test_duplicate_frames",
        qc.GAIN_CHANGE: "test_gain_step_in_both_panels", qc.SATURATION: "test_saturation",
        qc.FLOOR_CLIPPING: "test_floor_clipping",
        qc.ARRIVAL_NOT_CAPTURED: "test_arrival_not_captured",
        qc.ENDS_BEFORE_WASHOUT: "test_ends_before_washout",
        qc.OVERLAY_IN_PANEL: "test_overlay_away_from_the_rois",
        qc.COLOUR_IN_PANEL: "test_colour_marks_in_the_contrast_panel",
    }
    assert set(expected) == set(qc.QC_CODES)
    assert set(expected.values()) <= names


def test_entry_point_checks_its_inputs(tumour):
    cine, panels, rois, curves, enhancing = _inputs(tumour)
    with pytest.raises(ValueError, match="curves"):
        qc.acquisition_warnings(cine, panels, rois, curves[:2], enhancing, dynamic_range_db=DR_DB)
    with pytest.raises(ValueError, match="valid_frames"):
        qc.acquisition_warnings(cine, panels, rois, curves, enhancing, dynamic_range_db=DR_DB,
                                valid_frames=np.ones(3, bool))
    warning = qc.duration_warnings(np.arange(10.0))[0]
    assert warning.as_dict() == {"code": "short-cine", "message": warning.message}
