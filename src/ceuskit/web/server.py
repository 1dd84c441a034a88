"""``ceuskit serve``: run the web app with uvicorn."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from ceuskit import DISCLAIMER
from ceuskit.errors import InputError
from ceuskit.web.security import is_loopback, new_token

LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1"]


def host_names(host: str, extra: list[str] | None = None) -> list[str]:
    """Host names the app answers to when listening on `host`.

    Loopback: the loopback names.  A specific address: that address.  All
    addresses (``0.0.0.0``, ``::``): this machine's names and addresses and
    the loopback names.  Plus every name in `extra` (``--allowed-host``).
    """
    import socket

    bare = host.strip("[]").lower()
    if is_loopback(bare):
        names = list(LOOPBACK_HOSTS)
    elif bare in ("0.0.0.0", "::"):
        names = list(LOOPBACK_HOSTS)
        for name in {socket.gethostname(), socket.getfqdn()}:
            names.append(name.lower())
            try:
                names += [str(info[4][0]).lower() for info in socket.getaddrinfo(name, None)]
            except OSError:
                pass
    else:
        names = [bare]
    names += [str(e).strip().strip("[]").lower() for e in (extra or []) if str(e).strip()]
    return sorted(set(names))


def serve(host: str = "127.0.0.1", port: int = 8000, data_dir: Path | None = None, *,
          db_url: str | None = None, token: str | None = None, max_upload_mb: float = 2048.0,
          workers: int = 2, allowed_hosts: list[str] | None = None,
          pacs_config: Path | None = None) -> int:
    """Start the app and block until it stops (Ctrl-C).

    A token is required whenever the app listens beyond loopback: the given
    one, or a fresh one printed once here.  The Host header must always be
    one of `host_names` (DNS rebinding guard), token or not.

    Raises
    ------
    InputError
        If the data directory cannot be created or the port is out of range.
    """
    import uvicorn

    from ceuskit.web.app import WebConfig, create_app

    if not 0 < port < 65536:
        raise InputError("--port", f"{port} is not a TCP port", "give a number from 1 to 65535")
    data = Path(data_dir) if data_dir is not None else Path("ceuskit-data")
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(data, f"data directory cannot be created ({exc.strerror})",
                         "choose another --data") from None
    loopback = is_loopback(host)
    if token is None and not loopback:
        token = new_token()
        # Printed once, on the console only: the log never carries it.
        print(f"ceuskit serve: access token (shown once): {token}", flush=True)
    config = WebConfig(data_dir=data, db_url=db_url, token=token, max_upload_mb=max_upload_mb,
                       workers=workers, allowed_hosts=host_names(host, allowed_hosts),
                       pacs_config=pacs_config)
    app = create_app(config)
    shown = f"[{host}]" if ":" in host else host
    print(f"ceuskit serve: http://{shown}:{port}/  (data in {data.resolve()})", flush=True)
    print(DISCLAIMER, flush=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    # uvicorn's access log would print query strings (a ?token=): the app logs requests itself.
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info")
    return 0
