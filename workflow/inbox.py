"""The inbox: mail received over SMTP or IMAP, stored before it is acknowledged,
processed after, by one pipeline for both doors.

1. Storing deduplicates: one row per Message-ID (else per hash of the bytes),
   so a message that arrives twice, or by both doors, is acted on once.
2. Processing claims due rows in batches (``FOR UPDATE SKIP LOCKED``), has the
   gateway read each one (bounce, automated, command: see gateway/reading.py),
   and acts in one transaction per message: the decision, the answer, the
   audit event and the row's new status commit together, so a crash can never
   act on one message twice.
3. A message whose processing fails three times is quarantined: kept, listed
   by ``countersign inbox --failed``, retried on demand; the rest go on.

Reading is the gateway's job (an import points down only): it is passed in as
a ``Reader`` that turns a claimed row into a ``MailReading``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, defer

from countersign.rules.states import Decision, State
from countersign.store.db import Store, append, wake
from countersign.store.models import (
    Account,
    Base,
    ChangeRequest,
    Event,
    InboxMessage,
    OutboxMessage,
    Validator,
)
from countersign.workflow import redaction
from countersign.workflow.answers import answer
from countersign.workflow.codes import honored
from countersign.workflow.errors import BadCode, NotFound, Refusal
from countersign.workflow.facts import normalize_email
from countersign.workflow.policy import Policy
from countersign.workflow.requests import (
    DecisionResult,
    decide_in,
    find_code,
    prepare_decisions,
    utcnow,
)
from countersign.workflow.views import iso

log = logging.getLogger("countersign.inbox")

MAX_ATTEMPTS = 3
BATCH = 20  # rows claimed per transaction; each holds a whole message in memory
RETRY_AFTER = timedelta(seconds=30)  # times the attempt number
HEADER_SCAN = 64 * 1024
MAX_MESSAGE_ID = 250
MAX_REFERENCES = 20
DONE = {"accept": "accepted", "decline": "declined"}
COMMANDS = frozenset(DONE)
QUARANTINED = "quarantined"
# Outcomes of mail that only guessed (or forged): not kept in full.
GUESSED = frozenset({"refused:unknown-code", "refused:locked", "refused:sender-mismatch"})

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_MESSAGE_ID_HEADER = re.compile(rb"^message-id[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.I | re.M)
_BRACKETED_ID = re.compile(r"<([^<>\s]{1,250})>")
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")


@dataclass(frozen=True)
class Received:
    """One claimed inbox row, as the reader needs it."""

    id: int
    channel: str  # smtp | imap
    raw: bytes
    recipients: tuple[str, ...]
    envelope_from: str | None
    attempts: int
    source: str | None = None  # the SMTP client's address, for the guess limits
    code_hashes: tuple[str, ...] = ()  # the codes redaction took out (workflow/redaction.py)


@dataclass(frozen=True)
class MailReading:
    """What the gateway read in one message."""

    message_id: str
    sender: str | None  # the From address, lowercased
    outcome: str  # accept, decline, ambiguous, no-command, automated, bounce, malformed
    code: str | None
    reason: str
    bounced_recipients: tuple[str, ...] = ()
    bounced_request: int | None = None
    # False when inbound.trusted_authserv_id is set and that server did not say dmarc=pass.
    authenticated: bool = True
    replied_to: tuple[str, ...] = ()  # Message-IDs of our own notices this mail answers
    comment: str | None = None  # what the validator wrote beside the command word


Reader = Callable[[Received], MailReading]


@dataclass(frozen=True)
class Result:
    outcome: str  # what became of the message, kept on its row and in the audit trail
    request_id: int | None = None
    answered: bool = False


# --- storing -------------------------------------------------------------------------


def message_key(raw: bytes) -> str:
    """The Message-ID without <>, or "sha256:<hex>" of the bytes when there is no usable one.

    The same rule as gateway.reading's, read from the header block only: this runs
    before the 250 is given, where a full parse would cost too much.
    """
    head = raw[:HEADER_SCAN]
    end = _HEADER_END.search(head)
    match = _MESSAGE_ID_HEADER.search(head[: end.start()] if end else head)
    if match is not None:
        value = re.sub(r"\r?\n", "", match.group(1).decode("ascii", "replace"))
        bracketed = _BRACKETED_ID.search(value)
        value = bracketed.group(1) if bracketed else value.strip()
        if value and len(value) <= MAX_MESSAGE_ID and _PRINTABLE.match(value):
            return value
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def store_received(
    store: Store,
    raw: bytes,
    *,
    channel: str,
    envelope_from: str | None,
    recipients: Sequence[str],
    now: datetime,
    source: str | None = None,
) -> int | None:
    """Store a received message durably; its inbox id, or None when it was already stored."""
    arrival = Arrival(raw, channel, envelope_from, tuple(recipients), now, source)
    return store_many(store, [arrival])[0]


@dataclass(frozen=True)
class Arrival:
    """One message as a door received it, before it is stored."""

    raw: bytes
    channel: str
    envelope_from: str | None
    recipients: tuple[str, ...]
    now: datetime
    source: str | None = None  # the connecting client's address (SMTP)


def store_many(store: Store, arrivals: Sequence[Arrival]) -> list[int | None]:
    """Store several messages in one transaction (group commit); store_received's answer for each.

    One commit for many messages is what lets SMTP intake keep up: each commit
    takes SQLite's write lock, which the inbox sweep holds most of the time.
    A duplicate within the batch is stored once, like across batches.
    """
    with store.write() as session:
        return insert_many(session, arrivals)


def insert_received(
    session: Session,
    raw: bytes,
    *,
    channel: str,
    envelope_from: str | None,
    recipients: Sequence[str],
    now: datetime,
) -> int | None:
    """store_received inside the caller's transaction (IMAP stores a batch with its cursor)."""
    arrival = Arrival(raw, channel, envelope_from, tuple(recipients), now)
    return insert_many(session, [arrival])[0]


def insert_many(session: Session, arrivals: Sequence[Arrival]) -> list[int | None]:
    """Insert the new ones in one statement; each arrival's inbox id, None for a duplicate."""
    if not arrivals:
        return []
    rows = [_row(a) for a in arrivals]
    # (message_id, id) of each row inserted
    inserted: dict[str, int] = {m: i for m, i in session.execute(_insert_new(session), rows)}
    if inserted:
        wake(session, "inbox")
    # A Message-ID twice in one group: the first is the one stored, the second a duplicate.
    return [inserted.pop(row["message_id"], None) for row in rows]


def _row(arrival: Arrival) -> dict[str, Any]:
    # No live code at rest: the codes go before the row is written (the key is
    # taken first, so that both doors still find one message the same).
    raw, recipients, hashes = redaction.redact_message(arrival.raw, arrival.recipients[:100])
    return {
        "message_id": message_key(arrival.raw),
        "channel": arrival.channel,
        "envelope_from": arrival.envelope_from[:320] if arrival.envelope_from is not None else None,
        "recipients": [r[:320] for r in recipients],
        "raw": raw,
        "source": arrival.source[:64] if arrival.source is not None else None,
        "code_hashes": hashes,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": arrival.now,
        "received_at": arrival.now,
    }


def _insert_new(session: Session) -> Any:
    # ON CONFLICT DO NOTHING: a duplicate is acknowledged without a failed
    # transaction (PostgreSQL aborts the whole transaction on an IntegrityError).
    # RETURNING the Message-ID too: with rows skipped, the ids returned no longer
    # line up with the rows given.
    table = Base.metadata.tables[InboxMessage.__tablename__]
    if session.get_bind().dialect.name == "postgresql":
        pg = pg_insert(table).on_conflict_do_nothing()
        return pg.returning(table.c.message_id, table.c.id)
    lite = sqlite_insert(table).on_conflict_do_nothing()
    return lite.returning(table.c.message_id, table.c.id)


# --- processing ----------------------------------------------------------------------


def process_due(
    store: Store,
    policy: Policy,
    read: Reader,
    now: datetime | None = None,
    *,
    on_outcome: Callable[[Received, str], None] | None = None,
    owner: int | None = None,
) -> int:
    """Process one batch of due messages; how many were claimed (the sweeper runs it again)."""
    claimed = claim_due(store, now or utcnow(), owner=owner)
    outcomes = _process_together(store, policy, read, claimed, now or utcnow())
    if outcomes is None:
        outcomes = [process_one(store, policy, read, item, now or utcnow()) for item in claimed]
    if on_outcome is not None:
        for item, outcome in zip(claimed, outcomes, strict=True):
            on_outcome(item, outcome)
    return len(claimed)


def _process_together(
    store: Store, policy: Policy, read: Reader, claimed: Sequence[Received], now: datetime
) -> list[str] | None:
    """The whole batch in one transaction (one commit, not one per message), or None.

    Each message still commits with its decision, answer, audit event and row
    status; they just share the commit.  None when anything fails: the
    transaction is rolled back whole and the caller goes one message at a time,
    where a failure is counted against its own message only.
    """
    if not claimed:
        return []
    try:
        readings = [read(item) for item in claimed]
        with store.write() as session:
            threads = _threads(session, [r.replied_to for r in readings])
            _prepare(session, policy, readings, threads, now)
            outcomes = [
                act(session, policy, item, reading, now, threads).outcome
                for item, reading in zip(claimed, readings, strict=True)
            ]
            _close(session, claimed, outcomes, now)
            return outcomes
    except Exception as error:
        if store.health.failed(error):
            raise  # the store is lost: one by one would fail the same way; the sweep stops
        log.warning("a batch of %s inbox messages failed together; one by one", len(claimed))
        return None


def _prepare(
    session: Session,
    policy: Policy,
    readings: Sequence[MailReading],
    threads: Mapping[str, int],
    now: datetime,
) -> None:
    """Load what the batch's decisions will read, in a few statements for all of them.

    The decisions then query nothing in the common case, so the session flushes
    the whole batch once, at commit, instead of before each message's first query.
    """
    commands = [r for r in readings if r.outcome in COMMANDS or r.code is not None]
    requests = {t for r in commands if (t := _thread(session, r.replied_to, threads)) is not None}
    prepare_decisions(session, [r.code for r in commands if r.code is not None], requests)


def _close(
    session: Session, items: Sequence[Received], outcomes: Sequence[str], now: datetime
) -> None:
    """Mark the rows done, all in one statement, in the transaction that acted on them."""
    session.execute(
        update(InboxMessage),
        [
            {"id": item.id, "status": "done", "outcome": outcome, "processed_at": now}
            for item, outcome in zip(items, outcomes, strict=True)
        ],
    )
    guesses = [
        {"id": item.id, "raw": headers_only(item.raw)}
        for item, outcome in zip(items, outcomes, strict=True)
        if outcome in GUESSED
    ]
    if guesses:
        # A guess (or a forgery) is kept as its headers and verdict, not in full.
        session.execute(update(InboxMessage), guesses)


def headers_only(raw: bytes) -> bytes:
    """The header block of a message, up to its empty line (all of it if it has none)."""
    end = _HEADER_END.search(raw, 0, HEADER_SCAN)
    return raw[: end.end()] if end else raw[:HEADER_SCAN]


def _act_and_close(
    session: Session,
    policy: Policy,
    item: Received,
    reading: MailReading,
    now: datetime,
) -> str:
    """Act on one message and mark its row done, in the caller's transaction."""
    outcome = act(session, policy, item, reading, now).outcome
    _close(session, [item], [outcome], now)
    return outcome


def claim_due(
    store: Store, now: datetime, limit: int = BATCH, owner: int | None = None
) -> list[Received]:
    """Claim due rows for worker ``owner``; one that had every attempt is quarantined instead.

    A claim is held while its owner's heartbeat goes on (store/leases.py).

    Columns, not ORM objects, and one UPDATE for the batch: the claim runs once
    per batch, in the lock that SMTP intake waits on.
    """
    with store.write() as session:
        due = session.execute(
            select(*_CLAIMED)
            .where(
                InboxMessage.status == "pending",
                InboxMessage.next_attempt_at <= now,
            )
            .order_by(InboxMessage.next_attempt_at, InboxMessage.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        claimed = [
            Received(
                id=row.id,
                channel=row.channel,
                raw=row.raw,
                recipients=tuple(row.recipients or ()),
                envelope_from=row.envelope_from,
                attempts=row.attempts + 1,
                source=row.source,
                code_hashes=tuple(row.code_hashes or ()),
            )
            for row in due
        ]
        fresh = [item for item in claimed if item.attempts <= MAX_ATTEMPTS]
        # Its processor died every time (a crash, a kill): never tried again unasked.
        spent = [item for item in claimed if item.attempts > MAX_ATTEMPTS]
        changes = [
            {
                "id": i.id,
                "status": "processing",
                "attempts": i.attempts,
                "claimed_by": owner,
            }
            for i in fresh
        ] + [_quarantined(i.id, i.attempts - 1, "processing never finished") for i in spent]
        if changes:
            session.execute(update(InboxMessage), changes)
        return fresh


_CLAIMED = (
    InboxMessage.id,
    InboxMessage.channel,
    InboxMessage.raw,
    InboxMessage.recipients,
    InboxMessage.envelope_from,
    InboxMessage.attempts,
    InboxMessage.source,
    InboxMessage.code_hashes,
)


def _quarantined(inbox_id: int, attempts: int, note: str) -> dict[str, Any]:
    log.error("inbox message %s quarantined after %s attempts: %s", inbox_id, attempts, note)
    return {
        "id": inbox_id,
        "status": QUARANTINED,
        "outcome": f"quarantined after {attempts} attempts: {note}"[:2000],
    }


def process_one(store: Store, policy: Policy, read: Reader, item: Received, now: datetime) -> str:
    """Read one message and act on it in one transaction; a failure is retried, then quarantined."""
    try:
        reading = read(item)
        with store.write() as session:
            return _act_and_close(session, policy, item, reading, now)
    except Exception as error:
        if store.health.failed(error):
            raise  # not this message's fault: its claim is given back by the next pass
        log.exception("inbox message %s: attempt %s failed", item.id, item.attempts)
        return _failed(store, item, error, now)


def _failed(store: Store, item: Received, error: Exception, now: datetime) -> str:
    note = f"{type(error).__name__}: {error}"[:500]
    with store.write() as session:
        row = session.get(InboxMessage, item.id, with_for_update=True)
        if row is None:
            return "error"
        if row.attempts >= MAX_ATTEMPTS:
            _quarantine(row, note)
            return QUARANTINED
        row.status = "pending"
        row.next_attempt_at = now + RETRY_AFTER * row.attempts
        row.outcome = f"attempt {row.attempts} failed: {note}"
        return "retry"


def _quarantine(row: InboxMessage, note: str) -> None:
    quarantined = _quarantined(row.id, row.attempts, note)
    row.status = quarantined["status"]
    row.outcome = quarantined["outcome"]


# --- acting ----------------------------------------------------------------------------


def act(
    session: Session,
    policy: Policy,
    item: Received,
    reading: MailReading,
    now: datetime,
    threads: Mapping[str, int] | None = None,
) -> Result:
    """What the message asks, done, and an audit event for whatever it was.

    ``threads``: our notices' Message-IDs -> request, looked up beforehand for a
    whole batch (see _threads); None looks this message's up itself.
    """
    # A stand-in for a code counts only where redaction put it (workflow/redaction.py).
    reading = dataclasses.replace(reading, code=honored(reading.code, item.code_hashes))
    if reading.outcome == "bounce":
        result = _bounce(session, reading)
    elif reading.outcome in COMMANDS:
        result = _command(session, policy, item, reading, now, threads)
    elif reading.outcome in ("ambiguous", "no-command"):
        result = _unclear(session, policy, reading, now, threads)
    else:
        # Automated or unreadable: recorded, never acted on nor answered.
        result = Result(reading.outcome)
    append(
        session,
        Event,
        {
            "request_id": result.request_id,
            "at": now,
            "kind": "mail-in",
            "actor": reading.sender[:320] if reading.sender else None,
            "via": item.channel,
            # Never the code: the audit trail is not a place for secrets.
            "detail": {
                "inbox": item.id,
                "messageId": reading.message_id,
                "read": reading.outcome,
                "outcome": result.outcome,
                "reason": reading.reason[:500],
                "answered": result.answered,
            },
        },
    )
    return result


def _command(
    session: Session,
    policy: Policy,
    item: Received,
    reading: MailReading,
    now: datetime,
    threads: Mapping[str, int] | None,
) -> Result:
    thread = _thread(session, reading.replied_to, threads)
    if reading.sender is None and policy.require_sender_match:
        return Result("refused:unknown-sender", thread)
    if not reading.authenticated:
        # A forgery as far as we can tell: nothing done, nobody told.
        return Result("refused:unauthenticated", thread)
    if reading.code is None:
        return _answer_thread(session, policy, thread, reading, "no-code", now)
    decided = decide_in(
        session,
        reading.code,
        Decision(reading.outcome),
        policy,
        # A reply to one request's mail acts on that request only.
        request_id=thread,
        via=item.channel,
        sender=reading.sender,
        # Mail read over IMAP has no client of ours to count by: that door is one source.
        source=item.source or item.channel,
        now=now,
        comment=reading.comment,
    )
    if isinstance(decided, DecisionResult):
        # The same answer twice (sent again, or by both doors): done already, said nowhere.
        outcome = f"already-{DONE[reading.outcome]}" if decided.repeated else DONE[reading.outcome]
        return Result(outcome, int(decided.request["id"]))
    return _refused(session, policy, decided, thread, reading, now)


def _refused(
    session: Session,
    policy: Policy,
    bad: BadCode,
    thread: int | None,
    reading: MailReading,
    now: datetime,
) -> Result:
    outcome = f"refused:{bad.code}"
    if bad.code in ("locked", "sender-mismatch"):
        # A guesser or a forger: telling anyone would let them make us mail people.
        return Result(outcome, thread)
    if bad.account_id is None or bad.request_id is None:
        answered = _answer_thread(session, policy, thread, reading, bad.code, now)
        return Result(outcome, answered.request_id, answered.answered)
    owner = session.get(Account, bad.account_id)
    request = session.get(ChangeRequest, bad.request_id)
    if owner is None or request is None or not _may_answer(owner, reading, policy):
        return Result(outcome, bad.request_id)
    sent = answer(
        session, account=owner, request=request, reason=bad.code, now=now, domain=policy.mail_domain
    )
    return Result(outcome, bad.request_id, sent)


def _unclear(
    session: Session,
    policy: Policy,
    reading: MailReading,
    now: datetime,
    threads: Mapping[str, int] | None,
) -> Result:
    """Ambiguous, or no command: nothing done; the code's owner is told why, if it asked."""
    owner = find_code(session, reading.code) if reading.code is not None else None
    if owner is None:
        thread = _thread(session, reading.replied_to, threads)
        if reading.outcome == "no-command":
            # A "thank you" on the thread, with no code: nothing to say.
            return Result(reading.outcome, thread)
        return _answer_thread(session, policy, thread, reading, reading.outcome, now)
    if not _may_answer(owner.account, reading, policy):
        return Result(reading.outcome, owner.request_id)
    sent = answer(
        session,
        account=owner.account,
        request=owner.request,
        reason=reading.outcome,
        now=now,
        domain=policy.mail_domain,
    )
    return Result(reading.outcome, owner.request_id, sent)


def _answer_thread(
    session: Session,
    policy: Policy,
    thread_id: int | None,
    reading: MailReading,
    reason: str,
    now: datetime,
) -> Result:
    """Answer through the request the mail replies to, when the sender is one of its validators.

    For codes that no longer exist (used, replaced by a reminder, request closed):
    the notice replied to tells whose request it was; the answer still goes only
    to that validator's own account.
    """
    outcome = reason if reason in ("ambiguous", "no-command") else f"refused:{reason}"
    thread = session.get(ChangeRequest, thread_id) if thread_id is not None else None
    if thread is None:
        return Result(outcome)
    validator = next(
        (v for v in thread.validators if _may_answer(v.account, reading, policy, strict=True)),
        None,
    )
    if validator is None:
        return Result(outcome, thread.id)
    if thread.state != State.VALIDATING:
        reason = "closed"
    elif validator.decision is not None:
        reason = "used"
    sent = answer(
        session,
        account=validator.account,
        request=thread,
        reason=reason,
        now=now,
        domain=policy.mail_domain,
    )
    return Result(outcome, thread.id, sent)


def _may_answer(
    account: Account, reading: MailReading, policy: Policy, *, strict: bool = False
) -> bool:
    """Only mail that claims to come from the account itself gets it an answer.

    ``strict``: the account is not known from a code but guessed from the thread,
    so the From must match even when sender matching is off.
    """
    if not reading.authenticated:
        return False
    if not (policy.require_sender_match or strict):
        return True
    allowed = {account.email, normalize_email(account.mail_address)}
    return reading.sender is not None and reading.sender in allowed


def _thread(
    session: Session, replied_to: Sequence[str], threads: Mapping[str, int] | None = None
) -> int | None:
    """The request whose notice this mail replies to, when its references name exactly one."""
    ids = _reference_ids(replied_to)
    if not ids:
        return None
    known = threads if threads is not None else _threads(session, [ids])
    found = {known[i] for i in ids if i in known}
    return found.pop() if len(found) == 1 else None


def _threads(session: Session, references: Sequence[Sequence[str]]) -> dict[str, int]:
    """Our notices among these Message-IDs -> their request, in one query for many messages.

    Safe to look up ahead of acting: a notice's Message-ID and request never change.
    """
    ids = sorted({i for refs in references for i in _reference_ids(refs)})
    if not ids:
        return {}
    rows = session.execute(
        select(OutboxMessage.message_id, OutboxMessage.request_id).where(
            OutboxMessage.message_id.in_(ids), OutboxMessage.request_id.is_not(None)
        )
    )
    return {message_id: request_id for message_id, request_id in rows if request_id is not None}


def _reference_ids(replied_to: Sequence[str]) -> list[str]:
    return [i for i in replied_to[:MAX_REFERENCES] if i]


def _bounce(session: Session, reading: MailReading) -> Result:
    """Mark the validators whose mail bounced: `request show` tells the operator."""
    failed = set(reading.bounced_recipients)
    marked = _bounced_validators(session, reading.bounced_request, failed)
    for validator in marked:
        address = validator.account.mail_address
        validator.delivery_error = f"mail to {address} bounced: {reading.reason}"[:2000]
    requests = {v.request_id for v in marked}
    return Result("bounce", requests.pop() if len(requests) == 1 else None)


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


# --- the operator's view ----------------------------------------------------------------


def inbox_json(row: InboxMessage) -> dict[str, Any]:
    return {
        "id": row.id,
        "messageId": row.message_id,
        "channel": row.channel,
        "envelopeFrom": row.envelope_from,
        "recipients": list(row.recipients or ()),
        "status": row.status,
        "attempts": row.attempts,
        "outcome": row.outcome,
        "received": iso(row.received_at),
        "processed": iso(row.processed_at),
    }


def list_inbox(store: Store, *, failed: bool = False, limit: int = 50) -> list[dict[str, Any]]:
    """The latest messages (newest first), or only the quarantined ones."""
    with store.read() as session:
        query = select(InboxMessage).options(defer(InboxMessage.raw))
        if failed:
            query = query.where(InboxMessage.status == QUARANTINED)
        rows = session.scalars(query.order_by(InboxMessage.id.desc()).limit(limit))
        return [inbox_json(row) for row in rows]


def retry(store: Store, inbox_id: int, *, now: datetime | None = None) -> dict[str, Any]:
    """Give a quarantined message a fresh set of attempts."""
    if not 0 < inbox_id < 2**31:
        raise NotFound("inbox message", inbox_id)
    with store.write() as session:
        row = session.get(InboxMessage, inbox_id, with_for_update=True)
        if row is None:
            raise NotFound("inbox message", inbox_id)
        if row.status != QUARANTINED:
            raise Refusal("not-quarantined", f"inbox message {inbox_id} is {row.status}")
        row.status = "pending"
        row.attempts = 0
        row.next_attempt_at = now or utcnow()
        wake(session, "inbox")
        return inbox_json(row)
