"""What every act on a request does: load it, move it, give codes, finish it, record it.

The acts (workflow/requests.py, workflow/deciding.py, workflow/sweeps.py) are
built from these, each inside the one transaction of its act.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from countersign.rules.states import NoticeKind, State, notices_on_final, transition
from countersign.store import tallies
from countersign.store.db import append
from countersign.store.models import ChangeRequest, Event, Validator
from countersign.workflow import hooks
from countersign.workflow.codes import hash_code, new_code
from countersign.workflow.errors import NotFound
from countersign.workflow.notices import queue_notice
from countersign.workflow.policy import Policy


def utcnow() -> datetime:
    return datetime.now(UTC)


def record(
    session: Session,
    kind: str,
    now: datetime,
    *,
    request: ChangeRequest | None = None,
    actor: str | None = None,
    via: str | None = None,
    **detail: Any,
) -> None:
    append(
        session,
        Event,
        {
            "request_id": request.id if request is not None else None,
            "at": now,
            "kind": kind,
            "actor": actor,
            "via": via,
            "detail": detail,
        },
    )
    hooks.on_record(session, kind, now, request, actor, via, detail)  # the outside's events


MAX_ID = 2**31 - 1  # the largest id every supported database can compare with


def load_request(session: Session, request_id: int, *, lock: bool = False) -> ChangeRequest:
    """The request with its validators, locked for update when asked (PostgreSQL)."""
    if not 0 < request_id <= MAX_ID:
        raise NotFound("request", request_id)  # `request show 99999999999999999999999`
    request = next(iter(load_requests(session, [request_id], lock=lock)), None)
    if request is None:
        raise NotFound("request", request_id)
    return request


def load_requests(session: Session, ids: Sequence[int], *, lock: bool) -> list[ChangeRequest]:
    if not ids:
        return []
    if lock and session.get_bind().dialect.name != "sqlite":
        # The lock first, on its own: a joined SELECT ... FOR UPDATE that waited
        # re-reads only the locked row, and would return the validators as they
        # were before the other writer's commit.  (SQLite's BEGIN IMMEDIATE
        # already serializes writers.)  In id order: batches never deadlock.
        session.execute(
            select(ChangeRequest.id)
            .where(ChangeRequest.id.in_(ids))
            .order_by(ChangeRequest.id)
            .with_for_update()
        )
    # populate_existing: see what the other writer committed.  One joined query
    # brings the validators, their accounts and the service (three selectin round
    # trips cost more than a few repeated request columns); the request's
    # from/to/asking accounts are among the validators' accounts, so describing
    # the request then costs no lazy loads.  The validators' accounts are joined
    # outer, not inner: an inner join nested in the outer one makes SQLite
    # materialize every validator with its account, a scan per decision.
    query = (
        select(ChangeRequest)
        .where(ChangeRequest.id.in_(ids))
        .options(
            joinedload(ChangeRequest.validators).joinedload(Validator.account),
            joinedload(ChangeRequest.service, innerjoin=True),
        )
        .execution_options(populate_existing=True)
    )
    return list(session.scalars(query).unique())


def move(
    session: Session, request: ChangeRequest, target: State, now: datetime, **detail: Any
) -> None:
    """Change state through the state machine, leaving a trace in the audit trail."""
    current = State(request.state)
    request.state = str(transition(current, target))
    # /metrics reads the tallies, not the requests: kept in this same transaction.
    tallies.count(session, str(current), -1)
    tallies.count(session, request.state)
    record(session, "state", now, request=request, before=str(current), after=str(target), **detail)


def issue_code(
    session: Session,
    request: ChangeRequest,
    validator: Validator,
    kind: NoticeKind,
    now: datetime,
    policy: Policy,
) -> None:
    """A fresh code for one validator, replacing any earlier one, and the mail that carries it."""
    code = new_code()
    validator.code_hash = hash_code(code)
    validator.code_issued_at = now
    queue_notice(
        session,
        kind=kind,
        account=validator.account,
        request=request,
        validator=validator,
        code=code,
        now=now,
        domain=policy.mail_domain,
    )


def finish(
    session: Session,
    request: ChangeRequest,
    final: State,
    now: datetime,
    policy: Policy,
    **detail: Any,
) -> None:
    """Move to a final state, when it ended, and tell everyone concerned.

    The codes die with the state (workflow/deciding.py refuses them as "closed"); their
    hashes stay so that a late reply is answered to the code's owner.
    """
    move(session, request, final, now, **detail)
    request.date_done = now
    request.next_reminder_at = None
    validators = [v.account.email for v in request.validators]
    accounts = {v.account.email: v.account for v in request.validators}
    accounts[request.from_account.email] = request.from_account
    for notice in notices_on_final(final, validators, request.from_account.email):
        queue_notice(
            session,
            kind=notice.kind,
            account=accounts[notice.account],
            request=request,
            now=now,
            domain=policy.mail_domain,
            # The rule's code beside its English words: each language's notice says it in its own.
            context={"reason": request.error, "reason_code": detail.get("reason")}
            if request.error
            else None,
        )
