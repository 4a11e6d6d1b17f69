"""Events handed to the systems of record: queued in the transaction of the act.

Every state change of a request and every validator decision is already an
audit event (workflow.lifecycle.record); for each one of a type a webhook
endpoint wants, a ``hook_deliveries`` row is appended beside it, in the same
transaction, with the request as it is at that moment.  The applier's
``request.apply`` is queued the same way when a request reaches ``doing``.
Nothing here talks to the network: gateway/hooks/sender.py sends what is due.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from countersign.config import Config
from countersign.store.db import Store, append, wake
from countersign.store.models import ChangeRequest, HookDelivery
from countersign.workflow.views import iso, request_json

TARGETS = "hook-targets"  # session.info key: the endpoints, set by attach()
APPLIER = "hook-applier"  # session.info key: whether `doing` waits for apply.url
APPLY_TARGET = "apply"  # the target name of the applier's rows
APPLY_TYPE = "request.apply"
TOPIC = "hooks"

# The audit trail's kinds that are events for the outside, and their public type.
EVENT_TYPES = {
    "created": "request.created",
    "state": "request.state_changed",
    "accept": "validator.decided",
    "decline": "validator.decided",
}


@dataclass(frozen=True)
class Target:
    name: str  # the endpoint's url
    types: frozenset[str]  # empty: every type


def attach(store: Store, config: Config) -> None:
    """Let this store's acts queue events for the configured endpoints (and the applier)."""
    store.session_info[TARGETS] = tuple(
        Target(endpoint.url, frozenset(endpoint.events)) for endpoint in config.hooks.endpoints
    )
    store.session_info[APPLIER] = bool(config.apply.url)


def applier_set(session: Session) -> bool:
    return bool(session.info.get(APPLIER))


def new_event_id() -> str:
    return f"evt_{secrets.token_hex(12)}"


def on_record(
    session: Session,
    kind: str,
    now: datetime,
    request: ChangeRequest | None,
    actor: str | None,
    via: str | None,
    detail: dict[str, Any],
) -> None:
    """Queue the event an audit record stands for, to every endpoint that wants its type."""
    event_type = EVENT_TYPES.get(kind)
    if event_type is None or request is None:
        return
    targets: Sequence[Target] = session.info.get(TARGETS, ())
    names = [t.name for t in targets if not t.types or event_type in t.types]
    if names:
        _queue(session, event_type, now, request, _event_data(kind, actor, via, detail), names)


def _event_data(kind: str, actor: str | None, via: str | None, detail: dict[str, Any]) -> Any:
    """What a webhook event says beside the request: the decision, or the states."""
    if kind in ("accept", "decline"):
        return {"account": actor, "decision": kind, "via": via}
    if kind == "state":
        return {"before": detail.get("before"), "after": detail.get("after")}
    return {"via": via}


def queue_apply(session: Session, request: ChangeRequest, now: datetime) -> None:
    """The change to make, for apply.url: the request stays `doing` until it answers."""
    _queue(session, APPLY_TYPE, now, request, {}, [APPLY_TARGET])


def _queue(
    session: Session,
    event_type: str,
    now: datetime,
    request: ChangeRequest,
    data: dict[str, Any],
    targets: Sequence[str],
) -> None:
    body = {
        "id": new_event_id(),
        "type": event_type,
        "created": iso(now),
        "request": request_json(request),
        "data": data,
    }
    for target in targets:
        append(
            session,
            HookDelivery,
            {
                "event_id": body["id"],
                "type": event_type,
                "target": target,
                "request_id": request.id,
                "body": body,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "claimed_by": None,
                "last_error": None,
                "created_at": now,
                "delivered_at": None,
            },
        )
    wake(session, TOPIC)
