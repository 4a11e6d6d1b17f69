"""Answers to mailed commands that could not be applied (command-result notices).

An answer goes only to the account a code belongs to, never to whoever sent
the mail, never quotes the mail, and goes at most once a day per account and
reason: a loop between us and a misconfigured auto-responder, or a guesser,
cannot make us mail anyone more than that.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from countersign.rules.states import NoticeKind
from countersign.store.models import Account, ChangeRequest, OutboxMessage
from countersign.workflow.notices import queue_notice

ANSWER_EVERY = timedelta(days=1)

# Reason code -> the line shown after "Reason:" in the recipient's language.
# No line of a notice may begin with a command word: these follow "Reason:".
REASONS: dict[str, dict[str, str]] = {
    "unknown-code": {
        "en": "this validation code is not valid for this request "
        "(a newer message may have replaced it)",
        "fr": "ce code de validation n'est pas valable pour cette demande "
        "(un message plus récent l'a peut-être remplacé)",
    },
    "used": {
        "en": "you have already answered this request",
        "fr": "vous avez déjà répondu à cette demande",
    },
    "closed": {
        "en": "this request no longer waits for answers",
        "fr": "cette demande n'attend plus de réponse",
    },
    "expired": {
        "en": "this request has expired",
        "fr": "cette demande a expiré",
    },
    "ambiguous": {
        "en": "your message holds both an acceptance and a refusal",
        "fr": "votre message contient à la fois une acceptation et un refus",
    },
    "no-command": {
        "en": "the first lines of your message hold neither ACCEPT nor DECLINE",
        "fr": "les premières lignes de votre message ne contiennent ni ACCEPTER ni REFUSER",
    },
    "no-code": {
        "en": "your message holds no validation code",
        "fr": "votre message ne contient aucun code de validation",
    },
}


def reason_text(reason: str, language: str) -> str:
    texts = REASONS.get(reason, REASONS["unknown-code"])
    return texts.get(language, texts["en"])


def answer(
    session: Session,
    *,
    account: Account,
    request: ChangeRequest,
    reason: str,
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
        context={"reason": reason_text(reason, account.language), "reason_code": reason},
    )
    return True


def answered_lately(session: Session, account_id: int, reason: str, now: datetime) -> bool:
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
