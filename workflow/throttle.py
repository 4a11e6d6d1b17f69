"""The lock on guessing codes: too many bad codes from one sender or for one
request, and further tries are refused for a while, whatever the channel.

Every failed decision leaves a "bad-code" event (by sender, by request);
this counts them over a sliding window.  Mail, the web page and the API go
through the same `decide`, so they share one lock.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import false, func, or_, select
from sqlalchemy.orm import Session

from store.db import Store
from store.models import Event
from workflow.errors import BadCode
from workflow.facts import normalize_email

BAD_CODE = "bad-code"  # the event kind decide records on every failure
DEFAULT_LIMIT = 5
DEFAULT_WINDOW = timedelta(hours=1)


def check_and_count(
    store: Store,
    *,
    sender: str | None,
    request_id: int | None,
    now: datetime,
    limit: int = DEFAULT_LIMIT,
    window: timedelta = DEFAULT_WINDOW,
) -> None:
    """Refuse ("locked") when ``sender`` or ``request_id`` has had ``limit`` bad codes lately."""
    with store.read() as session:
        check_session(
            session, sender=sender, request_id=request_id, now=now, limit=limit, window=window
        )


def check_session(
    session: Session,
    *,
    sender: str | None,
    request_id: int | None,
    now: datetime,
    limit: int = DEFAULT_LIMIT,
    window: timedelta = DEFAULT_WINDOW,
) -> None:
    """The same check inside a transaction the caller holds (decide's own)."""
    if limit <= 0 or (sender is None and request_id is None):
        return
    actor = normalize_email(sender) if sender is not None else None
    by_sender, by_request = _recent(session, actor, request_id, now - window)
    if by_sender >= limit or by_request >= limit:
        # Neither the code's owner is told nor the attempt counted: a guesser
        # must not be able to make us mail anyone, nor extend the lock forever.
        raise BadCode("locked", "too many invalid codes; try again later")


def _recent(
    session: Session, actor: str | None, request_id: int | None, since: datetime
) -> tuple[int, int]:
    """How many recent bad-code events name this sender, and this request (one query)."""
    by_sender = Event.actor == actor if actor is not None else false()
    by_request = Event.request_id == request_id if request_id is not None else false()
    row = session.execute(
        select(func.count().filter(by_sender), func.count().filter(by_request)).where(
            Event.kind == BAD_CODE, Event.at >= since, or_(by_sender, by_request)
        )
    ).one()
    return int(row[0]), int(row[1])
