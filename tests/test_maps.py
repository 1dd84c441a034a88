"""Parametric maps against exact truth: necrosis, PE/TTP maps, heterogeneity, DVP, Dask.

Truth comes from two generators: the study simulator (`ceuskit.simulate`:
realistic tumour and bland thrombus, one bolus per tissue, speckle with a
point-spread function) and `ceuskit.map_phantom` (per-pixel kinetics that
vary across the lesion, so that TTP maps have something to correlate with).
Cines are short (4 frames/s, 60 s) to keep the suite fast; the rules are the
ones the full-length cines use.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from ceuskit import maps
from ceuskit.cine import Cine, Panel
from ceuskit.kinetics.fit import FitStatus
from ceuskit.linearize import to_linear_power
from ceuskit.map_phantom import lesion_phantom
from ceuskit.roi import parse_rois
from ceuskit.simulate import SimulationSpec, simulate

NECROSIS_TOL = 0.05  # 5 percentage points (the tolerance)
SPEARMAN_MIN = 0.8
BLAND_MIN_NON_ENHANCING = 0.95
SIM = {"fps": 4.0, "duration_s": 60.0}


def _map_simulated(phantom, options=None):
    cp = phantom.contrast_panel
    power = to_linear_power(phantom.frames[:, cp.y0:cp.y1, cp.x0:cp.x1], 60.0)
    rois = parse_rois(phantom.rois, panel=cp, frame_shape=phantom.frames.shape[1:])
    return maps.compute_maps(maps.array_source(power), phantom.times_s, rois, options,
                             spacing_mm=phantom.spacing_mm), rois


def _map_synthetic(ph, options=None, **kw):
    power = to_linear_power(ph.frames, 60.0)
    h, w = ph.frames.shape[1:]
    rois = parse_rois(ph.rois, panel=Panel(0, 0, w, h, spacing_mm=ph.spacing_mm), frame_shape=(h, w))
    return maps.compute_maps(maps.array_source(power), ph.times_s, rois, options,
                             spacing_mm=ph.spacing_mm, **kw), rois


@pytest.fixture(scope="module")
def tumours():
    """Simulated tumours: necrosis fractions 0, 0.1, 0.3, 0.55, two seeds each."""
    out = {}
    for necrosis in (0.0, 0.1, 0.3, 0.55):
        for seed in (11, 12):
            ph = simulate(SimulationSpec(scenario="tumor", seed=seed, necrosis=necrosis, **SIM))
            out[(necrosis, seed)] = (ph, _map_simulated(ph)[0])
    return out


@pytest.mark.parametrize("necrosis", [0.0, 0.1, 0.3, 0.55])
def test_necrosis_fraction_within_5_points(tumours, necrosis):
    for seed in (11, 12):
        ph, res = tumours[(necrosis, seed)]
        truth = ph.truth["rois"]["lesion"]["necrosis_fraction"]
        est = res.rois["lesion"]["necrosis_fraction"]
        assert abs(est - truth) <= NECROSIS_TOL, (necrosis, seed, est, truth)
        # The mask is the lesion's non-enhancing tested pixels, and it is an output.
        lesion = ph.roi_masks["lesion"]
        assert np.count_nonzero(res.necrosis) == round(est * np.count_nonzero(res.tested & lesion))
        assert not np.any(res.necrosis & ~lesion)


def test_necrosis_mask_matches_truth_pixelwise(tumours):
    ph, res = tumours[(0.3, 11)]
    lesion = ph.roi_masks["lesion"]
    truth = ph.masks["necrosis"] & lesion
    agree = np.count_nonzero(res.necrosis[lesion] == truth[lesion]) / np.count_nonzero(lesion)
    assert agree >= 0.97, agree


def test_peak_enhancement_map_tracks_truth_in_tumours(tumours):
    for (necrosis, seed), (ph, res) in tumours.items():
        viable = ph.roi_masks["lesion"] & ph.masks["viable"] & res.enhancing
        pe = res.params["peak_enhancement"][viable]
        ok = np.isfinite(pe)
        rho = stats.spearmanr(pe[ok], ph.amplitude_maps["tumor"][viable][ok]).statistic
        assert rho >= SPEARMAN_MIN, (necrosis, seed, rho)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pe_and_ttp_maps_track_per_pixel_truth(seed):
    ph = lesion_phantom(seed=seed, lesion_sigma_log=0.5, kinetics_spread=1.0)
    res, _ = _map_synthetic(ph)
    m = ph.masks["lesion"] & res.enhancing
    for key, truth in (("peak_enhancement", ph.kinetics.peak), ("time_to_peak_s",
                                                                ph.kinetics.time_to_peak_s)):
        v = res.params[key][m]
        ok = np.isfinite(v)
        assert ok.mean() > 0.98
        rho = stats.spearmanr(v[ok], truth[m][ok]).statistic
        assert rho >= SPEARMAN_MIN, (key, seed, rho)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bland_thrombus_is_non_enhancing(seed):
    ph = simulate(SimulationSpec(scenario="bland", seed=seed, **SIM))
    res, _ = _map_simulated(ph)
    lesion = res.rois["lesion"]
    assert lesion["non_enhancing_fraction"] >= BLAND_MIN_NON_ENHANCING, lesion
    assert lesion["heterogeneity"]["heterogeneous"] is None  # nothing enhances to describe
    assert res.rois["muscle"]["non_enhancing_fraction"] < 0.01
    assert lesion["test_window"]["post_window_source"].startswith("window of ROI 'muscle'")


def test_pixel_test_rule():
    """Significant and >= 1 dB: enhancing; significant but < 1 dB, or flat: not."""
    rng = np.random.default_rng(3)
    t = np.arange(200) / 4.0
    bolus = np.exp(-0.5 * ((t - 25.0) / 5.0) ** 2)  # peak at 25 s
    base = 1e-3
    shape = (4, 4)
    power = base * (1.0 + 0.02 * rng.standard_normal((t.size, *shape)))
    gain = np.zeros(shape)
    gain[0] = 10 ** (3.0 / 10) - 1  # +3 dB at peak
    gain[1] = 10 ** (0.5 / 10) - 1  # +0.5 dB: significant with 2 % noise, below the floor
    power = (power + base * gain[None] * bolus[:, None, None]).astype(np.float32)
    ref = np.zeros(shape, dtype=bool)
    ref[:3] = True
    from ceuskit.roi import Roi

    rois = [Roi("lesion", "lesion", "mask", np.ones(shape, dtype=bool), np.zeros((0, 2))),
            Roi("ref", "reference", "mask", ref, np.zeros((0, 2)))]
    res = maps.compute_maps(maps.array_source(power), t, rois, maps.MapOptions(block_px=2))
    assert res.enhancing[0].all()
    assert not res.enhancing[1].any() and np.all(res.z[1] > 2 * maps.PIXEL_Z)
    assert not res.enhancing[2:].any()
    assert np.all(res.status[2:] == FitStatus.NO_ENHANCEMENT)


def test_block_curves_average_linear_power_of_enhancing_pixels():
    power = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4) + 1.0
    label = np.zeros((4, 4), dtype=np.int16)
    label[:, 3] = -1
    enhancing = np.ones((4, 4), dtype=bool)
    enhancing[0, 0] = False
    seg, row = maps.block_segments(label, enhancing, 2, 1)
    assert seg.max() + 1 == 4 and seg[0, 0] == -1 and np.all(seg[:, 3] == -1)
    curves = maps.segment_curves(maps.array_source(power), seg, 4, 2, block_px=2)
    first = power[:, [0, 1, 1], [1, 0, 1]].mean(axis=1)  # block (0, 0) less its non-enhancing pixel
    np.testing.assert_allclose(curves[0], first)
    np.testing.assert_allclose(curves[1], power[:, 0:2, 2].mean(axis=1))
    assert list(row) == [0, 0, 1, 1]


def test_heterogeneity_threshold_separates_homogeneous_from_heterogeneous(tumours):
    """The numbers behind HETEROGENEITY_CV_THRESHOLD (see its comment in maps.py)."""
    homogeneous, heterogeneous = [], []
    for seed in (0, 1):
        flat = _map_synthetic(lesion_phantom(seed=seed, lesion_sigma_log=0.0))[0]
        homogeneous += [flat.rois["lesion"], flat.rois["reference"]]
        mottled = _map_synthetic(lesion_phantom(seed=seed, lesion_sigma_log=0.5))[0]
        heterogeneous.append(mottled.rois["lesion"])
    for (necrosis, _seed), (_ph, res) in tumours.items():
        homogeneous += [res.rois["muscle"], res.rois["lumen"]]  # perfusion CV 0.12 and 0
        if necrosis == 0.0:
            heterogeneous.append(res.rois["lesion"])  # lognormal field, CV 0.53
    hom = [r["heterogeneity"]["index"] for r in homogeneous]
    het = [r["heterogeneity"]["index"] for r in heterogeneous]
    # The threshold sits between the two groups with a margin on either side.
    margin = 0.08
    assert max(hom) + margin < maps.HETEROGENEITY_CV_THRESHOLD < min(het) - margin, (hom, het)
    assert not any(r["heterogeneity"]["heterogeneous"] for r in homogeneous)
    assert all(r["heterogeneity"]["heterogeneous"] for r in heterogeneous)
    # Necrosis alone makes a lesion heterogeneous.
    _ph, res = tumours[(0.3, 11)]
    assert res.rois["lesion"]["heterogeneity"]["heterogeneous"]


def test_dvp_of_lesion_identical_to_reference_is_flat():
    for seed in (0, 1):
        res, _ = _map_synthetic(lesion_phantom(seed=seed, same_as_reference=True))
        dvp = res.rois["lesion"]["dvp"]
        assert dvp["roi_class"] == "flat"
        assert dvp["pixel_shares"]["flat"] >= 0.95, dvp
        assert res.dvp_curves is not None and res.dvp_curves.shape == (res.n_curves, res.times_s.size)


def test_dvp_classes_of_tumour_and_necrosis(tumours):
    ph, res = tumours[(0.3, 12)]
    lesion = res.rois["lesion"]["dvp"]
    # The tumour enhances early and strongly, then washes out below muscle.
    assert lesion["roi_class"] == "bipolar +/-"
    nec = ph.masks["necrosis"] & ph.roi_masks["lesion"] & res.necrosis
    assert np.all(res.dvp_class[nec] == maps.DVP_CLASSES.index("unipolar -"))
    assert res.rois["muscle"]["dvp"]["roi_class"] == "flat"


def test_classify_dvp_rule():
    t = np.linspace(0, 1, 50)
    curves = np.stack([0.05 * np.sin(6 * t), 0.5 * np.ones_like(t), -0.5 * np.ones_like(t),
                       np.where(t < 0.5, 0.5, -0.5), np.where(t < 0.5, -0.5, 0.5)])
    assert list(maps.classify_dvp(curves, 0.1)) == [0, 1, 2, 3, 4]


def test_status_and_model_maps():
    res, rois = _map_synthetic(lesion_phantom(seed=4, necrosis_radius=0.5))
    inside = np.zeros(res.shape, dtype=bool)
    for r in rois:
        inside |= r.mask
    assert np.all(res.status[~inside] == maps.OUTSIDE)
    assert np.all(np.isnan(res.params["peak_enhancement"][~inside]))
    assert np.all(res.status[res.necrosis] == FitStatus.NO_ENHANCEMENT)
    ok = res.status == FitStatus.OK
    assert ok.sum() > 0.9 * np.count_nonzero(res.enhancing)
    assert np.all(res.model[res.enhancing & ok] == 0) and res.model_names == ("lognormal",)
    assert np.all(np.isfinite(res.params["qof"][ok]))


def test_chunking_does_not_change_results():
    ph = lesion_phantom(seed=5, shape=(64, 96), duration_s=50.0, necrosis_radius=0.4)
    a, _ = _map_synthetic(ph, maps.MapOptions(frame_chunk=7, row_chunk_blocks=1))
    b, _ = _map_synthetic(ph, maps.MapOptions(frame_chunk=64, row_chunk_blocks=100))
    _assert_identical(a, b)


def _assert_identical(a, b):
    for key in maps.MAP_PARAMETERS:
        np.testing.assert_array_equal(a.params[key], b.params[key], err_msg=key)
    for name in ("status", "model", "enhancing", "necrosis", "dvp_class", "segments", "z"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.dvp_curves, b.dvp_curves)
    assert a.rois == b.rois


def test_dask_cluster_gives_identical_maps():
    import distributed

    from ceuskit.maps_dask import DaskRunner

    ph = lesion_phantom(seed=6, shape=(64, 96), duration_s=50.0, necrosis_radius=0.4)
    options = maps.MapOptions(row_chunk_blocks=3)
    single, _ = _map_synthetic(ph, options)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        runner = DaskRunner(client)
        on_dask, _ = _map_synthetic(ph, options, runner=runner)
        assert runner.used == cluster.scheduler_address
        # A runner given a client leaves it open for its owner.
        runner.close()
        assert client.status == "running"
    _assert_identical(single, on_dask)


def test_scheduler_auto_and_none_stay_in_process():
    from ceuskit.maps_dask import DaskRunner

    ph = lesion_phantom(seed=7, shape=(48, 64), duration_s=40.0)
    for choice in (None, "auto", "none"):
        with DaskRunner(choice) as runner:
            _map_synthetic(ph, runner=runner)
        assert runner.used == "in-process"


def test_unreachable_scheduler_is_an_input_error(monkeypatch):
    from ceuskit import maps_dask
    from ceuskit.errors import InputError

    monkeypatch.setattr(maps_dask, "CONNECT_TIMEOUT_S", 0.5)
    ph = lesion_phantom(seed=7, shape=(48, 64), duration_s=40.0)
    with pytest.raises(InputError, match="--scheduler"), maps_dask.DaskRunner("tcp://127.0.0.1:1") as r:
        _map_synthetic(ph, runner=r)


def test_map_options_are_checked():
    for bad in (0, 65, 2.5, True):
        with pytest.raises(ValueError, match="--block"):
            maps.MapOptions(block_px=bad)
    with pytest.raises(ValueError, match="--model"):
        maps.MapOptions(model="spline")


def test_auto_model_map_names_models():
    ph = lesion_phantom(seed=8, shape=(48, 80), duration_s=50.0)
    res, _ = _map_synthetic(ph, maps.MapOptions(model="auto"))
    assert res.model_names == ("lognormal", "gamma", "ldrw")
    used = res.model[res.enhancing]
    assert used.min() >= 0 and used.max() <= 2


def test_map_cine_with_motion_compensation(tmp_path):
    """Through the pipeline's stages (panels, ROIs, B-mode motion tracking, alignment)."""
    from ceuskit.api import map_cine
    from ceuskit.pipeline import AnalysisOptions

    ph = simulate(SimulationSpec(scenario="tumor", seed=13, necrosis=0.3, motion_px=3.0, **SIM))
    cine = Cine(frames=ph.frames.astype(np.float32), times_s=ph.times_s,
                regions=(ph.contrast_panel, ph.bmode_panel))
    study = map_cine(cine, _roi_file(ph, tmp_path), AnalysisOptions(motion="auto"))
    truth = ph.truth["rois"]["lesion"]["necrosis_fraction"]
    est = study.result.rois["lesion"]["necrosis_fraction"]
    assert abs(est - truth) <= NECROSIS_TOL, (est, truth)
    assert study.background_label == "B-mode" and study.scheduler_used == "in-process"


def test_analyze_reports_lesion_necrosis_fraction(tmp_path):
    from ceuskit.pipeline import AnalysisOptions, analyze_cine

    ph = simulate(SimulationSpec(scenario="tumor", seed=14, necrosis=0.3, **SIM))
    cine = Cine(frames=ph.frames.astype(np.float32), times_s=ph.times_s,
                regions=(ph.contrast_panel, ph.bmode_panel))
    results = analyze_cine(cine, _roi_file(ph, tmp_path), AnalysisOptions(motion="off")).results()
    lesion = results["rois"]["lesion"]
    truth = ph.truth["rois"]["lesion"]["necrosis_fraction"]
    assert abs(lesion["necrosis_fraction"] - truth) <= NECROSIS_TOL
    assert lesion["necrosis"]["post_arrival_window_s"][0] > lesion["necrosis"]["baseline_window_s"][1]
    assert "necrosis_fraction" not in results["rois"]["muscle"]


def _roi_file(ph, tmp_path):
    p = tmp_path / "rois.json"
    p.write_text(json.dumps(ph.rois))
    return p


def test_nothing_enhances():
    """A cine without a bolus: every pixel non-enhancing, no block fitted, no crash."""
    from ceuskit.roi import Roi

    rng = np.random.default_rng(0)
    t = np.arange(120) / 4.0
    power = (1e-3 * rng.standard_exponential((t.size, 12, 12))).astype(np.float32)
    lesion = np.zeros((12, 12), dtype=bool)
    lesion[2:10, 2:10] = True
    res = maps.compute_maps(maps.array_source(power), t,
                            [Roi("lesion", "lesion", "mask", lesion, np.zeros((0, 2)))])
    assert res.n_curves == 0 and not res.enhancing.any()
    assert res.rois["lesion"]["necrosis_fraction"] == 1.0
    assert res.rois["lesion"]["heterogeneity"]["heterogeneous"] is None
    assert np.all(res.status[lesion] == FitStatus.NO_ENHANCEMENT)
    assert "no ROI enhances" in res.windows.note


def test_streaming_memory_is_bounded():
    """The passes read the cine chunk by chunk: traced memory stays far below the cine's size."""
    import tracemalloc

    from ceuskit.map_phantom import benchmark_kinetics, render
    from ceuskit.roi import Roi

    size, n_t = 128, 600
    times = np.arange(n_t) / 4.0
    k = benchmark_kinetics((size, size), seed=1)

    def source():
        # Rendered on the fly, 16 frames at a time: the cine never exists whole.
        for start in range(0, n_t, 16):
            sl = slice(start, min(n_t, start + 16))
            yield sl, to_linear_power(render(k, times[sl], seed=start), 60.0)

    whole = np.ones((size, size), dtype=bool)
    full_cine_bytes = n_t * size * size * 4
    # Warm up first: loading or compiling the numba kernels allocates too.
    small = np.zeros((size, size), dtype=bool)
    small[:8, :8] = True
    maps.compute_maps(source, times, [Roi("small", "lesion", "mask", small, np.zeros((0, 2)))])
    tracemalloc.start()
    res = maps.compute_maps(source, times, [Roi("panel", "lesion", "mask", whole, np.zeros((0, 2)))],
                            maps.MapOptions(keep_dvp_curves=False))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert res.n_curves == (size // maps.BLOCK_PX) ** 2
    # Block curves (T x blocks, float64) are 1/8 of the float32 cine; fitting
    # temporaries are bounded per chunk of block rows.
    assert peak < 0.5 * full_cine_bytes, (peak, full_cine_bytes)
