"""The tables of the running service, beside the domain's (store/models.py): the daemons
and their leases, the account pages' sign-ins and sessions, the wrong codes the
guess limits count, the deliveries to the systems of record, the tallies of requests.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from countersign.store.base import Base

if TYPE_CHECKING:
    from countersign.store.models import Account


class Worker(Base):
    """One running `serve` process, alive while its heartbeat is recent (store/leases.py)."""

    __tablename__ = "workers"
    # A new life never gets the id of the last one (SQLite would reuse the highest).
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(primary_key=True)
    instance: Mapped[str] = mapped_column(String(64), index=True)  # its data folder's key
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime] = mapped_column(index=True)


class Lease(Base):
    """Something only one worker at a time may do (read one IMAP mailbox), and who does."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(512), primary_key=True)
    owner: Mapped[int | None] = mapped_column(Integer)
    held_since: Mapped[datetime]


class SignInLink(Base):
    """A sign-in asked for on the account page: the mailed link's hash, or only the ask.

    An ask for an address that names no account is kept too (no account, no
    token, no mail): the limits per address and per client count asks, so that
    a refusal cannot tell whether an account exists.
    """

    __tablename__ = "sign_in_links"
    __table_args__ = (
        Index("ix_sign_in_links_address_at", "address", "created_at"),
        Index("ix_sign_in_links_client_at", "client", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(320))  # as asked, lowercased
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    client: Mapped[str | None] = mapped_column(String(64))  # the asking IP address
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class WebSession(Base):
    """A signed-in browser: only the hash of its cookie's value is kept."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]

    account: Mapped[Account] = relationship()


class WrongCode(Base):
    """One wrong validation code tried, by whom (its source) and on which request.

    What the guess limits count (workflow/guess_limits.py): in the store, so
    every daemon sharing it sees the same counts.  Rows older than the window
    are removed as new ones come.
    """

    __tablename__ = "wrong_codes"
    __table_args__ = (
        Index("ix_wrong_codes_source_at", "source", "at"),
        Index("ix_wrong_codes_request_at", "request_id", "at"),
        Index("ix_wrong_codes_at", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[int | None] = mapped_column(Integer)  # as named; it may not exist
    via: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]


class HookDelivery(Base):
    """One event for one target (a webhook endpoint, or the applier), sent until it is answered.

    Written in the transaction of the act it tells of (workflow/hooks.py), with the
    request as it was then; the same ``event_id`` for every endpoint and every retry,
    so a receiver can drop a second copy.  Claimed like the outbox (store/leases.py).
    """

    __tablename__ = "hook_deliveries"
    __table_args__ = (
        Index("ix_hook_deliveries_status_due", "status", "next_attempt_at"),
        # In order per request and target: only the oldest open row of a chain is due.
        Index("ix_hook_deliveries_chain", "target", "request_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(40), index=True)
    type: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(String(2000))  # an endpoint's url, or "apply"
    request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    claimed_by: Mapped[int | None]  # the worker sending it (status 'sending')
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]


class RequestTally(Base):
    """How many requests are in each state: what /metrics and `status` report.

    Kept in the same transaction as each move (store/tallies.py), so a scrape
    reads a few rows instead of counting the requests.  Several rows per state
    (``shard``), summed when read: concurrent transactions on PostgreSQL
    rarely wait on the same row.
    """

    __tablename__ = "request_tallies"

    state: Mapped[str] = mapped_column(String(32), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
