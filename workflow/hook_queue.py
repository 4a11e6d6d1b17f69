"""The deliveries' life: claim what is due, in order per request, then record the answer.

Only the oldest open row of a chain (one target, one request) is ever due, so
a receiver sees a request's events in the order they happened even across
retries.  A claimed row is ``status = 'sending'`` and names its worker
(store/leases.py): a daemon killed mid-send leaves it to be sent again, with
the same event id, once its heartbeat stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.orm import aliased

from countersign.store.db import Store, wake
from countersign.store.models import HookDelivery
from countersign.workflow.errors import NotFound
from countersign.workflow.outbox import RetryPolicy, retry_delay
from countersign.workflow.views import iso

OPEN = ("pending", "sending")


@dataclass(frozen=True)
class Claimed:
    id: int
    event_id: str
    type: str
    target: str
    request_id: int | None
    body: dict[str, Any]
    attempts: int
    created_at: datetime


_EARLIER = aliased(HookDelivery)
_DUE = (
    select(HookDelivery)
    .where(
        HookDelivery.status == "pending",
        ~exists().where(
            _EARLIER.target == HookDelivery.target,
            _EARLIER.request_id == HookDelivery.request_id,
            _EARLIER.id < HookDelivery.id,
            _EARLIER.status.in_(OPEN),
        ),
    )
    .order_by(HookDelivery.id)
    .with_for_update(skip_locked=True, of=HookDelivery)
)


def claim_due(
    store: Store, now: datetime, limit: int = 50, owner: int | None = None
) -> list[Claimed]:
    """Claim up to ``limit`` due deliveries, each the head of its chain, for worker ``owner``."""
    with store.write() as session:
        rows = list(session.scalars(_DUE.where(HookDelivery.next_attempt_at <= now).limit(limit)))
        for row in rows:
            row.status, row.claimed_by = "sending", owner
        return [
            Claimed(
                r.id,
                r.event_id,
                r.type,
                r.target,
                r.request_id,
                dict(r.body),
                r.attempts,
                r.created_at,
            )
            for r in rows
        ]


def mark_delivered(store: Store, delivery_id: int, now: datetime) -> None:
    with store.write() as session:
        row = session.get(HookDelivery, delivery_id)
        if row is not None:
            delivered(row, now)
            wake(session, "hooks")  # the next of its chain is due now


def delivered(row: HookDelivery, now: datetime) -> None:
    row.status, row.claimed_by, row.delivered_at, row.last_error = "sent", None, now, None
    row.attempts += 1


def failed(row: HookDelivery, error: str, now: datetime, policy: RetryPolicy) -> bool:
    """Retry later, or give up (True) once ``give_up_after`` has passed since it was queued."""
    row.attempts += 1
    row.last_error = error[:2000]
    row.claimed_by = None
    if now - row.created_at >= policy.give_up_after:
        row.status = "failed"
        return True
    row.status = "pending"
    row.next_attempt_at = now + retry_delay(row.attempts, policy)
    return False


def mark_failed(
    store: Store, delivery_id: int, error: str, now: datetime, policy: RetryPolicy
) -> bool:
    with store.write() as session:
        row = session.get(HookDelivery, delivery_id)
        if row is None or row.status != "sending":
            return False
        gave_up = failed(row, error, now, policy)
        if gave_up:
            wake(session, "hooks")
        return gave_up


def listing(store: Store, *, failed_only: bool = False) -> list[dict[str, Any]]:
    """The deliveries, newest last, as `hooks list` shows them."""
    with store.read() as session:
        query = select(HookDelivery).order_by(HookDelivery.id)
        if failed_only:
            query = query.where(HookDelivery.status == "failed")
        return [delivery_json(row) for row in session.scalars(query)]


def delivery_json(row: HookDelivery) -> dict[str, Any]:
    return {
        "id": row.id,
        "event": row.event_id,
        "type": row.type,
        "target": row.target,
        "request": row.request_id,
        "status": row.status,
        "attempts": row.attempts,
        "nextAttempt": iso(row.next_attempt_at) if row.status == "pending" else None,
        "lastError": row.last_error,
        "created": iso(row.created_at),
        "delivered": iso(row.delivered_at),
    }


def retry(store: Store, delivery_id: int, now: datetime) -> dict[str, Any]:
    """A delivery given up (or waiting) is due again now; one delivered stays as it is."""
    with store.write() as session:
        row = session.get(HookDelivery, delivery_id)
        if row is None:
            raise NotFound("delivery", delivery_id)
        if row.status in ("failed", "pending"):
            # A second lease of life: counted from now, not from when it was queued.
            row.status, row.next_attempt_at, row.created_at = "pending", now, now
            wake(session, "hooks")
        return delivery_json(row)


def failed_count(store: Store) -> int:
    with store.read() as session:
        count = session.scalar(
            select(func.count()).select_from(HookDelivery).where(HookDelivery.status == "failed")
        )
        return int(count or 0)


def hook_policy(first_retry: timedelta, give_up_after: timedelta) -> RetryPolicy:
    return RetryPolicy(first_retry=first_retry, give_up_after=give_up_after)
