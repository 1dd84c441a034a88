"""The web app's HTTP API, through FastAPI's TestClient.

Ground truth comes from the simulator: the demo study is the phantom of
`conftest.DEMO`, so frames, panels, ROIs and timings are known exactly.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from ceuskit.linearize import to_linear_power
from ceuskit.simulate import Phantom
from tests.web.conftest import DEMO, AppFactory, wait_for

HEX = "0123456789abcdef" * 2


def _demo(client: Any, with_rois: bool = True) -> dict[str, Any]:
    # A fresh copy each time: tests that need two studies call this twice.
    r = client.post("/api/studies/demo", json={"seed": 0, "with_rois": with_rois, "new": True})
    assert r.status_code == 201, r.text
    return r.json()


def _message(r: Any) -> str:
    detail = r.json()["detail"]
    return detail if isinstance(detail, str) else json.dumps(detail)


# --------------------------------------------------------------------------- studies


def test_demo_study_shows_the_phantom_panels_timing_and_rois(make_client: AppFactory,
                                                             phantom: Phantom) -> None:
    client = make_client()
    study = _demo(client)
    info = study["info"]
    assert info["n_frames"] == phantom.frames.shape[0]
    assert info["frame_shape"] == list(phantom.frames.shape[1:])
    np.testing.assert_allclose(info["times_s"], phantom.times_s, atol=1e-6)
    assert info["panels"]["contrast"]["bounds_xyxy"] == list(phantom.contrast_panel.bounds)
    assert info["panels"]["bmode"]["bounds_xyxy"] == list(phantom.bmode_panel.bounds)
    assert study["rois"] == phantom.rois
    assert study["settings"]["dynamic_range_db"] == 60.0
    assert study["current_analysis"] is None
    listed = client.get("/api/studies").json()
    assert [s["id"] for s in listed] == [study["id"]]
    assert client.get(f"/api/studies/{study['id']}").json()["display_name"] == study["display_name"]
    page = client.get(f"/studies/{study['id']}")
    assert page.status_code == 200 and "roi-canvas" in page.text and "decision support" in page.text
    assert study["display_name"] in client.get("/").text


def test_demo_without_rois_starts_empty(make_client: AppFactory) -> None:
    client = make_client()
    study = _demo(client, with_rois=False)
    assert study["rois"] == {"space": "panel", "rois": []}
    r = client.post(f"/api/studies/{study['id']}/analyses")
    assert r.status_code == 422 and "ROI" in _message(r)


def test_frames_are_the_stored_pixels_of_each_panel(shared_study: tuple[Any, dict[str, Any]],
                                                    phantom: Phantom) -> None:
    client, study = shared_study
    sid = study["id"]
    for index in (0, 57, phantom.frames.shape[0] - 1):
        for panel, bounds in (("contrast", phantom.contrast_panel), ("bmode", phantom.bmode_panel)):
            r = client.get(f"/api/studies/{sid}/frames/{index}.png", params={"panel": panel})
            assert r.status_code == 200 and r.headers["content-type"] == "image/png"
            got = np.asarray(Image.open(io.BytesIO(r.content)))
            np.testing.assert_array_equal(got, phantom.frames[index][bounds.slices])
    whole = client.get(f"/api/studies/{sid}/frames/3.png", params={"panel": "frame"})
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(whole.content))), phantom.frames[3])
    n = phantom.frames.shape[0]
    for bad in (f"/api/studies/{sid}/frames/{n}.png", f"/api/studies/{sid}/frames/-1.png",
                f"/api/studies/{sid}/frames/2.png?panel=doppler", f"/api/studies/{sid}/frames/x.png"):
        r = client.get(bad)
        assert r.status_code == 422, bad
        assert _message(r)


def test_tic_preview_is_the_mean_linear_power_in_each_roi(shared_study: tuple[Any, dict[str, Any]],
                                                          phantom: Phantom) -> None:
    client, study = shared_study
    sid = study["id"]
    tic = client.get(f"/api/studies/{sid}/tic-preview").json()
    assert set(tic["rois"]) == set(phantom.roi_masks)
    contrast = phantom.frames[(slice(None), *phantom.contrast_panel.slices)]
    for name, mask in phantom.roi_masks.items():
        expected = to_linear_power(contrast[:, mask], 60.0).astype(np.float64).mean(axis=1)
        np.testing.assert_allclose(tic["rois"][name]["intensity"], expected, rtol=1e-4)


def test_loading_the_demo_again_opens_the_same_study(make_client: AppFactory) -> None:
    client = make_client()
    first = _demo(client)
    again = client.post("/api/studies/demo", json={"seed": 0, "with_rois": True})
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    # Another variant is another study; "new" asks for a fresh copy.
    bare = _demo(client, with_rois=False)
    assert bare["id"] != first["id"] and bare["display_name"] != first["display_name"]
    fresh = client.post("/api/studies/demo", json={"seed": 0, "with_rois": True, "new": True})
    assert fresh.status_code == 201 and fresh.json()["id"] not in {first["id"], bare["id"]}
    listing = client.get("/api/studies").json()
    assert len(listing) == 3
    # Once deleted, loading the demo simulates it again.
    for sid in (first["id"], fresh.json()["id"]):
        assert client.delete(f"/api/studies/{sid}").status_code in (200, 204)
    assert client.post("/api/studies/demo", json={"seed": 0}).status_code == 201


def test_delete_study_removes_it_and_its_files(make_client: AppFactory, tmp_path: Path) -> None:
    client = make_client()
    sid = _demo(client)["id"]
    assert (tmp_path / "data" / "studies" / sid).is_dir()
    assert client.delete(f"/api/studies/{sid}").status_code == 204
    assert not (tmp_path / "data" / "studies" / sid).exists()
    assert client.get(f"/api/studies/{sid}").status_code == 404
    assert client.delete(f"/api/studies/{sid}").status_code == 404


# --------------------------------------------------------------------------- uploads


def test_upload_dicom_stores_it_under_a_server_name(make_client: AppFactory, phantom_dicom: Path,
                                                    tmp_path: Path, phantom: Phantom) -> None:
    client = make_client()
    r = client.post("/api/studies", content=phantom_dicom.read_bytes(),
                    headers={"X-Filename": "..%2F..%2Fetc%2Fpasswd%3Cb%3E.dcm",
                             "Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    study = r.json()
    assert study["format"] == "dicom"
    # The client's name is shown without its path or markup, and never used as a path.
    assert study["display_name"] == "passwdb.dcm"
    files = sorted(p.name for p in (tmp_path / "data" / "studies" / study["id"]).iterdir())
    assert files == ["cine.dcm", "frames.npy"]
    assert study["info"]["n_frames"] == phantom.frames.shape[0]
    assert study["info"]["panels"]["contrast"]["bounds_xyxy"] == list(phantom.contrast_panel.bounds)


def test_upload_video(make_client: AppFactory, phantom: Phantom, tmp_path: Path) -> None:
    from ceuskit.io.video import write_video

    path = tmp_path / "clip.mp4"
    write_video(path, phantom.frames[:30], phantom.times_s[:30], codec="libx264", crf=4)
    client = make_client()
    r = client.post("/api/studies", content=path.read_bytes(), headers={"X-Filename": "clip.mp4"})
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "video"
    assert r.json()["info"]["n_frames"] == 30


@pytest.mark.parametrize(("body", "status", "words"), [
    (b"", 400, "empty"),
    (b"%PDF-1.7 not a cine at all" * 20, 415, "not a DICOM"),
    (b"<html><script>alert(1)</script></html>" * 10, 415, "not a DICOM"),
    # A container signature with nothing behind it: sniffed as video, refused by the reader.
    (b"\x00\x00\x00\x18ftypisom" + b"\x00" * 400, 422, "cine.video"),
])
def test_upload_refuses_what_is_not_a_cine(make_client: AppFactory, tmp_path: Path, body: bytes,
                                           status: int, words: str) -> None:
    client = make_client()
    r = client.post("/api/studies", content=body, headers={"X-Filename": "x.mp4"})
    assert r.status_code == status, r.text
    assert words in _message(r)
    # Nothing is left behind: no study, no files.
    assert client.get("/api/studies").json() == []
    assert list((tmp_path / "data" / "studies").iterdir()) == []


def test_upload_limit_and_multipart(make_client: AppFactory, phantom_dicom: Path, tmp_path: Path) -> None:
    client = make_client(max_upload_mb=0.5)
    data = phantom_dicom.read_bytes()
    assert len(data) > 0.5 * 1024 * 1024
    r = client.post("/api/studies", content=data)
    assert r.status_code == 413 and "--max-upload-mb" in _message(r)

    def chunks() -> Any:  # no Content-Length: the limit is enforced while reading
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]

    r = client.post("/api/studies", content=chunks())
    assert r.status_code == 413
    r = client.post("/api/studies", files={"file": ("a.dcm", data[:1000])})
    assert r.status_code == 415 and "request body" in _message(r)
    assert list((tmp_path / "data" / "studies").iterdir()) == []


def test_upload_log_carries_no_file_name(make_client: AppFactory, phantom_dicom: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    client = make_client()
    with caplog.at_level(logging.DEBUG):
        r = client.post("/api/studies", content=phantom_dicom.read_bytes(),
                        headers={"X-Filename": "DOE%5EJOHN_1970.dcm"})
        client.get(f"/api/studies/{r.json()['id']}")
    assert r.status_code == 201 and r.json()["display_name"] == "DOE^JOHN_1970.dcm"
    text = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "DOE" not in text and "JOHN" not in text
    assert r.json()["id"] in text  # the log does say what happened, by id


def test_library_import(make_client: AppFactory, phantom_dicom: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "study one.dcm").write_bytes(phantom_dicom.read_bytes())
    (data / "notes.txt").write_text("not a cine")
    client = make_client(data)
    names = [f["name"] for f in client.get("/api/library").json()]
    assert names == ["notes.txt", "study one.dcm"]
    r = client.post("/api/studies/import", json={"name": "study one.dcm"})
    assert r.status_code == 201 and r.json()["display_name"] == "study one.dcm"
    assert client.post("/api/studies/import", json={"name": "notes.txt"}).status_code == 415
    for bad in ("../data/study one.dcm", "/etc/passwd", "studies", "ceuskit.db", ""):
        r = client.post("/api/studies/import", json={"name": bad})
        assert r.status_code in (404, 422), bad


# --------------------------------------------------------------------------- ids and paths


def test_ids_and_file_names_cannot_escape(shared_study: tuple[Any, dict[str, Any]]) -> None:
    client, study = shared_study
    sid = study["id"]
    for url in ("/api/studies/..%2F..%2Fceuskit.db", "/api/studies/not-an-id", f"/api/studies/{sid}x",
                f"/api/studies/{sid.upper()}", "/api/analyses/..", "/studies/..%2Fetc"):
        r = client.get(url)
        assert r.status_code in (404, 422), url
    assert client.get(f"/api/studies/{HEX}").status_code == 404
    assert client.get(f"/api/analyses/{HEX}").status_code == 404
    for name in ("../../ceuskit.db", "..%2F..%2Fceuskit.db", "maps/../../x", "/etc/passwd", ".hidden",
                 "a/b/c.png"):
        r = client.get(f"/api/analyses/{HEX}/files/{name}")
        assert r.status_code in (404, 422), name


# --------------------------------------------------------------------------- ROIs


def test_rois_round_trip_and_frame_space_is_converted(make_client: AppFactory, phantom: Phantom) -> None:
    client = make_client()
    sid = _demo(client, with_rois=False)["id"]
    x0, y0 = phantom.contrast_panel.x0, phantom.contrast_panel.y0
    doc = {"space": "frame", "rois": [
        {"name": "mass", "role": "lesion", "polygon": [[x0 + 100, y0 + 60], [x0 + 200, y0 + 60],
                                                       [x0 + 150, y0 + 130]]},
        {"name": "muscle", "role": "reference", "ellipse": [x0 + 44, y0 + 133, 20, 10]},
    ]}
    r = client.put(f"/api/studies/{sid}/rois", json=doc)
    assert r.status_code == 200, r.text
    expected = {"space": "panel", "rois": [
        {"name": "mass", "role": "lesion", "polygon": [[100, 60], [200, 60], [150, 130]]},
        {"name": "muscle", "role": "reference", "ellipse": [44, 133, 20, 10]},
    ]}
    assert r.json() == expected
    exported = client.get(f"/api/studies/{sid}/rois", params={"download": 1})
    assert "attachment" in exported.headers["content-disposition"]
    assert exported.json() == expected
    # The export is a valid ROI file for the command line too.
    from ceuskit.roi import parse_rois

    rois = parse_rois(exported.json(), panel=phantom.contrast_panel, frame_shape=phantom.frames.shape[1:])
    assert [r.name for r in rois] == ["mass", "muscle"]
    assert client.put(f"/api/studies/{sid}/rois", json={"space": "panel", "rois": []}).json()["rois"] == []


@pytest.mark.parametrize(("doc", "words"), [
    ([1, 2, 3], "JSON object"),
    ("lesion", "JSON object"),
    ({"space": "world", "rois": [{"name": "a", "role": "lesion", "ellipse": [50, 50, 5, 5]}]}, "space"),
    ({"space": "panel"}, "rois"),
    ({"rois": [{"name": "a", "role": "lesion", "polygon": [[1, 1], [5, 5]]}]}, "3 [x, y] points"),
    ({"rois": [{"name": "a", "role": "tumour", "ellipse": [50, 50, 5, 5]}]}, "role"),
    ({"rois": [{"name": "a", "role": "lesion", "ellipse": [50, 50, 5]}]}, "ellipse"),
    ({"rois": [{"name": "a", "role": "lesion", "ellipse": [50, 50, -5, 5]}]}, "radii"),
    ({"rois": [{"name": "a", "role": "lesion", "ellipse": [250, 50, 20, 5]}]}, "outside"),
    ({"rois": [{"name": "a", "role": "lesion", "ellipse": ["x", 50, 20, 5]}]}, "ellipse"),
    ({"rois": [{"name": "a", "role": "lesion", "ellipse": [50, 50, 5, 5]},
               {"name": "a", "role": "reference", "ellipse": [80, 50, 5, 5]}]}, "twice"),
    ({"rois": [{"name": "a", "role": "lesion", "mask": "../../etc/passwd"}]}, "mask"),
    ({"rois": [{"role": "lesion", "ellipse": [50, 50, 5, 5]}]}, "name"),
])
def test_malformed_rois_are_refused_with_a_message(shared_study: tuple[Any, dict[str, Any]], doc: Any,
                                                   words: str) -> None:
    client, study = shared_study
    r = client.put(f"/api/studies/{study['id']}/rois", json=doc)
    assert r.status_code == 422, r.text
    assert words in _message(r)
    # The stored ROIs are untouched.
    assert client.get(f"/api/studies/{study['id']}/rois").json() == study["rois"]


def test_rois_body_that_is_not_json(make_client: AppFactory) -> None:
    client = make_client()
    sid = _demo(client)["id"]
    r = client.put(f"/api/studies/{sid}/rois", content=b"{not json",
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 422


# --------------------------------------------------------------------------- settings


def test_settings_are_validated_and_change_the_panels(make_client: AppFactory, phantom: Phantom) -> None:
    client = make_client()
    sid = _demo(client)["id"]
    r = client.put(f"/api/studies/{sid}/settings",
                   json={"dynamic_range_db": 50, "model": "gamma", "panel": [8, 16, 200, 208]})
    assert r.status_code == 200, r.text
    study = r.json()
    assert study["settings"]["dynamic_range_db"] == 50.0 and study["settings"]["model"] == "gamma"
    assert study["info"]["panels"]["contrast"]["bounds_xyxy"] == [8, 16, 200, 208]
    assert study["info"]["panels"]["method"] == "user"
    r = client.put(f"/api/studies/{sid}/settings", json={"injection_time_s": -12.5})
    assert r.status_code == 200 and r.json()["settings"]["injection_time_s"] == -12.5
    from ceuskit.web.jobs import options_from_settings

    assert options_from_settings(r.json()["settings"]).injection_time_s == -12.5
    r = client.put(f"/api/studies/{sid}/settings", json={"fps": 2.0})
    assert r.status_code == 200
    # The DICOM declares its frame time, which wins over a frame rate given for untimed files.
    assert r.json()["settings"]["fps"] == 2.0
    assert r.json()["info"]["times_s"][1] == pytest.approx(1 / DEMO["fps"])
    assert r.json()["info"]["panels"]["contrast"]["bounds_xyxy"] == list(phantom.contrast_panel.bounds)


def test_dynamic_range_auto_and_colour_map_settings_reach_the_analysis(
        make_client: AppFactory) -> None:
    # Issue 17: the web app offers what the CLI does (--dynamic-range auto, --colour-map).
    from ceuskit.web.jobs import options_from_settings

    client = make_client()
    sid = _demo(client)["id"]
    assert client.get(f"/api/studies/{sid}").json()["settings"]["colour_map"] == "auto"
    r = client.put(f"/api/studies/{sid}/settings", json={"dynamic_range_db": "auto", "colour_map": "gold"})
    assert r.status_code == 200, r.text
    settings = r.json()["settings"]
    assert settings["dynamic_range_db"] == "auto" and settings["colour_map"] == "gold"
    options = options_from_settings(settings)
    assert options.dynamic_range_source == "auto" and options.colour_map == "gold"
    # The preview cannot wait for the estimate: it says which value it used.
    tic = client.get(f"/api/studies/{sid}/tic-preview").json()
    assert tic["dynamic_range_db"] == 60.0 and "estimates the dynamic range" in tic["note"]
    r = client.put(f"/api/studies/{sid}/settings", json={"dynamic_range_db": 45})
    assert r.json()["settings"]["dynamic_range_db"] == 45.0
    assert client.get(f"/api/studies/{sid}/tic-preview").json()["note"] is None


@pytest.mark.parametrize(("body", "words"), [
    ({"colour_map": "/etc/passwd"}, "colour-map setting"),
    ({"dynamic_range_db": "guess"}, "auto"),
    ({"dynamic_range_db": 5}, "dynamic"),
    ({"dynamic_range_db": "loud"}, "number"),
    ({"fps": -3}, "fps"),
    ({"model": "cubic"}, "model"),
    ({"motion": "wobble"}, "motion"),
    ({"panel": [0, 0, 9999, 10]}, "panel"),
    ({"panel": [10, 10, 5, 5]}, "panel"),
    ({"panel": "left"}, "panel"),
    ({"reference_frame": 100000}, "reference_frame"),
    ({"reference_frame": -1}, "reference"),
    ({"colour": "red"}, "unknown setting"),
    ({"injection_time_s": "soon"}, "number"),
    ({"injection_time_s": 1e9}, "injection"),
])
def test_bad_settings_are_refused_with_a_message(shared_study: tuple[Any, dict[str, Any]],
                                                 body: dict[str, Any], words: str) -> None:
    client, study = shared_study
    r = client.put(f"/api/studies/{study['id']}/settings", json=body)
    assert r.status_code == 422, r.text
    assert words in _message(r)
    assert client.get(f"/api/studies/{study['id']}").json()["settings"] == study["settings"]


# --------------------------------------------------------------------------- clinical case


def test_case_form_validation(make_client: AppFactory) -> None:
    client = make_client()
    sid = _demo(client)["id"]
    schema = client.get("/api/case/schema").json()
    assert "age_years" in schema["properties"]
    page = client.get(f"/studies/{sid}").text
    assert 'name="d_dimer.unit"' in page and 'name="wells.active_cancer"' in page
    good = {"age_years": 52, "sex": "female", "d_dimer": {"value": 0.4, "unit": "mg/L FEU"},
            "wells": {"active_cancer": False, "previous_dvt": None}, "vein": ""}
    r = client.put(f"/api/studies/{sid}/case", json=good)
    assert r.status_code == 200, r.text
    assert r.json()["case"] == {"age_years": 52.0, "sex": "female",
                                "d_dimer": {"value": 0.4, "unit": "mg/L FEU"},
                                "wells": {"active_cancer": False}}
    bad = {"age_years": -3, "sex": "unknown", "d_dimer": {"value": 2.0}, "inr": 1.1}
    r = client.put(f"/api/studies/{sid}/case", json=bad)
    assert r.status_code == 422
    fields = r.json()["fields"]
    assert set(fields) == {"age_years", "sex", "d_dimer.unit"}
    assert "unit" in fields["d_dimer.unit"]
    # The last good case stays.
    assert client.get(f"/api/studies/{sid}").json()["case"]["sex"] == "female"
    assert client.put(f"/api/studies/{sid}/case", json=[1]).status_code == 422
    assert client.put(f"/api/studies/{sid}/case", json={"shoe_size": 43}).status_code == 422


# --------------------------------------------------------------------------- analyses


def test_analysis_runs_and_failed_rerun_keeps_the_last_results(make_client: AppFactory,
                                                               phantom: Phantom) -> None:
    client = make_client()
    sid = _demo(client)["id"]
    case = {"age_years": 52, "anticoagulation": {"duration_days": 700, "response": "unchanged"}}
    assert client.put(f"/api/studies/{sid}/case", json=case).status_code == 200
    r = client.post(f"/api/studies/{sid}/analyses")
    assert r.status_code == 202 and r.json()["status"] in ("queued", "running", "done")
    first = wait_for(client, r.json()["id"])
    assert first["status"] == "done", first["error"]
    assert {"results.json", "report.html", "rois.json"} <= set(first["files"])
    results = client.get(f"/api/studies/{sid}/results").json()
    # The study's case went to the pipeline: stored with the analysis, and assessed.
    stored = client.get(f"/api/analyses/{first['id']}/files/case.json").json()
    assert stored == client.get(f"/api/studies/{sid}").json()["case"]
    assert results["assessment"]["level"] in ("high", "intermediate", "low")
    assert results["assessment"]["suspect_neoplasm"] is True  # an enhancing tumour phantom
    assert results == client.get(f"/api/analyses/{first['id']}/files/results.json").json()
    for name, truth in phantom.truth["rois"].items():
        ttp = results["rois"][name]["perfusion"]["time_to_peak_s"]
        assert ttp == pytest.approx(truth["perfusion"]["time_to_peak_s"], abs=1.5), name
    assert client.get(f"/api/analyses/{first['id']}/files/rois.json").json() == phantom.rois
    report = client.get(f"/api/analyses/{first['id']}/files/report.html", params={"download": 1})
    assert report.status_code == 200 and "attachment" in report.headers["content-disposition"]
    for png in (f for f in first["files"] if f.endswith(".png")):
        assert client.get(f"/api/analyses/{first['id']}/files/{png}").content[:4] == b"\x89PNG"
    # The results as the report presents them: one fragment, in the report's order, same sentences.
    fragment = client.get(f"/api/analyses/{first['id']}/report-content")
    assert fragment.status_code == 200 and fragment.headers["content-type"].startswith("text/html")
    body = fragment.text
    assert body.index('id="answer"') < body.index('id="tic-plot"') < body.index('id="findings"') \
        < body.index('id="details"') < body.index('id="appendix"')
    from ceuskit.report.content import report_content

    page = " ".join(report.text.split())
    for line in report_content(results)["answer"]:
        escaped = line.replace("'", "&#39;")
        assert escaped in body and escaped in page, line
    assert client.get(f"/api/analyses/{'0' * 32}/report-content").status_code == 404

    # A panel that leaves the ROIs outside: the settings are accepted, the analysis fails...
    assert client.put(f"/api/studies/{sid}/settings", json={"panel": [8, 16, 100, 100]}).status_code == 200
    second = wait_for(client, client.post(f"/api/studies/{sid}/analyses").json()["id"])
    assert second["status"] == "failed"
    assert "outside the contrast panel" in second["error"] and "\n" not in second["error"]
    # ... and the study still shows the first analysis, unchanged.
    study = client.get(f"/api/studies/{sid}").json()
    assert study["current_analysis"]["id"] == first["id"]
    assert study["latest_analysis"]["id"] == second["id"]
    assert client.get(f"/api/studies/{sid}/results").json() == results
    assert [a["status"] for a in client.get(f"/api/studies/{sid}/analyses").json()] == ["failed", "done"]
    leftovers = list((Path(client.app.state.config.data_dir) / "studies" / sid / "analyses").iterdir())
    assert [p.name for p in leftovers] == [first["id"]]


def test_results_survive_a_restart_without_recomputing(make_client: AppFactory, tmp_path: Path) -> None:
    data = tmp_path / "data"
    client = make_client(data)
    sid = _demo(client)["id"]
    done = wait_for(client, client.post(f"/api/studies/{sid}/analyses").json()["id"])
    assert done["status"] == "done"
    results = client.get(f"/api/studies/{sid}/results").json()
    client.__exit__(None, None, None)

    # A new server on the same directory, with a runner that refuses any work.
    restarted = make_client(data)

    def no_work(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("reopening a study must not recompute it")

    restarted.app.state.runner.submit = no_work
    study = restarted.get(f"/api/studies/{sid}").json()
    assert study["current_analysis"]["id"] == done["id"]
    assert study["current_analysis"]["status"] == "done"
    assert restarted.get(f"/api/studies/{sid}/results").json() == results
    assert len(restarted.get(f"/api/studies/{sid}/analyses").json()) == 1
    page = restarted.get(f"/studies/{sid}").text
    assert done["id"] in page


def test_a_restart_marks_interrupted_analyses_failed(make_client: AppFactory, tmp_path: Path) -> None:
    from ceuskit.web.db import AnalysisRow, Store

    data = tmp_path / "data"
    client = make_client(data)
    sid = _demo(client)["id"]
    client.__exit__(None, None, None)
    store = Store(f"sqlite:///{data / 'ceuskit.db'}")
    with store.session() as s:
        s.add(AnalysisRow(id=HEX, study_id=sid, status="running", stage="fitting"))
    store.dispose()
    part = data / "studies" / sid / "analyses" / f"{HEX}.part"
    part.mkdir(parents=True)
    restarted = make_client(data)
    a = restarted.get(f"/api/analyses/{HEX}").json()
    assert a["status"] == "failed" and "interrupted" in a["error"]
    assert not part.exists()
    assert restarted.get(f"/api/studies/{sid}/results").status_code == 404


def test_second_analysis_while_one_is_queued_is_refused(make_client: AppFactory) -> None:
    client = make_client()
    sid = _demo(client)["id"]
    # Hold the job in the queue: the runner's pool is replaced by one that never runs it.
    client.app.state.runner.submit = lambda job, on_lost: None
    assert client.post(f"/api/studies/{sid}/analyses").status_code == 202
    r = client.post(f"/api/studies/{sid}/analyses")
    assert r.status_code == 409 and "running" in _message(r)
    assert client.delete(f"/api/studies/{sid}").status_code == 409


def test_missing_study_or_results(make_client: AppFactory) -> None:
    client = make_client()
    for method, url in (("get", f"/api/studies/{HEX}"), ("put", f"/api/studies/{HEX}/rois"),
                        ("put", f"/api/studies/{HEX}/settings"), ("post", f"/api/studies/{HEX}/analyses"),
                        ("get", f"/api/studies/{HEX}/results"), ("get", f"/api/studies/{HEX}/frames/0.png"),
                        ("get", f"/api/studies/{HEX}/tic-preview"), ("get", f"/studies/{HEX}")):
        kwargs = {"json": {}} if method == "put" else {}
        r = getattr(client, method)(url, **kwargs)
        assert r.status_code == 404, url
    sid = _demo(client)["id"]
    r = client.get(f"/api/studies/{sid}/results")
    assert r.status_code == 404 and "no finished analysis" in _message(r)


# --------------------------------------------------------------------------- security


def test_token_is_required_when_configured(make_client: AppFactory) -> None:
    client = make_client(token="s3cret-token")
    r = client.get("/api/studies")
    assert r.status_code == 401 and "token" in _message(r)
    assert client.get("/api/studies", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/api/studies/demo", json={}).status_code == 401
    assert client.get("/api/studies", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    assert client.get("/static/app.css").status_code == 200
    assert client.get("/login").status_code == 200
    bad = client.post("/login", data={"token": "nope", "next": "/"}, follow_redirects=False)
    assert bad.status_code == 401 and "not right" in bad.text
    ok = client.post("/login", data={"token": "s3cret-token", "next": "//evil.example/"},
                     follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/"
    assert client.get("/api/studies").status_code == 200  # the cookie now
    client.cookies.clear()
    once = client.get("/?token=s3cret-token&x=1", follow_redirects=False)
    assert once.status_code == 303 and once.headers["location"] == "/?x=1"
    assert "ceuskit_token" in once.headers["set-cookie"] and "httponly" in once.headers["set-cookie"].lower()


def test_host_header_guard(make_client: AppFactory) -> None:
    client = make_client(allowed_hosts=["127.0.0.1", "localhost"])
    assert client.get("/api/studies", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/api/studies", headers={"Host": "127.0.0.1:8000"}).status_code == 200


def test_plotly_is_served_locally(make_client: AppFactory) -> None:
    client = make_client()
    r = client.get("/static/plotly.min.js")
    assert r.status_code == 200 and "plotly" in r.text[:2000].lower()
    assert client.get("/openapi.json").json()["paths"]["/api/studies"]["post"]["summary"].startswith("Upload")


def test_serve_requires_a_token_beyond_loopback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import uvicorn

    from ceuskit.web import server

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    assert server.serve("0.0.0.0", 8123, tmp_path / "d1") == 0
    config = seen["app"].state.config
    out = capsys.readouterr().out
    assert config.token and config.token in out and out.count(config.token) == 1
    assert seen["access_log"] is False and seen["host"] == "0.0.0.0"
    assert server.serve("127.0.0.1", 8124, tmp_path / "d2") == 0
    config = seen["app"].state.config
    assert config.token is None and "127.0.0.1" in config.allowed_hosts
    assert server.serve("127.0.0.1", 8125, tmp_path / "d3", token="given") == 0
    assert seen["app"].state.config.token == "given"


def test_cli_serve_usage() -> None:
    from ceuskit.cli import main

    assert main(["serve", "--port", "0", "--data", "/proc/forbidden/x"]) == 2
    assert main(["serve", "--max-upload-mb", "-1"]) == 2


def test_two_analyses_run_at_once_and_pages_stay_served(make_client: AppFactory,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two users' analyses run side by side, and pages answer while both are in progress.

    Each analysis is held inside the pipeline until both have started (a barrier that
    breaks, failing the analyses, if they were run one after the other) and then until the
    test has loaded pages; no timing is measured.
    """
    import threading

    import ceuskit.api

    real = ceuskit.api.analyze_to_dir
    both_started = threading.Barrier(3)  # two analyses + this test
    release = threading.Event()

    def held(*args: Any, case: Any = None, **kwargs: Any) -> Any:
        both_started.wait(timeout=60)
        if not release.wait(timeout=60):
            raise RuntimeError("never released")
        return real(*args, case=case, **kwargs)

    monkeypatch.setattr(ceuskit.api, "analyze_to_dir", held)
    client = make_client(workers=2)
    studies = [_demo(client)["id"], _demo(client)["id"]]
    jobs = [client.post(f"/api/studies/{sid}/analyses").json()["id"] for sid in studies]
    both_started.wait(timeout=60)  # raises BrokenBarrierError unless both analyses are inside
    for sid, aid in zip(studies, jobs, strict=True):
        assert client.get(f"/api/analyses/{aid}").json()["status"] == "running"
        page = client.get(f"/studies/{sid}")
        assert page.status_code == 200 and "<canvas" in page.text
        assert client.get(f"/api/studies/{sid}/frames/0.png").content[:4] == b"\x89PNG"
    release.set()
    for aid in jobs:
        assert wait_for(client, aid)["status"] == "done"


def test_results_show_while_the_report_and_pdf_are_still_being_written(
        make_client: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    import ceuskit.api

    real = ceuskit.api.analyze_to_dir
    checked = threading.Event()
    held = threading.Event()

    def held_after_results(cine: Any, roi: Any, out: Any, *args: Any, **kwargs: Any) -> Any:
        progress = kwargs["progress"]

        def hold(message: str) -> None:
            progress(message)
            if (Path(out) / "results.json").is_file() and not held.is_set():
                held.set()
                checked.wait(60)  # the page looks now, before report.html and the PDF exist

        kwargs["progress"] = hold
        return real(cine, roi, out, *args, **kwargs)

    monkeypatch.setattr(ceuskit.api, "analyze_to_dir", held_after_results)
    client = make_client()
    sid = _demo(client)["id"]
    aid = client.post(f"/api/studies/{sid}/analyses").json()["id"]
    try:
        deadline = time.monotonic() + 120
        while not held.is_set():
            assert time.monotonic() < deadline, "results.json never appeared"
            time.sleep(0.05)
        a = client.get(f"/api/analyses/{aid}").json()
        assert a["status"] == "running" and a["partial"] is True
        assert "results.json" in a["files"] and "report.pdf" not in a["files"]
        early = client.get(f"/api/analyses/{aid}/files/results.json")
        assert early.status_code == 200 and "rois" in early.json()
        assert client.get(f"/api/analyses/{aid}/files/report.pdf").status_code == 404
    finally:
        checked.set()
    done = wait_for(client, aid)
    assert done["status"] == "done" and done["partial"] is False
    assert {"results.json", "report.html", "report.pdf"} <= set(done["files"])
    assert client.get(f"/api/analyses/{aid}/files/results.json").json() == early.json()
