"""The tables: accounts, services, requests and their validators, the audit
trail, and the outbox and inbox that make mail durable on both sides; the
tables of the running service are in store/running.py, known from here too.

Times are stored as UTC and always come back timezone-aware, on SQLite as on
PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from countersign.store.base import NAMING as NAMING
from countersign.store.base import Base as Base
from countersign.store.base import UTCDateTime as UTCDateTime
from countersign.store.running import HookDelivery as HookDelivery
from countersign.store.running import Lease as Lease
from countersign.store.running import RequestTally as RequestTally
from countersign.store.running import SignInLink as SignInLink
from countersign.store.running import WebSession as WebSession
from countersign.store.running import Worker as Worker
from countersign.store.running import WrongCode as WrongCode


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # primary, lowercased
    contact_email: Mapped[str | None] = mapped_column(String(320))
    zone: Mapped[str] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(8), default="en")
    payment_method_valid: Mapped[bool] = mapped_column(Boolean, default=True)
    balance_due: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal(0))
    created_at: Mapped[datetime]

    @property
    def mail_address(self) -> str:
        """Where mail for this account goes."""
        return self.contact_email or self.email


class Service(Base):
    __tablename__ = "services"

    id: Mapped[int] = mapped_column(primary_key=True)
    domain: Mapped[str] = mapped_column(String(255), unique=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    tech_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    billing_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    created_at: Mapped[datetime]

    admin: Mapped[Account] = relationship(foreign_keys=[admin_id])
    tech: Mapped[Account] = relationship(foreign_keys=[tech_id])
    billing: Mapped[Account] = relationship(foreign_keys=[billing_id])


class ChangeRequest(Base):
    """A contact change request: OVHcloud's "task"."""

    __tablename__ = "requests"
    __table_args__ = (
        # The sweeps' claims, each in the order it takes due rows (due time, then id), so
        # that a batch reads its rows off the index without sorting the whole backlog.
        Index("ix_requests_due_expiry", "state", "expires_at", "id"),
        Index("ix_requests_due_reminder", "state", "next_reminder_at", "id"),
        # Apply's claim, the id listings by state, /metrics' count of open requests.
        Index("ix_requests_state_id", "state", "id"),
        Index("ix_requests_service_state", "service_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("services.id"))
    contact_types: Mapped[list[str]] = mapped_column(JSON)
    from_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    to_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    asking_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    state: Mapped[str] = mapped_column(String(32))
    date_request: Mapped[datetime]
    date_done: Mapped[datetime | None]
    expires_at: Mapped[datetime]
    next_reminder_at: Mapped[datetime | None]
    reminders_sent: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # No longer read (notices thread per recipient: workflow.outbox._thread_roots); a later
    # migration may drop it.
    thread_root: Mapped[str | None] = mapped_column(String(255))

    service: Mapped[Service] = relationship()
    from_account: Mapped[Account] = relationship(foreign_keys=[from_account_id])
    to_account: Mapped[Account] = relationship(foreign_keys=[to_account_id])
    asking_account: Mapped[Account] = relationship(foreign_keys=[asking_account_id])
    validators: Mapped[list[Validator]] = relationship(
        back_populates="request", order_by="Validator.id", cascade="all, delete-orphan"
    )


class Validator(Base):
    """One account whose decision a request needs, with its current code's hash."""

    __tablename__ = "validators"
    __table_args__ = (UniqueConstraint("request_id", "account_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    decision: Mapped[str | None] = mapped_column(String(16))
    decided_at: Mapped[datetime | None]
    via: Mapped[str | None] = mapped_column(String(16))
    code_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    code_issued_at: Mapped[datetime | None]
    delivery_error: Mapped[str | None] = mapped_column(Text)
    comment: Mapped[str | None] = mapped_column(String(500))  # their words, with the decision

    request: Mapped[ChangeRequest] = relationship(back_populates="validators")
    account: Mapped[Account] = relationship()


class Event(Base):
    """The audit trail: every act, by whom, through which channel."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_kind_at", "kind", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"), index=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(48))
    actor: Mapped[str | None] = mapped_column(String(320))
    via: Mapped[str | None] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class OutboxMessage(Base):
    """A notice to send, written in the same transaction as the act that caused it.

    ``code`` holds the plaintext validation code only until the mail carrying
    it has been handed over; it is erased then.
    """

    __tablename__ = "outbox"
    # The claim's order (due time, then id) read off the index, on PostgreSQL too.
    __table_args__ = (Index("ix_outbox_status_due_id", "status", "next_attempt_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    validator_id: Mapped[int | None] = mapped_column(ForeignKey("validators.id"))
    kind: Mapped[str] = mapped_column(String(32))
    language: Mapped[str] = mapped_column(String(8))
    code: Mapped[str | None] = mapped_column(String(64))
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    message_id: Mapped[str] = mapped_column(String(255), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    claimed_by: Mapped[int | None]  # the worker sending it (status 'sending'): store/leases.py
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]

    account: Mapped[Account] = relationship()
    request: Mapped[ChangeRequest | None] = relationship()


class InboxMessage(Base):
    """A mail received, stored before it is acknowledged, processed after."""

    __tablename__ = "inbox"
    __table_args__ = (Index("ix_inbox_status_due_id", "status", "next_attempt_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[str] = mapped_column(String(998), unique=True)
    channel: Mapped[str] = mapped_column(String(8))  # smtp | imap
    envelope_from: Mapped[str | None] = mapped_column(String(320))
    recipients: Mapped[list[str]] = mapped_column(JSON)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    claimed_by: Mapped[int | None]  # the worker processing it (status 'processing')
    outcome: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime]
    processed_at: Mapped[datetime | None]
    # The connecting client's address (SMTP), which the guess limits count by.
    source: Mapped[str | None] = mapped_column(String(64))
    # Hashes of the codes taken out of ``raw`` and ``recipients`` before storing
    # (workflow/redaction.py): only these stand-ins are read back as codes.
    code_hashes: Mapped[list[str] | None] = mapped_column(JSON)


class ImapCursor(Base):
    """Where IMAP reading stands in one folder: a changed UIDVALIDITY resets it."""

    __tablename__ = "imap_cursors"

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(512), unique=True)  # user@host/folder
    uidvalidity: Mapped[int] = mapped_column(BigInteger)  # 32-bit unsigned in IMAP
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    contacted_at: Mapped[datetime | None]  # the reader's last (re)connection or fetch


# The send limits count code mails by recipient address (workflow/send_limits.py):
# the accounts whose contact email is that address are found by this index.
Index("ix_accounts_contact_email", Account.contact_email)
