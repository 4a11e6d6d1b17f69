"""One spare process for CPU-bound batch work, started when there is a burst of it.

The daemon's process runs the event loop, the SMTP client, the claims and
everything else that holds the GIL: work that needs none of its state (such
as rendering and composing mail) runs faster beside it, in a process of its
own on another core.  This is an optimisation, never a dependency: until
the process is up, or when the machine has one core, or after it broke,
:meth:`WorkerProcess.run` answers None and the caller does the work itself.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from countersign.gateway.logs import configure_worker

log = logging.getLogger("countersign.offload")


def log_like_the_daemon(level: int) -> None:
    """In a worker: log to the same stderr, in the same format, at the daemon's level."""
    configure_worker(level)


class WorkerProcess:
    """A pool of one process: started by :meth:`start`, stopped by :meth:`close`."""

    def __init__(
        self, name: str, warm_up: Callable[[], None], *, enabled: bool | None = None
    ) -> None:
        self.name = name
        self.warm_up = warm_up  # run once in the process before it takes work
        # A second core, or the process would only take turns with the loop's.
        self.enabled = spare_core() if enabled is None else enabled
        self._pool: ProcessPoolExecutor | None = None
        self._warm: Future[None] | None = None

    def start(self) -> None:
        """Start the process unless it runs already (or cannot help); returns at once."""
        if not self.enabled or self._pool is not None:
            return
        try:
            # spawn, not fork: the daemon has threads (sweeps, IMAP) a fork would copy mid-flight.
            pool = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_started
            )
            self._warm = pool.submit(self.warm_up)
            self._pool = pool
        except (OSError, RuntimeError) as error:  # no processes left, interpreter shutting down
            self._give_up(f"cannot start: {error}")

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any | None:
        """``fn(*args)`` in the process; None when it is not there to do it.

        ``fn``, its arguments and its result cross to the process and back
        pickled: module-level functions and plain data only.
        """
        pool = self._ready()
        if pool is None:
            return None
        try:
            return await asyncio.wrap_future(pool.submit(fn, *args))
        except BrokenProcessPool as error:  # the process died (killed, out of memory)
            self._give_up(f"stopped working: {error}")
            return None

    def call(self, fn: Callable[..., Any], *args: Any) -> Any | None:
        """:meth:`run` for a caller on a thread of its own: blocks until the answer is back."""
        pool = self._ready()
        if pool is None:
            return None
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool as error:  # the process died (killed, out of memory)
            self._give_up(f"stopped working: {error}")
            return None

    def close(self) -> None:
        """Stop the process (after the work it has in hand); it is not started again."""
        self.enabled = False
        pool, self._pool, self._warm = self._pool, None, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    @property
    def running(self) -> bool:
        return self._ready() is not None

    def _ready(self) -> ProcessPoolExecutor | None:
        # Until the process has started and warmed up (a second or so), the caller works alone.
        warm = self._warm
        if warm is None or not warm.done():
            return None
        error = warm.exception()
        if error is not None:
            self._give_up(f"cannot start: {error!r}")
            return None
        return self._pool

    def _give_up(self, why: str) -> None:
        log.warning("%s process %s: working in the daemon's process from now on", self.name, why)
        self.close()


def spare_core() -> bool:
    """Whether this process may run on more than one core."""
    return len(os.sched_getaffinity(0)) >= 2


def _worker_started() -> None:
    """In the worker: Ctrl-C reaches the whole process group, but stopping is the daemon's call.

    And a daemon killed outright (SIGKILL, OOM) cannot stop its worker: the
    worker then goes by itself instead of waiting for work forever.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload is the daemon's; so is a hangup
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()  # returns when the parent is gone
    os._exit(0)
