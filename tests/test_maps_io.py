"""Map outputs: NPY, NIfTI (with spacing), PNG overlays, maps.json, and ``ceuskit map``."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from ceuskit import maps
from ceuskit.cine import Panel
from ceuskit.cli import main
from ceuskit.io.arrays import write_npz
from ceuskit.linearize import to_linear_power
from ceuskit.map_phantom import lesion_phantom
from ceuskit.maps_io import MAP_NAMES, nifti_bytes, output_names, write_map_outputs
from ceuskit.roi import parse_rois

SPACING = (0.2, 0.25)  # (row, col) mm: unequal, so that a swapped axis shows


@pytest.fixture(scope="module")
def mapped():
    ph = lesion_phantom(seed=3, shape=(48, 80), duration_s=50.0, necrosis_radius=0.5)
    power = to_linear_power(ph.frames, 60.0)
    panel = Panel(0, 0, 80, 48, spacing_mm=SPACING)
    rois = parse_rois(ph.rois, panel=panel, frame_shape=(48, 80))
    res = maps.compute_maps(maps.array_source(power), ph.times_s, rois, spacing_mm=SPACING)
    return ph, res, rois


def test_writes_every_map_as_npy_nifti_png(tmp_path, mapped):
    ph, res, rois = mapped
    paths = write_map_outputs(tmp_path, res, rois, background=ph.frames[40].astype(np.float32),
                              source_name="synthetic")
    assert set(paths) <= set(output_names())
    for name in MAP_NAMES:
        arr = np.load(tmp_path / f"{name}.npy")
        assert arr.shape == res.shape
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(np.load(tmp_path / "peak_enhancement.npy"),
                                  res.params["peak_enhancement"])
    np.testing.assert_array_equal(np.load(tmp_path / "necrosis.npy"), res.necrosis.astype(np.uint8))
    np.testing.assert_array_equal(np.load(tmp_path / "dvp_curves.npy"), res.dvp_curves)
    assert not list(tmp_path.glob(".*part*")), "no temporary file left behind"


def test_nifti_has_spacing_and_column_row_axes(tmp_path, mapped):
    _, res, _ = mapped
    write_map_outputs(tmp_path, res, [], png=False)
    img = nib.load(tmp_path / "time_to_peak_s.nii.gz")
    data = np.asarray(img.dataobj)
    assert data.shape == (res.shape[1], res.shape[0])  # (i, j) = (column, row)
    np.testing.assert_array_equal(data.T, res.params["time_to_peak_s"])
    zooms = img.header.get_zooms()
    assert zooms[:2] == pytest.approx((SPACING[1], SPACING[0]))
    np.testing.assert_allclose(np.diag(img.affine)[:2], (SPACING[1], SPACING[0]))
    assert img.header.get_xyzt_units()[0] == "mm"
    assert b"time_to_peak_s (s)" in img.header["descrip"].tobytes()


def test_nifti_bytes_are_gzip_nifti_without_spacing():
    raw = gzip.decompress(nifti_bytes(np.ones((3, 4), dtype=bool), None))
    img = nib.Nifti1Image.from_bytes(raw)
    assert img.shape == (4, 3) and img.get_data_dtype() == np.uint8
    assert img.header.get_xyzt_units()[0] == "unknown"


def test_maps_json_states_rules_windows_and_units(tmp_path, mapped):
    _, res, rois = mapped
    write_map_outputs(tmp_path, res, rois, png=False)
    doc = json.loads((tmp_path / "maps.json").read_text())
    assert doc["block_px"] == maps.BLOCK_PX
    assert doc["units"]["peak_enhancement"] == "a.u." and doc["units"]["time_to_peak_s"] == "s"
    assert "z = (p - b)" in doc["rules"]["enhancement_test"]
    assert "imaging plane" in doc["rules"]["necrosis"]
    lesion = doc["rois"]["lesion"]
    assert 0.2 < lesion["necrosis_fraction"] < 0.3  # a disc of half the semi-axes: 25 %
    assert lesion["test_window"]["post_arrival_s"][0] > lesion["test_window"]["baseline_s"][1]
    assert lesion["heterogeneity"]["heterogeneous"] is True
    assert doc["files"]["maps"]["necrosis"]["nifti"] == "necrosis.nii.gz"
    assert "decision support" in doc["disclaimer"]


@pytest.fixture(scope="module")
def study_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cine")
    ph = lesion_phantom(seed=9, shape=(48, 80), duration_s=50.0, necrosis_radius=0.5)
    cine = write_npz(d / "cine.npz", ph.frames, ph.times_s, spacing_mm=ph.spacing_mm)
    rois = d / "rois.json"
    rois.write_text(json.dumps(ph.rois))
    return cine, rois


def test_cli_map_writes_maps(tmp_path, study_files, capsys):
    cine, rois = study_files
    out = tmp_path / "maps"
    rc = main(["map", str(cine), "--roi", str(rois), "--out", str(out), "--block", "2",
               "--motion", "off", "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "necrosis" in text and "fits ran in-process" in text
    doc = json.loads((out / "maps.json").read_text())
    assert doc["block_px"] == 2 and doc["source"]["fits_ran"] == "in-process"
    assert (out / "peak_enhancement.png").exists() and (out / "necrosis.nii.gz").exists()
    # A second run refuses to overwrite, with the contract's exit status 2.
    assert main(["map", str(cine), "--roi", str(rois), "--out", str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--block", "0"], ["--block", "x"], ["--model", "spline"]])
def test_cli_map_refuses_bad_options(tmp_path, study_files, capsys, args):
    cine, rois = study_files
    rc = main(["map", str(cine), "--roi", str(rois), "--out", str(tmp_path / "m"), *args])
    assert rc == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_map_png_is_drawn_large_with_its_colour_scale_from_lesion_and_reference(mapped):
    from io import BytesIO

    from PIL import Image

    from ceuskit.maps_io import SCALE_PERCENTILES, render_map, scale_pixels

    ph, res, rois = mapped
    values = res.params["peak_enhancement"].copy()
    # A bright "lumen" outside the lesion and reference: above the scale, so clipped.
    outside = np.isfinite(values) & ~scale_pixels(rois, values.shape)
    values[outside] = np.nanmax(values) * 10
    image = render_map("peak_enhancement", values, res, rois, ph.frames[40].astype(np.float32),
                       source_name="synthetic")
    png = Image.open(BytesIO(image.png))
    h, w = res.shape
    assert png.width >= 3 * w and png.height >= 3 * h  # enlarged to be read alone
    scale = image.scale
    inside = values[scale_pixels(rois, values.shape) & np.isfinite(values)]
    lo, hi = np.percentile(inside, SCALE_PERCENTILES)
    assert scale["kind"] == "continuous" and scale["colour_map"] == "magma"
    assert (scale["min"], scale["max"]) == pytest.approx((lo, hi))
    assert "lesion and reference ROIs" in scale["basis"]
    assert scale["pixels_above_max"] >= int(outside.sum())
    assert "clipped at" in scale["statement"]


def test_categorical_map_png_has_a_legend(mapped):
    from ceuskit.maps_io import NECROSIS_COLOURS, render_map

    _ph, res, rois = mapped
    image = render_map("necrosis", res.necrosis.astype(np.uint8), res, rois, None)
    assert image.scale == {"kind": "categorical",
                           "legend": {"enhancing": NECROSIS_COLOURS[0],
                                      "non-enhancing": NECROSIS_COLOURS[1]}}
    assert image.png[:8] == b"\x89PNG\r\n\x1a\n"


def test_maps_json_records_each_png_colour_scale(tmp_path, mapped):
    from ceuskit.maps_io import planned_files

    ph, res, rois = mapped
    paths = write_map_outputs(tmp_path, res, rois, background=ph.frames[40].astype(np.float32))
    assert sorted(paths) == sorted(planned_files(res))
    doc = json.loads((tmp_path / "maps.json").read_text())
    pe = doc["files"]["maps"]["peak_enhancement"]["png_colours"]
    assert pe["kind"] == "continuous" and pe["max"] > pe["min"]
    assert doc["files"]["maps"]["dvp_class"]["png_colours"]["kind"] == "categorical"
    no_png = write_map_outputs(tmp_path / "nopng", res, rois, png=False)
    assert sorted(no_png) == sorted(planned_files(res, png=False))


def test_map_image_axes_and_ticks():
    from ceuskit.map_image import nice_ticks

    assert nice_ticks(-0.1, 51.1) == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    assert nice_ticks(0.0023, 0.146) == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.125])
