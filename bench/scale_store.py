"""A large SQLite store for bench/scale_bench.py, built by bulk inserts.

    build(path, services)  # accounts = 0.3 x services, open requests = 0.1 x services

How: the schema comes from the migrations (`upgrade`), then the rows go in
through the bare sqlite3 module, one transaction, `executemany` from
generators (nothing held in memory), with the request indexes dropped during
the load and built again after (SQLite builds an index from sorted keys far
faster than it grows one row by row).  Besides the open requests (each with
its two validators, both still to answer), as many finished ones (`done`)
stand for the history, and the tallies by state (when the schema has them)
say so.

At 1 M services (300 k accounts, 100 k open and 100 k done requests, 400 k
validators) this takes about 8 s on the 2-core machine and makes a file of
264 MB; 100 k services take under a second.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from countersign.store.db import Store
from countersign.store.migrate import upgrade
from countersign.workflow.codes import hash_code

NOW = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
# A code the benchmark knows, for request 1's first validator: the page is read with it.
KNOWN_CODE = "ABCDEFGH-IJKLMNOP-QRSTUVWX-YZ234567"


def stamp(moment: datetime) -> str:
    return moment.isoformat(" ", "microseconds")


def email(i: int) -> str:
    return f"a{i}@scale.test"


def sizes(services: int) -> tuple[int, int]:
    """(accounts, open requests) for a store of ``services``."""
    return max(10, services * 3 // 10), max(1, services // 10)


def _accounts(count: int) -> Iterator[tuple[object, ...]]:
    created = stamp(NOW)
    for i in range(count):
        yield (i + 1, email(i), None, "EU", "en", 1, "0", created)


def _services(count: int, accounts: int) -> Iterator[tuple[object, ...]]:
    created = stamp(NOW)
    for j in range(count):
        admin = j % accounts
        yield (j + 1, f"s{j}.scale.test", admin + 1, (admin + 1) % accounts + 1, admin + 1, created)


def _requests(open_: int, accounts: int) -> Iterator[tuple[object, ...]]:
    """Open requests on services 1..open_, then as many done ones on the next services."""
    asked = stamp(NOW - timedelta(hours=1))
    expires, remind = stamp(NOW + timedelta(days=6)), stamp(NOW + timedelta(days=1))
    for k in range(2 * open_):
        admin = k % accounts
        tech, new = (admin + 1) % accounts, (admin + 7) % accounts
        done = k >= open_
        yield (
            *(k + 1, k + 1, '["contactTech"]', tech + 1, new + 1, admin + 1),
            "done" if done else "validatingByCustomers",
            *(asked, asked if done else None, expires, None if done else remind, 0),
        )


def _validators(open_: int, accounts: int) -> Iterator[tuple[object, ...]]:
    known = hash_code(KNOWN_CODE)
    for k in range(2 * open_):
        admin, done = k % accounts, k >= open_
        decision = ("accept", stamp(NOW), "cli") if done else (None, None, None)
        yield (k + 1, admin + 1, *decision, known if k == 0 else None)
        yield (k + 1, (admin + 7) % accounts + 1, *decision, None)


def build(path: Path, services: int) -> dict[str, int]:
    """A migrated store at ``path`` holding ``services`` services and their company."""
    store = Store(f"sqlite:///{path}")
    upgrade(store.engine)
    store.dispose()
    accounts, open_ = sizes(services)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    # Whatever indexes this version's migrations made (so the script also runs on an
    # older tree, for a before/after), dropped for the load and made again after it.
    indexes = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'requests'"
        " AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        db.execute(f"DROP INDEX {name}")
    db.executemany("INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _accounts(accounts))
    db.executemany("INSERT INTO services VALUES (?, ?, ?, ?, ?, ?)", _services(services, accounts))
    db.executemany(
        "INSERT INTO requests (id, service_id, contact_types, from_account_id, to_account_id,"
        " asking_account_id, state, date_request, date_done, expires_at, next_reminder_at,"
        " reminders_sent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        _requests(open_, accounts),
    )
    db.executemany(
        "INSERT INTO validators (request_id, account_id, decision, decided_at, via, code_hash)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        _validators(open_, accounts),
    )
    for _, sql in indexes:
        db.execute(sql)
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    if "request_tallies" in tables:
        db.executemany(
            "INSERT INTO request_tallies VALUES (?, 0, ?)",
            [("done", open_), ("validatingByCustomers", open_)],
        )
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.close()
    return {"services": services, "accounts": accounts, "open": open_, "done": open_}
