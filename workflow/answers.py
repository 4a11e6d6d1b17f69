"""Answers to mailed commands that could not be applied (command-result notices).

An answer goes only to the account a code belongs to, never to whoever sent
the mail, never quotes the mail, and goes at most once a day per account and
reason: a loop between us and a misconfigured auto-responder, or a guesser,
cannot make us mail anyone more than that.  Who is told about which reason is
the reply policy's (rules/replies.TREATMENTS); the words are the templates'.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from countersign.rules.replies import Reason
from countersign.rules.states import NoticeKind
from countersign.store.models import Account, ChangeRequest, OutboxMessage
from countersign.workflow.notices import queue_notice

ANSWER_EVERY = timedelta(days=1)


def answer(
    session: Session,
    *,
    account: Account,
    request: ChangeRequest,
    reason: Reason,
    now: datetime,
    domain: str,
) -> bool:
    """Queue one command-result to ``account`` unless it had one for ``reason`` today."""
    if answered_lately(session, account.id, reason, now):
        return False
    queue_notice(
        session,
        kind=NoticeKind.COMMAND_RESULT,
        account=account,
        request=request,
        now=now,
        domain=domain,
        # Its words are the templates' (templates/{lang}/words.j2 `reasons`), by this code.
        context={"reason_code": str(reason)},
    )
    return True


def answered_lately(session: Session, account_id: int, reason: Reason, now: datetime) -> bool:
    # Few rows per account and day: the reason is compared here, not in JSON SQL
    # (which SQLite and PostgreSQL spell differently).
    contexts = session.scalars(
        select(OutboxMessage.context).where(
            OutboxMessage.account_id == account_id,
            OutboxMessage.kind == str(NoticeKind.COMMAND_RESULT),
            OutboxMessage.created_at > now - ANSWER_EVERY,
        )
    )
    return any((context or {}).get("reason_code") == reason for context in contexts)
