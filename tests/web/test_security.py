"""Web app hardening: cross-site requests, security headers, login throttling, Host checks.

Each test drives the app as an attacker's page or a wrong client would and
checks that nothing changed (no study created) where a request is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ceuskit.web.security import LoginThrottle, cross_site
from ceuskit.web.server import host_names

from .conftest import AppFactory

OWN = "http://testserver"


def _n_studies(client: Any) -> int:
    return len(client.get("/api/studies").json())


def test_cross_site_posts_are_refused_and_change_nothing(make_client: AppFactory) -> None:
    client = make_client()
    before = _n_studies(client)
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Referer": "http://evil.example/page.html"}):
        r = client.post("/api/studies/demo", json={"seed": 1}, headers=headers)
        assert r.status_code == 403 and "cross-site" in r.json()["detail"], headers
    # A text/plain body (what a cross-site form or "simple" fetch sends) is refused even same-site.
    r = client.post("/api/studies/demo", content=b'{"seed": 1}',
                    headers={"Content-Type": "text/plain", "Origin": OWN})
    assert r.status_code == 415
    assert _n_studies(client) == before
    # The app's own pages (same Origin) and scripts without Origin still work.
    assert client.post("/api/studies/demo", json={"seed": 1}, headers={"Origin": OWN}).status_code == 201
    assert client.post("/api/studies/demo", json={"seed": 2}).status_code == 201
    assert _n_studies(client) == before + 2


def test_cross_site_delete_and_put_are_refused(make_client: AppFactory) -> None:
    client = make_client()
    sid = client.post("/api/studies/demo", json={"seed": 3}).json()["id"]
    evil = {"Origin": "https://evil.example"}
    assert client.delete(f"/api/studies/{sid}", headers=evil).status_code == 403
    assert client.put(f"/api/studies/{sid}/rois", json={"space": "panel", "rois": []},
                      headers=evil).status_code == 403
    assert client.get(f"/api/studies/{sid}").status_code == 200


def test_every_answer_carries_the_security_headers(make_client: AppFactory) -> None:
    client = make_client()
    for path in ("/", "/api/studies", "/static/plotly.min.js", "/api/studies/" + "0" * 32):
        h = client.get(path).headers
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff", path
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert "script-src 'self'" in h["content-security-policy"]
        assert h["referrer-policy"] == "same-origin"


def test_wrong_logins_are_throttled(make_client: AppFactory) -> None:
    client = make_client(token="s3cret-token")
    codes = [client.post("/login", data={"token": f"wrong-{i}", "next": "/"}, follow_redirects=False
                         ).status_code for i in range(7)]
    assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
    # Even the right token waits until the window has passed.
    r = client.post("/login", data={"token": "s3cret-token", "next": "/"}, follow_redirects=False)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


def test_throttle_window_expires() -> None:
    t = LoginThrottle(limit=2, window_s=10.0)
    t.failed("a", 0.0)
    t.failed("a", 1.0)
    assert t.retry_after_s("a", 2.0) == pytest.approx(8.0) and t.retry_after_s("b", 2.0) == 0
    assert t.retry_after_s("a", 10.5) == 0.0


def test_host_is_checked_with_a_token_too(make_client: AppFactory) -> None:
    client = make_client(token="s3cret-token", allowed_hosts=["ceus.example.org"])
    auth = {"Authorization": "Bearer s3cret-token"}
    assert client.get("/api/studies", headers={**auth, "Host": "evil.example"}).status_code == 400
    assert client.get("/api/studies", headers={**auth, "Host": "ceus.example.org:8000"}).status_code == 200


def test_host_names_for_each_kind_of_address() -> None:
    assert "localhost" in host_names("127.0.0.1") and "evil.example" not in host_names("127.0.0.1")
    assert host_names("10.1.2.3") == ["10.1.2.3"]
    assert "ceus.example.org" in host_names("10.1.2.3", ["CEUS.example.org"])
    wild = host_names("0.0.0.0")
    assert "127.0.0.1" in wild and len(wild) > 3


def test_serve_always_checks_the_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import uvicorn

    from ceuskit.web import server

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    server.serve("10.9.8.7", 8126, tmp_path / "d", token="given", allowed_hosts=["ceus.local"])
    assert seen["app"].state.config.allowed_hosts == ["10.9.8.7", "ceus.local"]


def test_cross_site_rule() -> None:
    assert not cross_site(None, None, "http", "127.0.0.1:8000")  # scripts send neither
    assert not cross_site("http://127.0.0.1:8000", None, "http", "127.0.0.1:8000")
    assert cross_site("http://127.0.0.1:8001", None, "http", "127.0.0.1:8000")
    assert cross_site(None, "http://localhost:8000/x", "http", "127.0.0.1:8000")
    assert not cross_site(None, "http://127.0.0.1:8000/studies/1", "http", "127.0.0.1:8000")


def test_forged_npz_upload_is_a_4xx_not_a_500(make_client: AppFactory, tmp_path: Path) -> None:
    from tests.io.test_arrays import _forged_npz

    client = make_client()
    data = _forged_npz(tmp_path / "forged.npz").read_bytes()
    r = client.post("/api/studies", content=data, headers={"Content-Type": "application/octet-stream",
                                                           "X-Filename": "forged.npz"})
    assert 400 <= r.status_code < 500 and "claims" in r.json()["detail"], r.text
    assert _n_studies(client) == 0
