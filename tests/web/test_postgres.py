"""The web app on PostgreSQL: a throwaway server, the full flow, a restart.

The server is Debian's PostgreSQL (``apt-get install postgresql``), started
under a temporary directory on a free loopback port and removed afterwards;
the tests are skipped when it is not installed.  As root the server runs as
the ``postgres`` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ceuskit.simulate import Phantom
from tests.web.conftest import AppFactory, wait_for

pytest.importorskip("psycopg", reason="psycopg is missing: pip install -e '.[postgres]' (or '.[test]')")


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL server, stopped and deleted after the module."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL is not installed (initdb not found under /usr/lib/postgresql/*/bin): "
                    "apt-get install postgresql")
    prefix: list[str] = []
    owner: str | None = None
    if os.geteuid() == 0:  # the server refuses to run as root
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as: "
                        "apt-get install postgresql")
        prefix, owner = ["runuser", "-u", "postgres", "--"], "postgres"
    root = Path(tempfile.mkdtemp(prefix="ceuskit-pg-"))
    data, sockets, logfile = root / "data", root / "sock", root / "server.log"
    sockets.mkdir()
    if owner is not None:
        for p in (root, sockets):
            shutil.chown(p, owner, owner)
    port = _free_port()

    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], cwd=root, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = logfile.read_text(errors="replace") if logfile.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}):\n"
                               f"{done.stdout}\n{done.stderr}\n{log}")

    try:
        run(initdb, "-D", str(data), "--auth=trust", "-U", "ceuskit", "--encoding=UTF8", "--no-locale")
        run(pg_ctl, "-D", str(data), "-l", str(logfile), "-o", f"-h 127.0.0.1 -p {port} -k {sockets}",
            "-w", "start")
        yield f"postgresql+psycopg://ceuskit@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():  # started, even if `start` then failed
            subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], cwd=root,
                           capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def _tables(url: str) -> set[str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.dialect.name == "postgresql"
            rows = conn.execute(text("SELECT table_name FROM information_schema.tables "
                                     "WHERE table_schema = 'public'"))
            return {r[0] for r in rows}
    finally:
        engine.dispose()


def test_the_app_stores_everything_in_postgres_and_survives_a_restart(
        postgres_url: str, make_client: AppFactory, tmp_path: Path, phantom: Phantom) -> None:
    from sqlalchemy import create_engine, text

    data = tmp_path / "data"
    client = make_client(data, db_url=postgres_url)
    assert client.app.state.store.engine.dialect.name == "postgresql"
    assert {"studies", "analyses"} <= _tables(postgres_url)

    r = client.post("/api/studies/demo", json={"seed": 0, "with_rois": False})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]

    # ROIs: the phantom's, under names that are not ASCII (JSON and text encodings).
    renamed = {"lesion": "Läsion «1»", "reference": "Muskel ø"}
    rois = {"space": "panel", "rois": [dict(roi, name=renamed.get(roi["role"], roi["name"]))
                                       for roi in phantom.rois["rois"]]}
    r = client.put(f"/api/studies/{sid}/rois", json=rois)
    assert r.status_code == 200, r.text
    saved_rois = r.json()
    assert [x["name"] for x in saved_rois["rois"]] == [x["name"] for x in rois["rois"]]

    case = {"age_years": 52, "sex": "female", "d_dimer": {"value": 0.4, "unit": "mg/L FEU"},
            "anticoagulation": {"duration_days": 700, "response": "unchanged"}}
    r = client.put(f"/api/studies/{sid}/case", json=case)
    assert r.status_code == 200, r.text
    saved_case = r.json()["case"]
    assert saved_case["sex"] == "female" and saved_case["d_dimer"]["unit"] == "mg/L FEU"

    r = client.post(f"/api/studies/{sid}/analyses")
    assert r.status_code == 202, r.text
    done = wait_for(client, r.json()["id"])
    assert done["status"] == "done", done["error"]
    assert done["finished"] is not None and done["finished"] >= done["created"]
    assert {"results.json", "report.html", "rois.json"} <= set(done["files"])
    results = client.get(f"/api/studies/{sid}/results").json()
    assert set(results["rois"]) == {x["name"] for x in rois["rois"]}
    before = client.get(f"/api/studies/{sid}").json()
    assert before["current_analysis"]["id"] == done["id"]

    # The rows are in PostgreSQL, not in a SQLite file beside the data.
    assert not (data / "ceuskit.db").exists()
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT current_analysis_id, rois, \"case\" FROM studies WHERE id = :id"),
                               {"id": sid}).one()
            status = conn.execute(text("SELECT status FROM analyses WHERE id = :id"),
                                  {"id": done["id"]}).scalar_one()
    finally:
        engine.dispose()
    assert row.current_analysis_id == done["id"] and status == "done"
    assert row.rois == saved_rois and row.case == saved_case
    client.__exit__(None, None, None)

    # A new server on the same directory and database, with a runner that refuses any work.
    restarted = make_client(data, db_url=postgres_url)

    def no_work(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("reopening a study must not recompute it")

    restarted.app.state.runner.submit = no_work
    assert sid in [s["id"] for s in restarted.get("/api/studies").json()]
    study = restarted.get(f"/api/studies/{sid}").json()
    assert study == before
    assert study["rois"] == saved_rois and study["case"] == saved_case
    assert study["current_analysis"]["status"] == "done"
    assert study["current_analysis"]["files"] == done["files"]
    assert restarted.get(f"/api/studies/{sid}/rois").json() == saved_rois
    assert restarted.get(f"/api/studies/{sid}/results").json() == results
    assert [a["id"] for a in restarted.get(f"/api/studies/{sid}/analyses").json()] == [done["id"]]
    assert restarted.get(f"/api/analyses/{done['id']}").json() == done
    assert done["id"] in restarted.get(f"/studies/{sid}").text
    assert not (data / "ceuskit.db").exists()


def test_delete_cascades_and_interrupted_runs_fail_on_postgres(postgres_url: str, make_client: AppFactory,
                                                               tmp_path: Path) -> None:
    from ceuskit.web.db import AnalysisRow, Store

    data = tmp_path / "data"
    client = make_client(data, db_url=postgres_url)
    sid = client.post("/api/studies/demo", json={"seed": 0}).json()["id"]
    client.__exit__(None, None, None)
    store = Store(postgres_url)
    aid = "0123456789abcdef" * 2
    with store.session() as s:
        s.add(AnalysisRow(id=aid, study_id=sid, status="running", stage="fitting"))
    store.dispose()

    restarted = make_client(data, db_url=postgres_url)
    a = restarted.get(f"/api/analyses/{aid}").json()
    assert a["status"] == "failed" and "interrupted" in a["error"]
    assert restarted.delete(f"/api/studies/{sid}").status_code == 204
    assert restarted.get(f"/api/studies/{sid}").status_code == 404
    assert restarted.get(f"/api/analyses/{aid}").status_code == 404


def test_non_finite_numbers_never_reach_a_json_column(postgres_url: str, make_client: AppFactory,
                                                      tmp_path: Path) -> None:
    """PostgreSQL's JSON refuses NaN and infinity: the case form refuses them first (422),
    and a direct write fails on SQLite too instead of storing what no response can return."""
    from sqlalchemy.exc import StatementError

    from ceuskit.web.db import Store, Study

    client = make_client(tmp_path / "data", db_url=postgres_url)
    sid = client.post("/api/studies/demo", json={"seed": 0}).json()["id"]
    good = {"age_years": 60, "d_dimer": {"value": 0.4, "unit": "mg/L FEU"}}
    assert client.put(f"/api/studies/{sid}/case", json=good).status_code == 200
    for body in (b'{"d_dimer": {"value": Infinity, "unit": "mg/L FEU"}}', b'{"age_years": NaN}',
                 b'{"anticoagulation": {"duration_days": Infinity}}'):
        r = client.put(f"/api/studies/{sid}/case", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (body, r.text)
    study = client.get(f"/api/studies/{sid}")
    assert study.status_code == 200 and study.json()["case"]["d_dimer"]["value"] == 0.4

    for url in (postgres_url, f"sqlite:///{tmp_path / 'other.db'}"):
        store = Store(url)
        try:
            # psycopg's dumper raises the ValueError itself; SQLAlchemy wraps sqlite3's.
            with pytest.raises((ValueError, StatementError), match="Out of range float values"):
                with store.session() as s:
                    s.add(Study(id="f" * 32, display_name="x", format="dicom", info={"rate": float("inf")}))
            with store.session() as s:
                assert s.get(Study, "f" * 32) is None
        finally:
            store.dispose()


def test_batch_writes_its_cohort_to_postgres(postgres_url: str, tmp_path: Path) -> None:
    """``ceuskit batch --db postgresql+psycopg://...``: the cohort's rows, queryable, and the web studies."""
    from sqlalchemy import create_engine, text

    from ceuskit.batch import run_batch
    from ceuskit.simulate import SimulationSpec, simulate, write_phantom

    rows = ["id,cine,roi,label"]
    for i, scenario in enumerate(("tumor", "bland")):
        f = write_phantom(simulate(SimulationSpec(scenario=scenario, seed=60 + i, fps=4.0,
                                                  duration_s=60.0)), tmp_path / f"c{i}", "npz")
        rows.append(f"PG{i},{f['cine']},{f['rois']},{scenario}")
    rows.append("PGX,nowhere.dcm,nowhere.json,bland")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "p.yaml").write_text("maps: false\npdf: false\nmotion: off\n")
    result = run_batch(tmp_path / "m.csv", tmp_path / "out", params_path=tmp_path / "p.yaml",
                       db_url=postgres_url, report=False)
    assert result.records["PGX"]["status"] == "failed"
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            cases = dict(conn.execute(text("SELECT case_id, status FROM cohort_cases")).all())
            lesion_pe = conn.execute(text(
                "SELECT c.label, p.peak_enhancement_au FROM cohort_cases c JOIN cohort_roi_parameters p "
                "ON p.cohort_case_id = c.id WHERE p.role = 'lesion' ORDER BY c.case_id")).all()
            studies = conn.execute(text("SELECT display_name FROM studies WHERE display_name "
                                        "LIKE 'PG%'")).scalars().all()
    finally:
        engine.dispose()
    assert cases == {"PG0": "ok", "PG1": "ok", "PGX": "failed"}
    assert lesion_pe[0][0] == "tumor" and lesion_pe[0][1] > 0
    assert sorted(studies) == ["PG0", "PG1"]
    assert not (tmp_path / "out" / "ceuskit.db").exists()  # nothing in SQLite when a URL is given
