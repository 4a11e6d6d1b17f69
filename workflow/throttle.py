"""The lock on guessing codes: too many bad codes from one sender or for one
request, and further tries are refused for a while, whatever the channel.

Every failed decision leaves a "bad-code" event (by sender, by request);
this counts them over a sliding window.  Mail, the web page and the API go
through the same `decide`, so they share one lock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
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
    tally = _tally(session, now - window)
    if tally is None or not tally.covers(actor, request_id):
        # Not counted beforehand for a batch: count for this one decision.
        tally = prepare(
            session,
            senders=[actor] if actor is not None else [],
            request_ids=[request_id] if request_id is not None else [],
            now=now,
            window=window,
        )
    if tally.senders[actor] >= limit or tally.requests[request_id] >= limit:
        # Neither the code's owner is told nor the attempt counted: a guesser
        # must not be able to make us mail anyone, nor extend the lock forever.
        raise BadCode("locked", "too many invalid codes; try again later")


TALLY = "bad-code-tally"  # session.info key, see prepare


@dataclass
class _Tally:
    """Recent bad codes of a batch's senders and requests, counted once, kept up to date."""

    since: datetime
    senders: Counter[str | None]
    requests: Counter[int | None]

    def covers(self, actor: str | None, request_id: int | None) -> bool:
        return (actor is None or actor in self.senders) and (
            request_id is None or request_id in self.requests
        )


def prepare(
    session: Session,
    *,
    senders: Iterable[str],
    request_ids: Iterable[int],
    now: datetime,
    window: timedelta = DEFAULT_WINDOW,
) -> _Tally:
    """Count, in one query, the recent bad codes of everyone a batch of decisions names.

    check_session then answers from these counts (kept current by counted())
    instead of asking once per decision.
    """
    actors = {normalize_email(s) for s in senders}
    ids = set(request_ids)
    tally = _Tally(
        now - window,
        Counter(dict.fromkeys(actors, 0)),
        Counter(dict.fromkeys(ids, 0)),
    )
    if actors or ids:
        rows = session.execute(
            select(Event.actor, Event.request_id).where(
                Event.kind == BAD_CODE,
                Event.at >= tally.since,
                or_(Event.actor.in_(actors), Event.request_id.in_(ids)),
            )
        )
        for actor, request_id in rows:
            if actor in actors:
                tally.senders[actor] += 1
            if request_id in ids:
                tally.requests[request_id] += 1
    session.info[TALLY] = tally
    return tally


def counted(session: Session, actor: str | None, request_id: int | None) -> None:
    """A bad-code event was just recorded: keep the batch's counts current."""
    tally = session.info.get(TALLY)
    if isinstance(tally, _Tally):
        if actor in tally.senders:
            tally.senders[actor] += 1
        if request_id in tally.requests:
            tally.requests[request_id] += 1


def _tally(session: Session, since: datetime) -> _Tally | None:
    tally = session.info.get(TALLY)
    # Counted for another window (another "now"): ask the database instead.
    return tally if isinstance(tally, _Tally) and tally.since == since else None
