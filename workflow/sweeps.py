"""Due work, found by indexed queries and claimed with row locks.

Each sweep handles a bounded batch per transaction and returns how many
requests it handled, so the scheduler can run it again while there is more.
On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several daemons sweep side by
side without doing the same work; on SQLite, BEGIN IMMEDIATE serialises them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute, Session

from countersign.rules.contacts import ContactType, Refusal, recheck
from countersign.rules.states import NoticeKind, State
from countersign.store.db import Store
from countersign.store.models import ChangeRequest, Service
from countersign.workflow import hooks
from countersign.workflow.facts import account_facts, accounts_by_email, service_facts
from countersign.workflow.lifecycle import finish, issue_code, load_request, move, record, utcnow
from countersign.workflow.policy import Policy

BATCH = 100


def _claim(
    session: Session, where: object, limit: int, due: InstrumentedAttribute[Any] | None = None
) -> list[int]:
    """Up to ``limit`` ids, soonest ``due`` first: the order of the index the claim reads
    (store/models.py), so a batch costs the same with 100 or 100,000 rows due."""
    order = (ChangeRequest.id,) if due is None else (due, ChangeRequest.id)
    query = (
        select(ChangeRequest.id)
        .where(where)  # type: ignore[arg-type]
        .order_by(*order)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(query))


# --- apply ---------------------------------------------------------------------


def apply_ready(store: Store, policy: Policy, *, now: datetime | None = None) -> int:
    """Apply every request all of whose validators accepted: re-check, then change."""
    handled = 0
    while True:
        with store.write() as session:
            claimed = _claim(session, ChangeRequest.state == str(State.CHECK_VALIDITY), 1)
            if not claimed:
                return handled
            _apply(session, load_request(session, claimed[0]), now or utcnow(), policy)
        handled += 1


def _apply(session: Session, request: ChangeRequest, now: datetime, policy: Policy) -> None:
    service = request.service
    types = tuple(ContactType(t) for t in request.contact_types)
    try:
        _recheck(session, request, service, types)
    except Refusal as refusal:
        request.error = refusal.message
        finish(session, request, State.ERROR, now, policy, reason=refusal.code)
        return
    move(session, request, State.DOING, now)
    if hooks.applier_set(session):
        hooks.queue_apply(session, request, now)  # done when apply.url answers: workflow/applier.py
        return
    for contact_type in types:
        _set_contact(service, contact_type, request)
    record(session, "applied", now, request=request, types=list(request.contact_types))
    finish(session, request, State.DONE, now, policy)


def _recheck(
    session: Session, request: ChangeRequest, service: Service, types: tuple[ContactType, ...]
) -> None:
    holders = [service.admin.email, service.tech.email, service.billing.email]
    named = [request.asking_account.email, request.to_account.email, *holders]
    accounts = accounts_by_email(session, named)
    recheck(
        service_facts(service),
        service.domain,
        types,
        request.from_account.email,
        request.to_account.email,
        request.asking_account.email,
        {email: account_facts(a) for email, a in accounts.items()},
    )


def _set_contact(service: Service, contact_type: ContactType, request: ChangeRequest) -> None:
    new = request.to_account
    if contact_type is ContactType.ADMIN:
        service.admin = new
    elif contact_type is ContactType.TECH:
        service.tech = new
    else:
        service.billing = new


# --- expire ----------------------------------------------------------------------


def expire_due(store: Store, policy: Policy, *, now: datetime | None = None) -> int:
    """Requests nobody finished answering in time become ``expired``; everyone is told."""
    now = now or utcnow()
    handled = 0
    while True:
        with store.write() as session:
            due = (ChangeRequest.state == str(State.VALIDATING)) & (ChangeRequest.expires_at <= now)
            claimed = _claim(session, due, BATCH, ChangeRequest.expires_at)
            for request_id in claimed:
                finish(session, load_request(session, request_id), State.EXPIRED, now, policy)
        handled += len(claimed)
        if len(claimed) < BATCH:
            return handled


# --- remind ----------------------------------------------------------------------


def remind_due(store: Store, policy: Policy, *, now: datetime | None = None) -> int:
    """A reminder with a fresh code to each validator still to answer, on schedule."""
    now = now or utcnow()
    handled = 0
    while True:
        with store.write() as session:
            due = (ChangeRequest.state == str(State.VALIDATING)) & (
                ChangeRequest.next_reminder_at <= now
            )
            claimed = _claim(session, due, BATCH, ChangeRequest.next_reminder_at)
            for request_id in claimed:
                _remind(session, load_request(session, request_id), now, policy)
        handled += len(claimed)
        if len(claimed) < BATCH:
            return handled


def _remind(session: Session, request: ChangeRequest, now: datetime, policy: Policy) -> None:
    pending = [v for v in request.validators if v.decision is None]
    for validator in pending:
        issue_code(session, request, validator, NoticeKind.REMINDER, now, policy)
    request.reminders_sent += 1
    schedule = policy.remind_after
    later = [request.date_request + after for after in schedule[request.reminders_sent :]]
    # Catching up after downtime: skip reminders whose time has passed, send one.
    request.next_reminder_at = next((at for at in later if at > now), None)
    if request.next_reminder_at is not None and request.next_reminder_at >= request.expires_at:
        request.next_reminder_at = None
    record(session, "reminded", now, request=request, to=[v.account.email for v in pending])
