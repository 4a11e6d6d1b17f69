"""Whether the store answers: one log line when it is lost, one when it is back.

Every part of the daemon that meets an unreachable database (a sweep, SMTP
intake, the web, the heartbeat) reports it here instead of logging a traceback
per attempt; the heartbeat reports it back.  Errors that are not about reaching
the database are not outages and are left to the caller to log.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import exc

log = logging.getLogger("countersign.store")


def is_outage(error: BaseException) -> bool:
    """The database cannot be reached (refused, dropped, shutting down), not a bad statement."""
    if isinstance(error, BaseExceptionGroup):  # a TaskGroup's: an outage if all of it is
        return all(is_outage(inner) for inner in error.exceptions)
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, exc.OperationalError | exc.InterfaceError | exc.TimeoutError):
        return True
    # The drivers' own (the commit watcher talks to psycopg directly): PEP 249 names.
    return any(cls.__name__ in _DBAPI_OUTAGES for cls in type(error).__mro__)


_DBAPI_OUTAGES = frozenset({"OperationalError", "InterfaceError"})


def describe(error: BaseException) -> str:
    """The driver's first line, without SQL or parameters (they may carry mail or codes)."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    cause = getattr(error, "orig", None) or error
    first = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first}"[:200]


class Health:
    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet  # a helper process: its daemon logs the outage, once
        self._lock = threading.Lock()
        self._lost_at: float | None = None  # time.monotonic() when it was lost

    @property
    def available(self) -> bool:
        return self._lost_at is None

    def failed(self, error: BaseException) -> bool:
        """Report ``error``; True when it is an outage (logged once, so the caller stays quiet)."""
        if not is_outage(error):
            return False
        with self._lock:
            if self._lost_at is not None:
                return True
            self._lost_at = time.monotonic()
        if not self.quiet:
            log.error("store lost: %s; waiting for it to come back", describe(error))
        return True

    def answered(self) -> None:
        """The store answered: if it had been lost, say so once, with how long."""
        with self._lock:
            lost_at, self._lost_at = self._lost_at, None
        if lost_at is not None and not self.quiet:
            log.warning("store back after %.1fs", time.monotonic() - lost_at)
