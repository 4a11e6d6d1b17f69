"""A log line for every audit event, once its transaction has committed.

The audit trail already records every act (a decision, a bad code, a state
change, a mail read, a delivery that failed) with its request, door and
actor; logging the same events after commit gives the operator's log one
line per act, never one for an act that was rolled back, without every act
having to log for itself.  Events never hold a code (workflow/ keeps them
out), so nothing here can leak one.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

log = logging.getLogger("countersign.audit")
PENDING = "audit-log-pending"  # session.info key: events inserted, not yet committed
# Events an operator should look at: the rest are the normal course of things.
_WARNINGS = {"bad-code", "delivery-failed", "locked-out"}
_DETAIL = ("messageId", "before", "after", "reason", "outcome", "read", "notice", "error")


def inserted(session: Session, rows: list[dict[str, Any]]) -> None:
    """Events just inserted in this session's transaction."""
    session.info.setdefault(PENDING, []).extend(rows)


def committed(session: Session) -> None:
    for row in session.info.pop(PENDING, ()):
        _line(row)


def rolled_back(session: Session) -> None:
    session.info.pop(PENDING, None)


def _line(row: dict[str, Any]) -> None:
    detail = row.get("detail") or {}
    kind = row["kind"]
    context = {
        "event": kind,
        "request": row.get("request_id"),
        "door": row.get("via"),
        "account": row.get("actor"),
        "message_id": detail.get("messageId"),
    }
    said = ", ".join(f"{key} {detail[key]}" for key in _DETAIL[1:] if detail.get(key))
    subject = f"request {row['request_id']}" if row.get("request_id") else "no request"
    level = logging.WARNING if kind in _WARNINGS or _refused(detail) else logging.INFO
    log.log(level, "%s: %s%s", subject, kind, f" ({said})" if said else "", extra=context)


def _refused(detail: dict[str, Any]) -> bool:
    return str(detail.get("outcome", "")).startswith(("refused", "bad-code", "locked"))
