"""Owned leases: every claim names the `serve` process that holds it.

Each `serve` process registers a row in ``workers`` and beats its heart there
every few seconds.  Work it claims (an inbox row, an outbox row, a named lease
such as an IMAP mailbox's reader) carries its worker id.  A claim whose owner
has not beaten for ``timeout`` is free again: ``release_orphans`` puts such
rows back to pending, so a dead daemon's work is taken by the others (or by
itself restarted) within the timeout and a beat, not after a fixed long lease.

A daemon that starts deletes the rows of its own earlier incarnations (same
instance key, kept in its data folder), so what it held when it died is free
at once, not after the timeout.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, case, delete, insert, not_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from countersign.store.db import Store, wake
from countersign.store.models import Base, HookDelivery, InboxMessage, Lease, OutboxMessage, Worker

INSTANCE_FILE = "instance-id"
FORGET_DEAD_AFTER = timedelta(days=1)  # a dead worker's row is kept this long, for `ps`-like views


@dataclass(frozen=True)
class Leased:
    """A table whose rows are claimed: held in ``held`` status, free again as ``free``."""

    model: type[Base]
    held: str
    free: str
    topic: str  # the sweep to wake when rows come free


LEASED = (
    Leased(OutboxMessage, held="sending", free="pending", topic="outbox"),
    Leased(InboxMessage, held="processing", free="pending", topic="inbox"),
    Leased(HookDelivery, held="sending", free="pending", topic="hooks"),
)


def instance_key(data_dir: str | Path) -> str:
    """This data folder's lasting identity: the same across restarts, made once."""
    path = Path(data_dir) / INSTANCE_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        key = uuid.uuid4().hex
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(key + "\n", encoding="ascii")
        return key


def register(store: Store, instance: str, now: datetime) -> int:
    """A new worker row for this process; earlier incarnations' rows (and claims) let go."""
    with store.write() as session:
        session.execute(delete(Worker).where(Worker.instance == instance))
        row = Worker(
            instance=instance,
            host=socket.gethostname()[:255],
            pid=os.getpid(),
            started_at=now,
            heartbeat_at=now,
        )
        session.add(row)
        session.flush()
        return row.id


def beat(store: Store, worker_id: int, instance: str, now: datetime) -> None:
    """Still alive; a row another daemon forgot (after a long outage) is made again."""
    with store.write() as session:
        updated = session.execute(
            update(Worker).where(Worker.id == worker_id).values(heartbeat_at=now)
        )
        if getattr(updated, "rowcount", 1) == 0:
            session.execute(
                insert(Worker).values(
                    id=worker_id,
                    instance=instance,
                    host=socket.gethostname()[:255],
                    pid=os.getpid(),
                    started_at=now,
                    heartbeat_at=now,
                )
            )


def unregister(store: Store, worker_id: int, now: datetime, timeout: timedelta) -> None:
    """A clean stop: the row goes, and with it what this worker still holds, at once."""
    with store.write() as session:
        session.execute(delete(Worker).where(Worker.id == worker_id))
    release_orphans(store, now, timeout)


def _orphaned(owner: Any, cutoff: datetime) -> Any:
    """The claim's owner is gone: none named, no row, or a heart that stopped."""
    live = select(Worker.id).where(Worker.heartbeat_at >= cutoff)
    return or_(owner.is_(None), not_(owner.in_(live)))


def release_orphans(
    store: Store, now: datetime, timeout: timedelta, *, heartbeats: bool = True
) -> dict[str, int]:
    """Put back to pending every claim whose owner is dead; how many, by sweep.

    Dead: no owner named, no worker row (a clean stop, or an earlier life of a
    daemon that started again), or, with ``heartbeats``, a heartbeat older than
    ``timeout``.
    """
    cutoff = now - timeout if heartbeats else datetime.min.replace(tzinfo=UTC)
    freed: dict[str, int] = {}
    with store.write() as session:
        for leased in LEASED:
            freed[leased.topic] = _release(session, leased, now, cutoff)
            if freed[leased.topic]:
                wake(session, leased.topic)
        session.execute(delete(Worker).where(Worker.heartbeat_at < now - FORGET_DEAD_AFTER))
    return freed


def give_back(store: Store, model: type[Base], owner: int | None, keep: set[int]) -> int:
    """Free what ``owner`` itself still holds in ``model``, but ``keep``: after a failed pass.

    A pass that raised (the store lost mid-way) leaves its claims held by a
    live owner; the next pass of the same sweep gives them back first.
    """
    leased = next(entry for entry in LEASED if entry.model is model)
    table: Any = model
    with store.write() as session:
        result = session.execute(
            update(table)
            .where(
                table.status == leased.held,
                table.claimed_by.is_(None) if owner is None else table.claimed_by == owner,
                table.id.not_in(sorted(keep)),
            )
            .values(status=leased.free, claimed_by=None)
            .execution_options(synchronize_session=False)
        )
        freed = int(getattr(result, "rowcount", 0) or 0)
        if freed:
            wake(session, leased.topic)
    return freed


def _release(session: Session, leased: Leased, now: datetime, cutoff: datetime) -> int:
    model: Any = leased.model
    result = session.execute(
        update(model)
        .where(model.status == leased.held, _orphaned(model.claimed_by, cutoff))
        .values(status=leased.free, claimed_by=None)  # due as it was when claimed
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


# --- named leases: one holder at a time of something that is not a row (an IMAP mailbox) --


def hold(store: Store, name: str, worker_id: int, now: datetime, timeout: timedelta) -> bool:
    """Take or keep the lease ``name``; True while this worker holds it.

    Free when nobody holds it, or when its holder's heart stopped ``timeout`` ago.
    """
    with store.write() as session:
        taken = session.execute(
            update(Lease)
            .where(
                Lease.name == name,
                or_(Lease.owner == worker_id, _orphaned(Lease.owner, now - timeout)),
            )
            .values(owner=worker_id, held_since=_since(worker_id, now))
            .execution_options(synchronize_session=False)
        )
        if getattr(taken, "rowcount", 0):
            return True
        if session.get(Lease, name) is not None:
            return False
    return _first_holder(store, name, worker_id, now)


def _since(worker_id: int, now: datetime) -> Any:
    # Kept while the same worker renews it: how long it has been held, for the operator.
    return case((Lease.owner == worker_id, Lease.held_since), else_=now)


def _first_holder(store: Store, name: str, worker_id: int, now: datetime) -> bool:
    try:
        with store.write() as session:
            session.add(Lease(name=name, owner=worker_id, held_since=now))
        return True
    except IntegrityError:  # another daemon made it first
        return False


def let_go(store: Store, name: str, worker_id: int) -> None:
    with store.write() as session:
        session.execute(
            update(Lease)
            .where(and_(Lease.name == name, Lease.owner == worker_id))
            .values(owner=None)
        )
