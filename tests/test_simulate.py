"""The phantom simulator: its truth is the ground truth of every other test."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from ceuskit.errors import InputError
from ceuskit.findings import (
    ENHANCEMENT_MARGIN_DB,
    WASH_IN_MARGIN_S,
    classify_enhancement,
    classify_wash_in,
)
from ceuskit.simulate import (
    BMODE_PANEL_XYXY,
    CONTRAST_PANEL_XYXY,
    FRAME_SHAPE,
    KINETICS,
    KINETICS_DURATION_S,
    KINETICS_PROMISE,
    TRUTH_MARGINS,
    Phantom,
    SimulationSpec,
    _clear_wash_out,
    simulate,
    write_phantom,
)

DR = 60.0


@pytest.fixture(scope="module")
def tumor() -> Phantom:
    return simulate(SimulationSpec(scenario="tumor", seed=3, fps=4.0, duration_s=50.0))


@pytest.fixture(scope="module")
def bland() -> Phantom:
    return simulate(SimulationSpec(scenario="bland", seed=3, fps=4.0, duration_s=50.0))


@pytest.fixture(scope="module")
def moving() -> Phantom:
    return simulate(SimulationSpec(seed=1, fps=4.0, duration_s=12.0, motion_px=3.3))


def _small(**kw: object) -> SimulationSpec:
    args: dict[str, object] = {"fps": 1.0, "duration_s": 10.0}
    args.update(kw)
    return SimulationSpec(**args)  # type: ignore[arg-type]


def _linear_contrast(ph: Phantom) -> np.ndarray:
    g = ph.frames[(slice(None), *ph.contrast_panel.slices)].astype(np.float64)
    return 10.0 ** ((g / 255.0 - 1.0) * DR / 10.0)


def _bmode(ph: Phantom) -> np.ndarray:
    return ph.frames[(slice(None), *ph.bmode_panel.slices)].astype(np.float64)


# --------------------------------------------------------------------------- structure


def test_shapes_dtypes_and_layout(tumor: Phantom) -> None:
    f = tumor.frames
    assert f.dtype == np.uint8 and f.shape == (201, *FRAME_SHAPE)
    assert not f.flags.writeable
    t = tumor.times_s
    assert t.dtype == np.float64 and t[0] == 0.0 and t[-1] == pytest.approx(50.0)
    np.testing.assert_allclose(np.diff(t), 0.25, rtol=0, atol=1e-12)
    assert tumor.contrast_panel.bounds == CONTRAST_PANEL_XYXY
    assert tumor.bmode_panel.bounds == BMODE_PANEL_XYXY
    assert tumor.contrast_panel.kind == "contrast" and tumor.bmode_panel.kind == "bmode"
    assert tumor.contrast_panel.source == "file" == tumor.bmode_panel.source
    assert tumor.contrast_panel.spacing_mm == (0.2, 0.2) == tumor.spacing_mm
    assert tumor.contrast_panel.shape == (192, 256) == tumor.bmode_panel.shape
    # Contrast on the left, B-mode on the right, black everywhere else.
    assert tumor.contrast_panel.x1 < tumor.bmode_panel.x0
    outside = np.ones(FRAME_SHAPE, dtype=bool)
    outside[tumor.contrast_panel.slices] = False
    outside[tumor.bmode_panel.slices] = False
    assert not f[:, outside].any()
    assert tumor.truth["frame_shape"] == list(FRAME_SHAPE)
    assert tumor.truth["panels"] == {"contrast": list(CONTRAST_PANEL_XYXY),
                                     "bmode": list(BMODE_PANEL_XYXY)}
    for key in ("mass", "necrosis", "lumen", "thrombus"):
        assert tumor.masks[key].shape == (192, 256) and tumor.masks[key].dtype == bool


def test_default_spec_frame_count() -> None:
    spec = SimulationSpec()
    assert (spec.scenario, spec.seed, spec.necrosis, spec.motion_px) == ("tumor", 0, 0.3, 0.0)
    # Frames at k / fps up to and including duration_s.
    assert spec.n_frames == 721 and spec.times_s()[-1] == 90.0


def test_truth_and_rois_are_json_and_follow_the_contract(tumor: Phantom) -> None:
    json.dumps(tumor.truth, allow_nan=False)
    doc = json.loads(json.dumps(tumor.rois, allow_nan=False))
    assert doc["space"] == "panel"
    by_name = {r["name"]: r for r in doc["rois"]}
    assert set(by_name) == {"lesion", "muscle", "lumen"} == set(tumor.truth["rois"])
    assert by_name["lesion"]["role"] == "lesion"
    assert by_name["muscle"]["role"] == "reference"
    assert by_name["lumen"]["role"] == "vessel"
    poly = np.asarray(by_name["lesion"]["polygon"])
    assert poly.shape[1] == 2 and 24 <= len(poly) <= 40
    np.testing.assert_allclose(poly, np.round(poly, 1))
    for name in ("muscle", "lumen"):
        cx, cy, rx, ry = by_name[name]["ellipse"]
        assert 0 <= cx - rx and cx + rx < 256 and 0 <= cy - ry and cy + ry < 192
    ex = tumor.truth["expected_findings"]
    assert set(ex) >= {"intraluminal_enhancement", "wash_in", "enhancement", "homogeneity",
                       "wash_out"}
    assert "present" in ex["wash_out"]


def test_roi_masks_follow_the_shared_rasterisation_rule(tumor: Phantom, bland: Phantom) -> None:
    from ceuskit import roi
    for ph in (tumor, bland):
        for entry in ph.rois["rois"]:
            mask = ph.roi_masks[entry["name"]]
            if "polygon" in entry:
                other = roi.polygon_mask(entry["polygon"], (192, 256))
            else:
                other = roi.ellipse_mask(*entry["ellipse"], (192, 256))
            np.testing.assert_array_equal(mask, other)


def test_no_pixel_centre_lies_on_an_roi_border(tumor: Phantom, bland: Phantom) -> None:
    for ph in (tumor, bland):
        for entry in ph.rois["rois"]:
            if "polygon" in entry:
                v = np.rint(np.asarray(entry["polygon"]) * 10).astype(np.int64)
                for p, q in zip(v, np.roll(v, -1, axis=0), strict=True):
                    gx, gy = np.meshgrid(np.arange(0, 2570, 10), np.arange(0, 1930, 10))
                    cross = (q[0] - p[0]) * (gy - p[1]) - (q[1] - p[1]) * (gx - p[0])
                    lo, hi = np.minimum(p, q), np.maximum(p, q)
                    on = ((cross == 0) & (gx >= lo[0]) & (gx <= hi[0])
                          & (gy >= lo[1]) & (gy <= hi[1]))
                    assert not on.any()
            else:
                cx, cy, rx, ry = entry["ellipse"]
                yy, xx = np.mgrid[0:192, 0:256]
                value = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2
                assert np.min(np.abs(value - 1.0)) > 1e-7


def test_rois_lie_in_their_tissues(tumor: Phantom, bland: Phantom) -> None:
    for ph, lesion in ((tumor, "mass"), (bland, "thrombus")):
        m = ph.roi_masks
        assert m["lesion"].any() and np.all(ph.masks[lesion][m["lesion"]])
        assert np.all(ph.masks["muscle"][m["muscle"]])
        assert np.all(ph.masks["lumen"][m["lumen"]])
        # The reference is well away (>= 2 mm) from the vein and the lesion.
        rows, cols = np.nonzero(m["muscle"])
        vr, vc = np.nonzero(ph.masks[lesion] | ph.masks["lumen"] | ph.masks["wall"])
        d2 = (rows[:, None] - vr[None, :]) ** 2 + (cols[:, None] - vc[None, :]) ** 2
        assert math.sqrt(d2.min()) * 0.2 >= 2.0
        assert ph.truth["rois"]["lesion"]["area_px"] == int(m["lesion"].sum())


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_phantom_other_seed_differs() -> None:
    a = simulate(_small(seed=7))
    b = simulate(_small(seed=7))
    c = simulate(_small(seed=8))
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.truth == b.truth and a.rois == b.rois
    assert not np.array_equal(a.frames, c.frames)
    assert a.truth["tissues"] != c.truth["tissues"]


def test_anatomy_and_kinetics_do_not_depend_on_timing() -> None:
    a = simulate(_small(seed=5))
    b = simulate(_small(seed=5, fps=2.0, duration_s=15.0, motion_px=2.0))
    assert a.rois == b.rois
    assert a.truth["tissues"] == b.truth["tissues"]
    np.testing.assert_array_equal(a.masks["necrosis"], b.masks["necrosis"])


# --------------------------------------------------------------------------- physics


@pytest.mark.parametrize("name", ["tumor", "bland"])
def test_display_chain_inverts_to_the_truth(name: str, request: pytest.FixtureRequest) -> None:
    ph: Phantom = request.getfixturevalue(name)
    power = _linear_contrast(ph)
    for roi, tr in ph.truth["rois"].items():
        truth = np.asarray(tr["tic_intensity"])
        measured = power[:, ph.roi_masks[roi]].mean(axis=1)
        np.testing.assert_allclose(tr["tic_times_s"], ph.times_s)
        # Before arrival: leak with its fixed speckle plus the noise floor.
        early = ph.times_s < 6.0
        assert measured[early].mean() == pytest.approx(truth[early].mean(), rel=0.03)
        if tr["enhancing"]:
            near = truth - tr["baseline"] >= 0.5 * tr["perfusion"]["peak_enhancement"]
            assert near.sum() >= 8
            # Averaged over many frames the fresh bubble speckle averages out.
            assert np.mean(measured[near] / truth[near]) == pytest.approx(1.0, abs=0.03)
        else:
            assert np.mean(measured / truth) == pytest.approx(1.0, abs=0.03)


def test_clipping_at_full_scale_is_rare(tumor: Phantom) -> None:
    g = tumor.frames[(slice(None), *tumor.contrast_panel.slices)]
    for roi in ("lesion", "muscle"):
        assert np.mean(g[:, tumor.roi_masks[roi]] == 255) < 0.005


@pytest.mark.parametrize("fraction", [0.0, 0.13, 0.3, 0.5, 0.9])
def test_necrosis_has_the_exact_pixel_count(fraction: float) -> None:
    ph = simulate(_small(seed=2, necrosis=fraction))
    mass, nec = ph.masks["mass"], ph.masks["necrosis"]
    assert int(nec.sum()) == round(fraction * int(mass.sum()))
    assert not np.any(nec & ~mass)
    np.testing.assert_array_equal(ph.masks["viable"], mass & ~nec)
    assert ph.truth["necrosis_fraction"]["mass"] == nec.sum() / mass.sum()
    roi = ph.roi_masks["lesion"]
    assert ph.truth["necrosis_fraction"]["lesion_roi"] == pytest.approx(
        nec[roi].sum() / roi.sum())
    # Necrosis never enhances: no contrast amplitude there.
    assert not np.any(ph.amplitude_maps["tumor"][nec])


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_tumour_truth_is_rapid_hyper_and_washes_out(seed: int) -> None:
    ph = simulate(SimulationSpec(seed=seed, fps=1.0, duration_s=60.0))
    les, ref = ph.truth["rois"]["lesion"], ph.truth["rois"]["muscle"]
    assert les["enhancing"] and ref["enhancing"]
    assert les["perfusion"]["time_to_peak_s"] < ref["perfusion"]["time_to_peak_s"]
    assert les["perfusion"]["arrival_time_s"] < ref["perfusion"]["arrival_time_s"] - 2.0
    assert ph.truth["pe_ratio_lesion_to_reference_db"] >= 6.0
    tissues = ph.truth["tissues"]
    assert tissues["tumor"]["t0_s"] <= tissues["muscle"]["t0_s"] - 2.0
    assert tissues["tumor"]["peak_db"] >= tissues["muscle"]["peak_db"] + 6.0
    assert tissues["tumor"]["peak_db"] < -6.0
    curve = np.asarray(les["tic_intensity"]) - les["baseline"]
    assert curve[-1] < 0.2 * les["perfusion"]["peak_enhancement"]
    assert ph.truth["expected_findings"] == {
        "intraluminal_enhancement": True,
        "wash_in": "rapid",
        "enhancement": "hyper",
        "homogeneity": "heterogeneous",
        "wash_out": {"present": True},
        "necrosis_percent": pytest.approx(100 * ph.truth["necrosis_fraction"]["lesion_roi"]),
        "arrival_lead_over_reference_s": pytest.approx(
            ref["perfusion"]["arrival_time_s"] - les["perfusion"]["arrival_time_s"]),
    }


def test_bland_thrombus_never_enhances(bland: Phantom) -> None:
    les = bland.truth["rois"]["lesion"]
    assert not les["enhancing"] and les["model"] == "none"
    assert les["perfusion"]["peak_enhancement"] == 0.0
    assert les["perfusion"]["time_to_peak_s"] is None
    np.testing.assert_allclose(les["tic_intensity"], les["baseline"])
    assert "tumor" not in bland.truth["tissues"]
    assert bland.truth["tissues"]["thrombus"]["model"] == "none"
    assert not bland.masks["mass"].any() and bland.masks["thrombus"].any()
    # The thrombus sits in the lumen; the patent lumen still enhances.
    assert bland.truth["rois"]["lumen"]["enhancing"]
    ex = bland.truth["expected_findings"]
    assert ex["intraluminal_enhancement"] is False and ex["enhancement"] == "none"
    assert ex["wash_out"]["present"] is False


@pytest.mark.parametrize("roi, tissue", [("lumen", "lumen"), ("muscle", "muscle")])
def test_single_tissue_truth_matches_the_analytic_lognormal(
        tumor: Phantom, roi: str, tissue: str) -> None:
    tr = tumor.truth["rois"][roi]
    kin = tumor.truth["tissues"][tissue]
    t0, mu, sigma = kin["t0_s"], kin["mu"], kin["sigma"]
    assert kin["mode_s"] == pytest.approx(math.exp(mu - sigma**2))
    assert kin["mean_transit_time_s"] == pytest.approx(math.exp(mu + sigma**2 / 2))
    assert kin["peak"] == pytest.approx(
        kin["area"] / (sigma * math.sqrt(2 * math.pi)) * math.exp(sigma**2 / 2 - mu))
    assert kin["peak_db"] == pytest.approx(10 * math.log10(kin["peak"]))
    w = tr["tissue_weights"][tissue]
    assert sum(tr["tissue_weights"].values()) == pytest.approx(w)
    if roi == "lumen":
        assert w == 1.0
    p = tr["perfusion"]
    assert p["time_to_peak_s"] == pytest.approx(t0 + kin["mode_s"], abs=0.006)
    assert p["peak_enhancement"] == pytest.approx(w * kin["peak"], rel=1e-5)
    # First moment of the curve = t0 + lognormal mean; mTT is counted from TI.
    assert p["mean_transit_time_s"] + p["arrival_time_s"] == pytest.approx(
        t0 + kin["mean_transit_time_s"], rel=2e-3)
    assert t0 < p["arrival_time_s"] < p["time_to_peak_s"]
    # The curve at the frame times is the model itself.
    t = np.asarray(tr["tic_times_s"])
    tau = np.clip(t - t0, 1e-12, None)
    model = w * kin["area"] / (sigma * math.sqrt(2 * math.pi) * tau) * np.exp(
        -((np.log(tau) - mu) ** 2) / (2 * sigma**2))
    model[t <= t0] = 0.0
    np.testing.assert_allclose(tr["tic_intensity"], tr["baseline"] + model, rtol=1e-9)


def test_bubble_speckle_decorrelates_tissue_speckle_does_not(tumor: Phantom) -> None:
    power = _linear_contrast(tumor)
    b = _bmode(tumor)
    lumen = tumor.roi_masks["lumen"]
    i = int(np.argmax(tumor.truth["rois"]["lumen"]["tic_intensity"]))
    r_contrast = np.corrcoef(power[i][lumen], power[i + 1][lumen])[0, 1]
    assert abs(r_contrast) < 0.3
    for j in (0, i):
        assert np.corrcoef(b[j].ravel(), b[j + 1].ravel())[0, 1] > 0.9


def test_motion_shifts_bmode_by_the_recorded_displacement(moving: Phantom) -> None:
    b = _bmode(moving)
    dx = np.asarray(moving.truth["motion"]["dx_px"])
    dy = np.asarray(moving.truth["motion"]["dy_px"])
    assert dy.shape == moving.times_s.shape and np.ptp(dy) > 5.0
    window = np.outer(np.hanning(b.shape[1]), np.hanning(b.shape[2]))
    ref = np.fft.fft2((b[0] - b[0].mean()) * window)
    for k in (1, 2, 5, 7):
        mov = np.fft.fft2((b[k] - b[k].mean()) * window)
        est = _peak_shift(np.fft.ifft2(mov * np.conj(ref)).real)
        assert est[0] == pytest.approx(dy[k] - dy[0], abs=0.3)
        assert est[1] == pytest.approx(dx[k] - dx[0], abs=0.3)


def _peak_shift(xcorr: np.ndarray) -> tuple[float, float]:
    """Sub-pixel peak of a circular cross-correlation (parabola through 3 points)."""
    iy, ix = np.unravel_index(int(np.argmax(xcorr)), xcorr.shape)
    out = []
    for axis, i in ((0, iy), (1, ix)):
        n = xcorr.shape[axis]
        line = xcorr[:, ix] if axis == 0 else xcorr[iy, :]
        lo, mid, hi = line[(i - 1) % n], line[i], line[(i + 1) % n]
        frac = 0.5 * (lo - hi) / (lo - 2 * mid + hi)
        out.append(((i + n // 2) % n - n // 2) + frac)
    return out[0], out[1]


def test_motion_leaves_rois_and_truth_curves_alone(moving: Phantom) -> None:
    still = simulate(SimulationSpec(seed=1, fps=4.0, duration_s=12.0))
    assert moving.rois == still.rois
    for name in still.truth["rois"]:
        assert moving.truth["rois"][name] == still.truth["rois"][name]
    assert not any(still.truth["motion"]["dy_px"])


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs, option",
    [
        ({"scenario": "cyst"}, "scenario"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"necrosis": 0.95}, "necrosis"),
        ({"necrosis": -0.1}, "necrosis"),
        ({"necrosis": float("nan")}, "necrosis"),
        ({"motion_px": -1.0}, "motion"),
        ({"motion_px": 100.0}, "motion"),
        ({"fps": 0.0}, "fps"),
        ({"duration_s": 0.5}, "duration"),
        ({"duration_s": float("inf")}, "duration"),
        ({"dynamic_range_db": 5.0}, "dynamic-range"),
        ({"noise_floor_db": 3.0}, "noise_floor_db"),
        ({"spacing_mm": 1.0}, "spacing_mm"),
        ({"fps": 60.0, "duration_s": 600.0}, "--duration x --fps"),
        ({"kinetics": "benign"}, "--kinetics"),
        ({"kinetics": None}, "--kinetics"),
    ],
)
def test_bad_specs_name_the_option(kwargs: dict[str, object], option: str) -> None:
    with pytest.raises(ValueError, match=re.escape(option)):
        SimulationSpec(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- writing


@pytest.fixture(scope="module")
def short() -> Phantom:
    return simulate(SimulationSpec(seed=4, fps=2.0, duration_s=12.0))


def _check_written(ph: Phantom, paths: dict[str, Path], name: str) -> None:
    assert paths["cine"].name == name and paths["cine"].is_file()
    assert json.loads(paths["truth"].read_text()) == ph.truth
    assert json.loads(paths["rois"].read_text()) == ph.rois
    assert not [p for p in paths["cine"].parent.iterdir() if p.name.startswith(".")]


def test_write_npz_round_trip_and_refuse_to_overwrite(short: Phantom, tmp_path: Path) -> None:
    from ceuskit.io import arrays
    out = tmp_path / "new" / "dir"
    paths = write_phantom(short, out, "npz")
    _check_written(short, paths, "cine.npz")
    cine = arrays.read_npz(paths["cine"])
    np.testing.assert_array_equal(cine.frames, short.frames.astype(np.float32))
    np.testing.assert_allclose(cine.times_s, short.times_s, atol=1e-9)
    assert {p.bounds for p in cine.regions} == {CONTRAST_PANEL_XYXY, BMODE_PANEL_XYXY}

    before = paths["truth"].stat().st_mtime_ns
    with pytest.raises(InputError, match=r"already holds.*--overwrite"):
        write_phantom(short, out, "npz")
    assert paths["truth"].stat().st_mtime_ns == before
    # Another format into the same folder still collides on truth/rois.
    with pytest.raises(InputError, match="already holds"):
        write_phantom(short, out, "dicom")
    again = write_phantom(short, out, "npz", overwrite=True)
    _check_written(short, again, "cine.npz")


def test_write_dicom_round_trip(short: Phantom, tmp_path: Path) -> None:
    from ceuskit.io import dicom
    paths = write_phantom(short, tmp_path)
    _check_written(short, paths, "cine.dcm")
    cine = dicom.read_dicom(paths["cine"])
    np.testing.assert_array_equal(cine.frames, short.frames.astype(np.float32))
    np.testing.assert_allclose(cine.times_s, short.times_s, atol=1e-6)
    assert {p.bounds for p in cine.regions} == {CONTRAST_PANEL_XYXY, BMODE_PANEL_XYXY}


def test_write_mp4_round_trip(short: Phantom, tmp_path: Path) -> None:
    from ceuskit.io import video
    paths = write_phantom(short, tmp_path, "mp4")
    _check_written(short, paths, "cine.mp4")
    cine = video.read_video(paths["cine"])
    assert cine.frames.shape == short.frames.shape
    assert np.mean(np.abs(cine.frames - short.frames)) < 0.5
    np.testing.assert_allclose(cine.times_s, short.times_s, atol=1e-3)


def test_write_rejects_an_unknown_format(short: Phantom, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format"):
        write_phantom(short, tmp_path, "avi")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- kinetics families

# Recorded from the code before the kinetics families existed (frames, and the
# truth without the keys added since: spec.kinetics and findings): the
# default phantom, and a bland and a smaller tumour one, must not change.
_BEFORE_FAMILIES = {
    "default": ("da615e6c0e0b5850900300fd19e562bd299c9b8f533657d6958496f18bdf5018",
                "30d2b819ed2fd2519fd82680ad066a62be38f784ea1deff268dae6583514b213"),
    "bland": ("d3e7732b450e91a04b07b18b145c1a3af56551acc97f34437eedb9effd2458fd",
              "ea0942ff41423a016ea5dfed2f4cff0c664b8f4ba6de9ab37730c5a017c175ba"),
    "small": ("f27b042bab86b019f18f16394dad83877c77a5f7c84ed87590c10eeeccdc6ffe",
              "f547e0c92192b600199dd72cb7217e87c1fcf1ab81b4c5534b3fcd2b3409a700"),
}
_BEFORE_SPECS = {
    "default": SimulationSpec(),
    "bland": SimulationSpec(scenario="bland", seed=3, fps=2.0, duration_s=30.0),
    "small": SimulationSpec(seed=5, fps=2.0, duration_s=40.0, necrosis=0.5),
}


@pytest.mark.parametrize("name", sorted(_BEFORE_SPECS))
def test_default_kinetics_phantoms_are_unchanged(name: str) -> None:
    ph = simulate(_BEFORE_SPECS[name])
    frames = hashlib.sha256(np.ascontiguousarray(ph.frames).tobytes()).hexdigest()
    # Keys added later (acquisition, blooming, mode, display processing) leave the older
    # truth's hash as it was.
    truth = {k: v for k, v in ph.truth.items()
             if k not in ("findings", "acquisition", "display_processing")}
    truth["spec"] = {k: v for k, v in truth["spec"].items()
                     if k not in ("kinetics", "blooming_px", "mode", "persistence", "smoothing_px")}
    text = hashlib.sha256(json.dumps(truth, sort_keys=True).encode()).hexdigest()
    assert (frames, text) == _BEFORE_FAMILIES[name]
    assert ph.truth["spec"]["kinetics"] == "malignant"


def _family_spec(kinetics: str, seed: int) -> SimulationSpec:
    necrosis = (0.0, 0.2, 0.4, 0.55)[seed % 4]
    return SimulationSpec(seed=seed, kinetics=kinetics, necrosis=necrosis, fps=1.0,
                          duration_s=KINETICS_DURATION_S[kinetics])


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
@pytest.mark.parametrize("kinetics", KINETICS)
def test_each_family_keeps_its_promise(kinetics: str, seed: int) -> None:
    ph = simulate(_family_spec(kinetics, seed))
    f = ph.truth["findings"]
    promise = KINETICS_PROMISE[kinetics]
    assert f["kinetics"] == kinetics and f["promise"] == promise
    assert f["intraluminal_enhancement"] is True
    # The families promise the whole ROI's degree (the viable part's is graded apart).
    assert f["wash_in"] == promise["wash_in"] and f["enhancement_whole_roi"] == promise["enhancement"]
    for key, want in promise["wash_out"].items():
        if want is not None or promise["wash_out"]["present"] is False:
            assert f["wash_out"][key] == want, (key, f["wash_out"])
    # The exact values (findings definitions on the noise-free frame curves)
    # agree with every label given, and sit where the family puts them.
    v, exact = f["values"], f["exact_labels"]
    les, ref = ph.truth["rois"]["lesion"]["perfusion"], ph.truth["rois"]["muscle"]["perfusion"]
    assert v["arrival_difference_s"] == pytest.approx(les["arrival_time_s"] - ref["arrival_time_s"])
    assert v["enhancement_db"] == pytest.approx(
        10 * math.log10(les["peak_enhancement"] / ref["peak_enhancement"]))
    assert exact["wash_in"] == classify_wash_in(v["arrival_difference_s"]) == f["wash_in"]
    assert exact["enhancement_whole_roi"] == classify_enhancement(v["enhancement_db"]) \
        == f["enhancement_whole_roi"]
    for key in ("present", "timing", "degree"):
        if f["wash_out"][key] is not None:
            assert exact["wash_out"][key] == f["wash_out"][key], key
    d, e = v["arrival_difference_s"], v["enhancement_db"]
    gap_s, gap_db = TRUTH_MARGINS["wash_in_s"], TRUTH_MARGINS["enhancement_db"]
    assert {"rapid": d <= -WASH_IN_MARGIN_S - gap_s, "synchronous": abs(d) <= WASH_IN_MARGIN_S - gap_s,
            "slow": d >= WASH_IN_MARGIN_S + gap_s}[f["wash_in"]]
    assert {"hyper": e >= ENHANCEMENT_MARGIN_DB + gap_db, "iso": abs(e) <= ENHANCEMENT_MARGIN_DB - gap_db,
            "hypo": e <= -ENHANCEMENT_MARGIN_DB - gap_db}[f["enhancement_whole_roi"]]
    if kinetics != "malignant":
        assert f["ambiguous"] == []
    json.dumps(ph.truth, allow_nan=False)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_malignant_seeds_wash_out_early(seed: int) -> None:
    """Most default seeds wash out early (not all: the draws predate the findings)."""
    ph = simulate(SimulationSpec(seed=seed, fps=1.0, duration_s=90.0))
    wo = ph.truth["findings"]["wash_out"]
    assert (wo["present"], wo["timing"]) == (True, "early")


def test_families_ranges_are_those_documented() -> None:
    """The design ranges, from the truth: synchronous within 0.3 s, slow >= 3 s, iso +-1 dB."""
    for seed in (21, 22):
        v = simulate(_family_spec("synchronous-iso", seed)).truth["findings"]["values"]
        assert abs(v["arrival_difference_s"]) <= 0.32 and abs(v["enhancement_db"]) <= 1.0 + 1e-6
        v = simulate(_family_spec("slow-hypo", seed)).truth["findings"]["values"]
        assert v["arrival_difference_s"] >= 2.98 and -10.0 - 1e-6 <= v["enhancement_db"] <= -6.0 + 1e-6


def test_bland_ignores_the_kinetics_family() -> None:
    base = simulate(SimulationSpec(scenario="bland", seed=4, fps=1.0, duration_s=45.0))
    other = simulate(SimulationSpec(scenario="bland", seed=4, fps=1.0, duration_s=45.0,
                                    kinetics="slow-hypo"))
    np.testing.assert_array_equal(base.frames, other.frames)
    f = other.truth["findings"]
    assert f["kinetics"] is None and f["intraluminal_enhancement"] is False
    assert f["enhancement"] == "none" and f["wash_in"] is None
    assert f["wash_out"] == {"present": None, "timing": None, "degree": None}


def test_short_cines_do_not_promise_what_they_cannot_show() -> None:
    # A late wash-out starts after 80 s: a 60 s cine shows none of it, and
    # the truth says so instead of promising a late wash-out.
    ph = simulate(SimulationSpec(seed=11, kinetics="late-washout", fps=1.0, duration_s=60.0))
    f = ph.truth["findings"]
    assert f["wash_out"]["present"] is not True
    assert f["exact_labels"]["wash_out"]["present"] is not True


def test_clear_wash_out_margins() -> None:
    t = np.arange(0.0, 150.0 + 1e-9, 0.1)

    def labels(rel: np.ndarray, t_end: float = 150.0) -> tuple[object, object, object]:
        got = _clear_wash_out(t, rel, 20.0, 0.0, t_end)
        return got["present"], got["timing"], got["degree"]

    steep = 6.0 - np.clip(t - 30.0, 0.0, None)  # -4.5 dB at 40.5 s, -11.5 at 47.5 s
    assert labels(steep) == (True, "early", "marked")
    assert labels(np.full(t.shape, 2.0)) == (False, None, None)
    # -2 dB: between the clear "no" (> -1.5) and the clear "yes" (<= -4.5).
    assert labels(np.where(t > 40.0, -2.0, 5.0)) == (None, None, None)
    # A clear fall that crosses -3 dB at 56 s: too near 60 s to call early or late.
    assert labels(6.0 - 0.25 * np.clip(t - 20.0, 0.0, None))[1] is None
    # The cine must reach 60 s to say "no wash-out".
    assert labels(np.full(t.shape, 2.0), t_end=50.0) == (None, None, None)


def test_cli_kinetics_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ceuskit.cli import main

    out = tmp_path / "p"
    assert main(["simulate", str(out), "--kinetics", "slow-hypo", "--fps", "1", "--duration", "60",
                 "--format", "npz"]) == 0
    truth = json.loads((out / "truth.json").read_text())
    assert truth["spec"]["kinetics"] == "slow-hypo"
    assert (truth["findings"]["wash_in"], truth["findings"]["enhancement"]) == ("slow", "hypo")
    capsys.readouterr()
    assert main(["simulate", str(tmp_path / "q"), "--kinetics", "benign"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--kinetics" in err and "slow-hypo" in err
    assert not (tmp_path / "q").exists()


def test_display_persistence_and_smoothing() -> None:
    base = SimulationSpec(seed=0, fps=2.0, duration_s=30.0)
    plain = simulate(base)
    p = plain.contrast_panel
    sl = (slice(None), p.slices[0], p.slices[1])

    def frame_jitter(ph: Phantom) -> float:  # spread of the change between frames
        f = np.asarray(ph.frames[sl], dtype=np.float64)
        return float(np.std(np.diff(f[40:], axis=0)))

    def pixel_jitter(ph: Phantom) -> float:  # spread of the change between neighbours
        f = np.asarray(ph.frames[sl], dtype=np.float64)
        return float(np.std(np.diff(f[40:], axis=2)))

    from dataclasses import replace

    pers = simulate(replace(base, persistence=0.6))
    smooth = simulate(replace(base, smoothing_px=1.0))
    # y_t = p y_(t-1) + (1 - p) x_t: for fresh (white) bubble speckle the
    # frame-to-frame change shrinks by (1 - p) / sqrt(1 + p) = 0.32 at p = 0.6.
    assert 0.27 < frame_jitter(pers) / frame_jitter(plain) < 0.37
    assert pixel_jitter(smooth) < 0.5 * pixel_jitter(plain)
    assert pers.truth["display_processing"] == {"persistence": 0.6, "smoothing_px": 0.0}
    assert pers.truth["rois"] == plain.truth["rois"]  # display only: the truth is the tissues'
    assert np.array_equal(np.asarray(pers.frames[0]), np.asarray(plain.frames[0]))
    with pytest.raises(ValueError, match="--persistence"):
        SimulationSpec(persistence=0.95)
    with pytest.raises(ValueError, match="--smoothing"):
        SimulationSpec(smoothing_px=-1)
