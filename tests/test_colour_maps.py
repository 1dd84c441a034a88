"""Colour-map inversion (`ceuskit.colour_maps`) and its place in the pipeline.

Ground truth is the grey phantom: a tinted export of the same cine must give
the grey analysis's numbers (lossless DICOM: to 1e-4; H.264 MP4, whose
colour is subsampled: within 1 %), and what cannot be inverted (colour
Doppler, unknown maps without a bar, ambiguous maps) must be refused with a
reason, never analysed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ceuskit.colour_maps import (
    TINTS,
    ColourMap,
    Inverter,
    ambiguity,
    display_values,
    find_colour_bar,
    invert_panel,
    load_colour_map,
    luma_monotonic,
    match_tint,
    tint,
)
from ceuskit.errors import InputError
from ceuskit.io import load_cine
from ceuskit.io.dicom_out import write_dicom_cine
from ceuskit.io.frames import rgb_to_grey
from ceuskit.pipeline import AnalysisOptions, analyze
from ceuskit.simulate import SimulationSpec, simulate, write_phantom
from ceuskit.simulate_tints import tinted_frames, with_tint

KEYS = ("peak_enhancement", "auc", "wash_in_rate", "time_to_peak_s")


@pytest.fixture(scope="module")
def phantom():
    return simulate(SimulationSpec(seed=1, fps=2.0))


def _grey_luma(rgb: np.ndarray) -> np.ndarray:
    return rgb_to_grey(rgb)[0]


# --------------------------------------------------------------------------- maps


@pytest.mark.parametrize("name", sorted(TINTS))
def test_library_tints_invert_exactly(name: str) -> None:
    cmap = tint(name)
    assert ambiguity(cmap) is None and luma_monotonic(cmap)
    v = np.arange(256)
    rgb = cmap.apply(v)
    assert len(np.unique(rgb, axis=0)) == 256  # every display value has its own colour
    assert np.abs(display_values(cmap, _grey_luma(rgb), rgb) - v).max() < 0.05
    # The colour route (for maps whose luma does not rise) agrees.
    values, resid = Inverter(cmap)(rgb)
    assert np.abs(values - v).max() < 0.01 and resid.max() == 0


def test_user_map_files_are_read_and_checked(tmp_path: Path) -> None:
    table = tint("gold").table
    csv = tmp_path / "map.csv"
    csv.write_text("# R, G, B\n" + "\n".join(",".join(f"{x:g}" for x in row) for row in table))
    assert np.array_equal(load_colour_map(csv).table, table)
    npy = tmp_path / "map.npy"
    np.save(npy, table / 255.0)  # a 0..1 table
    assert np.allclose(load_colour_map(npy).table, table)
    np.save(npy, table[:200])
    with pytest.raises(InputError, match="200x3 table, not 256 x 3"):
        load_colour_map(npy)
    # A map that comes back through its own colours: one colour, two values.
    up_down = np.concatenate([np.linspace(0, 255, 128), np.linspace(255, 0, 128)])
    np.save(npy, np.column_stack([up_down, up_down * 0.5, up_down * 0.2]))
    with pytest.raises(InputError, match="ambiguous"):
        load_colour_map(npy)


def test_a_map_whose_luma_does_not_rise_is_inverted_by_colour() -> None:
    # Blue -> green -> red at nearly constant luma: luma cannot tell the values apart.
    i = np.arange(256) / 255.0
    table = np.column_stack([255 * np.clip(2 * i - 1, 0, 1), 255 * (1 - np.abs(2 * i - 1)),
                             255 * np.clip(1 - 2 * i, 0, 1)])
    cmap = ColourMap("rainbow", np.rint(table), "file")
    assert ambiguity(cmap) is None and not luma_monotonic(cmap)
    v = np.random.default_rng(0).integers(0, 256, (40, 50))
    rgb = cmap.apply(v)
    assert np.abs(display_values(cmap, _grey_luma(rgb), rgb) - v).max() < 0.51


def test_colour_bar_is_found_where_it_is_drawn(phantom) -> None:
    p = phantom.contrast_panel
    rgb = tinted_frames(phantom.frames[:1], (p.x0, p.y0, p.x1, p.y1), tint("gold"), colour_bar=True)
    bar = find_colour_bar(rgb[0])
    assert bar is not None
    assert (bar.x0, bar.x1) == (p.x1 + 3, p.x1 + 9)
    # The bar spans the panel's middle 80 % (its darkest rows merge with the background).
    assert bar.y0 == p.y0 + (p.y1 - p.y0) // 10 and abs(bar.y1 - (p.y1 - (p.y1 - p.y0) // 10)) <= 4
    assert np.percentile(Inverter(tint("gold")).project(bar.cmap.table)[1], 95) <= 1.0
    plain = tinted_frames(phantom.frames[:1], (p.x0, p.y0, p.x1, p.y1), tint("gold"))
    assert find_colour_bar(plain[0]) is None


@pytest.mark.parametrize("name", sorted(TINTS))
def test_match_tint_recognises_each_library_tint(phantom, name: str) -> None:
    p = phantom.contrast_panel
    rgb = tinted_frames(phantom.frames[::20], (p.x0, p.y0, p.x1, p.y1), tint(name))[:, p.slices[0],
                                                                                     p.slices[1]]
    samples = [(_grey_luma(f), f) for f in rgb]
    m = match_tint(samples)
    assert m.best is not None and m.best.name == name, m.reason
    assert m.median_rgb[name] < 1.0 and min(v for k, v in m.median_rgb.items() if k != name) > 30


def test_colour_doppler_over_grey_fits_no_tint(phantom) -> None:
    p = phantom.contrast_panel
    grey = np.asarray(phantom.frames[60][p.slices])
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[40:80, 60:120] = (200, 30, 30)   # flow towards the probe
    rgb[100:140, 60:120] = (30, 60, 220)  # and away
    m = match_tint([(_grey_luma(rgb), rgb)])
    assert m.best is None and "fit no library tint" in m.reason


# --------------------------------------------------------------------------- pipeline


def _perfusion(res: dict) -> dict:
    return {(roi, k): res["rois"][roi]["perfusion"][k] for roi in res["rois"] for k in KEYS}


@pytest.fixture(scope="module")
def grey_runs(phantom, tmp_path_factory):
    base = tmp_path_factory.mktemp("colour")
    out = {}
    for fmt in ("dicom", "mp4"):
        paths = write_phantom(phantom, base / f"grey-{fmt}", fmt)
        out[fmt] = analyze(paths["cine"], paths["rois"], AnalysisOptions(maps=False)).results()
    return base, out


@pytest.mark.parametrize(("fmt", "name", "bar", "tol"), [
    ("dicom", "hot", False, 1e-4), ("dicom", "gold", True, 1e-4),
    ("mp4", "hot", False, 0.01), ("mp4", "gold", True, 0.01)])
def test_tinted_exports_give_the_grey_results(phantom, grey_runs, fmt, name, bar, tol) -> None:
    base, grey = grey_runs
    paths = write_phantom(with_tint(phantom, name, colour_bar=bar), base / f"{name}-{bar}-{fmt}", fmt)
    res = analyze(paths["cine"], paths["rois"], AnalysisOptions(maps=False)).results()
    cm = res["linearization"]["colour_map"]
    assert cm["name"] == name and cm["source"] == "library" and cm["off_map_share"] < 1e-4
    if fmt == "dicom":
        assert cm["residual_p99_rgb"] <= 1.0
        assert (cm["colour_bar"] is not None) == bar
    assert "colour-map-inverted" in [w["code"] for w in res["warnings"]]
    ref = _perfusion(grey[fmt])
    for key, value in _perfusion(res).items():
        assert value == pytest.approx(ref[key], rel=tol), key
    lesion, g_lesion = res["rois"]["lesion"], grey[fmt]["rois"]["lesion"]
    assert lesion["relative_to_reference"]["peak_enhancement_ratio"] == pytest.approx(
        g_lesion["relative_to_reference"]["peak_enhancement_ratio"], rel=tol)
    assert res["findings"]["intraluminal_enhancement"] == grey[fmt]["findings"][
        "intraluminal_enhancement"]


def _write_rgb(path: Path, phantom, rgb: np.ndarray) -> Path:
    write_dicom_cine(path, rgb, phantom.times_s, regions=(phantom.bmode_panel, phantom.contrast_panel),
                     spacing_mm=phantom.spacing_mm)
    return path


def test_colour_doppler_on_a_tinted_panel_is_refused(phantom, tmp_path: Path) -> None:
    p = phantom.contrast_panel
    rgb = np.array(with_tint(phantom, "hot").frames)
    # A blue flow jet over 5 % of the panel in the second half of the cine.
    rgb[90:, p.y0 + 60:p.y0 + 90, p.x0 + 80:p.x0 + 160] = (40, 80, 230)
    cine = _write_rgb(tmp_path / "doppler.dcm", phantom, rgb)
    rois = tmp_path / "rois.json"
    rois.write_text(json.dumps(phantom.rois))
    with pytest.raises(InputError, match=r"not on its colour map.*Doppler") as err:
        analyze(cine, rois, AnalysisOptions(maps=False))
    assert "\n" not in str(err.value)


def test_colour_map_off_and_unknown_maps_are_refused(phantom, tmp_path: Path) -> None:
    rois = tmp_path / "rois.json"
    rois.write_text(json.dumps(phantom.rois))
    hot = write_phantom(with_tint(phantom, "hot"), tmp_path / "hot")["cine"]
    with pytest.raises(InputError, match="colour-map inversion is off"):
        analyze(hot, rois, AnalysisOptions(maps=False, colour_map="off"))
    with pytest.raises(InputError, match="neither a colour-map file nor a library tint"):
        analyze(hot, rois, AnalysisOptions(maps=False, colour_map="viridis"))
    # A map the library does not know, without a bar: refused, naming --colour-map FILE.
    i = np.arange(256.0)
    teal = ColourMap("teal", np.rint(np.column_stack([0.3 * i, 0.9 * i, i])), "file")
    p = phantom.contrast_panel
    rgb = tinted_frames(phantom.frames, (p.x0, p.y0, p.x1, p.y1), teal)
    cine = _write_rgb(tmp_path / "teal.dcm", phantom, rgb)
    with pytest.raises(InputError, match=r"fit no library tint.*--colour-map FILE"):
        analyze(cine, rois, AnalysisOptions(maps=False))
    # ... analysed once the user gives the table: the grey results.
    table = tmp_path / "teal.csv"
    table.write_text("\n".join(",".join(f"{x:g}" for x in row) for row in teal.table))
    grey = write_phantom(phantom, tmp_path / "grey")
    ref = _perfusion(analyze(grey["cine"], rois, AnalysisOptions(maps=False)).results())
    res = analyze(cine, rois, AnalysisOptions(maps=False, colour_map=str(table))).results()
    assert res["linearization"]["colour_map"]["method"] == "file"
    for key, value in _perfusion(res).items():
        assert value == pytest.approx(ref[key], rel=1e-4), key


def test_an_unknown_map_with_a_colour_bar_is_read_off_the_bar(phantom, tmp_path: Path) -> None:
    i = np.arange(256.0)
    teal = ColourMap("teal", np.rint(np.column_stack([0.3 * i, 0.9 * i, i])), "file")
    p = phantom.contrast_panel
    rgb = tinted_frames(phantom.frames, (p.x0, p.y0, p.x1, p.y1), teal, colour_bar=True)
    cine = load_cine(_write_rgb(tmp_path / "teal-bar.dcm", phantom, rgb))
    bar = find_colour_bar(next(cine.rgb_frames(None))[1])
    assert bar is not None
    inv = invert_panel(bar.cmap, cine.rgb_frames, cine.frames, p.slices)
    truth = np.asarray(phantom.frames[(slice(None), *p.slices)], dtype=np.float64)
    err = inv.values - truth
    # The bar's darkest rows merge with the black background, so its scale is
    # stretched by a few levels: what the colour-map-from-bar warning says.
    assert abs(float(np.median(err[truth > 100]))) <= 4.0
    assert inv.off_map_share == 0.0
    rois = tmp_path / "rois.json"
    rois.write_text(json.dumps(phantom.rois))
    res = analyze(tmp_path / "teal-bar.dcm", rois, AnalysisOptions(maps=False)).results()
    codes = [w["code"] for w in res["warnings"]]
    assert res["linearization"]["colour_map"]["source"] == "colour bar"
    assert "colour-map-from-bar" in codes


def test_readers_offer_colour_frames_only_for_colour_sources(phantom, tmp_path: Path) -> None:
    grey = load_cine(write_phantom(phantom, tmp_path / "g", "npz")["cine"])
    assert grey.rgb_frames is None
    tinted = with_tint(phantom, "sepia")
    for fmt in ("npz", "dicom", "mp4"):
        cine = load_cine(write_phantom(tinted, tmp_path / fmt, fmt)["cine"])
        assert cine.rgb_frames is not None
        got = dict(cine.rgb_frames(frozenset({0, 50})))
        assert sorted(got) == [0, 50]
        diff = np.abs(got[50].astype(int) - np.asarray(tinted.frames[50]).astype(int))
        assert (diff.max() == 0) if fmt != "mp4" else (np.median(diff) <= 3), fmt
