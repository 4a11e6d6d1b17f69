"""The outbox's life: claim what is due, then record each delivery's outcome.

A claimed row is leased (``status = 'sending'``, due again after the lease),
so a daemon that dies mid-delivery leaves nothing stuck: another daemon, or
this one restarted, takes the row again when the lease runs out, with the
same Message-ID.  Rows are claimed ``FOR UPDATE SKIP LOCKED`` on PostgreSQL.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from store.db import Store
from store.models import ChangeRequest, OutboxMessage, Validator
from workflow.requests import record
from workflow.views import request_json

LEASE = timedelta(minutes=5)
RETRY_CAP = timedelta(hours=1)
JITTER = 0.2  # +-20%: retries of one outage do not all land in the same second
# Not a secret, but the project draws all its randomness from the OS (as codes must).
_JITTER_SOURCE = secrets.SystemRandom()


# Everything request_json reads, loaded in a few IN queries per batch instead of
# lazily per row (which cost a query per notice); no more (the service's
# contacts are not shown: loading them cost a fifth of a claim).
_REQUEST = selectinload(OutboxMessage.request)
_REQUEST_LOADS = (
    _REQUEST.selectinload(ChangeRequest.service),
    _REQUEST.selectinload(ChangeRequest.from_account),
    _REQUEST.selectinload(ChangeRequest.to_account),
    _REQUEST.selectinload(ChangeRequest.asking_account),
    _REQUEST.selectinload(ChangeRequest.validators).selectinload(Validator.account),
)


@dataclass(frozen=True)
class Envelope:
    """Everything needed to render and send one notice, read when it was claimed."""

    outbox_id: int
    kind: str
    language: str
    to_address: str  # the account's contact email as it is now (resend follows updates)
    recipient: dict[str, str]
    message_id: str
    thread_root: str | None
    request: dict[str, Any] | None
    code: str | None
    context: dict[str, Any]
    queued_at: datetime  # when the act that caused it committed: delivery latency starts here


@dataclass(frozen=True)
class RetryPolicy:
    first_retry: timedelta = timedelta(minutes=1)
    give_up_after: timedelta = timedelta(days=2)


def retry_delay(attempts: int, policy: RetryPolicy, rand: float | None = None) -> timedelta:
    """Exponential backoff from ``first_retry``, capped at an hour, with jitter."""
    base = min(policy.first_retry * (1 << max(attempts - 1, 0)), RETRY_CAP)
    spread = (_JITTER_SOURCE.random() if rand is None else rand) * 2 - 1  # in [-1, 1)
    return base * (1 + JITTER * spread)


def claim_due(store: Store, now: datetime, limit: int = 100) -> list[Envelope]:
    """Lease up to ``limit`` due notices and read what rendering them needs."""
    with store.write() as session:
        due = (
            select(OutboxMessage)
            .where(
                OutboxMessage.status.in_(("pending", "sending")),
                OutboxMessage.next_attempt_at <= now,
            )
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(limit)
            .with_for_update(skip_locked=True, of=OutboxMessage)
            .options(selectinload(OutboxMessage.account), *_REQUEST_LOADS)
        )
        rows = list(session.scalars(due))
        if rows:
            # One statement for the batch, not one UPDATE a row from the ORM's flush.
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_([row.id for row in rows]))
                .values(status="sending", next_attempt_at=now + LEASE)
                .execution_options(synchronize_session=False)
            )
        views: dict[int, dict[str, Any]] = {}  # a request's notices share its view (read-only)
        return [_envelope(row, views) for row in rows]


def _envelope(row: OutboxMessage, views: dict[int, dict[str, Any]]) -> Envelope:
    request = row.request
    view = None
    if request is not None:
        view = views.get(request.id)
        if view is None:
            view = views[request.id] = request_json(request)
    return Envelope(
        outbox_id=row.id,
        kind=row.kind,
        language=row.language,
        to_address=row.account.mail_address,
        recipient={"email": row.account.email, "language": row.language},
        message_id=row.message_id,
        thread_root=request.thread_root if request is not None else None,
        request=view,
        code=row.code,
        context=dict(row.context or {}),
        queued_at=row.created_at,
    )


def mark_sent(store: Store, outbox_ids: Sequence[int], now: datetime) -> None:
    """Handed over: done, and the plaintext code that mail carried is erased."""
    if not outbox_ids:
        return
    with store.write() as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(list(outbox_ids)))
            .values(status="sent", sent_at=now, code=None, last_error=None)
        )


def mark_failed(
    store: Store,
    outbox_id: int,
    error: str,
    *,
    permanent: bool,
    now: datetime,
    policy: RetryPolicy,
) -> bool:
    """Retry later, or give up; returns True when the notice is given up for good."""
    with store.write() as session:
        row = session.get(OutboxMessage, outbox_id, with_for_update=True)
        if row is None or row.status == "sent":
            return False
        row.attempts += 1
        row.last_error = error[:2000]
        if permanent or now - row.created_at >= policy.give_up_after:
            _give_up(session, row, error, now)
            return True
        row.status = "pending"
        row.next_attempt_at = now + retry_delay(row.attempts, policy)
        return False


def _give_up(session: Session, row: OutboxMessage, error: str, now: datetime) -> None:
    row.status = "failed"
    row.code = None  # no mail will ever carry it: the secret goes
    address = row.account.mail_address
    if row.validator_id is not None:
        validator = session.get(Validator, row.validator_id)
        if validator is not None:
            # Shown by `request show`: the seed's "contact email may not be up to date" case.
            validator.delivery_error = f"mail to {address} failed: {error}"[:2000]
    record(
        session,
        "delivery-failed",
        now,
        request=row.request,
        actor=row.account.email,
        notice=row.kind,
        address=address,
        error=error[:500],
    )
