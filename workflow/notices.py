"""Queueing notices: an outbox row, in the transaction of the act that causes it."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from rules.states import NoticeKind
from store.db import wake
from store.models import Account, ChangeRequest, OutboxMessage, Validator


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
) -> OutboxMessage:
    message = OutboxMessage(
        request=request,
        account=account,
        validator_id=validator.id if validator is not None else None,
        kind=str(kind),
        language=account.language,
        code=code,
        context=context or {},
        message_id=new_message_id(domain),
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(message)
    if request is not None and request.thread_root is None:
        request.thread_root = message.message_id
    wake(session, "outbox")
    return message
