"""Noticing commits made by other processes, so their work is not left for the next tick.

`countersign change` or `accept` run in a process of their own: the daemon's
sweeps must hear of what they commit.  On PostgreSQL every write transaction
that wakes a topic also sends NOTIFY (store.db), and this watcher LISTENs.
SQLite has no notifications, but ``PRAGMA data_version`` changes exactly when
another connection commits: polling it costs one tiny statement, and a change
wakes every sweep (they find their due work by indexed queries).
"""

from __future__ import annotations

import logging
import sqlite3
import threading

from sqlalchemy.engine import make_url

from countersign.store.db import NOTIFY_CHANNEL, Store

log = logging.getLogger("countersign.watch")
POLL_SECONDS = 0.2
RECONNECT_SECONDS = 2.0


class CommitWatcher:
    """A daemon thread that calls the store's commit listeners for other processes' commits."""

    def __init__(self, store: Store, poll_seconds: float = POLL_SECONDS) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commit-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        watch = self._watch_sqlite if self.store.dialect == "sqlite" else self._watch_postgresql
        while not self._stop.is_set():
            try:
                watch()
            except Exception as error:
                # The sweeps still run on their interval: only promptness is lost meanwhile.
                if not self.store.health.failed(error):  # an outage is logged once, there
                    log.warning("watching for commits failed; retrying", exc_info=True)
                self._stop.wait(RECONNECT_SECONDS)

    def _watch_sqlite(self) -> None:
        database = make_url(self.store.url).database or ""
        connection = sqlite3.connect(database, timeout=5, isolation_level=None)
        try:
            seen = connection.execute("PRAGMA data_version").fetchone()[0]
            while not self._stop.wait(self.poll_seconds):
                version = connection.execute("PRAGMA data_version").fetchone()[0]
                if version != seen:
                    seen = version
                    self.store.fire()
        finally:
            connection.close()

    def _watch_postgresql(self) -> None:
        # Here, not at the top: the driver is the `postgresql` extra, absent on SQLite installs.
        import psycopg

        url = make_url(self.store.url).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
            # Commits made while we were not listening: look once.
            self.store.fire()
            while not self._stop.is_set():
                for notice in connection.notifies(timeout=self.poll_seconds * 5):
                    self.store.fire(notice.payload or None)
