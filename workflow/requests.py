"""The acts on contact change requests: change, decide, resend, cancel.

Each act is one transaction over the store that asks rules/ for the verdict
and writes the new state, the decision, the notices (outbox rows) and an
audit event together.  Every edge (command line, mail, web, API) calls these.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, selectinload

from countersign.rules.contacts import ContactType, plan_change
from countersign.rules.states import (
    Decision,
    NoticeKind,
    State,
    after_decisions,
    notices_on_final,
    transition,
)
from countersign.store.db import Store, append, wake
from countersign.store.models import Account, ChangeRequest, Event, Validator
from countersign.workflow import guess_limits, send_limits
from countersign.workflow.codes import hash_code, hash_of, new_code
from countersign.workflow.errors import BadCode, NotFound, Refusal
from countersign.workflow.facts import (
    account_facts,
    accounts_by_email,
    find_account,
    find_service,
    normalize_email,
    open_contact_types,
    service_facts,
)
from countersign.workflow.notices import queue_notice
from countersign.workflow.policy import Policy
from countersign.workflow.views import request_json

log = logging.getLogger("countersign.requests")


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


PREPARED = "prepared-decisions"  # session.info key, see prepare_decisions


@dataclass
class _Prepared:
    """What a batch of decisions reads, loaded up front by prepare_decisions."""

    validators: dict[str, Validator | None]  # code hash -> its validator (None: no such code)
    # Loaded whole (and locked) in this transaction.  Held here, not looked up in
    # the session: its identity map keeps only objects something else refers to.
    requests: dict[int, ChangeRequest]


def prepare_decisions(session: Session, codes: Iterable[str], request_ids: Iterable[int]) -> None:
    """Load, in three statements, what deciding on these codes and requests will read.

    For a batch of mailed replies: without it every decision costs a lookup of its
    code and a load of its request, and each query first flushes what the decision
    before it wrote; with it the decisions run from the session's identity map and
    the batch is flushed once, at commit.  The requests are locked in id order
    (PostgreSQL), so two daemons' batches cannot deadlock on each other's rows.
    """
    hashes = {h for c in codes if (h := hash_of(c)) is not None}
    found = (
        {
            v.code_hash: v
            for v in session.scalars(select(Validator).where(Validator.code_hash.in_(hashes)))
        }
        if hashes
        else {}
    )
    ids = sorted({v.request_id for v in found.values()} | set(request_ids))
    loaded = {r.id: r for r in _load_requests(session, ids, lock=True)}
    session.info[PREPARED] = _Prepared({h: found.get(h) for h in hashes}, loaded)


def _prepared(session: Session) -> _Prepared | None:
    prepared = session.info.get(PREPARED)
    return prepared if isinstance(prepared, _Prepared) else None


MAX_ID = 2**31 - 1  # the largest id every supported database can compare with


def load_request(session: Session, request_id: int, *, lock: bool = False) -> ChangeRequest:
    """The request with its validators, locked for update when asked (PostgreSQL)."""
    if not 0 < request_id <= MAX_ID:
        raise NotFound("request", request_id)  # `request show 99999999999999999999999`
    prepared = _prepared(session)
    request: ChangeRequest | None
    if prepared is not None and request_id in prepared.requests:
        # Loaded and locked earlier in this transaction: it is current (and it
        # carries this transaction's own changes, unflushed).
        request = prepared.requests[request_id]
    else:
        request = next(iter(_load_requests(session, [request_id], lock=lock)), None)
    if request is None:
        raise NotFound("request", request_id)
    return request


def load_requests(session: Session, ids: Sequence[int]) -> list[ChangeRequest]:
    """Several requests with their validators in one statement (rows the caller holds locked)."""
    return _load_requests(session, ids, lock=False)


def _load_requests(session: Session, ids: Sequence[int], *, lock: bool) -> list[ChangeRequest]:
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

    The codes die with the state (_check_usable refuses them as "closed"); their
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
            context={"reason": request.error} if request.error else None,
        )


# --- change -----------------------------------------------------------------


def change_contacts(
    store: Store,
    service_name: str,
    asking_email: str,
    wanted: dict[ContactType, str],
    policy: Policy,
    *,
    via: str = "cli",
    now: datetime | None = None,
    limits: send_limits.SendLimits | None = None,
) -> list[dict[str, Any]]:
    """Modify contacts: one request per distinct (from, to) pair, each asking its validators.

    With ``limits`` (the account pages, a limited API key) a change that would pass
    one of them is refused before anything is written (workflow/send_limits.py).
    """
    now = now or utcnow()
    with store.write() as session:
        service = find_service(session, service_name, lock=True)
        named = [asking_email, *wanted.values()]
        if service is not None:
            named += [service.admin.email, service.tech.email, service.billing.email]
        accounts = accounts_by_email(session, named)
        plans = plan_change(
            service_facts(service) if service is not None else None,
            service_name,
            asking_email,
            {t: normalize_email(e) for t, e in wanted.items()},
            {email: account_facts(a) for email, a in accounts.items()},
            open_contact_types(session, service) if service is not None else set(),
        )
        assert service is not None  # plan_change refuses an unknown service
        if limits is not None:
            recipients = [accounts[email] for plan in plans for email in plan.validators]
            asking = accounts[plans[0].asking_account]
            send_limits.check_change(session, asking, recipients, len(plans), now, limits)
        made = []
        for plan in plans:
            request = ChangeRequest(
                service=service,
                contact_types=[str(t) for t in plan.contact_types],
                from_account=accounts[plan.from_account],
                to_account=accounts[plan.to_account],
                asking_account=accounts[plan.asking_account],
                state=str(State.TODO),
                date_request=now,
                expires_at=now + policy.expire_after,
                next_reminder_at=now + policy.remind_after[0] if policy.remind_after else None,
                reminders_sent=0,
                validators=[Validator(account=accounts[email]) for email in plan.validators],
            )
            session.add(request)
            session.flush()
            record(session, "created", now, request=request, actor=plan.asking_account, via=via)
            move(session, request, State.VALIDATING, now)
            for validator in request.validators:
                issue_code(session, request, validator, NoticeKind.CONFIRM_REQUEST, now, policy)
            made.append(request)
        return [request_json(request) for request in made]


# --- accept / decline ---------------------------------------------------------


@dataclass(frozen=True)
class DecisionResult:
    request: dict[str, Any]
    account: str  # the validator who decided
    waiting_for: tuple[str, ...]  # validators still to answer
    repeated: bool = False  # this validator had already given this very answer: nothing changed


def find_code(session: Session, code: str) -> Validator | None:
    hashed = hash_of(code)
    if hashed is None:
        return None
    prepared = _prepared(session)
    if prepared is not None and hashed in prepared.validators:
        validator = prepared.validators[hashed]
        if validator is None or validator.code_hash == hashed:
            return validator
    return session.scalar(select(Validator).where(Validator.code_hash == hashed))


def decide(
    store: Store,
    code: str,
    decision: Decision,
    policy: Policy,
    *,
    request_id: int | None = None,
    via: str = "cli",
    sender: str | None = None,
    source: str | None = None,
    now: datetime | None = None,
    comment: str | None = None,
) -> DecisionResult:
    """Accept or decline with a validation code (of ``request_id`` when given).

    ``comment`` (the account pages' optional one) goes into the decision's audit event.

    A bad code raises BadCode, after committing what finding it out changed
    (an overdue request is expired on the spot and everyone told).  A wrong one
    counts against ``source`` (None: the operator's command line, never counted)
    and ``request_id``; past their limits it is refused as "locked"
    (workflow/guess_limits.py).  A valid code always works.
    """
    now = now or utcnow()
    if request_id is not None and not 0 < request_id <= MAX_ID:
        raise NotFound("request", request_id)
    with store.write() as session:
        outcome = decide_in(
            session,
            code,
            decision,
            policy,
            request_id=request_id,
            via=via,
            sender=sender,
            source=source,
            now=now,
            comment=comment,
        )
    if isinstance(outcome, BadCode):
        raise outcome
    return outcome


def decide_in(
    session: Session,
    code: str,
    decision: Decision,
    policy: Policy,
    *,
    request_id: int | None,
    via: str,
    sender: str | None,
    now: datetime,
    comment: str | None = None,
    source: str | None = None,
) -> DecisionResult | BadCode:
    """decide's work inside the caller's transaction; a bad code is returned, not raised.

    Mail uses it to commit the decision and the inbox row that carried it together,
    so a crash between the two can never act on one message twice.
    """
    try:
        result = _decide(session, code, decision, policy, request_id, via, sender, now)
        if comment:
            record(
                session,
                "comment",
                now,
                request=session.get(ChangeRequest, result.request["id"]),
                actor=result.account,
                via=via,
                text=comment,
            )
        return result
    except BadCode as bad:
        if bad.code not in guess_limits.GUESSES:
            return bad  # an answer about a real code ("used", "closed"...): no guess
        refusal, recorded = guess_limits.wrong_code(
            session, bad, source=source, request_id=request_id, via=via, now=now, policy=policy
        )
        if refusal.code == "locked":
            # Not an event (a guesser could fill the trail), but the operator sees it.
            log.warning(
                "%s: wrong code from a source past its limit, refused",
                f"request {request_id}" if request_id is not None else "no request",
                extra={"event": "locked-out", "request": request_id, "door": via},
            )
        if recorded:
            # Counted against the request only if it exists (the event row points at it).
            named = session.get(ChangeRequest, request_id) if request_id is not None else None
            actor = normalize_email(sender) if sender is not None else None
            record(session, "bad-code", now, request=named, actor=actor, via=via, reason=bad.code)
        return refusal


def _decide(
    session: Session,
    code: str,
    decision: Decision,
    policy: Policy,
    request_id: int | None,
    via: str,
    sender: str | None,
    now: datetime,
) -> DecisionResult:
    found = find_code(session, code)
    if found is None or (request_id is not None and found.request_id != request_id):
        raise BadCode("unknown-code", "this validation code is not valid for this request")
    request = load_request(session, found.request_id, lock=True)
    validator = next(v for v in request.validators if v.id == found.id)
    if validator.decision == str(decision) and _sender_allowed(validator, sender, policy):
        # The same answer twice (a double click, a second mail): already done, no error.
        return _result(request, validator, repeated=True)
    _check_usable(session, request, validator, sender, now, policy)
    validator.decision = str(decision)
    validator.decided_at = now
    validator.via = via
    # Single use: the decision is set, so _check_usable refuses the code as "used"
    # from now on; its hash stays so that the owner is told, not treated as a stranger.
    record(session, str(decision), now, request=request, actor=validator.account.email, via=via)
    _after_decision(session, request, validator, now, policy)
    return _result(request, validator)


def _result(
    request: ChangeRequest, validator: Validator, *, repeated: bool = False
) -> DecisionResult:
    waiting = tuple(v.account.email for v in request.validators if v.decision is None)
    return DecisionResult(request_json(request), validator.account.email, waiting, repeated)


def _sender_allowed(validator: Validator, sender: str | None, policy: Policy) -> bool:
    if sender is None or not policy.require_sender_match:
        return True
    owner = validator.account
    return normalize_email(sender) in {owner.email, normalize_email(owner.mail_address)}


def _check_usable(
    session: Session,
    request: ChangeRequest,
    validator: Validator,
    sender: str | None,
    now: datetime,
    policy: Policy,
) -> None:
    owner = validator.account
    if request.state != State.VALIDATING:
        raise BadCode(
            "closed",
            f"request {request.id} is already {request.state}",
            account_id=owner.id,
            request_id=request.id,
        )
    if now >= request.expires_at:
        finish(session, request, State.EXPIRED, now, policy)
        raise BadCode(
            "expired", f"request {request.id} has expired", owner.id, request_id=request.id
        )
    if validator.decision is not None:
        raise BadCode(
            "used", "this validation code has already been used", owner.id, request_id=request.id
        )
    if not _sender_allowed(validator, sender, policy):
        # The owner is not told: a forged From must not make us mail anyone.
        raise BadCode("sender-mismatch", "the sender is not the owner of this code")


def _after_decision(
    session: Session, request: ChangeRequest, validator: Validator, now: datetime, policy: Policy
) -> None:
    decisions = [Decision(v.decision) if v.decision else None for v in request.validators]
    outcome = after_decisions(decisions)
    if outcome is State.REFUSED:
        finish(session, request, State.REFUSED, now, policy)
    elif outcome is State.CHECK_VALIDITY:
        # Ready: the apply sweep re-checks the rules and makes the change.
        move(session, request, State.CHECK_VALIDITY, now)
        wake(session, "apply")
        request.next_reminder_at = None
    else:
        queue_notice(
            session,
            kind=NoticeKind.ACCEPTED_WAITING,
            account=validator.account,
            request=request,
            now=now,
            domain=policy.mail_domain,
        )


# --- resend / cancel ----------------------------------------------------------


def resend(
    store: Store,
    request_id: int,
    policy: Policy,
    *,
    via: str = "cli",
    now: datetime | None = None,
    limits: send_limits.SendLimits | None = None,
) -> dict[str, Any]:
    """A new code to each validator still to answer; their earlier codes die."""
    now = now or utcnow()
    with store.write() as session:
        request = load_request(session, request_id, lock=True)
        if request.state != State.VALIDATING:
            raise Refusal("closed", f"request {request.id} is already {request.state}")
        pending = [v for v in request.validators if v.decision is None]
        if limits is not None:
            send_limits.check_resend(session, [v.account for v in pending], now, limits)
        for validator in pending:
            issue_code(session, request, validator, NoticeKind.CONFIRM_REQUEST, now, policy)
            validator.delivery_error = None
        record(
            session, "resent", now, request=request, via=via, to=[v.account.email for v in pending]
        )
        return request_json(request)


def cancel(
    store: Store,
    request_id: int,
    asking_email: str,
    policy: Policy,
    *,
    via: str = "cli",
    now: datetime | None = None,
) -> dict[str, Any]:
    """The asking account withdraws its request."""
    now = now or utcnow()
    with store.write() as session:
        request = load_request(session, request_id, lock=True)
        if request.asking_account.email != normalize_email(asking_email):
            raise Refusal(
                "not-allowed",
                f"only the asking account ({request.asking_account.email}) can cancel",
            )
        if request.state != State.VALIDATING:
            raise Refusal("closed", f"request {request.id} is already {request.state}")
        record(
            session, "cancelled", now, request=request, actor=request.asking_account.email, via=via
        )
        finish(session, request, State.ABORTED, now, policy)
        return request_json(request)


def show(store: Store, request_id: int) -> dict[str, Any]:
    with store.read() as session:
        return request_json(load_request(session, request_id))


def list_requests(
    store: Store, *, account: str | None = None, state: str | None = None
) -> list[dict[str, Any]]:
    """ "My requests": those an account asked, is the subject of, or must validate."""
    with store.read() as session:
        query = select(ChangeRequest).order_by(ChangeRequest.id)
        if state is not None:
            query = query.where(ChangeRequest.state == state)
        if account is not None:
            found: Account | None = find_account(session, account)
            if found is None:
                raise NotFound("account", account)
            validating = select(Validator.request_id).where(Validator.account_id == found.id)
            query = query.where(
                (ChangeRequest.asking_account_id == found.id)
                | (ChangeRequest.from_account_id == found.id)
                | (ChangeRequest.to_account_id == found.id)
                | ChangeRequest.id.in_(validating)
            )
        query = query.options(selectinload(ChangeRequest.validators))
        return [request_json(r) for r in session.scalars(query)]


__all__ = [
    "DecisionResult",
    "cancel",
    "change_contacts",
    "decide",
    "decide_in",
    "list_requests",
    "resend",
    "show",
]
