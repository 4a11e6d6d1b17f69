"""The sweeps of bench/scale_bench.py: with nothing due, and with a backlog of 10 k and 100 k.

A claim is timed alone (its SELECT in a read transaction: SQLite renders no
row lock, so the statement is the sweep's own) and with a whole batch
(claim, act on each request, commit), three batches of each.  The backlog is
made by bare sqlite3 UPDATEs and INSERTs: due times moved into the past, rows
put in the outbox and the inbox.
"""

from __future__ import annotations

import inspect
import sqlite3
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import make_url

from countersign.rules.states import State
from countersign.store.db import Store
from countersign.store.models import ChangeRequest
from countersign.workflow import outbox, sweeps
from countersign.workflow.lifecycle import finish, load_request
from countersign.workflow.policy import Policy

try:
    from countersign.workflow.inbox_batch import claim_due as claim_inbox
except ImportError:  # an older tree (before #11 split the inbox), for a before figure
    from countersign.workflow.inbox import claim_due as claim_inbox  # type: ignore[attr-defined,no-redef]

POLICY = Policy()
VALIDATING = str(State.VALIDATING)


def ms(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def median_ms(call: Callable[[], Any], times: int = 5) -> float:
    return statistics.median(ms(call) for _ in range(times))


def idle_sweeps(store: Store) -> dict[str, float]:
    """Each sweep with nothing due (ms, median of 5)."""
    now = datetime.now(UTC)
    return {
        "sweep apply, none due": median_ms(lambda: sweeps.apply_ready(store, POLICY, now=now)),
        "sweep expire, none due": median_ms(lambda: sweeps.expire_due(store, POLICY, now=now)),
        "sweep remind, none due": median_ms(lambda: sweeps.remind_due(store, POLICY, now=now)),
        "claim outbox, none due": median_ms(lambda: outbox.claim_due(store, now)),
        "claim inbox, none due": median_ms(lambda: claim_inbox(store, now)),
    }


def _db(url: str) -> sqlite3.Connection:
    return sqlite3.connect(str(make_url(url).database), isolation_level=None)


def _stamp(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat(" ", "microseconds")


def _make_due(url: str, column: str, due: int, now: datetime) -> None:
    """The first ``due`` open requests due by ``column``; every other one later."""
    db = _db(url)
    later, past = _stamp(now + timedelta(days=30)), _stamp(now - timedelta(minutes=1))
    db.execute("BEGIN")
    db.execute("UPDATE requests SET expires_at = ?, next_reminder_at = ? WHERE state = ?",
               (later, later, VALIDATING))  # fmt: skip
    db.execute(
        f"UPDATE requests SET {column} = ? WHERE id IN"
        " (SELECT id FROM requests WHERE state = ? ORDER BY id LIMIT ?)",
        (past, VALIDATING, due),
    )
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def claim(session: Any, where: Any, limit: int, due: Any = None) -> list[int]:
    """The sweeps' own claim; an older tree's took no due-time order (for a before/after)."""
    if "due" in inspect.signature(sweeps._claim).parameters:
        return sweeps._claim(session, where, limit, due)
    return sweeps._claim(session, where, limit)


def _claim_alone(store: Store, where: Any, due: Any) -> float:
    def claim_once() -> None:
        with store.read() as session:
            claim(session, where, sweeps.BATCH, due)

    return median_ms(claim_once)


def _batch(store: Store, where: Any, due: Any, act: Callable[..., None], now: datetime) -> float:
    def batch() -> None:
        with store.write() as session:
            for request_id in claim(session, where, sweeps.BATCH, due):
                act(session, load_request(session, request_id), now)

    return median_ms(batch, 3)


def _expire(session: Any, request: ChangeRequest, now: datetime) -> None:
    finish(session, request, State.EXPIRED, now, POLICY)


def _remind(session: Any, request: ChangeRequest, now: datetime) -> None:
    sweeps._remind(session, request, now, POLICY)


def request_backlog(store: Store, url: str, due: int) -> dict[str, float]:
    now = datetime.now(UTC)
    figures = {}
    validating = ChangeRequest.state == VALIDATING
    for name, column, act in (
        ("expire", ChangeRequest.expires_at, _expire),
        ("remind", ChangeRequest.next_reminder_at, _remind),
    ):
        _make_due(url, column.key, due, now)
        where = validating & (column <= now)
        figures[f"claim {name} (100)"] = _claim_alone(store, where, column)
        figures[f"batch {name} (100, committed)"] = _batch(store, where, column, act, now)
    _make_due(url, "expires_at", 0, now)
    db = _db(url)
    db.execute(
        "UPDATE requests SET state = 'checkValidity' WHERE id IN"
        " (SELECT id FROM requests WHERE state = ? ORDER BY id LIMIT ?)",
        (VALIDATING, due),
    )
    ready = ChangeRequest.state == str(State.CHECK_VALIDITY)
    figures["claim apply (1)"] = _claim_one(store, ready)
    db.execute("UPDATE requests SET state = ? WHERE state = 'checkValidity'", (VALIDATING,))
    db.close()
    return figures


def _claim_one(store: Store, ready: Any) -> float:
    def claim_once() -> None:
        with store.read() as session:
            claim(session, ready, 1)

    return median_ms(claim_once)


def mail_backlog(store: Store, url: str, due: int) -> dict[str, float]:
    now = datetime.now(UTC)
    past, stamp = _stamp(now - timedelta(minutes=1)), _stamp(now)
    db = _db(url)
    # A few notices per request and per account, as in life (a request's thread is its own).
    (requests,) = db.execute("SELECT max(id) FROM requests").fetchone()
    (accounts,) = db.execute("SELECT max(id) FROM accounts").fetchone()
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO outbox (request_id, account_id, kind, language, context, message_id,"
        " status, attempts, next_attempt_at, created_at) VALUES"
        " (?, ?, 'aborted', 'en', '{}', ?, 'pending', 0, ?, ?)",
        (
            (n % requests + 1, n % accounts + 1, f"<scale{n}@bench>", past, stamp)
            for n in range(due)
        ),
    )
    db.executemany(
        "INSERT INTO inbox (message_id, channel, recipients, raw, status, attempts,"
        " next_attempt_at, received_at) VALUES (?, 'smtp', '[]', ?, 'pending', 0, ?, ?)",
        ((f"<in{n}@bench>", b"Subject: x\r\n\r\nhello\r\n", past, stamp) for n in range(due)),
    )
    db.execute("COMMIT")
    # The bulk insert's pages out of the WAL now, not in the first claim's commit.
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    figures = {
        "claim outbox (100, committed)": median_ms(lambda: outbox.claim_due(store, now), 3),
        "claim inbox (100, committed)": median_ms(lambda: claim_inbox(store, now), 3),
    }
    db.execute("DELETE FROM outbox WHERE message_id LIKE '<scale%'")
    db.execute("DELETE FROM inbox WHERE message_id LIKE '<in%'")
    db.close()
    return figures


def backlog_figures(url: str) -> dict[str, dict[str, float]]:
    """Per-batch cost (ms) with 10,000 and with 100,000 due: flat when their ratio is about 1."""
    store = Store(url)
    rows: dict[str, dict[str, float]] = {}
    try:
        for due in (10_000, 100_000):
            figures = {**request_backlog(store, url, due), **mail_backlog(store, url, due)}
            rows[f"{due:,} due"] = figures
    finally:
        store.dispose()
    # The notices of the batches timed would keep the daemon measured next from resting.
    db = _db(url)
    db.execute("UPDATE outbox SET status = 'sent', code = NULL WHERE status = 'pending'")
    db.close()
    return rows
