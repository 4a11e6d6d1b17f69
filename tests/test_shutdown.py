"""Stopping `serve` in the middle of a burst: every notice handed over is recorded as sent.

The real daemon in a subprocess, the default Maildir transport, SIGINT while
files are being written. A file in outbox/new whose row is not marked sent
would be mailed again after the lease, with the same Message-ID.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import pytest

from bench.seeding import seed_requests
from countersign.scheduler.sweeper import Sweeper
from tests.cli_helpers import Cli, Db, clean_env, free_port, fresh_database
from tests.test_cli import stop

SEEDED = 100  # confirm-requests made the slow way, through the workflow
COPIES = 40  # ... then copied in SQL: thousands of notices in well under a second


def queue_notices(db: Db) -> int:
    """SEEDED * COPIES pending notices; how many."""
    from countersign.store.db import Store

    store = Store(db.url)
    try:
        seed_requests(store, SEEDED)
    finally:
        store.dispose()
    columns = (
        "request_id, account_id, validator_id, kind, language, code, context, status,"
        " attempts, next_attempt_at, created_at"
    )
    connection = sqlite3.connect(db.path)
    with connection:  # one transaction, committed
        connection.execute(
            f"WITH RECURSIVE copy(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM copy WHERE n < ?)"
            f" INSERT INTO outbox ({columns}, message_id)"
            f" SELECT {columns}, replace(message_id, '@', '.' || n || '@') FROM outbox, copy",
            (COPIES - 1,),
        )
    connection.close()
    return db.count("outbox")


def wait_for_files(new: Path, daemon: object) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if new.is_dir() and any(new.iterdir()):
            return
        assert daemon.poll() is None, daemon.communicate()[1]  # type: ignore[attr-defined]
        time.sleep(0.02)
    pytest.fail("no notice written to the outbox within 20 s")


def test_sigint_mid_burst_records_every_notice_handed_over(tmp_path: Path) -> None:
    db = Db(tmp_path / "var" / "countersign.db")
    fresh_database(db.path)
    queued = queue_notices(db)
    cli = Cli(
        tmp_path,
        clean_env(COUNTERSIGN_DATA_DIR=str(tmp_path / "var"), COUNTERSIGN_DATABASE_URL=db.url),
    )
    daemon = cli.start(
        "serve",
        COUNTERSIGN_INBOUND_SMTP_PORT=str(free_port()),
        COUNTERSIGN_WEB_PORT=str(free_port()),
    )
    new = tmp_path / "var" / "outbox" / "new"
    try:
        wait_for_files(new, daemon)
    finally:
        code, log = stop(daemon, timeout=30)
    assert code == 0, log
    assert "Traceback" not in log, log

    written = sum(1 for _ in new.iterdir())
    statuses = dict(db.query("SELECT status, count(*) FROM outbox GROUP BY status"))
    assert 0 < written < queued, f"the stop did not come mid-burst: {written} of {queued}"
    # Nothing handed over is left unrecorded, and nothing is left leased: the rest
    # is pending, sent by the next start.
    assert statuses.get("sent", 0) == written, (statuses, log)
    assert set(statuses) <= {"sent", "pending"}, (statuses, log)


# --- the sweeper's part: no new runs, the running ones finish -----------------------------


async def test_drain_lets_the_running_sweep_finish_and_starts_no_more() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def work() -> int:
        started.set()
        await release.wait()
        return 1  # found work: it would go round again if not draining

    sweeper = Sweeper()
    sweeper.add("outbox", work, timedelta(hours=1))
    sweeper.start()
    try:
        await asyncio.wait_for(started.wait(), 5)
        draining = asyncio.create_task(sweeper.drain(5))
        await asyncio.sleep(0.05)
        assert not draining.done()  # waits for the run in hand
        release.set()
        assert await draining
        sweeper.wake("outbox")
        await asyncio.sleep(0.05)
        assert sweeper.sweeps["outbox"].runs == 1
        assert not sweeper.sweeps["outbox"].running
    finally:
        sweeper.shutdown()


async def test_drain_gives_up_on_a_hung_sweep(caplog: pytest.LogCaptureFixture) -> None:
    started = asyncio.Event()

    async def work() -> int:
        started.set()
        await asyncio.Event().wait()  # a relay that never answers
        return 0

    sweeper = Sweeper()
    sweeper.add("outbox", work, timedelta(hours=1))
    sweeper.start()
    try:
        await asyncio.wait_for(started.wait(), 5)
        assert not await sweeper.drain(0.1)
        assert "still running after 0.1s, stopped anyway: outbox" in caplog.text
    finally:
        sweeper.shutdown()


@pytest.mark.parametrize("turns", range(6))
async def test_a_wake_just_before_stopping_is_not_logged_as_a_failed_sweep(
    turns: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A wake submits a run that may not have started when the daemon stops.

    APScheduler cancels such a run unstarted and logs its CancelledError as an
    ERROR with a traceback, which an operator would read as a crash. ``turns``
    lets the loop go round 0-5 times between the wake and the stop, so one of
    them lands between the run's submission and its start.
    """
    done = asyncio.Event()

    async def work() -> int:
        done.set()
        return 0

    sweeper = Sweeper()
    sweeper.add("outbox", work, timedelta(hours=1))
    sweeper.start()
    await asyncio.wait_for(done.wait(), 5)
    await asyncio.sleep(0.05)  # the first run has ended
    sweeper.wake("outbox")
    for _ in range(turns):
        await asyncio.sleep(0)
    assert await sweeper.drain(1)
    sweeper.shutdown()
    await asyncio.sleep(0.05)  # the cancelled run's callback, if any, has logged
    assert "Error running job" not in caplog.text
    assert "Traceback" not in caplog.text
