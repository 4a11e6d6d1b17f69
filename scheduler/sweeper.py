"""Sweeps on APScheduler: it decides *when* a sweep runs, the store decides *what* is due.

A sweep is a workflow function that handles due work and returns how much it
handled.  It runs in a worker thread (database work never blocks the loop),
again at once while it keeps finding work, and also right away when a commit
wakes it (a new notice, a request ready to apply), so nobody waits for the
next tick.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger("countersign.sweeps")


@dataclass
class Sweep:
    name: str
    work: Callable[[], int] | Callable[[], Awaitable[int]]
    running: bool = False
    dirty: bool = False  # woken while running: look once more before resting
    runs: int = 0
    handled: int = 0


class Sweeper:
    def __init__(
        self,
        executor: ThreadPoolExecutor | None = None,
        *,
        outage: Callable[[BaseException], bool] | None = None,
    ) -> None:
        # Says whether a failure is the store being unreachable (logged once there, not here).
        self.outage = outage or (lambda _error: False)
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.executor = executor or ThreadPoolExecutor(4, thread_name_prefix="sweep")
        self.sweeps: dict[str, Sweep] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False  # set by drain: no sweep starts (or runs again) after it
        self._runs: set[asyncio.Task[Any]] = set()  # the runs in progress, for drain

    def add(
        self, name: str, work: Callable[[], int] | Callable[[], Awaitable[int]], every: timedelta
    ) -> None:
        sweep = Sweep(name, work)
        self.sweeps[name] = sweep
        self.scheduler.add_job(
            self._run,
            "interval",
            args=[sweep],
            id=name,
            seconds=every.total_seconds(),
            next_run_time=datetime.now(UTC),
            coalesce=True,
            max_instances=3,  # _run itself lets one run at a time; extra starts just mark dirty
            misfire_grace_time=None,
        )

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.scheduler.start()

    async def drain(self, timeout: float) -> bool:
        """Start no more sweeps and wait up to ``timeout`` seconds for the running ones.

        Called before shutdown(), which cancels a sweep on the loop wherever it
        is: between handing mail over and recording it, say. A run finishes its
        current call and does not go round again. Returns whether all finished.
        """
        self._draining = True
        if self.scheduler.running:
            self.scheduler.pause()  # submits no more runs
        # A run submitted just before (by a wake) may not have started: let it
        # start, see _draining and end, or shutdown() would cancel it unstarted
        # and APScheduler would log that as a failed job, with a traceback.
        await asyncio.sleep(0)
        if not self._runs:
            return True
        _, left = await asyncio.wait(set(self._runs), timeout=timeout)
        if left:
            still = sorted(name for name, sweep in self.sweeps.items() if sweep.running)
            log.warning(
                "sweeps still running after %gs, stopped anyway: %s (their work stays in the"
                " store; rows they had claimed are free again once this daemon is gone)",
                timeout,
                ", ".join(still),
            )
        return not left

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.executor.shutdown(wait=True, cancel_futures=True)

    def wake(self, name: str) -> None:
        """Run ``name`` now; callable from any thread (commit hooks run in workers)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake, name)

    def _wake(self, name: str) -> None:
        if self._draining:
            return
        sweep = self.sweeps[name]
        if sweep.running:
            sweep.dirty = True
        elif self.scheduler.running:
            self.scheduler.modify_job(name, next_run_time=datetime.now(UTC))

    async def _call(self, sweep: Sweep, loop: asyncio.AbstractEventLoop) -> int:
        """Async work (which offloads its own blocking parts) runs on the loop, sync in a thread."""
        if inspect.iscoroutinefunction(sweep.work):
            return await cast(Callable[[], Awaitable[int]], sweep.work)()
        return await loop.run_in_executor(self.executor, cast(Callable[[], int], sweep.work))

    async def _run(self, sweep: Sweep) -> None:
        if self._draining:
            return
        if sweep.running:
            sweep.dirty = True
            return
        sweep.running = True
        loop = asyncio.get_running_loop()
        run = asyncio.current_task()
        assert run is not None  # APScheduler runs each job in a task of its own
        self._runs.add(run)
        try:
            while not self._draining:
                sweep.dirty = False
                try:
                    handled = await self._call(sweep, loop)
                except asyncio.CancelledError:
                    return  # shutting down: the store keeps the work for next time
                except Exception as error:
                    # The store keeps the work; the next tick tries again.
                    if not self.outage(error):
                        log.exception("sweep %s failed", sweep.name)
                    return
                sweep.runs += 1
                sweep.handled += handled
                if handled == 0 and not sweep.dirty:
                    return
        finally:
            sweep.running = False
            self._runs.discard(run)
