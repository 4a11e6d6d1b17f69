"""Acting on one reply: ask the reply policy (rules/replies.py), do what it says.

Load the facts, ask, act: the decision through workflow/deciding.py, an answer
through workflow/answers.py, bounce marks on the validators, and one "mail-in"
audit event for whatever it was, all in the caller's transaction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from countersign.rules.readings import Reading
from countersign.rules.replies import (
    TREATMENTS,
    Decide,
    MarkBounced,
    Outcome,
    Reason,
    Record,
    Refuse,
    Tell,
    decided,
    judge,
    may_tell,
    thread_reason,
)
from countersign.rules.states import State
from countersign.store.db import append
from countersign.store.models import Account, ChangeRequest, Event, Validator
from countersign.workflow.answers import answer
from countersign.workflow.codes import honored
from countersign.workflow.deciding import DecisionResult, decide_in, find_code
from countersign.workflow.facts import normalize_email, owner_addresses
from countersign.workflow.policy import Policy
from countersign.workflow.preloaded import Preloaded
from countersign.workflow.threads import thread_of


@dataclass(frozen=True)
class Letter:
    """One stored message to act on: its inbox row, and how it came."""

    inbox_id: int
    channel: str  # smtp | imap: the door, in the audit trail
    source: str | None  # the SMTP client's address, for the guess limits
    code_hashes: tuple[str, ...]  # the codes redaction took out (workflow/redaction.py)


@dataclass(frozen=True)
class Result:
    outcome: Outcome  # what became of the message, kept on its row and in the audit trail
    request_id: int | None = None
    answered: bool = False


@dataclass(frozen=True)
class _Context:
    """What acting on one reply needs at hand."""

    session: Session
    policy: Policy
    letter: Letter
    reading: Reading
    now: datetime
    preloaded: Preloaded | None

    def thread(self) -> int | None:
        replied_to = self.reading.replied_to
        if self.preloaded is not None:
            return self.preloaded.thread(self.session, replied_to)
        return thread_of(self.session, replied_to)


def act(
    session: Session,
    policy: Policy,
    letter: Letter,
    reading: Reading,
    now: datetime,
    preloaded: Preloaded | None = None,
) -> Result:
    """What the message asks, done, and an audit event for whatever it was.

    ``preloaded``: the rows a batch loaded for all its messages; None looks up.
    """
    # A stand-in for a code counts only where redaction put it (workflow/redaction.py).
    reading = dataclasses.replace(reading, code=honored(reading.code, letter.code_hashes))
    ctx = _Context(session, policy, letter, reading, now, preloaded)
    verdict = judge(reading, require_sender_match=policy.require_sender_match)
    if isinstance(verdict, MarkBounced):
        result = _bounce(session, reading)
    elif isinstance(verdict, Record):
        result = Result(verdict.outcome)  # automated or unreadable: never acted on nor answered
    elif isinstance(verdict, Refuse):
        result = _refuse(ctx, verdict.reason, ctx.thread(), _code_owner(ctx, verdict.reason))
    else:
        result = _decide(ctx, verdict)
    _audit(ctx, result)
    return result


def _audit(ctx: _Context, result: Result) -> None:
    reading = ctx.reading
    append(
        ctx.session,
        Event,
        {
            "request_id": result.request_id,
            "at": ctx.now,
            "kind": "mail-in",
            "actor": reading.sender[:320] if reading.sender else None,
            "via": ctx.letter.channel,
            # Never the code: the audit trail is not a place for secrets.
            "detail": {
                "inbox": ctx.letter.inbox_id,
                "messageId": reading.message_id,
                "read": str(reading.said),
                "outcome": str(result.outcome),
                "reason": reading.reason[:500],
                "answered": result.answered,
            },
        },
    )


@dataclass(frozen=True)
class _Owner:
    """The account a code belongs to, and the request it was for."""

    account: Account
    request: ChangeRequest


def _code_owner(ctx: _Context, reason: Reason) -> _Owner | None:
    """The reply's code's owner, when the policy may tell it (a read only)."""
    if ctx.reading.code is None or Tell.CODE_OWNER not in TREATMENTS[reason].tell:
        return None
    found = find_code(ctx.session, ctx.reading.code, ctx.preloaded)
    return _Owner(found.account, found.request) if found is not None else None


def _decide(ctx: _Context, verdict: Decide) -> Result:
    thread = ctx.thread()
    assert ctx.reading.code is not None  # judge decides on a code only
    done = decide_in(
        ctx.session,
        ctx.reading.code,
        verdict.decision,
        ctx.policy,
        # A reply to one request's mail acts on that request only.
        request_id=thread,
        via=ctx.letter.channel,
        sender=ctx.reading.sender,
        # Mail read over IMAP has no client of ours to count by: that door is one source.
        source=ctx.letter.source or ctx.letter.channel,
        now=ctx.now,
        comment=ctx.reading.comment,
        preloaded=ctx.preloaded,
    )
    if isinstance(done, DecisionResult):
        outcome = decided(verdict.decision, repeated=done.repeated)
        return Result(outcome, int(done.request["id"]))
    owner = None
    if done.account_id is not None and done.request_id is not None:
        account = ctx.session.get(Account, done.account_id)
        request = ctx.session.get(ChangeRequest, done.request_id)
        if account is None or request is None:
            return Result(TREATMENTS[done.reason].outcome, done.request_id)
        owner = _Owner(account, request)
    return _refuse(ctx, done.reason, thread, owner)


def _refuse(ctx: _Context, reason: Reason, thread: int | None, owner: _Owner | None) -> Result:
    """Nothing done; whoever the policy names for ``reason`` is told why, if anyone."""
    treatment = TREATMENTS[reason]
    for tell in treatment.tell:
        if tell is Tell.CODE_OWNER and owner is not None:
            sent = _may_tell(ctx, tell, owner.account) and _answer(ctx, owner, reason)
            return Result(treatment.outcome, owner.request.id, sent)
        if tell is Tell.THREAD and thread is not None:
            return _answer_thread(ctx, treatment.outcome, thread, reason)
    return Result(treatment.outcome, thread)


def _answer_thread(ctx: _Context, outcome: Outcome, thread_id: int, reason: Reason) -> Result:
    """Answer through the request the mail replies to, when the sender is one of its validators.

    For codes that no longer exist (used, replaced by a reminder, request closed):
    the notice replied to tells whose request it was; the answer still goes only
    to that validator's own account.
    """
    thread = ctx.session.get(ChangeRequest, thread_id)
    if thread is None:
        return Result(outcome)
    validator = next((v for v in thread.validators if _may_tell(ctx, Tell.THREAD, v.account)), None)
    if validator is None:
        return Result(outcome, thread.id)
    told = thread_reason(
        reason,
        request_open=thread.state == State.VALIDATING,
        decided=validator.decision is not None,
    )
    sent = _answer(ctx, _Owner(validator.account, thread), told)
    return Result(outcome, thread.id, sent)


def _may_tell(ctx: _Context, tell: Tell, account: Account) -> bool:
    sender = ctx.reading.sender
    return may_tell(
        tell,
        authenticated=ctx.reading.authenticated,
        sender=normalize_email(sender) if sender is not None else None,
        owner=owner_addresses(account),
        require_sender_match=ctx.policy.require_sender_match,
    )


def _answer(ctx: _Context, owner: _Owner, reason: Reason) -> bool:
    return answer(
        ctx.session,
        account=owner.account,
        request=owner.request,
        reason=reason,
        now=ctx.now,
        domain=ctx.policy.mail_domain,
    )


def _bounce(session: Session, reading: Reading) -> Result:
    """Mark the validators whose mail bounced: `request show` tells the operator."""
    failed = set(reading.bounced_recipients)
    marked = _bounced_validators(session, reading.bounced_request, failed)
    for validator in marked:
        address = validator.account.mail_address
        validator.delivery_error = f"mail to {address} bounced: {reading.reason}"[:2000]
    requests = {v.request_id for v in marked}
    return Result(Outcome.BOUNCE, requests.pop() if len(requests) == 1 else None)


def _bounced_validators(
    session: Session, request_id: int | None, failed: set[str]
) -> list[Validator]:
    if not failed:
        return []
    query = select(Validator).join(Account, Validator.account_id == Account.id)
    if request_id is not None:
        query = query.where(Validator.request_id == request_id)
    else:
        # A bounce that does not say which notice it returns: every open request
        # waiting on that address is concerned.
        query = query.join(ChangeRequest, Validator.request_id == ChangeRequest.id).where(
            ChangeRequest.state == str(State.VALIDATING),
            Account.email.in_(failed) | Account.contact_email.in_(failed),
        )
    return [
        v
        for v in session.scalars(query.limit(200))
        if normalize_email(v.account.mail_address) in failed or v.account.email in failed
    ]
