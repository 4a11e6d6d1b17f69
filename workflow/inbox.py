"""The inbox: mail received over SMTP or IMAP, stored before it is acknowledged.

Storing deduplicates: one row per Message-ID (else per hash of the bytes;
workflow/message_ids.py), so a message that arrives twice, or by both doors, is
acted on once.  No live code rests in a row (workflow/redaction.py).  What
becomes of the rows: workflow/inbox_batch.py; the operator's view of them:
workflow/inbox_views.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from countersign.store.db import Store, wake
from countersign.store.models import Base, InboxMessage
from countersign.workflow import redaction
from countersign.workflow.message_ids import message_key

# --- storing -------------------------------------------------------------------------


def store_received(
    store: Store,
    raw: bytes,
    *,
    channel: str,
    envelope_from: str | None,
    recipients: Sequence[str],
    now: datetime,
    source: str | None = None,
) -> int | None:
    """Store a received message durably; its inbox id, or None when it was already stored."""
    arrival = Arrival(raw, channel, envelope_from, tuple(recipients), now, source)
    return store_many(store, [arrival])[0]


@dataclass(frozen=True)
class Arrival:
    """One message as a door received it, before it is stored."""

    raw: bytes
    channel: str
    envelope_from: str | None
    recipients: tuple[str, ...]
    now: datetime
    source: str | None = None  # the connecting client's address (SMTP)


def store_many(store: Store, arrivals: Sequence[Arrival]) -> list[int | None]:
    """Store several messages in one transaction (group commit); store_received's answer for each.

    One commit for many messages is what lets SMTP intake keep up: each commit
    takes SQLite's write lock, which the inbox sweep holds most of the time.
    A duplicate within the batch is stored once, like across batches.  The rows
    are made (codes redacted, keys taken) before the transaction: that lock is
    held for the insert only.
    """
    rows = [_row(a) for a in arrivals]
    with store.write() as session:
        return _insert_rows(session, rows)


def insert_received(
    session: Session,
    raw: bytes,
    *,
    channel: str,
    envelope_from: str | None,
    recipients: Sequence[str],
    now: datetime,
) -> int | None:
    """store_received inside the caller's transaction (IMAP stores a batch with its cursor)."""
    arrival = Arrival(raw, channel, envelope_from, tuple(recipients), now)
    return insert_many(session, [arrival])[0]


def insert_many(session: Session, arrivals: Sequence[Arrival]) -> list[int | None]:
    """Insert the new ones in one statement; each arrival's inbox id, None for a duplicate."""
    return _insert_rows(session, [_row(a) for a in arrivals])


def _insert_rows(session: Session, rows: list[dict[str, Any]]) -> list[int | None]:
    if not rows:
        return []
    # (message_id, id) of each row inserted
    inserted: dict[str, int] = {m: i for m, i in session.execute(_insert_new(session), rows)}
    if inserted:
        wake(session, "inbox")
    # A Message-ID twice in one group: the first is the one stored, the second a duplicate.
    return [inserted.pop(row["message_id"], None) for row in rows]


def _row(arrival: Arrival) -> dict[str, Any]:
    # No live code at rest: the codes go before the row is written (the key is
    # taken first, so that both doors still find one message the same).
    raw, recipients, hashes = redaction.redact_message(arrival.raw, arrival.recipients[:100])
    return {
        "message_id": message_key(arrival.raw),
        "channel": arrival.channel,
        "envelope_from": arrival.envelope_from[:320] if arrival.envelope_from is not None else None,
        "recipients": [r[:320] for r in recipients],
        "raw": raw,
        "source": arrival.source[:64] if arrival.source is not None else None,
        "code_hashes": hashes,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": arrival.now,
        "received_at": arrival.now,
    }


def _insert_new(session: Session) -> Any:
    # ON CONFLICT DO NOTHING: a duplicate is acknowledged without a failed
    # transaction (PostgreSQL aborts the whole transaction on an IntegrityError).
    # RETURNING the Message-ID too: with rows skipped, the ids returned no longer
    # line up with the rows given.
    table = Base.metadata.tables[InboxMessage.__tablename__]
    if session.get_bind().dialect.name == "postgresql":
        pg = pg_insert(table).on_conflict_do_nothing()
        return pg.returning(table.c.message_id, table.c.id)
    lite = sqlite_insert(table).on_conflict_do_nothing()
    return lite.returning(table.c.message_id, table.c.id)
