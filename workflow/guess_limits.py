"""Limits on guessing validation codes that cost only the guesser.

A code carries 160 random bits: guessing one is not the risk, wearing the
service (and its audit trail, and its validators) down is.  So:

- a valid code is looked at first and always works, whoever else tried what;
  limits only ever refuse *wrong* codes;
- wrong codes are counted per source (the client address of the page and the
  API, the connecting client of SMTP; see gateway/sources.py), and once a
  source has had ``policy.bad_code_limit`` of them within
  ``policy.bad_code_window`` its further wrong codes are refused as "locked"
  (429 / 450) without being recorded or answered;
- wrong codes naming one request are counted from every source too, and past
  ``policy.bad_code_request_limit`` (far more than a validator ever mistypes)
  further ones are refused without an audit event each;
- the command line (source None) is the operator: never counted, never limited.

The counts are rows of ``wrong_codes`` in the store, so every daemon sharing it
sees the same ones; rows older than the window go as new ones come.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.orm import Session

from countersign.rules.replies import Reason, request_flooded, source_locked
from countersign.store.db import append
from countersign.store.models import WrongCode
from countersign.workflow.errors import CodeRefused
from countersign.workflow.policy import Policy

# Which refusals are guesses (or forgeries with someone else's code) is the reply
# policy's (rules/replies.GUESSES); "used", "closed", "expired" answer a real code.
MAX_SOURCE = 64


def source_key(address: str) -> str:
    """What one source is: an IPv4 address, an IPv6 /64 (one subscriber's), or the text given."""
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return address.strip()[:MAX_SOURCE] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def wrong_code(
    session: Session,
    bad: CodeRefused,
    *,
    source: str | None,
    request_id: int | None,
    via: str,
    now: datetime,
    policy: Policy,
) -> tuple[CodeRefused, bool]:
    """Count one wrong code; the refusal to give and whether to record it in the audit trail."""
    if source is None:
        return bad, True  # the operator's command line
    if source_limited(session, source, now, policy):
        return locked("too many invalid codes from your address; try again later"), False
    count(session, source, request_id, via, now, policy)
    if request_id is not None and request_limited(session, request_id, now, policy):
        return locked("too many invalid codes for this request lately; try again later"), False
    return bad, True


def locked(message: str) -> CodeRefused:
    return CodeRefused(Reason.LOCKED, message)


def source_limited(session: Session, source: str, now: datetime, policy: Policy) -> bool:
    """Whether ``source`` has used up its wrong codes for now (a read only)."""
    if policy.bad_code_limit <= 0:
        return False  # no limit: nothing to count
    seen = _count(session, WrongCode.source == source, now, policy)
    return source_locked(seen, policy.bad_code_limit)


def request_limited(session: Session, request_id: int, now: datetime, policy: Policy) -> bool:
    if policy.bad_code_request_limit <= 0:
        return False  # no limit: nothing to count
    seen = _count(session, WrongCode.request_id == request_id, now, policy)
    return request_flooded(seen, policy.bad_code_request_limit)


def _count(session: Session, where: ColumnElement[bool], now: datetime, policy: Policy) -> int:
    since = now - policy.bad_code_window
    query = select(func.count()).select_from(WrongCode).where(where, WrongCode.at >= since)
    return int(session.scalar(query) or 0)


def count(
    session: Session,
    source: str,
    request_id: int | None,
    via: str,
    now: datetime,
    policy: Policy,
) -> None:
    """One wrong code more against ``source`` (and the request it named)."""
    # Counted rows older than the window count for nothing any more.
    session.execute(delete(WrongCode).where(WrongCode.at < now - policy.bad_code_window))
    append(
        session,
        WrongCode,
        {"source": source[:MAX_SOURCE], "request_id": request_id, "via": via, "at": now},
    )
