"""Leases on running nodes: how the run document tells a node that runs from one whose worker died.

A node's start records a lease in its state (`lease_until`, epoch seconds, and `worker`, the
process holding it). While the node runs, one thread of the worker process renews the leases
of every node that process is running, every third of the lease. A node still `running` past
its lease lost its worker (a SIGKILL, a host cut off, an out-of-memory kill): the reconciler
runs it again (`orchestrator.engine.reconciler`), as Temporal does on a missed activity heartbeat and
Airflow with a zombie task.

Times are epoch seconds (floats), not datetimes: they are set on dotted paths, where some
MongoDB-wire servers turn datetimes into strings.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pymongo.errors import PyMongoError

if TYPE_CHECKING:
    from orchestrator.store.run_store import RunStore

logger = logging.getLogger("orchestrator.engine.leases")


def holder_name() -> str:
    """Who holds a lease: the host and the process (a pool process of a worker)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class LeaseKeeper:
    """Renews the leases of the nodes this process runs, from one daemon thread.

    Args:
        store: the run store.
        lease_s: how long a lease lasts; renewed every third of it.
    """

    def __init__(self, store: RunStore, lease_s: float) -> None:
        self.store = store
        self.lease_s = lease_s
        self._held: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def lease_until(self) -> float:
        """The end of a lease taken now."""
        return time.time() + self.lease_s

    @contextmanager
    def holding(self, run_id: str, node_id: str, attempt: int) -> Iterator[None]:
        """Renew the node's lease while the block runs (the node's own work)."""
        key = (run_id, node_id)
        with self._lock:
            self._held[key] = attempt
            self._ensure_thread()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(key, None)

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # a forked pool process: the parent's thread is not here
            self._pid, self._thread = os.getpid(), None
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._renew_forever, name="orch-leases", daemon=True)
            self._thread.start()

    def _renew_forever(self) -> None:
        while True:
            time.sleep(self.lease_s / 3)
            with self._lock:
                held = dict(self._held)
            for (run_id, node_id), attempt in held.items():
                try:
                    self.store.renew_lease(run_id, node_id, attempt, self.lease_until())
                except PyMongoError as exc:  # the store is away: the next round tries again
                    logger.warning("run %s node %s: could not renew its lease: %s", run_id, node_id, exc)
