"""Accept or decline with a validation code: the act every door (mail, web, API,
command line) calls, in one transaction that asks rules/ for the verdict.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from countersign.rules.names import clean_comment
from countersign.rules.replies import GUESSES, Reason, code_problem, may_decide
from countersign.rules.states import Decision, NoticeKind, State, after_decisions
from countersign.store.db import Store, wake
from countersign.store.models import ChangeRequest, Validator
from countersign.workflow import guess_limits
from countersign.workflow.codes import hash_of
from countersign.workflow.errors import BadCode, CodeRefused, NotFound
from countersign.workflow.facts import normalize_email, owner_addresses
from countersign.workflow.lifecycle import MAX_ID, finish, load_request, move, record, utcnow
from countersign.workflow.notices import queue_notice
from countersign.workflow.policy import Policy
from countersign.workflow.preloaded import Preloaded
from countersign.workflow.views import request_json

log = logging.getLogger("countersign.requests")


@dataclass(frozen=True)
class DecisionResult:
    request: dict[str, Any]
    account: str  # the validator who decided
    waiting_for: tuple[str, ...]  # validators still to answer
    repeated: bool = False  # this validator had already given this very answer: nothing changed


def find_code(session: Session, code: str, preloaded: Preloaded | None = None) -> Validator | None:
    """The validator a code (or a stand-in for one) belongs to, or None."""
    hashed = hash_of(code)
    if hashed is None:
        return None
    if preloaded is not None:
        known, validator = preloaded.validator(hashed)
        if known:
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


@dataclass(frozen=True)
class _Asked:
    """One decision asked for: by whom, by which door."""

    code: str
    decision: Decision
    request_id: int | None
    via: str
    sender: str | None
    now: datetime
    comment: str | None = None  # the validator's words beside the command


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
    preloaded: Preloaded | None = None,
) -> DecisionResult | CodeRefused:
    """decide's work inside the caller's transaction; a bad code is returned, not raised.

    Mail uses it to commit the decision and the inbox row that carried it together,
    so a crash between the two can never act on one message twice.  ``preloaded``:
    the rows a batch of replies loaded for all of them (workflow/preloaded.py).
    """
    comment = clean_comment(comment)  # as kept on the validator and in the audit trail alike
    asked = _Asked(code, decision, request_id, via, sender, now, comment)
    try:
        result = _decide(session, asked, policy, preloaded)
    except CodeRefused as bad:
        return _wrong(session, bad, asked, source, policy)
    if comment:
        named = session.get(ChangeRequest, result.request["id"])
        record(session, "comment", now, request=named, actor=result.account, via=via, text=comment)
    return result


def _wrong(
    session: Session, bad: CodeRefused, asked: _Asked, source: str | None, policy: Policy
) -> CodeRefused:
    """A refused code: a guess is counted (and past the limits, locked out)."""
    if bad.reason not in GUESSES:
        return bad  # an answer about a real code ("used", "closed"...): no guess
    refusal, recorded = guess_limits.wrong_code(
        session,
        bad,
        source=source,
        request_id=asked.request_id,
        via=asked.via,
        now=asked.now,
        policy=policy,
    )
    if refusal.reason is Reason.LOCKED:
        # Not an event (a guesser could fill the trail), but the operator sees it.
        log.warning(
            "%s: wrong code from a source past its limit, refused",
            f"request {asked.request_id}" if asked.request_id is not None else "no request",
            extra={"event": "locked-out", "request": asked.request_id, "door": asked.via},
        )
    if recorded:
        # Counted against the request only if it exists (the event row points at it).
        rid = asked.request_id
        named = session.get(ChangeRequest, rid) if rid is not None else None
        actor = normalize_email(asked.sender) if asked.sender is not None else None
        record(
            session,
            "bad-code",
            asked.now,
            request=named,
            actor=actor,
            via=asked.via,
            reason=bad.code,
        )
    return refusal


def _decide(
    session: Session, asked: _Asked, policy: Policy, preloaded: Preloaded | None
) -> DecisionResult:
    found = find_code(session, asked.code, preloaded)
    if found is None or (asked.request_id is not None and found.request_id != asked.request_id):
        raise CodeRefused(Reason.UNKNOWN_CODE, "this validation code is not valid for this request")
    request = preloaded.requests.get(found.request_id) if preloaded is not None else None
    # Loaded and locked earlier in this transaction when preloaded: it is current.
    request = request or load_request(session, found.request_id, lock=True)
    validator = next(v for v in request.validators if v.id == found.id)
    sender_ok = _sender_allowed(validator, asked.sender, policy)
    if validator.decision == str(asked.decision) and sender_ok:
        # The same answer twice (a double click, a second mail): already done, no error.
        return _result(request, validator, repeated=True)
    _check_usable(session, request, validator, asked.now, policy, sender_ok=sender_ok)
    validator.decision = str(asked.decision)
    validator.decided_at = asked.now
    validator.via = asked.via
    validator.comment = asked.comment  # the edges cut codes out of it
    # Single use: the decision is set, so the code is refused as "used" from now on; its
    # hash stays so that the owner is told, not treated as a stranger.
    actor = validator.account.email
    record(session, str(asked.decision), asked.now, request=request, actor=actor, via=asked.via)
    _after_decision(session, request, validator, asked.now, policy)
    return _result(request, validator)


def _result(
    request: ChangeRequest, validator: Validator, *, repeated: bool = False
) -> DecisionResult:
    waiting = tuple(v.account.email for v in request.validators if v.decision is None)
    return DecisionResult(request_json(request), validator.account.email, waiting, repeated)


def _sender_allowed(validator: Validator, sender: str | None, policy: Policy) -> bool:
    return may_decide(
        normalize_email(sender) if sender is not None else None,
        owner_addresses(validator.account),
        require_sender_match=policy.require_sender_match,
    )


_PROBLEMS = {
    Reason.CLOSED: "request {id} is already {state}",
    Reason.EXPIRED: "request {id} has expired",
    Reason.USED: "this validation code has already been used",
}


def _check_usable(
    session: Session,
    request: ChangeRequest,
    validator: Validator,
    now: datetime,
    policy: Policy,
    *,
    sender_ok: bool,
) -> None:
    problem = code_problem(
        request_open=request.state == State.VALIDATING,
        expired=now >= request.expires_at,
        decided=validator.decision is not None,
        sender_ok=sender_ok,
    )
    if problem is None:
        return
    if problem is Reason.SENDER_MISMATCH:
        # The owner is not told: a forged From must not make us mail anyone.
        raise CodeRefused(problem, "the sender is not the owner of this code")
    if problem is Reason.EXPIRED:
        finish(session, request, State.EXPIRED, now, policy)
    message = _PROBLEMS[problem].format(id=request.id, state=request.state)
    raise CodeRefused(problem, message, validator.account.id, request_id=request.id)


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
