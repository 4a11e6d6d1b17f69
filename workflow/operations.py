"""The operator's acts: how the queues stand, the outbox, a request's audit trail, purging.

Nothing here ever returns a code: outbox rows are shown without theirs, and a
retried notice that must carry one gets a fresh code (the one it held was
erased when it failed, and was never delivered).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from countersign.rules.states import FINAL_STATES, NoticeKind, State
from countersign.store import tallies
from countersign.store.db import Store, wake
from countersign.store.models import (
    Account,
    ChangeRequest,
    Event,
    HookDelivery,
    ImapCursor,
    InboxMessage,
    OutboxMessage,
    Validator,
)
from countersign.workflow.codes import hash_code, new_code
from countersign.workflow.errors import NotFound, Refusal
from countersign.workflow.lifecycle import utcnow
from countersign.workflow.views import iso

FINISHED = tuple(str(s) for s in State if s in FINAL_STATES)
_CODE_CARRYING = {str(NoticeKind.CONFIRM_REQUEST), str(NoticeKind.REMINDER)}
_QUEUES = {
    "outbox": (OutboxMessage, ("pending", "sending"), "failed"),
    "inbox": (InboxMessage, ("pending", "processing"), "quarantined"),
    "hooks": (HookDelivery, ("pending", "sending"), "failed"),  # webhooks and the applier
}


def status(store: Store, now: datetime | None = None) -> dict[str, Any]:
    """Queue depths and the oldest due item of each, IMAP contact, quarantine, failures."""
    now = now or utcnow()
    with store.read() as session:
        queues = {name: _queue(session, *spec, now) for name, spec in _QUEUES.items()}
        imap = [
            {"mailbox": mailbox, "lastContact": iso(at)}
            for mailbox, at in session.execute(
                select(ImapCursor.mailbox, ImapCursor.contacted_at).order_by(ImapCursor.mailbox)
            )
        ]
        return {
            "queues": queues,
            "requests": request_counts(session),
            "imap": imap,
            "failingRecipients": _failing(session),
        }


def request_counts(session: Session) -> dict[str, int]:
    """Requests in each of the nine states, from their tallies (store/tallies.py).

    A few rows whatever the size of the store: nothing counts the requests.
    """
    counts = tallies.totals(session, [str(state) for state in State])
    return {str(state): counts.get(str(state), 0) for state in State}


def _queue(
    session: Session, model: Any, waiting: tuple[str, ...], stuck: str, now: datetime
) -> dict[str, Any]:
    # Only the statuses shown: what was sent or done is the history, counted by no one.
    grouped = (
        select(model.status, func.count())
        .where(model.status.in_((*waiting, stuck)))
        .group_by(model.status)
    )
    counts: dict[str, int] = {status: count for status, count in session.execute(grouped)}
    oldest = session.scalar(
        select(func.min(model.next_attempt_at)).where(model.status.in_(waiting))
    )
    oldest = _aware(oldest)
    return {
        "waiting": sum(counts.get(s, 0) for s in waiting),
        stuck: counts.get(stuck, 0),
        "oldestDue": iso(oldest),
        "oldestDueAgeSeconds": max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
    }


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite gives back naive datetimes; the store writes UTC.
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _failing(session: Session, limit: int = 20) -> list[dict[str, Any]]:
    query = (
        select(Account.email, func.count(), func.max(OutboxMessage.created_at))
        .join(Account, Account.id == OutboxMessage.account_id)
        .where(OutboxMessage.status == "failed")
        .group_by(Account.email)
        .order_by(func.max(OutboxMessage.created_at).desc())
        .limit(limit)
    )
    return [
        {"account": email, "failed": count, "latest": iso(_aware(at))}
        for email, count, at in session.execute(query)
    ]


def outbox_json(row: OutboxMessage, email: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "request": row.request_id,
        "kind": row.kind,
        "account": email,
        "messageId": row.message_id,
        "status": row.status,
        "attempts": row.attempts,
        "nextAttempt": iso(_aware(row.next_attempt_at)),
        "created": iso(_aware(row.created_at)),
        "sent": iso(_aware(row.sent_at)),
        "lastError": row.last_error,
    }


def outbox_list(store: Store, *, failed: bool = False, limit: int = 50) -> list[dict[str, Any]]:
    """The latest notices (newest first), or only those given up on."""
    with store.read() as session:
        query = select(OutboxMessage, Account.email).join(
            Account, Account.id == OutboxMessage.account_id
        )
        if failed:
            query = query.where(OutboxMessage.status == "failed")
        rows = session.execute(query.order_by(OutboxMessage.id.desc()).limit(limit))
        return [outbox_json(row, email) for row, email in rows]


def outbox_retry(store: Store, outbox_id: int, *, now: datetime | None = None) -> dict[str, Any]:
    """Send a failed notice again, from its first attempt; a code-carrying one with a fresh code."""
    now = now or utcnow()
    with store.write() as session:
        row = session.get(OutboxMessage, outbox_id, with_for_update=True)
        if row is None:
            raise NotFound("outbox message", outbox_id)
        if row.status != "failed":
            raise Refusal("not-failed", f"outbox message {outbox_id} is {row.status}")
        if row.kind in _CODE_CARRYING:
            _fresh_code(session, row)
        row.status, row.attempts, row.next_attempt_at, row.last_error = "pending", 0, now, None
        wake(session, "outbox")
        return outbox_json(row, row.account.email)


def _fresh_code(session: Session, row: OutboxMessage) -> None:
    validator = session.get(Validator, row.validator_id) if row.validator_id else None
    request = row.request
    if validator is None or request is None or request.state != State.VALIDATING:
        raise Refusal("closed", f"outbox message {row.id}: its request is no longer open")
    if validator.decision is not None:
        raise Refusal("closed", f"outbox message {row.id}: its validator has answered")
    code = new_code()
    validator.code_hash = hash_code(code)  # the earlier code was never delivered
    validator.delivery_error = None
    row.code = code


def audit(store: Store, request_id: int) -> list[dict[str, Any]]:
    """Every event of a request, oldest first: when, what, through which door, by whom."""
    with store.read() as session:
        if session.get(ChangeRequest, request_id) is None:
            raise NotFound("request", request_id)
        events = session.scalars(
            select(Event).where(Event.request_id == request_id).order_by(Event.at, Event.id)
        )
        return [
            {
                "at": iso(_aware(e.at)),
                "event": e.kind,
                "door": e.via,
                "actor": e.actor,
                "detail": e.detail,
            }
            for e in events
        ]


class Purged(NamedTuple):
    counts: dict[str, int]  # the shape `purge --json` prints (docs/contract.md)
    request_ids: list[int]
    hook_deliveries: int


def purge(store: Store, older_than: timedelta, *, now: datetime | None = None) -> Purged:
    """Forget the mail of requests finished before ``now - older_than``; keep the audit trail.

    Gone: the bodies and recipient addresses (``confirm+CODE@``) of the mail
    read for them and of mail older than the cut that concerned no request,
    the contents of their notices, and their validators' code hashes.  Kept:
    the requests, their validators' decisions, every event, the Message-IDs
    (so that a copy arriving late is still known).  Also gone: their webhook
    and applier deliveries that are over.  Returns the counts, the requests
    purged (whose notice files gateway/retention.py removes) and how many hook
    deliveries went.
    """
    now = now or utcnow()
    cut = now - older_than
    with store.write() as session:
        finished = select(ChangeRequest.id).where(
            ChangeRequest.state.in_(FINISHED), ChangeRequest.date_done < cut
        )
        ids = list(session.scalars(finished))
        counts = {
            "requests": len(ids),
            "mail": _purge_inbox(session, ids, cut),
            "notices": _purge_outbox(session, ids),
            "codes": _purge_codes(session, ids),
        }
        hooks = _purge_hook_deliveries(session, ids)
        return Purged(counts, ids, hooks)


def _purge_inbox(session: Session, request_ids: list[int], cut: datetime) -> int:
    read_for = select(Event.detail).where(
        Event.kind == "mail-in", Event.request_id.in_(request_ids)
    )
    inbox_ids = {detail.get("inbox") for detail in session.scalars(read_for)} - {None}
    unrelated = select(Event.detail).where(
        Event.kind == "mail-in", Event.request_id.is_(None), Event.at < cut
    )
    inbox_ids |= {detail.get("inbox") for detail in session.scalars(unrelated)} - {None}
    done = InboxMessage.status.notin_(("pending", "processing"))
    query = update(InboxMessage).where(
        InboxMessage.id.in_(inbox_ids), done, InboxMessage.raw != b""
    )
    result = session.execute(
        query.values(raw=b"", recipients=[], envelope_from=None).execution_options(
            synchronize_session=False
        )
    )
    return _changed(result)


def _purge_outbox(session: Session, request_ids: list[int]) -> int:
    query = update(OutboxMessage).where(
        OutboxMessage.request_id.in_(request_ids),
        OutboxMessage.status.in_(("sent", "failed")),
    )
    result = session.execute(
        query.values(code=None, context={}).execution_options(synchronize_session=False)
    )
    return _changed(result)


def _purge_codes(session: Session, request_ids: list[int]) -> int:
    query = update(Validator).where(
        Validator.request_id.in_(request_ids), Validator.code_hash.is_not(None)
    )
    result = session.execute(
        query.values(code_hash=None).execution_options(synchronize_session=False)
    )
    return _changed(result)


def _purge_hook_deliveries(session: Session, request_ids: list[int]) -> int:
    """The webhook and applier deliveries of these requests that are over: each holds
    the request as it was (names, addresses, the validators' words)."""
    query = delete(HookDelivery).where(
        HookDelivery.request_id.in_(request_ids), HookDelivery.status.in_(("sent", "failed"))
    )
    return _changed(session.execute(query.execution_options(synchronize_session=False)))


def _changed(result: Any) -> int:
    # An UPDATE's CursorResult: how many rows it changed.
    return int(result.rowcount or 0)
