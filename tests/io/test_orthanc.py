"""ceuskit against a real PACS: Debian's Orthanc on loopback, in a temporary folder."""

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from ceuskit.api import analyze_to_dir
from ceuskit.cli import main
from ceuskit.io.dicom_net import find_studies, parse_node
from ceuskit.simulate import SimulationSpec, simulate, write_phantom

ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
pytestmark = pytest.mark.skipif(ORTHANC is None, reason="Orthanc is not installed (apt-get install orthanc; "
                                                        "scripts/test.sh does)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """An Orthanc started for these tests only (own config, storage and ports); stopped after."""
    base = tmp_path_factory.mktemp("orthanc")
    dicom_port, http_port = _free_port(), _free_port()
    config = {
        "Name": "ceuskit-test", "StorageDirectory": str(base / "db"), "IndexDirectory": str(base / "db"),
        "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": True,
        "DicomModalities": {"ceuskit": {"AET": "CEUSKIT", "Host": "127.0.0.1", "Port": 1,
                                        "AllowGet": True, "AllowFind": True, "AllowStore": True}},
        "Plugins": [], "HttpServerEnabled": True,
    }
    (base / "orthanc.json").write_text(json.dumps(config))
    log = (base / "orthanc.log").open("w")
    proc = subprocess.Popen([ORTHANC, str(base / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/system", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start: {(base / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.25)
        yield {"url": url, "node": f"ORTHANC@127.0.0.1:{dicom_port}"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_send_a_study_and_its_results_then_find_it(orthanc, tmp_path, capsys):
    phantom = simulate(SimulationSpec(seed=2, fps=4.0, duration_s=40.0))
    files = write_phantom(phantom, tmp_path / "ph", "dicom")
    _analysis, paths = analyze_to_dir(files["cine"], files["rois"], tmp_path / "out", pdf=False, dicom=True)
    code = main(["dicom", "send", str(files["cine"]), str(paths["dicom"]), "--to", orthanc["node"]])
    out = capsys.readouterr().out
    assert code == 0, out
    studies = _get(orthanc["url"] + "/studies")
    assert len(studies) == 1  # the cine and every derived object filed in one study
    series = _get(f"{orthanc['url']}/studies/{studies[0]}/series")
    modalities = sorted(s["MainDicomTags"]["Modality"] for s in series)
    # The cine, the SEG, the Parametric Maps' one series and the SR.
    assert len(series) == 4 and {"SEG", "SR", "US"} <= set(modalities)
    n_instances = sum(len(s["Instances"]) for s in series)
    assert n_instances == 1 + len(list(paths["dicom"].iterdir()))
    # C-FIND finds it back, without asking for patient attributes.
    found = find_studies(parse_node(orthanc["node"]))
    assert len(found) == 1


def test_a_refusing_node_is_one_line_and_exit_2(orthanc, tmp_path, capsys):
    phantom = simulate(SimulationSpec(seed=3, fps=2.0, duration_s=20.0))
    files = write_phantom(phantom, tmp_path / "ph", "dicom")
    wrong = orthanc["node"].replace("ORTHANC@", "NOTORTHANC@")
    code = main(["dicom", "send", str(files["cine"]), "--to", wrong, "--timeout", "5"])
    err = capsys.readouterr().err
    assert code == 2 and "refused" in err and "\n" not in err.strip()
