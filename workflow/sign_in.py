"""Signing in to the account pages by a mailed link, and the sessions it starts.

Email is the identity Countersign already trusts: whoever reads an account's
mail may act as that account on its pages.  A link's token and a session's
cookie value come from `secrets` and only their SHA-256 is stored; the token
lives in plain text only in the outbox row that carries it (as codes do),
erased once the mail is handed over.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select

from countersign.rules.states import NoticeKind
from countersign.store.db import Store
from countersign.store.models import Account, SignInLink, WebSession
from countersign.workflow import send_limits
from countersign.workflow.directory import valid_email
from countersign.workflow.facts import find_account, normalize_email
from countersign.workflow.lifecycle import record
from countersign.workflow.notices import queue_notice
from countersign.workflow.send_limits import SendLimits

MAX_CLIENT = 64


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.strip().encode()).hexdigest()


def new_secret() -> str:
    """256 random bits, URL-safe: a link's token or a session's cookie value."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class SignInSettings:
    link_valid: timedelta = timedelta(minutes=15)
    session_valid: timedelta = timedelta(hours=12)
    mail_domain: str = "countersign.localhost"


@dataclass(frozen=True)
class SignedIn:
    """The account a live session belongs to."""

    account_id: int
    email: str
    language: str


def ask(
    store: Store,
    address: str,
    client: str | None,
    now: datetime,
    settings: SignInSettings,
    limits: SendLimits,
) -> bool:
    """Mail a sign-in link to ``address``'s account, if there is one; whether one went.

    Every ask is counted, known address or not, so that neither the answer nor a
    limit's refusal (LimitReached) tells whether an account exists.
    """
    wanted = normalize_email(address)
    valid_email(wanted)  # Refusal("invalid") for what is not an address at all
    where = client[:MAX_CLIENT] if client else None
    with store.write() as session:
        send_limits.serialize(session, [f"sign-in:{wanted}", f"client:{where}"])
        send_limits.check_sign_in(session, wanted, where, now, limits)
        account = find_account(session, wanted)
        token = new_secret() if account is not None else None
        session.add(
            SignInLink(
                address=wanted,
                account_id=account.id if account is not None else None,
                client=where,
                token_hash=secret_hash(token) if token else None,
                created_at=now,
                expires_at=now + settings.link_valid,
                used_at=None,
            )
        )
        if account is None or token is None:
            return False
        minutes = max(1, int(settings.link_valid.total_seconds() // 60))
        queue_notice(
            session,
            kind=NoticeKind.SIGN_IN,
            account=account,
            now=now,
            domain=settings.mail_domain,
            code=token,
            context={"valid_minutes": minutes},
        )
        record(session, "sign-in-mailed", now, actor=account.email, via="web")
        return True


def link_state(store: Store, token: str, now: datetime) -> str:
    """ "usable", "used", "expired" or "unknown": a read, for the link's page."""
    with store.read() as session:
        link = session.scalar(select(SignInLink).where(SignInLink.token_hash == secret_hash(token)))
        return _state(link, now)


def _state(link: SignInLink | None, now: datetime) -> str:
    if link is None or link.account_id is None:
        return "unknown"
    if link.used_at is not None:
        return "used"
    return "expired" if now >= link.expires_at else "usable"


def redeem(
    store: Store, token: str, now: datetime, settings: SignInSettings
) -> tuple[str, SignedIn] | str:
    """Use the link once: a new session's cookie value and its account, or why not."""
    with store.write() as session:
        link = session.scalar(
            select(SignInLink).where(SignInLink.token_hash == secret_hash(token)).with_for_update()
        )
        state = _state(link, now)
        if link is None or link.account_id is None or state != "usable":
            return state
        link.used_at = now
        account = session.get(Account, link.account_id)
        assert account is not None
        secret = new_secret()
        session.add(
            WebSession(
                account_id=account.id,
                session_hash=secret_hash(secret),
                created_at=now,
                expires_at=now + settings.session_valid,
                ended_at=None,
            )
        )
        record(session, "signed-in", now, actor=account.email, via="web")
        return secret, SignedIn(account.id, account.email, account.language)


def signed_in(store: Store, secret: str, now: datetime) -> SignedIn | None:
    """The account of a live session, or None (unknown, ended or expired)."""
    if not secret:
        return None
    with store.read() as session:
        found = session.scalar(
            select(WebSession).where(WebSession.session_hash == secret_hash(secret))
        )
        if found is None or found.ended_at is not None or now >= found.expires_at:
            return None
        account = found.account
        return SignedIn(account.id, account.email, account.language)


def sign_out(store: Store, secret: str, now: datetime) -> None:
    if not secret:
        return
    with store.write() as session:
        found = session.scalar(
            select(WebSession).where(WebSession.session_hash == secret_hash(secret))
        )
        if found is not None and found.ended_at is None:
            found.ended_at = now
            record(session, "signed-out", now, actor=found.account.email, via="web")


def forget_stale(store: Store, now: datetime, limits: SendLimits) -> int:
    """Delete the sign-in links and sessions nothing can use or count any more.

    A link stays while it is valid and while the sign-in limits still count
    its ask (``limits.sign_in_window``); a session until it expires or ends.
    Each row names an address or an account, so none is kept for nothing.
    Returns 0 always: what is stale now is all gone, the next look is later.
    """
    with store.write() as session:
        session.execute(
            delete(SignInLink).where(
                SignInLink.expires_at < now,
                SignInLink.created_at < now - limits.sign_in_window,
            )
        )
        session.execute(
            delete(WebSession).where(
                or_(WebSession.expires_at < now, WebSession.ended_at.is_not(None))
            )
        )
    return 0
