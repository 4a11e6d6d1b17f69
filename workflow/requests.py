"""The acts on contact change requests: change, decide, resend, cancel.

Each act is one transaction over the store that asks rules/ for the verdict
and writes the new state, the decision, the notices (outbox rows) and an
audit event together.  Every edge (command line, mail, web, API) calls these.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, selectinload

from rules.contacts import ContactType, plan_change
from rules.states import (
    Decision,
    NoticeKind,
    State,
    after_decisions,
    notices_on_final,
    transition,
)
from store.db import Store, append, wake
from store.models import Account, ChangeRequest, Event, Validator
from workflow import hooks, throttle
from workflow.codes import hash_code, new_code, normalize_code
from workflow.errors import BadCode, NotFound, Refusal
from workflow.facts import (
    account_facts,
    accounts_by_email,
    find_account,
    find_service,
    normalize_email,
    open_contact_types,
    service_facts,
)
from workflow.notices import queue_notice
from workflow.policy import Policy
from workflow.views import request_json


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
    if kind in hooks.EVENT_TYPES:
        hooks.on_record(session, kind, now, request, _event_data(kind, actor, via, detail))


def _event_data(kind: str, actor: str | None, via: str | None, detail: dict[str, Any]) -> Any:
    """What a webhook event says beside the request: the decision, or the states."""
    if kind in ("accept", "decline"):
        return {"account": actor, "decision": kind, "via": via}
    if kind == "state":
        return {"before": detail.get("before"), "after": detail.get("after")}
    return {"via": via}


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
    canonical = {normalize_code(c) for c in codes}
    hashes = {hash_code(c) for c in canonical if c is not None}
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


def load_request(session: Session, request_id: int, *, lock: bool = False) -> ChangeRequest:
    """The request with its validators, locked for update when asked (PostgreSQL)."""
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
) -> list[dict[str, Any]]:
    """Modify contacts: one request per distinct (from, to) pair, each asking its validators."""
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


def find_code(session: Session, code: str) -> Validator | None:
    canonical = normalize_code(code)
    if canonical is None:
        return None
    hashed = hash_code(canonical)
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
    now: datetime | None = None,
    comment: str | None = None,
) -> DecisionResult:
    """Accept or decline with a validation code (of ``request_id`` when given).

    A bad code raises BadCode, after committing what finding it out changed
    (an overdue request is expired on the spot and everyone told) and a
    "bad-code" event against ``sender`` and ``request_id``; once either has
    had ``policy.bad_code_limit`` of them within ``policy.bad_code_window``,
    BadCode("locked") comes before the code is checked (workflow/throttle.py).
    """
    now = now or utcnow()
    with store.write() as session:
        outcome = decide_in(
            session,
            code,
            decision,
            policy,
            request_id=request_id,
            via=via,
            sender=sender,
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
) -> DecisionResult | BadCode:
    """decide's work inside the caller's transaction; a bad code is returned, not raised.

    Mail uses it to commit the decision and the inbox row that carried it together,
    so a crash between the two can never act on one message twice.
    """
    try:
        # Before the code is even looked at: a locked-out guesser learns nothing.
        throttle.check_session(
            session,
            sender=sender,
            request_id=request_id,
            now=now,
            limit=policy.bad_code_limit,
            window=policy.bad_code_window,
        )
        return _decide(session, code, decision, policy, request_id, via, sender, now, comment)
    except BadCode as bad:
        if bad.code != "locked":
            # Counted against the request only if it exists (the event row points at it).
            named = session.get(ChangeRequest, request_id) if request_id is not None else None
            actor = normalize_email(sender) if sender is not None else None
            record(session, "bad-code", now, request=named, actor=actor, via=via, reason=bad.code)
            throttle.counted(session, actor, named.id if named is not None else None)
        return bad


def _decide(
    session: Session,
    code: str,
    decision: Decision,
    policy: Policy,
    request_id: int | None,
    via: str,
    sender: str | None,
    now: datetime,
    comment: str | None = None,
) -> DecisionResult:
    found = find_code(session, code)
    if found is None or (request_id is not None and found.request_id != request_id):
        raise BadCode("unknown-code", "this validation code is not valid for this request")
    request = load_request(session, found.request_id, lock=True)
    validator = next(v for v in request.validators if v.id == found.id)
    _check_usable(session, request, validator, sender, now, policy)
    validator.decision = str(decision)
    validator.decided_at = now
    validator.via = via
    validator.comment = clean_comment(comment)
    # Single use: the decision is set, so _check_usable refuses the code as "used"
    # from now on; its hash stays so that the owner is told, not treated as a stranger.
    record(session, str(decision), now, request=request, actor=validator.account.email, via=via)
    _after_decision(session, request, validator, now, policy)
    waiting = tuple(v.account.email for v in request.validators if v.decision is None)
    return DecisionResult(request_json(request), validator.account.email, waiting)


MAX_COMMENT = 500


def clean_comment(comment: str | None) -> str | None:
    """A validator's words as kept: one line of at most 500 characters, or nothing.

    The edges strip codes themselves (gateway/reading_commands.comment_of for mail;
    the page and API take a comment field apart from the code).
    """
    if comment is None:
        return None
    text = " ".join(comment.split())[:MAX_COMMENT]
    return text or None


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
    if sender is not None and policy.require_sender_match:
        allowed = {owner.email, normalize_email(owner.mail_address)}
        if normalize_email(sender) not in allowed:
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
    store: Store, request_id: int, policy: Policy, *, via: str = "cli", now: datetime | None = None
) -> dict[str, Any]:
    """A new code to each validator still to answer; their earlier codes die."""
    now = now or utcnow()
    with store.write() as session:
        request = load_request(session, request_id, lock=True)
        if request.state != State.VALIDATING:
            raise Refusal("closed", f"request {request.id} is already {request.state}")
        pending = [v for v in request.validators if v.decision is None]
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
