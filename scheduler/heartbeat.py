"""The daemon's heartbeat in the store, and the takeover of dead daemons' work.

A thread of its own (not a sweep: a sweep stuck on a slow relay must not make
its daemon look dead).  Every third of ``leases.owner_timeout`` it beats, then
frees the claims of daemons whose heartbeat stopped (store/leases.py), which
wakes the sweeps that take them.  It is also how a lost store is noticed to be
back: the store's Health logs that once.

After its own outage it waits a full timeout before freeing anyone else's
claims: the other daemons lost the store too and need one beat to show they
are alive, or it would take work they are still doing.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

from countersign.store import leases
from countersign.store.db import Store

log = logging.getLogger("countersign.leases")


class Heartbeat(threading.Thread):
    def __init__(self, store: Store, instance: str, timeout: timedelta) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.store = store
        self.instance = instance
        self.timeout = timeout
        self.every = timeout.total_seconds() / 3
        self.worker_id = 0
        self._stopping = threading.Event()
        self._healthy_since: float | None = None  # time.monotonic() of the first beat after a loss

    def register(self) -> int:
        """Before the sweeps start: this process's worker row, and its last life's work back."""
        now = datetime.now(UTC)
        self.worker_id = leases.register(self.store, self.instance, now)
        freed = leases.release_orphans(self.store, now, self.timeout, heartbeats=False)
        if any(freed.values()):
            log.info("took back what the last run left claimed: %s", _counts(freed))
        self._healthy_since = time.monotonic()
        return self.worker_id

    def run(self) -> None:
        while not self._stopping.wait(self.every):
            try:
                self.beat()
            except Exception as error:
                self._healthy_since = None
                if not self.store.health.failed(error):
                    log.exception("heartbeat failed")

    def beat(self) -> None:
        now = datetime.now(UTC)
        leases.beat(self.store, self.worker_id, self.instance, now)
        self.store.health.answered()
        if self._healthy_since is None:
            self._healthy_since = time.monotonic()
        if time.monotonic() - self._healthy_since < self.timeout.total_seconds():
            return
        freed = leases.release_orphans(self.store, now, self.timeout)
        if any(freed.values()):
            log.warning("took over from a daemon whose heartbeat stopped: %s", _counts(freed))

    def stop(self) -> None:
        """A clean stop: the worker row goes, so what it still holds is free at once."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=10)
        if not self.worker_id:
            return
        try:
            leases.unregister(self.store, self.worker_id, datetime.now(UTC), self.timeout)
        except Exception as error:
            if not self.store.health.failed(error):
                log.exception("could not remove this daemon's worker row")


def _counts(freed: dict[str, int]) -> str:
    return ", ".join(f"{count} {topic}" for topic, count in freed.items() if count)
