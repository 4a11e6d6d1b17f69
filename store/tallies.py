"""Tallies of requests by state, kept as they move, so no one counts the requests.

Every request is counted in the state it is in: one more when it is made,
one less in its old state and one more in its new one at every move, in the
transaction that makes the move.  (Requests are never deleted: retention
empties their mail, not their rows.)  The changes of a transaction are added
up in ``session.info`` and written just before it commits, one upsert per
state that changed, in the order of the states: locks taken late and always
in the same order never deadlock two daemons, and each transaction picks one
of ``SHARDS`` rows per state at random, so concurrent ones on PostgreSQL
rarely wait for each other.  A shard may go below zero; the sum per state
is what counts.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from countersign.store.models import RequestTally

SHARDS = 16
_PENDING = "tallies"  # session.info key: this transaction's increments, by state


def count(session: Session, state: str, change: int = 1) -> None:
    """``change`` more requests in ``state``, written when this transaction commits."""
    session.info.setdefault(_PENDING, Counter())[state] += change


def write_pending(session: Session) -> None:
    """The before-commit hook (store.db.Store): the transaction's increments, as upserts."""
    pending: Counter[str] | None = session.info.pop(_PENDING, None)
    if not pending:
        return
    shard = random.randrange(SHARDS)  # spreading writes, not a secret
    dialect = session.get_bind().dialect.name
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    rows = [
        {"state": state, "shard": shard, "count": pending[state]}
        for state in sorted(s for s, change in pending.items() if change)
    ]
    if not rows:
        return
    # One statement for every state (a move touches two, an apply four): a round trip each
    # was most of a short transaction's time on PostgreSQL.  Its rows in state order.
    upsert = make(RequestTally).values(rows)
    session.connection().execute(
        upsert.on_conflict_do_update(
            index_elements=[RequestTally.state, RequestTally.shard],
            set_={"count": RequestTally.count + upsert.excluded.count},
        )
    )


def totals(session: Session, states: Iterable[str]) -> dict[str, int]:
    """How many requests are in each of ``states``, read by the primary key."""
    query = (
        select(RequestTally.state, func.sum(RequestTally.count))
        .where(RequestTally.state.in_(list(states)))
        .group_by(RequestTally.state)
    )
    return {str(state): int(total or 0) for state, total in session.execute(query)}
