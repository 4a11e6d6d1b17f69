"""The outbox's life: claim what is due, then record each delivery's outcome.

A claimed row is ``status = 'sending'`` and names the worker that claimed it
(store/leases.py), so a daemon that dies mid-delivery leaves nothing stuck:
once its heartbeat stops, another daemon (or this one, restarted) takes the
row again, with the same Message-ID.  Rows are claimed ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.orm import Session, aliased

from countersign.store.db import Store
from countersign.store.models import (
    Account,
    Base,
    ChangeRequest,
    OutboxMessage,
    Service,
    Validator,
)
from countersign.workflow.lifecycle import record
from countersign.workflow.views import request_view, validator_view

RETRY_CAP = timedelta(hours=1)
JITTER = 0.2  # +-20%: retries of one outage do not all land in the same second
# Not a secret, but the project draws all its randomness from the OS (as codes must).
_JITTER_SOURCE = secrets.SystemRandom()


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


def claim_due(
    store: Store, now: datetime, limit: int = 100, owner: int | None = None
) -> list[Envelope]:
    """Claim up to ``limit`` due notices for worker ``owner`` and read what rendering them needs.

    A claim without an owner (a test, a one-off run) is free again at the next
    release of orphans (store.leases.release_orphans).

    Read as rows, in four queries a batch (the notices, their requests, the
    requests' validators, each recipient's first notice): ORM objects for the
    same cost three times as much.
    """
    with store.write() as session:
        rows = session.execute(_DUE.where(OutboxMessage.next_attempt_at <= now).limit(limit)).all()
        if not rows:
            return []
        # One statement for the batch, not one UPDATE a row.
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_([row.id for row in rows]))
            .values(status="sending", claimed_by=owner)
            .execution_options(synchronize_session=False)
        )
        request_ids = {row.request_id for row in rows} - {None}
        requests = _request_views(session, request_ids)
        roots = _thread_roots(session, request_ids)
        return [
            _envelope(row, requests.get(row.request_id), roots.get(_thread_key(row)))
            for row in rows
        ]


_DUE = (
    select(
        OutboxMessage.id,
        OutboxMessage.kind,
        OutboxMessage.language,
        OutboxMessage.code,
        OutboxMessage.context,
        OutboxMessage.message_id,
        OutboxMessage.created_at,
        OutboxMessage.request_id,
        OutboxMessage.account_id,
        Account.email,
        Account.contact_email,
    )
    .join(Account, Account.id == OutboxMessage.account_id)
    .where(OutboxMessage.status == "pending")
    .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
    .with_for_update(skip_locked=True, of=OutboxMessage)
)
_FROM, _TO, _ASKING = aliased(Account), aliased(Account), aliased(Account)


def _request_views(session: Session, ids: set[int]) -> dict[int, dict[str, Any]]:
    """Each request's view (as workflow.views shows it), by id.

    Notices of one request share its view: it is read-only from here on.
    """
    if not ids:
        return {}
    validators: dict[int, list[dict[str, Any]]] = {request_id: [] for request_id in ids}
    for validator in session.execute(_VALIDATORS.where(Validator.request_id.in_(ids))):
        validators[validator.request_id].append(validator_view(validator, validator.email))
    views = {}
    for row in session.execute(_REQUESTS.where(ChangeRequest.id.in_(ids))):
        view = request_view(
            row,
            service_domain=row.domain,
            accounts=(row.from_email, row.to_email),
            asking_account=row.asking_email,
            validators=validators[row.id],
        )
        views[row.id] = view
    return views


def _thread_key(row: Row[Any]) -> tuple[int, int]:
    return (row.request_id, row.account_id)


def _thread_roots(session: Session, ids: set[int]) -> dict[tuple[int, int], str]:
    """The first notice of each request to each account: (request, account) -> its Message-ID.

    A recipient's notices thread under a mail that recipient received, never
    under another validator's, which their mail client has never seen.
    """
    if not ids:
        return {}
    first = (
        select(func.min(OutboxMessage.id))
        .where(OutboxMessage.request_id.in_(ids))
        .group_by(OutboxMessage.request_id, OutboxMessage.account_id)
    )
    rows = session.execute(
        select(OutboxMessage.request_id, OutboxMessage.account_id, OutboxMessage.message_id).where(
            OutboxMessage.id.in_(first)
        )
    )
    return {(row.request_id, row.account_id): row.message_id for row in rows}


_VALIDATORS = (
    select(
        Validator.request_id,
        Validator.decision,
        Validator.decided_at,
        Validator.via,
        Validator.delivery_error,
        Validator.comment,
        Account.email,
    )
    .join(Account, Account.id == Validator.account_id)
    .order_by(Validator.id)
)
_REQUESTS = (
    select(
        ChangeRequest.id,
        ChangeRequest.contact_types,
        ChangeRequest.state,
        ChangeRequest.date_request,
        ChangeRequest.date_done,
        ChangeRequest.expires_at,
        ChangeRequest.error,
        Service.domain,
        _FROM.email.label("from_email"),
        _TO.email.label("to_email"),
        _ASKING.email.label("asking_email"),
    )
    .join(Service, Service.id == ChangeRequest.service_id)
    .join(_FROM, _FROM.id == ChangeRequest.from_account_id)
    .join(_TO, _TO.id == ChangeRequest.to_account_id)
    .join(_ASKING, _ASKING.id == ChangeRequest.asking_account_id)
)


def _envelope(row: Row[Any], view: dict[str, Any] | None, thread_root: str | None) -> Envelope:
    return Envelope(
        outbox_id=row.id,
        kind=row.kind,
        language=row.language,
        to_address=row.contact_email or row.email,  # Account.mail_address
        recipient={"email": row.email, "language": row.language},
        message_id=row.message_id,
        thread_root=thread_root,
        request=view,
        code=row.code,
        context=dict(row.context or {}),
        queued_at=row.created_at,
    )


def mark_sent(
    store: Store, outbox_ids: Sequence[int], now: datetime, *, scrub: bool = True
) -> None:
    """Handed over: done, and the plaintext code that mail carried is erased.

    ``scrub``: and not left in the write-ahead log either (store.scrub); a
    caller that records many groups in a row (a delivery pass) scrubs once,
    at its end, instead.
    """
    if not outbox_ids:
        return
    # Core: the ORM's bulk update (with its session synchronizing) costs more than the statement.
    table = Base.metadata.tables[OutboxMessage.__tablename__]
    with store.write() as session:
        session.execute(
            update(table)
            .where(table.c.id.in_(list(outbox_ids)))
            .values(status="sent", sent_at=now, code=None, last_error=None)
        )
    if scrub:
        store.scrub()


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
            gave_up = True
        else:
            row.status = "pending"
            row.claimed_by = None
            row.next_attempt_at = now + retry_delay(row.attempts, policy)
            return False
    store.scrub()
    return gave_up


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
