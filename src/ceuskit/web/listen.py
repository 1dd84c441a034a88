"""``ceuskit dicom listen``: a Storage SCP that files received US cines as web-app studies.

A shell over `ceuskit.io.dicom_net.StorageSCP` and `ceuskit.web.intake`:
each received Ultrasound (Multi-frame) Image becomes a study of the store in
the data directory, exactly as if it had been uploaded; every other object
is refused with status 0x0122.  The log names AE titles, SOP classes and
study ids, never patient attributes.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ceuskit.errors import InputError

log = logging.getLogger("ceuskit.dicom")


def make_scp(data_dir: Path, port: int, *, aet: str, host: str = "127.0.0.1",
             db_url: str | None = None) -> tuple[Any, Any]:
    """(StorageSCP, Store) for a data directory; the SCP is not started yet."""
    from ceuskit.io.dicom_net import StorageSCP, check_aet
    from ceuskit.web.app import WebConfig
    from ceuskit.web.db import Store
    from ceuskit.web.intake import file_cine

    check_aet(aet, "--aet")
    if not 0 < port < 65536:
        raise InputError("--port", f"{port} is not a TCP port", "give a number from 1 to 65535")
    data = Path(data_dir)
    try:
        (data / "studies").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(data, f"data directory cannot be created ({exc.strerror})",
                         "choose another --data") from None
    store = Store(WebConfig(data_dir=data, db_url=db_url).database_url)

    def on_cine(path: Path, calling_aet: str) -> str:
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
        study = file_cine(store, data, path, f"DICOM from {calling_aet} ({when} UTC)"[:120])
        return f"study {study.id}"

    scp = StorageSCP(aet=aet, port=port, incoming=data / "incoming", on_cine=on_cine, host=host)
    return scp, store


def listen(data_dir: Path, port: int, *, aet: str, host: str = "127.0.0.1") -> int:
    """Run the Storage SCP until Ctrl-C or SIGTERM."""
    scp, store = make_scp(data_dir, port, aet=aet, host=host)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_a: stop.set())
    scp.start()
    print(f"ceuskit dicom listen: {scp.aet} on {host}:{port}, filing ultrasound cines as studies in "
          f"{Path(data_dir).resolve()}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        scp.stop()
        store.dispose()
    print("ceuskit dicom listen: stopped", flush=True)
    return 0
