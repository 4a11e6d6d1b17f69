"""Which request a reply belongs to, from the notices of ours it names.

A notice's Message-ID and request never change, so the lookup is safe to make
ahead of acting, for a whole batch at once (workflow/preloaded.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from countersign.store.models import OutboxMessage

MAX_REFERENCES = 20


def thread_of(
    session: Session, replied_to: Sequence[str], known: Mapping[str, int] | None = None
) -> int | None:
    """The request whose notice this mail replies to, when its references name exactly one.

    ``known``: notices -> request looked up beforehand (lookup_threads); None looks up.
    """
    ids = reference_ids(replied_to)
    if not ids:
        return None
    threads = known if known is not None else lookup_threads(session, [ids])
    found = {threads[i] for i in ids if i in threads}
    return found.pop() if len(found) == 1 else None


def lookup_threads(session: Session, references: Sequence[Sequence[str]]) -> dict[str, int]:
    """Our notices among these Message-IDs -> their request, in one query for many messages."""
    ids = sorted({i for refs in references for i in reference_ids(refs)})
    if not ids:
        return {}
    rows = session.execute(
        select(OutboxMessage.message_id, OutboxMessage.request_id).where(
            OutboxMessage.message_id.in_(ids), OutboxMessage.request_id.is_not(None)
        )
    )
    return {message_id: request_id for message_id, request_id in rows if request_id is not None}


def reference_ids(replied_to: Sequence[str]) -> list[str]:
    return [i for i in replied_to[:MAX_REFERENCES] if i]
