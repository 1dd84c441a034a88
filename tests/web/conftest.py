"""Fixtures of the web app tests: a short simulated study and app factories."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ceuskit.simulate import Phantom, SimulationSpec, simulate
from ceuskit.web.app import WebConfig, create_app

#: The demo study the tests use: long enough for lesion and reference to peak
#: and wash out (truth: peaks near 14 s and 23 s), short enough to analyse fast.
DEMO = {"duration_s": 40.0, "fps": 4.0}


@pytest.fixture(scope="session")
def phantom() -> Phantom:
    """The phantom the app's demo study is made from (same spec, seed 0)."""
    return simulate(SimulationSpec(scenario="tumor", seed=0, **DEMO))


@pytest.fixture(scope="session")
def phantom_dicom(phantom: Phantom, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ceuskit.simulate import write_phantom

    return write_phantom(phantom, tmp_path_factory.mktemp("phantom"), "dicom")["cine"]


AppFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[AppFactory]:
    """Build a TestClient on a data directory (default: this test's tmp dir)."""
    clients: list[TestClient] = []

    def make(data_dir: Path | None = None, **options: Any) -> TestClient:
        options.setdefault("job_mode", "thread")
        options.setdefault("demo", dict(DEMO))
        config = WebConfig(data_dir=data_dir or tmp_path / "data", **options)
        client = TestClient(create_app(config))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def wait_for(client: TestClient, analysis_id: str, timeout_s: float = 180.0) -> dict[str, Any]:
    """Poll an analysis until it is done or failed."""
    deadline = time.monotonic() + timeout_s
    while True:
        a = client.get(f"/api/analyses/{analysis_id}").json()
        if a["status"] in ("done", "failed"):
            return a
        if time.monotonic() > deadline:
            raise AssertionError(f"analysis still {a['status']} after {timeout_s} s")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def shared_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    """One client with one demo study, for tests that only read or are refused."""
    config = WebConfig(data_dir=tmp_path_factory.mktemp("shared"), job_mode="thread", demo=dict(DEMO))
    with TestClient(create_app(config)) as client:
        r = client.post("/api/studies/demo", json={"seed": 0})
        assert r.status_code == 201, r.text
        yield client, r.json()
