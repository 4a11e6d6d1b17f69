"""The operator's view of the inbox: the latest messages, the quarantined ones, a retry."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import defer

from countersign.store.db import Store, wake
from countersign.store.models import InboxMessage
from countersign.workflow.errors import NotFound, Refusal
from countersign.workflow.inbox_batch import QUARANTINED
from countersign.workflow.lifecycle import utcnow
from countersign.workflow.views import iso


def inbox_json(row: InboxMessage) -> dict[str, Any]:
    return {
        "id": row.id,
        "messageId": row.message_id,
        "channel": row.channel,
        "envelopeFrom": row.envelope_from,
        "recipients": list(row.recipients or ()),
        "status": row.status,
        "attempts": row.attempts,
        "outcome": row.outcome,
        "received": iso(row.received_at),
        "processed": iso(row.processed_at),
    }


def list_inbox(store: Store, *, failed: bool = False, limit: int = 50) -> list[dict[str, Any]]:
    """The latest messages (newest first), or only the quarantined ones."""
    with store.read() as session:
        query = select(InboxMessage).options(defer(InboxMessage.raw))
        if failed:
            query = query.where(InboxMessage.status == QUARANTINED)
        rows = session.scalars(query.order_by(InboxMessage.id.desc()).limit(limit))
        return [inbox_json(row) for row in rows]


def retry(store: Store, inbox_id: int, *, now: datetime | None = None) -> dict[str, Any]:
    """Give a quarantined message a fresh set of attempts."""
    if not 0 < inbox_id < 2**31:
        raise NotFound("inbox message", inbox_id)
    with store.write() as session:
        row = session.get(InboxMessage, inbox_id, with_for_update=True)
        if row is None:
            raise NotFound("inbox message", inbox_id)
        if row.status != QUARANTINED:
            raise Refusal("not-quarantined", f"inbox message {inbox_id} is {row.status}")
        row.status = "pending"
        row.attempts = 0
        row.next_attempt_at = now or utcnow()
        wake(session, "inbox")
        return inbox_json(row)
