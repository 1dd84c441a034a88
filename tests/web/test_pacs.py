"""The web app against a real PACS (Debian's Orthanc on loopback) and the DICOM listener fed by dcmtk.

Orthanc runs with its own configuration, storage and ports (the fixture of
tests/io/test_orthanc.py; its ``DicomModalities`` lets the app's AE title
CEUSKIT find, get and store).  The listener test sends with dcmtk's
``/usr/bin/storescu`` (pynetdicom installs another ``storescu`` on PATH).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ceuskit.simulate import Phantom
from tests.io.test_orthanc import ORTHANC, orthanc  # noqa: F401  (the fixture)
from tests.web.conftest import AppFactory, wait_for
from tests.web.test_browser import CHROMIUM, CHROMIUM_ARGS, Server

STORESCU = Path("/usr/bin/storescu")
PM_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.30"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url: str, body: bytes) -> Any:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/dicom"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _pacs_yaml(tmp_path: Path, node: str) -> Path:
    aet, rest = node.split("@")
    host, port = rest.rsplit(":", 1)
    f = tmp_path / "pacs.yaml"
    f.write_text(f"calling_aet: CEUSKIT\ntimeout_s: 20\nnodes:\n  orthanc:\n    aet: {aet}\n"
                 f"    host: {host}\n    port: {port}\n", encoding="utf-8")
    return f


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_pages_show_the_pacs_actions_only_with_nodes(make_client: AppFactory, tmp_path: Path) -> None:
    plain = make_client(tmp_path / "plain")
    assert 'id="pacs-section"' not in plain.get("/").text and "pacs.js" not in plain.get("/").text
    cfg = tmp_path / "pacs.yaml"
    cfg.write_text("nodes:\n  main:\n    aet: PACS\n    host: 127.0.0.1\n    port: 1\n", encoding="utf-8")
    client = make_client(tmp_path / "with", pacs_config=cfg)
    page = client.get("/").text
    assert 'id="pacs-section"' in page and '<option value="main">main</option>' in page
    assert '<script src="/static/pacs.js"></script>' in page
    js = client.get("/static/pacs.js").text
    assert "innerHTML" not in js and "insertAdjacentHTML" not in js  # node and user text as text only
    sid = client.post("/api/studies/demo", json={"seed": 0}).json()["id"]
    study_page = client.get(f"/studies/{sid}").text
    assert 'id="pacs-send-button"' in study_page and "pacs.js" in study_page


@pytest.mark.skipif(ORTHANC is None, reason="Orthanc is not installed (apt-get install orthanc)")
def test_retrieve_from_orthanc_then_send_the_results_back(make_client: AppFactory, orthanc: Any,  # noqa: F811
                                                          phantom: Phantom, phantom_dicom: Path,
                                                          tmp_path: Path) -> None:
    url = orthanc["url"]
    uploaded = _post(url + "/instances", phantom_dicom.read_bytes())
    orthanc_study = uploaded["ParentStudy"]
    client = make_client(tmp_path / "data", pacs_config=_pacs_yaml(tmp_path, orthanc["node"]))
    assert [n["name"] for n in client.get("/api/pacs/nodes").json()] == ["orthanc"]

    # C-FIND: the study is found (no patient attribute in the answer).
    found = client.get("/api/pacs/nodes/orthanc/studies", params={"date": "", "modality": "US"})
    assert found.status_code == 200, found.text
    matches = found.json()
    assert len(matches) == 1 and "patient" not in json.dumps(matches).lower()
    uid = matches[0]["study_uid"]
    assert client.get("/api/pacs/nodes/orthanc/studies", params={"date": "19000101"}).json() == []

    # C-GET: its US cine becomes a study of the app.
    r = client.post("/api/pacs/nodes/orthanc/retrieve", json={"study_uid": uid})
    assert r.status_code == 201, r.text
    created = r.json()["studies"]
    assert len(created) == 1 and created[0]["format"] == "dicom"
    assert created[0]["display_name"].startswith("orthanc: ")
    sid = created[0]["id"]
    assert not list((tmp_path / "data" / "incoming").glob("get-*"))  # the work folder is removed

    # Analyse it, then drop dicom/ as if it ran before a PACS was configured: send writes it.
    assert client.put(f"/api/studies/{sid}/rois", json=phantom.rois).status_code == 200
    analysis = wait_for(client, client.post(f"/api/studies/{sid}/analyses").json()["id"])
    assert analysis["status"] == "done", analysis
    result_dir = tmp_path / "data" / "studies" / sid / "analyses" / analysis["id"]
    shutil.rmtree(result_dir / "dicom")
    r = client.post(f"/api/analyses/{analysis['id']}/send", json={"node": "orthanc"})
    assert r.status_code == 200, r.text
    sent = r.json()
    written = sorted(p.name for p in (result_dir / "dicom").glob("*.dcm"))
    assert sent["failed"] == 0 and sent["stored"] == len(written) >= 3
    assert sorted(f["name"] for f in sent["files"]) == written
    assert not list(result_dir.glob(".dicom*"))

    # Orthanc files them into the cine's study: the US, SEG, SR and Parametric Map series.
    assert _get(url + "/studies") == [orthanc_study]
    series = _get(f"{url}/studies/{orthanc_study}/series")
    modalities = {s["MainDicomTags"]["Modality"] for s in series}
    assert len(series) == 4 and {"US", "SEG", "SR"} <= modalities
    sop_classes = set()
    for s in series:
        first = s["Instances"][0]
        sop_classes.add(_get(f"{url}/instances/{first}/simplified-tags")["SOPClassUID"])
    assert PM_SOP_CLASS in sop_classes

    # A second send reuses the written objects.
    again = client.post(f"/api/analyses/{analysis['id']}/send", json={"node": "orthanc"}).json()
    assert again["stored"] == sent["stored"]

    # A cine that is not DICOM has no study to file into: 409 with the reason.
    from ceuskit.web.db import Study

    with client.app.state.store.session() as s:  # type: ignore[attr-defined]
        s.scalars(select(Study).where(Study.id == sid)).one().format = "video"
    shutil.rmtree(result_dir / "dicom")
    refused = client.post(f"/api/analyses/{analysis['id']}/send", json={"node": "orthanc"})
    assert refused.status_code == 409 and "not DICOM" in refused.json()["detail"]
    # Unknown node, unknown analysis.
    assert client.post(f"/api/analyses/{analysis['id']}/send", json={"node": "nope"}).status_code == 404
    assert client.post("/api/analyses/" + "0" * 32 + "/send", json={"node": "orthanc"}).status_code == 404


@pytest.mark.skipif(not STORESCU.exists(), reason="dcmtk is not installed (apt-get install dcmtk)")
def test_listener_files_a_cine_from_dcmtk_storescu_and_refuses_a_ct(phantom_dicom: Path,
                                                                    tmp_path: Path) -> None:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    from ceuskit.web.db import Study
    from ceuskit.web.listen import make_scp
    from ceuskit.web.security import stored_cine

    port = _free_port()
    data = tmp_path / "data"
    scp, store = make_scp(data, port, aet="CEUSKIT")
    scp.start()
    try:
        ok = subprocess.run([str(STORESCU), "-aet", "MODALITY", "-aec", "CEUSKIT", "-to", "20",
                             "127.0.0.1", str(port), str(phantom_dicom)],
                            capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stderr
        ct = get_testdata_file("CT_small.dcm")
        refused = None
        if ct is not None:
            refused = subprocess.run([str(STORESCU), "-aet", "MODALITY", "-aec", "CEUSKIT", "-to", "20",
                                      "-v", "127.0.0.1", str(port), str(ct)],
                                     capture_output=True, text=True, timeout=60)
    finally:
        scp.stop()
    with store.session() as s:
        rows = s.scalars(select(Study)).all()
        assert len(rows) == 1
        study = rows[0]
        assert study.format == "dicom" and "MODALITY" in study.display_name
        sid = study.id
    store.dispose()
    kept = dcmread(stored_cine(data / "studies" / sid, "dicom"), stop_before_pixels=True)
    assert kept.SOPInstanceUID == dcmread(phantom_dicom, stop_before_pixels=True).SOPInstanceUID
    if refused is not None:  # pydicom-data present: dcmtk reports the refusal (0x0122), nothing filed
        text = refused.stdout + refused.stderr
        assert "0122" in text or "Refused" in text, text
        assert not [p for p in (data / "incoming").rglob("*") if p.is_file()]


@pytest.mark.skipif(ORTHANC is None, reason="Orthanc is not installed (apt-get install orthanc)")
@pytest.mark.skipif(not CHROMIUM.exists(), reason="browser tests need /usr/bin/chromium")
def test_browser_query_and_retrieve(orthanc: Any, phantom_dicom: Path,  # noqa: F811
                                    tmp_path: Path) -> None:
    """The PACS section in chromium, under the app's CSP: a search shows the row, retrieve adds the study."""
    from playwright.sync_api import sync_playwright

    _post(orthanc["url"] + "/instances", phantom_dicom.read_bytes())
    data = tmp_path / "web"
    data.mkdir()
    _pacs_yaml(data, orthanc["node"])  # DIR/pacs.yaml is picked up without --pacs-config
    with Server(data) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("console", lambda m: problems.append(m.text)
                    if "Content Security Policy" in m.text else None)
            page.goto(srv.url + "/")
            page.select_option("#pacs-node", "orthanc")
            page.click("#pacs-search")
            try:
                page.wait_for_selector("#pacs-results tbody tr", timeout=30_000)
            except Exception:
                raise AssertionError(f"{page.text_content('#pacs-status')!r} {problems}") from None
            rows = page.locator("#pacs-results tbody tr")
            assert rows.count() == 1
            assert "on orthanc" in page.text_content("#pacs-status")
            rows.first.locator("button.pacs-retrieve").click()
            link = page.wait_for_selector("a.pacs-study-link", timeout=60_000)
            assert "added as a study" in page.text_content("#pacs-status")
            link.click()
            page.wait_for_url("**/studies/*")
            page.wait_for_selector("#pacs-send-button", state="attached")
            page.goto(srv.url + "/")
            assert page.locator("#study-list tbody tr").count() == 1
            assert not problems, problems
        finally:
            browser.close()


@pytest.mark.skipif(not STORESCU.exists(), reason="dcmtk is not installed (apt-get install dcmtk)")
def test_ceuskit_dicom_listen_command_receives_a_cine_that_opens_in_the_web_app(
        phantom_dicom: Path, make_client: AppFactory, tmp_path: Path) -> None:
    """The real command (`ceuskit dicom listen` as its own process), dcmtk's storescu, then the web app."""
    import os
    import signal
    import sys
    import time

    port = _free_port()
    data = tmp_path / "data"
    log = tmp_path / "listen.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "ceuskit.cli", "dicom", "listen", "--port",
                                 str(port), "--data", str(data), "--aet", "CEUSKIT"],
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:  # until the port accepts connections (bounded)
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "ceuskit dicom listen did not open its port"
            time.sleep(0.2)
        sent = subprocess.run([str(STORESCU), "-aet", "MODALITY", "-aec", "CEUSKIT", "-to", "20",
                               "127.0.0.1", str(port), str(phantom_dicom)],
                              capture_output=True, text=True, timeout=120)
        assert sent.returncode == 0, sent.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text()
    from pydicom import dcmread

    sent_ds = dcmread(phantom_dicom, stop_before_pixels=True)
    assert "received" in text.lower() or "stored" in text.lower() or "filed" in text.lower(), text
    for identifier in (str(sent_ds.PatientName), str(sent_ds.PatientID)):
        assert identifier not in text  # no patient identifiers in the listener's log
    client = make_client(data)
    studies = client.get("/api/studies").json()
    assert len(studies) == 1, (studies, text)
    sid = studies[0]["id"]
    study = client.get(f"/api/studies/{sid}").json()
    assert study["format"] == "dicom"
    frame = client.get(f"/api/studies/{sid}/frames/0.png")
    assert frame.status_code == 200 and frame.content[:4] == b"\x89PNG"
