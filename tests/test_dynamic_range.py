"""Dynamic range from speckle statistics: against gamma speckle and the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from ceuskit.dynamic_range import _trigamma, consistency, estimate_dynamic_range, speckle_blocks
from ceuskit.simulate import SimulationSpec, simulate


def _display(intensity: np.ndarray, dr_db: float, offset_share: float = 0.45) -> np.ndarray:
    db = 10.0 * np.log10(intensity) - offset_share * dr_db
    return np.clip(np.rint(255.0 * (1.0 + db / dr_db)), 0, 255).astype(np.uint8)


def test_trigamma_matches_known_values() -> None:
    # psi'(1) = pi^2 / 6, psi'(1/2) = pi^2 / 2, psi'(x) ~ 1/x for large x.
    got = _trigamma(np.array([1.0, 0.5, 1e6]))
    assert got[0] == pytest.approx(np.pi**2 / 6, rel=1e-9)
    assert got[1] == pytest.approx(np.pi**2 / 2, rel=1e-9)
    assert got[2] == pytest.approx(1e-6, rel=1e-5)


@pytest.mark.parametrize(("looks", "dr_db"), [(1, 45.0), (1, 70.0), (3, 55.0), (3, 75.0)])
def test_gamma_speckle_gives_its_dynamic_range(looks: int, dr_db: float) -> None:
    rng = np.random.default_rng(7)
    frames = _display(rng.gamma(looks, 1.0 / looks, size=(6, 128, 128)), dr_db)
    est = estimate_dynamic_range(frames)
    assert est.dynamic_range_db is not None
    assert abs(est.dynamic_range_db - dr_db) <= 5.0
    assert est.ci_db is not None and est.ci_db[0] <= dr_db <= est.ci_db[1]
    # The effective looks are found, not assumed to be one.
    assert est.effective_looks == pytest.approx(looks, rel=0.35)


def test_single_look_assumption_would_be_far_off_for_several_looks() -> None:
    # Why both moments are used: 5.57 dB / spread reads 3-look speckle ~2x too wide.
    rng = np.random.default_rng(3)
    frames = _display(rng.gamma(3, 1.0 / 3, size=(4, 128, 128)), 60.0)
    blocks = speckle_blocks(frames)
    spread = np.sqrt(blocks.var(axis=1) - 1 / 12).mean()
    assert 5.57 * 255 / spread > 90.0
    ratio, _ = consistency(blocks, np.array([60.0]))
    assert np.median(ratio) == pytest.approx(1.0, abs=0.06)


def test_flat_and_smooth_panels_are_refused_with_the_reason() -> None:
    flat = np.full((4, 128, 128), 120, dtype=np.uint8)
    ramp = np.tile(np.linspace(70, 200, 128), (4, 128, 1)).astype(np.uint8)
    for frames in (flat, ramp):
        est = estimate_dynamic_range(frames)
        assert est.dynamic_range_db is None and est.ci_db is None
        assert "no fully developed speckle" in est.method
    dark = np.zeros((4, 64, 64), dtype=np.uint8)
    est = estimate_dynamic_range(dark)
    assert est.dynamic_range_db is None and "fewer than" in est.method


@pytest.mark.parametrize("dr_db", [45.0, 75.0])
def test_simulated_cine_gives_its_dynamic_range(dr_db: float) -> None:
    ph = simulate(SimulationSpec(dynamic_range_db=dr_db, fps=1.0, duration_s=45.0, seed=2))
    p = ph.contrast_panel
    est = estimate_dynamic_range(ph.frames[:, p.y0:p.y1, p.x0:p.x1])
    assert est.dynamic_range_db is not None
    assert abs(est.dynamic_range_db - dr_db) <= 3.0


def test_mask_keeps_only_the_speckle_it_covers() -> None:
    rng = np.random.default_rng(11)
    frames = _display(rng.gamma(2, 0.5, size=(6, 128, 256)), 60.0)
    frames[:, :, 128:] = 128  # a flat half that has no speckle
    mask = np.zeros((128, 256), dtype=bool)
    mask[:, :128] = True
    assert speckle_blocks(frames, mask=mask).shape[0] == speckle_blocks(frames[:, :, :128]).shape[0]
    est = estimate_dynamic_range(frames, mask=mask)
    assert est.dynamic_range_db is not None and abs(est.dynamic_range_db - 60.0) <= 5.0


def test_trigamma_series_is_scipys_polygamma() -> None:
    from scipy import special

    x = np.concatenate([np.linspace(0.02, 40.0, 5000), np.geomspace(1e-3, 1e7, 200)])
    np.testing.assert_allclose(_trigamma(x), special.polygamma(1, x), rtol=1e-10)


def test_integer_levels_take_the_histogram_route_with_the_same_moments() -> None:
    rng = np.random.default_rng(5)
    blocks = speckle_blocks(_display(rng.gamma(2, 0.5, size=(3, 64, 64)), 55.0))
    grid = np.arange(30.0, 90.0, 5.0)
    r_int, l_int = consistency(blocks, grid)
    # Non-integer values go the per-pixel route; 1e-9 levels change nothing measurable.
    r_flt, l_flt = consistency(blocks + 1e-9, grid)
    np.testing.assert_allclose(r_int, r_flt, rtol=1e-9)
    np.testing.assert_allclose(l_int, l_flt, rtol=1e-9)


def test_display_smoothed_after_compression_is_refused_not_read_low() -> None:
    # A 0.7 px blur of the display reads 21-26 dB at 60-80 dB: refused as implausible.
    ph = simulate(SimulationSpec(dynamic_range_db=60.0, smoothing_px=0.7, fps=1.0, duration_s=45.0,
                                 seed=0))
    p = ph.contrast_panel
    est = estimate_dynamic_range(ph.frames[:, p.y0:p.y1, p.x0:p.x1])
    assert est.dynamic_range_db is None and est.ci_db is None
    assert "below 30 dB" in est.method and "smoothed or resampled" in est.method


def test_level_scale_follows_the_source_of_the_dynamic_range() -> None:
    from ceuskit.dynamic_range import level_scale

    est = level_scale({"dynamic_range_db": 50.0, "dynamic_range_source": "estimated",
                       "dynamic_range_ci_db": [44.0, 56.0]})
    assert est is not None and (est.low, est.high) == pytest.approx((0.88, 1.12))
    assert est.describe() == "the estimated dynamic range's interval, 44.0-56.0 dB"
    # A given value is taken as exact.
    assert level_scale({"dynamic_range_db": 50.0, "dynamic_range_source": "user",
                        "dynamic_range_check": {"ci_db": [40.0, 45.0]}}) is None
    # A default the speckle could not check (check or `auto` refused) spans the
    # contrast presets: the least-checked value must not look the most certain.
    for record in ("dynamic_range_check", "dynamic_range_estimate"):
        u = level_scale({"dynamic_range_db": 60.0, "dynamic_range_source": "default",
                         record: {"ci_db": None}})
        assert u is not None and u.source == "unchecked" and u.interval_db == (40.0, 80.0)
        assert (u.low, u.high) == pytest.approx((2 / 3, 4 / 3))
        assert "which the speckle could not check" in u.describe()
    # No check made at all (no record): nothing to scale by.
    assert level_scale({"dynamic_range_db": 60.0, "dynamic_range_source": "default"}) is None
    # The default outside the speckle's interval: the range still holds the DR used.
    d = level_scale({"dynamic_range_db": 60.0, "dynamic_range_source": "default",
                     "dynamic_range_check": {"ci_db": [42.0, 54.0]}})
    assert d is not None and (d.low, d.high) == pytest.approx((0.7, 1.0))
    assert "the default dynamic range, 60 dB" in d.describe()
    for bad in ([0.0, 50.0], [float("nan"), 50.0], [50.0], "50"):
        assert level_scale({"dynamic_range_db": 50.0, "dynamic_range_source": "estimated",
                            "dynamic_range_ci_db": bad}) is None


def _speckle_cine(rng: np.random.Generator, n: int = 100, side: int = 160,
                  dr_db: float = 60.0) -> np.ndarray:
    """Display values (float, before rounding) of a cine whose speckle is fresh every frame
    over a fixed tissue pattern and a slowly rising level."""
    tissue = rng.gamma(1.0, 1.0, size=(side, side))
    level = np.linspace(0.2, 1.0, n)[:, None, None]
    power = 0.3 * tissue[None] + level * rng.gamma(1.0, 1.0, size=(n, side, side))
    return 255.0 * (1.0 + (10.0 * np.log10(power) - 0.45 * dr_db) / dr_db)


def _to_8bit(display: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(display), 0, 255).astype(np.uint8)


def _persist(display: np.ndarray, weight: float) -> np.ndarray:
    out = display.copy()
    for t in range(1, out.shape[0]):
        out[t] = weight * out[t - 1] + (1.0 - weight) * display[t]
    return out


def test_frame_persistence_reads_the_averaging_weight_of_a_display() -> None:
    # Issue 17: frame averaging after compression is found and measured, on
    # speckle that is not the simulator's.
    from ceuskit.dynamic_range import PERSISTENCE_LIMIT, frame_persistence

    rng = np.random.default_rng(5)
    display = _speckle_cine(rng)
    plain = frame_persistence(_to_8bit(display))
    assert not plain.detected and plain.weight_lower is not None
    assert plain.weight_lower < PERSISTENCE_LIMIT and plain.n_regions >= 40
    for weight in (0.1, 0.3, 0.6):
        check = frame_persistence(_to_8bit(_persist(display, weight)))
        assert check.detected, weight
        assert check.weight_lower == pytest.approx(weight, abs=0.05)
        assert check.weight_lower <= weight + 0.01  # a lower bound
    # A video export that shows every frame twice is not frame averaging.
    assert not frame_persistence(np.repeat(_to_8bit(display), 2, axis=0)).detected
    # Too little to measure: not checked, never "detected".
    small = frame_persistence(_to_8bit(display[:3, :40, :40]))
    assert small.weight_lower is None and not small.detected and "not checked" in small.method


@pytest.mark.parametrize(("kw", "persistent"), [
    ({}, False),
    ({"motion_px": 8.0, "out_of_plane_frames": 2}, False),
    ({"persistence": 0.1}, True),
    ({"persistence": 0.3}, True),
])
def test_simulated_persistence_is_refused_and_motion_is_not(kw: dict, persistent: bool) -> None:
    ph = simulate(SimulationSpec(dynamic_range_db=60.0, fps=8.0, duration_s=30.0, seed=3, **kw))
    p = ph.contrast_panel
    est = estimate_dynamic_range(ph.frames[:, p.y0:p.y1, p.x0:p.x1])
    assert est.persistence is not None and est.persistence.detected == persistent
    if persistent:
        # Refused: at 60 dB the speckle read 67-72 dB with persistence 0.1-0.3.
        assert est.dynamic_range_db is None and "persistence" in est.method
        assert est.persistence.weight_lower == pytest.approx(kw["persistence"], abs=0.05)
    else:
        assert est.dynamic_range_db is not None and abs(est.dynamic_range_db - 60.0) <= 5.0


def _resize(frames: np.ndarray, fy: float, fx: float) -> np.ndarray:
    import cv2

    h, w = frames.shape[1:]
    return np.stack([cv2.resize(f, (round(w * fx), round(h * fy)), interpolation=cv2.INTER_LINEAR)
                     for f in frames])


def test_display_resampled_after_compression_is_found_on_gamma_speckle() -> None:
    # Issue 17: interpolation after compression (a resized export) makes the
    # speckle read low; its periodic trace is found, on speckle that is not
    # the simulator's.
    from ceuskit.dynamic_range import RESAMPLING_LIMIT, display_resampling

    rng = np.random.default_rng(9)
    frames = _display(rng.gamma(1.0, 1.0, size=(8, 192, 192)), 60.0)
    plain = display_resampling(frames)
    assert not plain.detected and plain.modulation is not None
    assert plain.modulation < RESAMPLING_LIMIT / 4
    lateral = display_resampling(_resize(frames, 1.0, 1.3))
    assert lateral.detected and lateral.axis == "columns"
    assert lateral.period_px == pytest.approx(1.3 / 0.3, rel=0.05)
    axial = display_resampling(_resize(frames, 2.5, 1.0))
    assert axial.detected and axial.axis == "rows" and axial.period_px == pytest.approx(2.5, rel=0.05)
    # Known limit: an integer factor interpolates every pixel alike and leaves no trace.
    assert not display_resampling(_resize(frames, 2.0, 2.0)).detected
    # Flat frames: nothing to measure, no warning, not detected.
    flat = display_resampling(np.full((4, 64, 64), 120, dtype=np.uint8))
    assert flat.modulation is None and not flat.detected


def test_resized_simulated_display_is_refused_not_read_low() -> None:
    # At 60 dB the simulator resized 1.3x laterally read 52-55 dB before this check.
    ph = simulate(SimulationSpec(dynamic_range_db=60.0, fps=1.0, duration_s=45.0, seed=1))
    p = ph.contrast_panel
    frames = ph.frames[:, p.y0:p.y1, p.x0:p.x1]
    plain = estimate_dynamic_range(frames)
    assert plain.resampling is not None and not plain.resampling.detected
    assert plain.dynamic_range_db is not None
    est = estimate_dynamic_range(_resize(frames, 1.0, 1.3))
    assert est.dynamic_range_db is None and est.ci_db is None
    assert "resampled after log compression" in est.method
    assert est.resampling is not None and est.resampling.axis == "columns"


def _jpeg(frames: np.ndarray, quality: int) -> np.ndarray:
    import io

    from PIL import Image

    out = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(buf)))
    return np.stack(out)


def test_jpeg_quantisation_is_found_where_the_grid_lies_and_not_in_plain_speckle() -> None:
    # Gamma speckle (not the simulator's) through pillow's JPEG encoder: the
    # decoded blocks' DCT coefficients sit on the quantisation lattice.
    from ceuskit.dynamic_range import block_quantisation

    rng = np.random.default_rng(5)
    frames = _display(rng.gamma(1.0, 1.0, size=(4, 200, 200)), 70.0)
    plain = block_quantisation(frames)
    assert not plain.detected and plain.n_frequencies == 0
    compressed = _jpeg(frames, 90)
    # Cut 3 rows and 5 columns in, as a panel cut from an exported frame: the grid moves.
    found = block_quantisation(compressed[:, 3:, 5:])
    assert found.detected and found.n_frequencies >= 20
    assert found.grid_offset_px == (5, 3)
    assert min(found.steps) >= 5
    # Quality 100 (all steps 1) leaves nothing to find, and reads the speckle as it was.
    assert not block_quantisation(_jpeg(frames, 100)).detected
    # A static graphic repeated in every frame puts one value on any lattice: not JPEG.
    still = np.tile(np.where(np.arange(64) % 16 < 8, 60, 190).astype(np.uint8), (4, 64, 1))
    assert not block_quantisation(still).detected


@pytest.mark.parametrize("dr_db", [60.0, 80.0])
def test_jpeg_export_widens_the_interval_to_hold_the_true_value(dr_db: float) -> None:
    # Issue 17: a JPEG export (quality 90) reads the simulator 10-25 dB low,
    # outside the speckle's own interval; found in the pixels, the interval
    # reaches the presets' top instead.
    ph = simulate(SimulationSpec(dynamic_range_db=dr_db, fps=1.0, duration_s=45.0, seed=1))
    p = ph.contrast_panel
    whole = _jpeg(ph.frames, 90)
    est = estimate_dynamic_range(whole[:, p.y0:p.y1, p.x0:p.x1])
    assert est.compression is not None and est.compression.lossy
    assert est.compression.file is None and est.compression.quantisation is not None
    assert est.compression.quantisation.detected
    assert est.dynamic_range_db is not None and est.dynamic_range_db < dr_db - 3.0
    assert est.ci_db is not None and est.ci_db[0] <= dr_db <= est.ci_db[1] and est.ci_db[1] >= 80.0
    assert "lossy-compressed" in est.method and "the pixels show JPEG's 8 x 8 blocks" in est.method
    # The same panel uncompressed: not flagged, the interval as before.
    plain = estimate_dynamic_range(ph.frames[:, p.y0:p.y1, p.x0:p.x1])
    assert plain.compression is not None and not plain.compression.lossy
    assert plain.ci_db is not None and plain.ci_db[1] < 80.0 + (dr_db - 60.0)


def test_a_lossy_file_widens_the_interval_without_pixel_evidence() -> None:
    # What the file says (an H.264 video, a JPEG 2000 transfer syntax) counts
    # even where the pixels show no block lattice.
    ph = simulate(SimulationSpec(dynamic_range_db=50.0, fps=1.0, duration_s=45.0, seed=2))
    p = ph.contrast_panel
    frames = ph.frames[:, p.y0:p.y1, p.x0:p.x1]
    est = estimate_dynamic_range(frames, lossy_file="video codec h264")
    plain = estimate_dynamic_range(frames)
    assert est.dynamic_range_db == plain.dynamic_range_db
    assert est.ci_db is not None and plain.ci_db is not None
    assert est.ci_db[0] == plain.ci_db[0] and est.ci_db[1] == 80.0 > plain.ci_db[1]
    assert est.compression is not None and est.compression.file == "video codec h264"
    assert "the file says so: video codec h264" in est.method
