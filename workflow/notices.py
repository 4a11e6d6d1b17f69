"""Queueing notices: an outbox row, in the transaction of the act that causes it."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from countersign.rules.states import NoticeKind
from countersign.store.db import append, wake
from countersign.store.models import Account, ChangeRequest, OutboxMessage, Validator


def new_message_id(domain: str) -> str:
    """A Message-ID of our own domain, fixed when the notice is queued so retries keep it."""
    return f"<{secrets.token_hex(16)}@{domain}>"


def queue_notice(
    session: Session,
    *,
    kind: NoticeKind,
    account: Account,
    now: datetime,
    domain: str,
    request: ChangeRequest | None = None,
    validator: Validator | None = None,
    code: str | None = None,
    context: dict[str, Any] | None = None,
) -> str:
    """Queue a notice in the caller's transaction; its Message-ID.

    Written as a plain row (store.db.append): nothing reads it back before the
    next statement, and a batch of acts then queues all its notices at once.
    """
    message_id = new_message_id(domain)
    append(
        session,
        OutboxMessage,
        {
            "request_id": request.id if request is not None else None,
            "account_id": account.id,
            "validator_id": validator.id if validator is not None else None,
            "kind": str(kind),
            "language": account.language,
            "code": code,
            "context": context or {},
            "message_id": message_id,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "last_error": None,
            "sent_at": None,
        },
    )
    wake(session, "outbox")
    return message_id
