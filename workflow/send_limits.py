"""Limits on what anyone can make Countersign send: a confirmation service must not
become a relay that mails whomever a stranger names.

Counted from what the store already holds, so every daemon on one database
shares the counts: sign-in asks (sign_in_links, by address and by client), open
requests (by asking account) and confirm-request and reminder notices queued
(outbox, by recipient address).  Windows slide: a refusal says when the oldest
counted item leaves the window, i.e. when the limit lifts.

The account pages always apply the configured limits; an API key only the
limits given to it (none by default); the command line none at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import Session

from countersign.config import Config, parse_duration, parse_key_limits
from countersign.rules.states import OPEN_STATES, NoticeKind
from countersign.store.models import Account, ChangeRequest, OutboxMessage, SignInLink
from countersign.workflow.errors import Refusal
from countersign.workflow.views import iso

LIMIT_REACHED = "limit-reached"
MAIL_KINDS = (str(NoticeKind.CONFIRM_REQUEST), str(NoticeKind.REMINDER))


@dataclass(frozen=True)
class SendLimits:
    """Each limit; 0 means none."""

    sign_in_per_address: int = 0
    sign_in_per_client: int = 0
    sign_in_window: timedelta = timedelta(hours=1)
    open_requests_per_account: int = 0
    mails_per_recipient: int = 0
    mail_window: timedelta = timedelta(days=1)

    @classmethod
    def from_config(cls, config: Config) -> SendLimits:
        """The limits of the account pages."""
        limits = config.limits
        return cls(
            sign_in_per_address=limits.sign_in_per_address,
            sign_in_per_client=limits.sign_in_per_client,
            sign_in_window=parse_duration(limits.sign_in_window),
            open_requests_per_account=limits.open_requests_per_account,
            mails_per_recipient=limits.mails_per_recipient,
            mail_window=parse_duration(limits.mail_window),
        )


NO_LIMITS = SendLimits()


def key_limits(config: Config) -> dict[str, SendLimits]:
    """Each API key's own limits from ``api.key_limits`` (checked by load_config)."""
    window = parse_duration(config.limits.mail_window)
    return {
        key: replace(NO_LIMITS, mail_window=window, **parse_key_limits(key, spec))  # type: ignore[arg-type]
        for key, spec in config.api.key_limits.items()
    }


class LimitReached(Refusal):
    """A limit met: which, how much it allows, and when it lifts (None: when one closes)."""

    def __init__(self, limit: str, allowed: int, lifts_at: datetime | None, what: str) -> None:
        if lifts_at is not None:
            when = f"it lifts at {iso(lifts_at)}"
        elif limit == "open_requests_per_account":
            when = "it lifts when one of them closes"
        else:
            when = "ask for fewer at once"
        super().__init__(LIMIT_REACHED, f"limit {limit} ({allowed}) reached for {what}; {when}")
        self.limit = limit
        self.allowed = allowed
        self.lifts_at = lifts_at
        self.what = what

    def retry_after(self, now: datetime) -> int | None:
        """Seconds until it lifts, for an HTTP Retry-After header."""
        if self.lifts_at is None:
            return None
        return max(1, int((self.lifts_at - now).total_seconds()) + 1)


def serialize(session: Session, keys: Iterable[str]) -> None:
    """Take each key's lock for this transaction, so two daemons cannot both count
    "one below the limit" and both send.  SQLite's BEGIN IMMEDIATE already does."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for key in sorted(set(keys)):  # one order for everyone: no deadlock
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})


def _check_window(
    times: list[datetime], allowed: int, window: timedelta, limit: str, what: str, adding: int = 1
) -> None:
    if allowed and len(times) + adding > allowed:
        if adding > allowed or not times:
            raise LimitReached(limit, allowed, None, what)  # more at once than ever allowed
        # The last of the oldest ones that must leave the window before `adding` more fit.
        leaving = sorted(times)[len(times) + adding - allowed - 1]
        raise LimitReached(limit, allowed, leaving + window, what)


def check_sign_in(
    session: Session, address: str, client: str | None, now: datetime, limits: SendLimits
) -> None:
    since = now - limits.sign_in_window
    recent = select(SignInLink.created_at).where(SignInLink.created_at > since)
    if limits.sign_in_per_address:
        times = list(session.scalars(recent.where(SignInLink.address == address)))
        _check_window(
            times,
            limits.sign_in_per_address,
            limits.sign_in_window,
            "sign_in_per_address",
            address,
        )
    if limits.sign_in_per_client and client is not None:
        times = list(session.scalars(recent.where(SignInLink.client == client)))
        _check_window(
            times,
            limits.sign_in_per_client,
            limits.sign_in_window,
            "sign_in_per_client",
            f"client {client}",
        )


def check_open_requests(
    session: Session, account: Account, adding: int, limits: SendLimits
) -> None:
    allowed = limits.open_requests_per_account
    if not allowed or adding <= 0:
        return
    open_now = session.scalar(
        select(func.count())
        .select_from(ChangeRequest)
        .where(
            ChangeRequest.asking_account_id == account.id,
            ChangeRequest.state.in_([str(s) for s in OPEN_STATES]),
        )
    )
    if (open_now or 0) + adding > allowed:
        raise LimitReached("open_requests_per_account", allowed, None, account.email)


def check_mails(
    session: Session, recipients: Iterable[Account], now: datetime, limits: SendLimits
) -> None:
    """Refuse if any recipient address would get more code mails than allowed."""
    allowed = limits.mails_per_recipient
    if not allowed:
        return
    wanted = Counter(account.mail_address.strip().lower() for account in recipients)
    since = now - limits.mail_window
    for address, adding in sorted(wanted.items()):
        times = _mail_times(session, address, since)
        _check_window(
            times, allowed, limits.mail_window, "mails_per_recipient", address, adding=adding
        )


def _mail_times(session: Session, address: str, since: datetime) -> list[datetime]:
    # Every account whose mail goes to this address counts: one inbox, one limit.
    # (Contact emails are stored lowercased, like primary ones: both are indexed.)
    holders = select(Account.id).where(
        or_(
            Account.contact_email == address,
            (Account.email == address) & Account.contact_email.is_(None),
        )
    )
    return list(
        session.scalars(
            select(OutboxMessage.created_at).where(
                OutboxMessage.account_id.in_(holders),
                OutboxMessage.kind.in_(MAIL_KINDS),
                OutboxMessage.created_at > since,
            )
        )
    )


def _mail_keys(recipients: Iterable[Account]) -> list[str]:
    return [f"mails:{account.mail_address.strip().lower()}" for account in recipients]


def check_change(
    session: Session,
    asking: Account,
    recipients: list[Account],
    adding: int,
    now: datetime,
    limits: SendLimits,
) -> None:
    """A change making ``adding`` requests that mail a code to each of ``recipients``."""
    serialize(session, [f"open:{asking.email}", *_mail_keys(recipients)])
    check_open_requests(session, asking, adding, limits)
    check_mails(session, recipients, now, limits)


def check_resend(
    session: Session, recipients: list[Account], now: datetime, limits: SendLimits
) -> None:
    """A resend mailing a new code to each of ``recipients``."""
    serialize(session, _mail_keys(recipients))
    check_mails(session, recipients, now, limits)


def limits_for(keys: Mapping[str, SendLimits], key: str | None) -> SendLimits | None:
    """The limits of the API key a call carries, or None."""
    return keys.get(key) if key is not None else None
