"""Where IMAP reading stands in each folder: UIDVALIDITY and the last UID stored.

Messages fetched over IMAP are stored in the same transaction that moves the
cursor past them, so the cursor never claims more than the inbox holds.  A new
UIDVALIDITY voids every UID known: the cursor starts over and the inbox's
Message-ID deduplication keeps what is fetched again from being acted on twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from countersign.store.db import Store
from countersign.store.models import ImapCursor
from countersign.workflow.inbox import insert_received


@dataclass(frozen=True)
class Cursor:
    uidvalidity: int
    last_uid: int


def read_cursor(store: Store, mailbox: str) -> Cursor | None:
    with store.read() as session:
        row = session.scalar(select(ImapCursor).where(ImapCursor.mailbox == mailbox))
        return Cursor(row.uidvalidity, row.last_uid) if row is not None else None


def start_cursor(store: Store, mailbox: str, uidvalidity: int) -> Cursor:
    """The cursor for this UIDVALIDITY: kept if it matches, else started over at UID 0."""
    now = datetime.now(UTC)
    with store.write() as session:
        row = _locked(session, mailbox)
        if row is None:
            session.add(
                ImapCursor(mailbox=mailbox, uidvalidity=uidvalidity, last_uid=0, contacted_at=now)
            )
            return Cursor(uidvalidity, 0)
        row.contacted_at = now  # for `countersign status`: when IMAP last answered
        if row.uidvalidity != uidvalidity:
            row.uidvalidity = uidvalidity
            row.last_uid = 0
        return Cursor(row.uidvalidity, row.last_uid)


def store_fetched(
    store: Store,
    mailbox: str,
    cursor: Cursor,
    messages: Sequence[tuple[int, bytes]],
    *,
    skipped: Sequence[int] = (),
    now: datetime,
) -> Cursor:
    """Store fetched ``(uid, raw)`` messages and move the cursor past them (and ``skipped``)."""
    with store.write() as session:
        for _uid, raw in messages:
            insert_received(
                session, raw, channel="imap", envelope_from=None, recipients=(), now=now
            )
        row = _locked(session, mailbox)
        if row is None or row.uidvalidity != cursor.uidvalidity:
            # Another reader restarted this folder meanwhile: its cursor stands.
            return cursor
        uids = [uid for uid, _ in messages] + list(skipped)
        row.last_uid = max([row.last_uid, *uids])
        row.contacted_at = now
        return Cursor(row.uidvalidity, row.last_uid)


def touch_cursor(store: Store, mailbox: str, now: datetime) -> None:
    """The server answered (an IDLE round, a NOOP): `countersign status` shows when."""
    with store.write() as session:
        session.execute(
            update(ImapCursor).where(ImapCursor.mailbox == mailbox).values(contacted_at=now)
        )


def _locked(session: Session, mailbox: str) -> ImapCursor | None:
    query = select(ImapCursor).where(ImapCursor.mailbox == mailbox).with_for_update()
    return session.scalar(query)
