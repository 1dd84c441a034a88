import json

import numpy as np
import pytest
from PIL import Image

from ceuskit.cine import Panel
from ceuskit.errors import InputError
from ceuskit.roi import ellipse_mask, load_roi_file, parse_rois, polygon_mask

PANEL = Panel(100, 20, 200, 100, spacing_mm=(0.2, 0.25))  # 80 rows x 100 cols
FRAME = (120, 320)


def _write(tmp_path, doc, name="rois.json"):
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return p


def test_polygon_rule_is_pixel_centres_inside():
    m = polygon_mask([[1.5, 1.5], [4.5, 1.5], [4.5, 3.5], [1.5, 3.5]], (6, 7))
    expected = np.zeros((6, 7), bool)
    expected[2:4, 2:5] = True
    np.testing.assert_array_equal(m, expected)


def test_ellipse_area_close_to_analytic():
    m = ellipse_mask(50, 40, 20, 10, (80, 100))
    assert m.sum() == pytest.approx(np.pi * 20 * 10, rel=0.02)
    assert m[40, 50] and not m[40, 71] and m[40, 70]


def test_panel_and_frame_space_agree(tmp_path):
    poly = [[10, 10], [40, 12], [35, 40], [12, 30]]
    a = parse_rois({"space": "panel", "rois": [
        {"name": "l", "role": "lesion", "polygon": poly},
        {"name": "m", "role": "reference", "ellipse": [70, 50, 10, 6]}]},
        panel=PANEL, frame_shape=FRAME)
    moved = [[x + PANEL.x0, y + PANEL.y0] for x, y in poly]
    b = parse_rois({"space": "frame", "rois": [
        {"name": "l", "role": "lesion", "polygon": moved},
        {"name": "m", "role": "reference", "ellipse": [170, 70, 10, 6]}]},
        panel=PANEL, frame_shape=FRAME)
    for ra, rb in zip(a, b, strict=True):
        np.testing.assert_array_equal(ra.mask, rb.mask)
    assert a[0].mask.shape == PANEL.shape
    assert a[1].area_mm2 == pytest.approx(a[1].area_px * 0.05)


@pytest.mark.parametrize("ext", ["npy", "png", "nii.gz"])
def test_mask_files(tmp_path, ext):
    mask = np.zeros(PANEL.shape, bool)
    mask[10:20, 30:45] = True
    name = f"lumen.{ext}"
    if ext == "npy":
        np.save(tmp_path / name, mask)
    elif ext == "png":
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / name)
    else:
        import nibabel

        nibabel.save(nibabel.Nifti1Image(mask.T.astype(np.uint8), np.eye(4)), tmp_path / name)
    p = _write(tmp_path, {"space": "panel", "rois": [{"name": "v", "role": "vessel", "mask": name}]})
    (roi,) = load_roi_file(p, panel=PANEL, frame_shape=FRAME)
    np.testing.assert_array_equal(roi.mask, mask)
    assert roi.area_px == 150


def test_frame_space_mask_is_cropped_to_panel(tmp_path):
    full = np.zeros(FRAME, bool)
    full[30:40, 120:130] = True
    np.save(tmp_path / "m.npy", full)
    p = _write(tmp_path, {"space": "frame", "rois": [{"name": "v", "role": "other", "mask": "m.npy"}]})
    (roi,) = load_roi_file(p, panel=PANEL, frame_shape=FRAME)
    assert roi.mask[10:20, 20:30].all() and roi.area_px == 100


BAD_DOCS = {
    "not an object": ([1, 2], "JSON object"),
    "no rois": ({"space": "panel"}, "no 'rois'"),
    "bad space": ({"space": "world", "rois": []}, "'space'"),
    "no name": ({"rois": [{"role": "lesion", "ellipse": [50, 40, 5, 5]}]}, "no 'name'"),
    "bad role": ({"rois": [{"name": "a", "role": "tumour", "ellipse": [50, 40, 5, 5]}]}, "role"),
    "two shapes": ({"rois": [{"name": "a", "role": "lesion", "ellipse": [50, 40, 5, 5],
                              "polygon": [[1, 1], [2, 2], [3, 1]]}]}, "exactly one"),
    "duplicate": ({"rois": [{"name": "a", "role": "lesion", "ellipse": [50, 40, 5, 5]},
                            {"name": "a", "role": "other", "ellipse": [20, 20, 5, 5]}]}, "twice"),
    "outside": ({"rois": [{"name": "a", "role": "lesion", "ellipse": [95, 40, 10, 5]}]}, "outside"),
    "outside polygon": ({"rois": [{"name": "a", "role": "lesion",
                                   "polygon": [[10, 10], [150, 10], [20, 30]]}]}, "outside"),
    "empty": ({"rois": [{"name": "a", "role": "lesion",
                         "polygon": [[10.1, 10.1], [10.4, 10.1], [10.2, 10.4]]}]}, "no pixel"),
    "two points": ({"rois": [{"name": "a", "role": "lesion", "polygon": [[1, 1], [2, 2]]}]}, "3"),
    "text coords": ({"rois": [{"name": "a", "role": "lesion", "ellipse": [50, "x", 5, 5]}]}, "non-number"),
    "bad radius": ({"rois": [{"name": "a", "role": "lesion", "ellipse": [50, 40, 0, 5]}]}, "positive"),
    "missing mask": ({"rois": [{"name": "a", "role": "lesion", "mask": "nope.npy"}]}, "not found"),
}


@pytest.mark.parametrize("case", sorted(BAD_DOCS))
def test_bad_roi_files_name_the_file(tmp_path, case):
    doc, needle = BAD_DOCS[case]
    p = _write(tmp_path, doc)
    with pytest.raises(InputError) as exc:
        load_roi_file(p, panel=PANEL, frame_shape=FRAME)
    msg = str(exc.value)
    assert "rois.json" in msg and needle in msg and "\n" not in msg


def test_invalid_json_and_missing_file(tmp_path):
    p = tmp_path / "r.json"
    p.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_roi_file(p, panel=PANEL, frame_shape=FRAME)
    with pytest.raises(InputError, match="not found"):
        load_roi_file(tmp_path / "none.json", panel=PANEL, frame_shape=FRAME)


def test_mask_of_wrong_shape(tmp_path):
    np.save(tmp_path / "m.npy", np.ones((10, 10), bool))
    p = _write(tmp_path, {"rois": [{"name": "a", "role": "lesion", "mask": "m.npy"}]})
    with pytest.raises(InputError, match="does not match"):
        load_roi_file(p, panel=PANEL, frame_shape=FRAME)


@pytest.mark.parametrize(("items", "message"), [
    ([{"name": "x" * 10_000, "role": "lesion", "ellipse": [50, 40, 5, 5]}], "characters long"),
    ([{"name": "a\nb", "role": "lesion", "ellipse": [50, 40, 5, 5]}], "control"),
    ([{"name": "l", "role": "lesion", "polgon": [[1, 1], [5, 1], [5, 5]]}], r"unknown key\(s\) 'polgon'"),
    ([{"name": "l", "role": "lesion",
       "polygon": [[50 + 20 * np.cos(a), 40 + 20 * np.sin(a)] for a in np.linspace(0, 6.2, 200_000)]}],
     "200000 vertices"),
    ([{"name": f"r{i}", "role": "other", "ellipse": [50, 40, 5, 5]} for i in range(65)], "65 ROIs"),
])
def test_oversized_or_misspelt_rois_are_refused(tmp_path, items, message):
    doc = {"space": "panel", "rois": [
        {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in it.items()} for it in items]}
    with pytest.raises(InputError, match=message) as exc:
        parse_rois(doc, panel=PANEL, frame_shape=FRAME, source=tmp_path / "rois.json")
    assert "\n" not in str(exc.value).replace("a\nb", "") and "rois.json" in str(exc.value)


@pytest.mark.parametrize("key", ["spce", "Space", "roi"])
def test_misspelt_top_level_keys_are_refused(tmp_path, key):
    """A misspelt 'space' would silently read frame coordinates as panel ones."""
    doc = {key: "frame", "rois": [{"name": "l", "role": "lesion", "ellipse": [50, 40, 5, 5]}]}
    with pytest.raises(InputError, match=rf"unknown top-level key\(s\) '{key}'") as exc:
        parse_rois(doc, panel=PANEL, frame_shape=FRAME, source=tmp_path / "rois.json")
    assert "rois.json" in str(exc.value) and "'space'" in str(exc.value)
