"""Running the block fits of a parametric map on a Dask cluster.

`compute_maps` cuts the block curves into chunks of block rows and hands the
list of fitting tasks to a *runner*; `DaskRunner` is a runner that sends each
task (`ceuskit.maps.fit_block_chunk`) to a ``distributed`` cluster and
gathers the results in task order.  The tasks, their inputs and their order
are the ones the in-process loop runs, and each task is a pure function of
its inputs, so the maps are identical to the single-process run (bit for
bit: tests/test_maps.py holds them to exact equality).

Where the work goes (`DaskRunner(scheduler)`):

- a ``distributed.Client``: that client's cluster;
- ``"tcp://host:port"`` (any address a Client accepts): an existing
  scheduler, e.g. one started with ``dask scheduler`` / ``dask worker``;
- ``"local"``: a `distributed.LocalCluster` started for this map (one
  single-threaded worker process per CPU) and closed after it;
- ``"none"``: in-process, no Dask;
- ``None`` / ``"auto"`` (the default): in-process for maps of fewer than
  `LOCAL_CLUSTER_MIN_CURVES` block curves, a LocalCluster from there on.
  The in-process path already spreads the Levenberg-Marquardt iterations
  over every core (numba threads), but screening, starting values and
  descriptors run in one thread; worker processes run those in parallel
  too, which pays off once the fits take long enough to amortise starting
  the cluster (a few seconds).

Scripts that start a LocalCluster (``"local"`` or a large ``"auto"`` map)
must guard their entry point with ``if __name__ == "__main__":``: worker
processes re-import the main module.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from ceuskit.errors import InputError
from ceuskit.maps import fit_block_chunk

#: Block curves from which ``"auto"`` starts a LocalCluster: a per-pixel map
#: (``--block 1``) of a 512 x 512 panel.  Below, starting worker processes
#: costs more than it saves on a few cores.
LOCAL_CLUSTER_MIN_CURVES = 262_144
SCHEDULER_CHOICES = ("auto", "local", "none")
#: Seconds to wait for a remote scheduler before giving up.
CONNECT_TIMEOUT_S = 10.0


class DaskRunner:
    """A `ceuskit.maps.ChunkRunner` that runs the fitting tasks on Dask.

    Use as a context manager, so that a cluster it started is closed::

        with DaskRunner("local") as runner:
            result = compute_maps(source, times, rois, runner=runner)

    Parameters
    ----------
    scheduler : distributed.Client, str or None
        See the module docstring.
    n_workers : int, optional
        Workers of a LocalCluster (default: one per CPU).

    Attributes
    ----------
    used : str
        Where the last call ran: ``"in-process"``, ``"local-cluster"`` or
        the scheduler's address.
    """

    def __init__(self, scheduler: Any = None, *, n_workers: int | None = None) -> None:
        self.scheduler = scheduler
        self.n_workers = n_workers
        self.used = "not-run"
        self._client: Any = None
        self._cluster: Any = None

    # -- context -------------------------------------------------------------
    def __enter__(self) -> DaskRunner:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the client and cluster this runner started (not a client it was given)."""
        if self._cluster is not None:
            if self._client is not None:
                self._client.close()
            self._cluster.close()
        elif self._client is not None and not self._given_client():
            self._client.close()
        self._client = None
        self._cluster = None

    def _given_client(self) -> bool:
        return not isinstance(self.scheduler, str | type(None))

    # -- running -------------------------------------------------------------
    def _connect(self, n_curves: int) -> Any:
        """The client to use, or None for in-process."""
        if self._client is not None:
            return self._client
        s = self.scheduler
        if self._given_client():
            self._client = s
            return s
        choice = "auto" if s is None else str(s).strip()
        if choice == "none" or (choice == "auto" and n_curves < LOCAL_CLUSTER_MIN_CURVES):
            return None
        try:
            from distributed import Client, LocalCluster
        except ImportError:  # pragma: no cover - a declared dependency
            raise InputError("--scheduler", "Dask (distributed) is not installed",
                             "pip install 'dask[distributed]', or pass --scheduler none") from None
        if choice in ("auto", "local"):
            workers = self.n_workers or max(1, os.cpu_count() or 1)
            self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                         dashboard_address=None)
            self._client = Client(self._cluster)
            return self._client
        try:
            self._client = Client(choice, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError("--scheduler", f"cannot reach the Dask scheduler at {choice!r} ({exc})",
                             "start it (dask scheduler; dask worker ADDRESS) or pass "
                             "--scheduler local / none") from None
        return self._client

    def __call__(self, tasks: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
        n_curves = sum(int(args[1].shape[0]) for args in tasks)
        client = self._connect(n_curves)
        if client is None:
            self.used = "in-process"
            return [fit_block_chunk(*args) for args in tasks]
        self.used = "local-cluster" if self._cluster is not None else str(client.scheduler.address)
        futures = []
        for times, curves, *rest in tasks:
            # Scatter the curves: large arrays travel worker-to-client once,
            # not inside the task graph.
            data = client.scatter(curves, direct=self._cluster is not None)
            futures.append(client.submit(fit_block_chunk, times, data, *rest, pure=False))
        results: list[dict[str, Any]] = client.gather(futures)
        return results
