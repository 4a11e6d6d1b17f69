"""Processing what the doors stored: claim a batch, read it, act on it, retry, quarantine.

1. Claiming takes due rows in batches (``FOR UPDATE SKIP LOCKED``) for one worker
   (store/leases.py); a row whose processor died every time is quarantined.
2. A batch is read (the gateway's reader, passed in as a ``Reader``: an import
   points down only), its rows preloaded (workflow/preloaded.py) and each message
   acted on (workflow/reply.py); the decisions, answers, audit events and the
   rows' new status commit together, so a crash never acts on one message twice.
   The requests the batch completed are applied in it too (workflow/sweeps.py).
3. If anything in the batch fails, it runs again one message per transaction,
   where a failure counts against its own message only; a message that fails
   three times is quarantined: kept, listed by ``countersign inbox --failed``,
   retried on demand (workflow/inbox_views.py); the rest go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from countersign.rules.readings import Reading
from countersign.rules.replies import HEADERS_ONLY, Outcome
from countersign.store.db import Store, unwake
from countersign.store.models import Base, InboxMessage
from countersign.workflow.lifecycle import utcnow
from countersign.workflow.message_ids import headers_only
from countersign.workflow.policy import Policy
from countersign.workflow.preloaded import preload
from countersign.workflow.reply import Letter, act
from countersign.workflow.sweeps import apply_in

log = logging.getLogger("countersign.inbox")

MAX_ATTEMPTS = 3
BATCH = 20  # rows claimed per transaction; each holds a whole message in memory
RETRY_AFTER = timedelta(seconds=30)  # times the attempt number
QUARANTINED = "quarantined"


class Failed(StrEnum):
    """What became of a message whose processing failed."""

    RETRY = "retry"  # tried again after RETRY_AFTER times its attempts
    QUARANTINED = QUARANTINED
    ERROR = "error"  # its row was gone


@dataclass(frozen=True)
class Received:
    """One claimed inbox row, as the reader needs it."""

    id: int
    channel: str  # smtp | imap
    raw: bytes
    recipients: tuple[str, ...]
    envelope_from: str | None
    attempts: int
    source: str | None = None  # the SMTP client's address, for the guess limits
    code_hashes: tuple[str, ...] = ()  # the codes redaction took out (workflow/redaction.py)

    @property
    def letter(self) -> Letter:
        return Letter(self.id, self.channel, self.source, self.code_hashes)


Reader = Callable[[Received], Reading]
Handled = Outcome | Failed


def process_due(
    store: Store,
    policy: Policy,
    read: Reader,
    now: datetime | None = None,
    *,
    on_outcome: Callable[[Received, Handled], None] | None = None,
    owner: int | None = None,
) -> int:
    """Process one batch of due messages; how many were claimed (the sweeper runs it again)."""
    claimed = claim_due(store, now or utcnow(), owner=owner)
    outcomes: Sequence[Handled] | None = _process_together(
        store, policy, read, claimed, now or utcnow()
    )
    if outcomes is None:
        outcomes = [process_one(store, policy, read, item, now or utcnow()) for item in claimed]
    if on_outcome is not None:
        for item, outcome in zip(claimed, outcomes, strict=True):
            on_outcome(item, outcome)
    return len(claimed)


def _process_together(
    store: Store, policy: Policy, read: Reader, claimed: Sequence[Received], now: datetime
) -> list[Outcome] | None:
    """The whole batch in one transaction (one commit, not one per message), or None.

    Each message still commits with its decision, answer, audit event and row
    status; they just share the commit.  None when anything fails: the
    transaction is rolled back whole and the caller goes one message at a time,
    where a failure is counted against its own message only.
    """
    if not claimed:
        return []
    try:
        readings = [read(item) for item in claimed]
        with store.write() as session:
            # What the decisions will read, in a few statements for all of them: they
            # then query nothing in the common case, and the batch is flushed once.
            preloaded = preload(session, readings)
            outcomes = [
                act(session, policy, item.letter, reading, now, preloaded).outcome
                for item, reading in zip(claimed, readings, strict=True)
            ]
            if apply_in(session, policy, preloaded.requests, now):
                unwake(session, "apply")  # every request made ready is applied: none to sweep
            _close(session, claimed, outcomes, now)
            return outcomes
    except Exception as error:
        if store.health.failed(error):
            raise  # the store is lost: one by one would fail the same way; the sweep stops
        log.warning("a batch of %s inbox messages failed together; one by one", len(claimed))
        return None


def _close(
    session: Session, items: Sequence[Received], outcomes: Sequence[Outcome], now: datetime
) -> None:
    """Mark the rows done, in the transaction that acted on them.

    A statement per outcome, not per row (an executemany by primary key was a
    third of a batch's time on PostgreSQL); a batch has one or two outcomes.
    """
    by_outcome: dict[str, list[int]] = {}
    for item, outcome in zip(items, outcomes, strict=True):
        by_outcome.setdefault(str(outcome), []).append(item.id)
    for said, ids in by_outcome.items():
        session.execute(
            update(_TABLE)
            .where(_TABLE.c.id.in_(ids))
            .values(status="done", outcome=said, processed_at=now)
        )
    guesses = [
        {"id": item.id, "raw": headers_only(item.raw)}
        for item, outcome in zip(items, outcomes, strict=True)
        if outcome in HEADERS_ONLY
    ]
    if guesses:
        # A guess (or a forgery) is kept as its headers and verdict, not in full.
        session.execute(update(InboxMessage), guesses)


def claim_due(
    store: Store, now: datetime, limit: int = BATCH, owner: int | None = None
) -> list[Received]:
    """Claim due rows for worker ``owner``; one that had every attempt is quarantined instead.

    A claim is held while its owner's heartbeat goes on (store/leases.py).

    Columns, not ORM objects, and one UPDATE for the batch: the claim runs once
    per batch, in the lock that SMTP intake waits on.
    """
    with store.write() as session:
        due = session.execute(
            select(*_CLAIMED)
            .where(
                InboxMessage.status == "pending",
                InboxMessage.next_attempt_at <= now,
            )
            .order_by(InboxMessage.next_attempt_at, InboxMessage.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        claimed = [
            Received(
                id=row.id,
                channel=row.channel,
                raw=row.raw,
                recipients=tuple(row.recipients or ()),
                envelope_from=row.envelope_from,
                attempts=row.attempts + 1,
                source=row.source,
                code_hashes=tuple(row.code_hashes or ()),
            )
            for row in due
        ]
        fresh = [item for item in claimed if item.attempts <= MAX_ATTEMPTS]
        if fresh:  # one statement for the batch, not one per row
            session.execute(
                update(_TABLE)
                .where(_TABLE.c.id.in_([i.id for i in fresh]))
                .values(status="processing", attempts=_TABLE.c.attempts + 1, claimed_by=owner)
            )
        # Its processor died every time (a crash, a kill): never tried again unasked.
        spent = [item for item in claimed if item.attempts > MAX_ATTEMPTS]
        if spent:
            note = "processing never finished"
            quarantined = [_quarantined(i.id, i.attempts - 1, note) for i in spent]
            session.execute(update(InboxMessage), quarantined)
        return fresh


# For Core statements: the ORM's bulk paths cost more than the SQL they send.
_TABLE = Base.metadata.tables[InboxMessage.__tablename__]
_CLAIMED = (
    InboxMessage.id,
    InboxMessage.channel,
    InboxMessage.raw,
    InboxMessage.recipients,
    InboxMessage.envelope_from,
    InboxMessage.attempts,
    InboxMessage.source,
    InboxMessage.code_hashes,
)


def _quarantined(inbox_id: int, attempts: int, note: str) -> dict[str, Any]:
    log.error("inbox message %s quarantined after %s attempts: %s", inbox_id, attempts, note)
    return {
        "id": inbox_id,
        "status": QUARANTINED,
        "outcome": f"quarantined after {attempts} attempts: {note}"[:2000],
    }


def process_one(
    store: Store, policy: Policy, read: Reader, item: Received, now: datetime
) -> Handled:
    """Read one message and act on it in one transaction; a failure is retried, then quarantined."""
    try:
        reading = read(item)
        with store.write() as session:
            outcome = act(session, policy, item.letter, reading, now).outcome
            _close(session, [item], [outcome], now)
            return outcome
    except Exception as error:
        if store.health.failed(error):
            raise  # not this message's fault: its claim is given back by the next pass
        log.exception("inbox message %s: attempt %s failed", item.id, item.attempts)
        return _failed(store, item, error, now)


def _failed(store: Store, item: Received, error: Exception, now: datetime) -> Failed:
    note = f"{type(error).__name__}: {error}"[:500]
    with store.write() as session:
        row = session.get(InboxMessage, item.id, with_for_update=True)
        if row is None:
            return Failed.ERROR
        if row.attempts >= MAX_ATTEMPTS:
            quarantined = _quarantined(row.id, row.attempts, note)
            row.status = quarantined["status"]
            row.outcome = quarantined["outcome"]
            return Failed.QUARANTINED
        row.status = "pending"
        row.next_attempt_at = now + RETRY_AFTER * row.attempts
        row.outcome = f"attempt {row.attempts} failed: {note}"
        return Failed.RETRY
