"""Due work, found by indexed queries and claimed with row locks.

Each sweep handles a bounded batch per transaction and returns how many
requests it handled, so the scheduler can run it again while there is more.
On PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several daemons sweep side by
side without doing the same work; on SQLite, BEGIN IMMEDIATE serialises them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute, Session

from countersign.rules.contacts import ContactType, Refusal, recheck
from countersign.rules.states import NoticeKind, State
from countersign.store.db import Store
from countersign.store.models import Account, ChangeRequest, Service
from countersign.workflow import hooks
from countersign.workflow.applier import set_contacts
from countersign.workflow.facts import account_facts, accounts_by_email, service_facts
from countersign.workflow.lifecycle import (
    finish,
    issue_code,
    load_request,
    load_requests,
    move,
    record,
    utcnow,
)
from countersign.workflow.policy import Policy

log = logging.getLogger("countersign.sweeps")
BATCH = 100
_READY = ChangeRequest.state == str(State.CHECK_VALIDITY)


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
    """Apply every request all of whose validators accepted: re-check, then change.

    A batch of requests a transaction (one commit for what accumulated since the
    last pass, not one per request); if a batch fails, its requests go again one
    per transaction, where a failure holds back only its own request.
    """
    handled = 0
    while True:
        claimed: list[int] = []
        try:
            with store.write() as session:
                claimed = _claim(session, _READY, BATCH)
                requests = sorted(load_requests(session, claimed, lock=False), key=lambda r: r.id)
                accounts = _accounts_named(session, requests)
                for request in requests:
                    _apply(session, request, now or utcnow(), policy, accounts)
        except Exception as error:
            if store.health.failed(error) or not claimed:
                raise  # the store is lost (one by one would fail the same way), or no claim
            log.warning("applying %s requests together failed; one by one", len(claimed))
            _apply_alone(store, policy, claimed, now)
        handled += len(claimed)
        if len(claimed) < BATCH:
            return handled


def apply_in(
    session: Session, policy: Policy, locked: Mapping[int, ChangeRequest], now: datetime
) -> bool:
    """Apply, in the caller's transaction, the ready requests it holds locked; whether all were.

    For a batch of mailed replies (workflow/inbox_batch.py): the requests its
    decisions moved to ``checkValidity`` are loaded and locked in it already
    (``locked``, workflow/preloaded.py), so applying them there saves the apply
    sweep a claim, a load and a commit of its own for each.  A ready request
    the transaction only read (not locked: another daemon's sweep may hold it)
    is left to the sweeps; so is everything when a batch fails and goes again
    one message at a time, which does not apply.
    """
    ready = sorted(
        (
            found
            for found in list(session.identity_map.values())
            if isinstance(found, ChangeRequest) and found.state == str(State.CHECK_VALIDITY)
        ),
        key=lambda r: r.id,
    )
    held = [request for request in ready if locked.get(request.id) is request]
    if held:
        accounts = _accounts_named(session, held)
        for request in held:
            _apply(session, request, now, policy, accounts)
    return len(held) == len(ready)


def _apply_alone(store: Store, policy: Policy, ids: list[int], now: datetime | None) -> None:
    """Each in its own transaction; the first failure is raised once the others are done."""
    failure: Exception | None = None
    for request_id in ids:
        try:
            with store.write() as session:
                if _claim(session, (ChangeRequest.id == request_id) & _READY, 1):
                    _apply(session, load_request(session, request_id), now or utcnow(), policy)
        except Exception as error:
            failure = failure or error
    if failure is not None:
        raise failure


def _accounts_named(session: Session, requests: list[ChangeRequest]) -> dict[str, Account]:
    """Every account the batch's re-checks name, by email, in one statement.

    Loaded before any request is applied: a query per request would first flush
    what the request before it changed (a flush per request instead of one at
    commit).  Applying changes no account's facts, only who holds a service.
    """
    ids = {
        account_id
        for r in requests
        for account_id in (
            r.asking_account_id,
            r.to_account_id,
            r.from_account_id,
            r.service.admin_id,
            r.service.tech_id,
            r.service.billing_id,
        )
    }
    # Most are loaded already, in this transaction, as the validators' accounts: a
    # query for those would only flush the batch early.
    loaded = [session.identity_map.get(Session.identity_key(Account, i)) for i in ids]
    found = [account for account in loaded if isinstance(account, Account)]
    missing = ids - {account.id for account in found}
    if missing:
        found += session.scalars(select(Account).where(Account.id.in_(missing)))
    return {account.email: account for account in found}


def _apply(
    session: Session,
    request: ChangeRequest,
    now: datetime,
    policy: Policy,
    accounts: dict[str, Account] | None = None,
) -> None:
    service = request.service
    types = tuple(ContactType(t) for t in request.contact_types)
    try:
        _recheck(session, request, service, types, accounts)
    except Refusal as refusal:
        request.error = refusal.message
        finish(session, request, State.ERROR, now, policy, reason=refusal.code)
        return
    move(session, request, State.DOING, now)
    if hooks.applier_set(session):
        hooks.queue_apply(session, request, now)  # done when apply.url answers: workflow/applier.py
        return
    set_contacts(service, request)
    record(session, "applied", now, request=request, types=list(request.contact_types))
    finish(session, request, State.DONE, now, policy)


def _recheck(
    session: Session,
    request: ChangeRequest,
    service: Service,
    types: tuple[ContactType, ...],
    loaded: dict[str, Account] | None = None,
) -> None:
    holders = [service.admin.email, service.tech.email, service.billing.email]
    named = [request.asking_account.email, request.to_account.email, *holders]
    if loaded is None:
        accounts = accounts_by_email(session, named)
    else:
        accounts = {email: loaded[email] for email in named if email in loaded}
    recheck(
        service_facts(service),
        service.domain,
        types,
        request.from_account.email,
        request.to_account.email,
        request.asking_account.email,
        {email: account_facts(a) for email, a in accounts.items()},
    )


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
