"""Replies as mail clients write them, and what the store says about requests, for mail-in tests."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select

from countersign.rules.contacts import ContactType
from countersign.store.db import Store
from countersign.store.models import Event, InboxMessage, OutboxMessage
from countersign.workflow import requests
from countersign.workflow.policy import Policy

DOMAIN = "countersign.localhost"

QUOTED_NOTICE = """\
> Countersign request #{request_id}: change of contacts for example.com
>
> Hello,
>
> admin@example.com asks to make new@example.com the technical contact.
> To accept, reply to this message with the word ACCEPT, or open:
> http://127.0.0.1:8080/confirm/{request_id}?token={code}
> To decline, reply with DECLINE.
>
> Your validation code: {code}
"""


def reply(
    code: str | None,
    *,
    first_line: str = "Accept, thanks",
    sender: str = "admin@example.com",
    request_id: int = 1,
    in_reply_to: str | None = None,
    message_id: str | None = None,
    subject: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    to: str | None = None,
) -> bytes:
    """A top-posted reply quoting the confirm-request, as Gmail or Thunderbird send it."""
    to = to or (f"confirm+{code}@{DOMAIN}" if code else f"confirm@{DOMAIN}")
    lines = [
        f"From: Someone <{sender}>",
        f"To: {to}",
        f"Subject: {subject or f'Re: [Countersign #{request_id}] Change of contacts for example.com'}",
        "Date: Mon, 02 Nov 2026 09:30:00 +0000",
        f"Message-ID: {message_id or f'<{uuid.uuid4().hex}@mail.example.com>'}",
        *([f"In-Reply-To: {in_reply_to}", f"References: {in_reply_to}"] if in_reply_to else []),
        *(f"{name}: {value}" for name, value in headers),
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    body = (
        f"{first_line}\n\n--\nSomeone\n\n"
        f"On Mon, 2 Nov 2026 at 09:00, Countersign <contacts@{DOMAIN}> wrote:\n"
        + QUOTED_NOTICE.format(request_id=request_id, code=code or "XXXX")
    )
    return ("\r\n".join(lines) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode()


def new_tech_request(
    store: Store, policy: Policy, now: datetime, domain: str = "example.com"
) -> int:
    (made,) = requests.change_contacts(
        store, domain, "admin@example.com", {ContactType.TECH: "new@example.com"}, policy, now=now
    )
    return int(made["id"])


def codes(store: Store, request_id: int) -> dict[str, str]:
    """Each validator's newest code, from the outbox rows that carry them."""
    with store.read() as session:
        rows = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.request_id == request_id, OutboxMessage.code.is_not(None))
            .order_by(OutboxMessage.id)
        )
        return {row.account.email: str(row.code) for row in rows}


def notice_ids(store: Store, request_id: int) -> dict[str, str]:
    """The Message-ID of the confirm-request each validator got."""
    with store.read() as session:
        rows = session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.request_id == request_id, OutboxMessage.kind == "confirm-request"
            )
        )
        return {row.account.email: row.message_id for row in rows}


def command_results(store: Store) -> list[tuple[str, str]]:
    """(account, reason code) of every command-result queued."""
    with store.read() as session:
        rows = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.kind == "command-result")
            .order_by(OutboxMessage.id)
        )
        return [(row.account.email, str(row.context.get("reason_code"))) for row in rows]


def inbox_rows(store: Store) -> list[tuple[str, str | None]]:
    with store.read() as session:
        rows = session.scalars(select(InboxMessage).order_by(InboxMessage.id))
        return [(row.status, row.outcome) for row in rows]


def mail_events(store: Store) -> list[dict[str, object]]:
    with store.read() as session:
        rows = session.scalars(select(Event).where(Event.kind == "mail-in").order_by(Event.id))
        return [dict(row.detail) for row in rows]


def decisions(store: Store, request_id: int) -> dict[str, tuple[str | None, str | None]]:
    shown = requests.show(store, request_id)
    return {v["account"]: (v["decision"], v["via"]) for v in shown["validators"]}
