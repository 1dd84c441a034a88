"""DICOM networking without a PACS: node parsing, AE titles, settings files, errors, an in-process SCP."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest

from ceuskit.cli import main
from ceuskit.errors import InputError
from ceuskit.io import dicom_net
from ceuskit.io.dicom_net import (
    STATUS_SOP_CLASS_NOT_SUPPORTED,
    StorageSCP,
    check_aet,
    dicom_files,
    load_nodes,
    parse_node,
    send_files,
)
from ceuskit.simulate import SimulationSpec, simulate, write_phantom


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = SimulationSpec(scenario="tumor", seed=3, fps=2.0, duration_s=6.0)
    return write_phantom(simulate(spec), tmp_path_factory.mktemp("net"), "dicom")["cine"]


@pytest.fixture(scope="module")
def ct() -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    if path is None:
        pytest.skip("pydicom-data is not installed")
    return Path(str(path))


def test_parse_node() -> None:
    n = parse_node("ORTHANC@127.0.0.1:4242", calling_aet="ME", timeout_s=3)
    assert (n.aet, n.host, n.port, n.calling_aet, n.timeout_s) == ("ORTHANC", "127.0.0.1", 4242, "ME", 3.0)
    assert str(n) == "ORTHANC@127.0.0.1:4242"
    assert parse_node("PACS@[::1]:104").host == "::1"
    assert parse_node("PACS@pacs.example.org:11112").host == "pacs.example.org"


@pytest.mark.parametrize(("text", "needle"), [
    ("ORTHANC127.0.0.1:4242", "is not AET@HOST:PORT"),
    ("ORTHANC@127.0.0.1", "is not AET@HOST:PORT"),
    ("ORTHANC@127.0.0.1:0", "is not a TCP port"),
    ("ORTHANC@127.0.0.1:70000", "is not a TCP port"),
    ("@127.0.0.1:4242", "cannot be empty"),
    ("    @127.0.0.1:4242", "cannot be empty"),
    ("ABCDEFGHIJKLMNOPQ@127.0.0.1:4242", "17 characters"),
    ("A\\B@127.0.0.1:4242", "holds"),
    ("A\tB@127.0.0.1:4242", "holds"),
])
def test_parse_node_refuses(text: str, needle: str) -> None:
    with pytest.raises(InputError, match="^--to: .*" + needle.replace("\\", "\\\\")) as err:
        parse_node(text)
    assert "\n" not in str(err.value)


def test_check_aet() -> None:
    assert check_aet(" CEUSKIT ") == "CEUSKIT"
    assert check_aet("A" * 16) == "A" * 16
    with pytest.raises(InputError, match="Ä"):
        check_aet("ÄT")


def test_load_nodes(tmp_path: Path) -> None:
    f = tmp_path / "pacs.yaml"
    f.write_text("calling_aet: ME\ntimeout_s: 4\nnodes:\n  main:\n    aet: ORTHANC\n    host: 127.0.0.1\n"
                 "    port: 4242\n  other:\n    aet: B\n    host: pacs\n    port: 104\n    timeout_s: 30\n",
                 encoding="utf-8")
    nodes = load_nodes(f)
    assert list(nodes) == ["main", "other"]
    assert (nodes["main"].calling_aet, nodes["main"].timeout_s, nodes["other"].timeout_s) == ("ME", 4.0, 30.0)


@pytest.mark.parametrize(("text", "needle"), [
    ("nodes: [\n", "not valid YAML"),
    ("nodez: {}\n", "unknown key(s) nodez"),
    ("nodes:\n  a:\n    aet: X\n    host: h\n", "missing port"),
    ("nodes:\n  a:\n    aet: X\n    host: h\n    port: 99999\n", "nodes.a.port"),
    ("nodes:\n  a:\n    aet: WAY_TOO_LONG_AE_TITLE\n    host: h\n    port: 1\n", "nodes.a.aet"),
    ("nodes:\n  a:\n    aet: X\n    host: h\n    port: 1\n    colour: red\n", "unknown key(s) colour"),
    ("nodes:\n  'a b':\n    aet: X\n    host: h\n    port: 1\n", "node name"),
    ("timeout_s: -1\nnodes: {}\n", "timeout_s"),
])
def test_load_nodes_refuses(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "pacs.yaml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=r"pacs\.yaml") as err:
        load_nodes(f)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unreachable_port_is_one_line_error(cine: Path) -> None:
    node = parse_node(f"NOBODY@127.0.0.1:{free_port()}", timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(InputError, match="no connection within 1 s"):
        send_files([cine], node)
    assert time.monotonic() - started < 10


def test_cli_send_errors(cine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dicom", "send", str(cine), "--to", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "AET@HOST:PORT" in err
    assert main(["dicom", "send", str(cine), "--to", f"X@127.0.0.1:{free_port()}", "--timeout", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no connection" in err
    assert main(["dicom", "send", str(tmp_path / "missing.dcm"), "--to", "X@127.0.0.1:104"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_dicom_files_walks_folders(cine: Path, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.dcm").write_bytes(cine.read_bytes())
    (tmp_path / "notes.txt").write_text("not DICOM", encoding="utf-8")
    assert dicom_files([tmp_path]) == [tmp_path / "sub" / "a.dcm"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM files"):
        dicom_files([tmp_path / "empty"])
    with pytest.raises(InputError, match="no such file"):
        dicom_files([tmp_path / "nothing-here"])


def test_scp_files_us_and_refuses_others(cine: Path, ct: Path, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """In-process round trip: our SCU to our SCP; US filed, CT refused with 0x0122, a text file not sent."""
    filed: list[tuple[Path, str]] = []

    def on_cine(path: Path, calling: str) -> str:
        filed.append((path, calling))
        return "kept"

    port = free_port()
    scp = StorageSCP(aet="LISTENER", port=port, incoming=tmp_path / "in", on_cine=on_cine)
    scp.start()
    try:
        junk = tmp_path / "junk.dcm"
        junk.write_text("not DICOM", encoding="utf-8")
        with caplog.at_level(logging.INFO, logger="ceuskit.dicom"):
            results = send_files([cine, ct, junk], parse_node(f"LISTENER@127.0.0.1:{port}",
                                                             calling_aet="TESTER", timeout_s=5))
    finally:
        scp.stop()
    ok, refused, junk_result = results
    assert ok.ok and ok.status == 0 and ok.sop_class == "Ultrasound Multi-frame Image Storage"
    assert not refused.ok and refused.status == STATUS_SOP_CLASS_NOT_SUPPORTED
    assert "0x0122" in refused.message
    assert not junk_result.ok and junk_result.status is None and "not sent" in junk_result.message
    assert len(filed) == 1 and filed[0][1] == "TESTER" and filed[0][0].read_bytes()[128:132] == b"DICM"
    log_text = caplog.text
    assert "CT Image Storage" in log_text and "TESTER" in log_text
    # No patient attribute of the refused CT reaches the log.
    assert "CompressedSamples" not in log_text and "1CT1" not in log_text


def test_scp_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        scp = StorageSCP(aet="X", port=port, incoming=tmp_path, on_cine=lambda p, a: "")
        with pytest.raises(InputError, match="cannot listen"):
            scp.start()


def test_default_timeout_is_bounded() -> None:
    assert 0 < dicom_net.DEFAULT_TIMEOUT_S <= 60
