"""The reply policy: what a mailed reply leads to, decided from facts alone.

Pure: a Reading (rules/readings.py) and a few facts from the store in, a typed
verdict out.  The workflow (workflow/reply.py) looks the facts up and does what
the verdict says; it never decides.  The closed set of reasons a reply is not
acted on, and how each is treated, is one table: TREATMENTS.

Never tell a guesser or a forger anything (telling would let them make us mail
people); tell a code's owner, or a validator who replied on a request's thread,
why their reply changed nothing, at most once a day per reason
(workflow/answers.py counts that).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum

from countersign.rules.readings import Reading, Said
from countersign.rules.states import Decision


class Reason(StrEnum):
    """Why a reply was not acted on (the closed set)."""

    UNKNOWN_SENDER = "unknown-sender"  # a command whose From names nobody
    UNAUTHENTICATED = "unauthenticated"  # the trusted server did not say dmarc=pass
    NO_CODE = "no-code"
    UNKNOWN_CODE = "unknown-code"
    LOCKED = "locked"  # the sender's address is past its wrong codes (guess limits)
    SENDER_MISMATCH = "sender-mismatch"  # someone else's code
    USED = "used"
    CLOSED = "closed"  # the request no longer waits for answers
    EXPIRED = "expired"
    AMBIGUOUS = "ambiguous"  # both ACCEPT and DECLINE
    NO_COMMAND = "no-command"


class Outcome(StrEnum):
    """What became of a reply: kept on its inbox row, in the audit trail and in /metrics."""

    ACCEPTED = "accepted"
    DECLINED = "declined"
    ALREADY_ACCEPTED = "already-accepted"  # the same answer again: done already, said nowhere
    ALREADY_DECLINED = "already-declined"
    BOUNCE = "bounce"
    AUTOMATED = "automated"
    MALFORMED = "malformed"
    AMBIGUOUS = "ambiguous"
    NO_COMMAND = "no-command"
    REFUSED_UNKNOWN_SENDER = "refused:unknown-sender"
    REFUSED_UNAUTHENTICATED = "refused:unauthenticated"
    REFUSED_NO_CODE = "refused:no-code"
    REFUSED_UNKNOWN_CODE = "refused:unknown-code"
    REFUSED_LOCKED = "refused:locked"
    REFUSED_SENDER_MISMATCH = "refused:sender-mismatch"
    REFUSED_USED = "refused:used"
    REFUSED_CLOSED = "refused:closed"
    REFUSED_EXPIRED = "refused:expired"


class Tell(Enum):
    """Who may be answered about a reply that changed nothing."""

    CODE_OWNER = "code-owner"  # the account the reply's code belongs to
    # A validator of the request whose notice the mail replies to: guessed from the
    # thread, not known from a code, so its From must match even without sender matching.
    THREAD = "thread"


@dataclass(frozen=True)
class Treatment:
    outcome: Outcome
    tell: tuple[Tell, ...] = ()  # tried in order, the first found is the one; (): nobody
    guess: bool = False  # counted against its sender's address (workflow/guess_limits.py)
    kept_whole: bool = True  # False: only its headers are kept (a guess or a forgery)


_OWNER_ELSE_THREAD = (Tell.CODE_OWNER, Tell.THREAD)

# Each reason: what it is recorded as, and who is told (the words of the answer are
# templates/{en,fr}/words.j2's `reasons`, keyed by the reason's value).
TREATMENTS: Mapping[Reason, Treatment] = {
    Reason.UNKNOWN_SENDER: Treatment(Outcome.REFUSED_UNKNOWN_SENDER),
    Reason.UNAUTHENTICATED: Treatment(Outcome.REFUSED_UNAUTHENTICATED),
    Reason.LOCKED: Treatment(Outcome.REFUSED_LOCKED, kept_whole=False),
    Reason.SENDER_MISMATCH: Treatment(
        Outcome.REFUSED_SENDER_MISMATCH, guess=True, kept_whole=False
    ),
    Reason.UNKNOWN_CODE: Treatment(
        Outcome.REFUSED_UNKNOWN_CODE, (Tell.THREAD,), guess=True, kept_whole=False
    ),
    Reason.NO_CODE: Treatment(Outcome.REFUSED_NO_CODE, (Tell.THREAD,)),
    Reason.USED: Treatment(Outcome.REFUSED_USED, _OWNER_ELSE_THREAD),
    Reason.CLOSED: Treatment(Outcome.REFUSED_CLOSED, _OWNER_ELSE_THREAD),
    Reason.EXPIRED: Treatment(Outcome.REFUSED_EXPIRED, _OWNER_ELSE_THREAD),
    Reason.AMBIGUOUS: Treatment(Outcome.AMBIGUOUS, _OWNER_ELSE_THREAD),
    # A "thank you" on the thread, with no code: nothing to say.
    Reason.NO_COMMAND: Treatment(Outcome.NO_COMMAND, (Tell.CODE_OWNER,)),
}
GUESSES: frozenset[Reason] = frozenset(r for r, t in TREATMENTS.items() if t.guess)
HEADERS_ONLY: frozenset[Outcome] = frozenset(
    t.outcome for t in TREATMENTS.values() if not t.kept_whole
)
# Commands refused (what /metrics counts as invalid); unclear mail is not a command.
REFUSALS: frozenset[Outcome] = frozenset(
    t.outcome for r, t in TREATMENTS.items() if r not in (Reason.AMBIGUOUS, Reason.NO_COMMAND)
)


@dataclass(frozen=True)
class Decide:
    """Act: the command, with the code, goes to the decision."""

    decision: Decision


@dataclass(frozen=True)
class Refuse:
    reason: Reason

    @property
    def treatment(self) -> Treatment:
        return TREATMENTS[self.reason]


@dataclass(frozen=True)
class Record:
    """A machine's or unreadable mail: kept, never acted on nor answered."""

    outcome: Outcome


@dataclass(frozen=True)
class MarkBounced:
    """A bounce of our notice: its validators are marked, nobody is answered."""


Verdict = Decide | Refuse | Record | MarkBounced

_COMMANDS: Mapping[Said, Decision] = {Said.ACCEPT: Decision.ACCEPT, Said.DECLINE: Decision.DECLINE}
_UNCLEAR: Mapping[Said, Reason] = {
    Said.AMBIGUOUS: Reason.AMBIGUOUS,
    Said.NO_COMMAND: Reason.NO_COMMAND,
}
_RECORDED: Mapping[Said, Outcome] = {
    Said.AUTOMATED: Outcome.AUTOMATED,
    Said.MALFORMED: Outcome.MALFORMED,
}


def judge(reading: Reading, *, require_sender_match: bool) -> Verdict:
    """What to do with a reply, before any code is looked at."""
    if reading.said is Said.BOUNCE:
        return MarkBounced()
    if reading.said in _RECORDED:
        return Record(_RECORDED[reading.said])
    if reading.said in _UNCLEAR:
        return Refuse(_UNCLEAR[reading.said])
    if reading.sender is None and require_sender_match:
        return Refuse(Reason.UNKNOWN_SENDER)
    if not reading.authenticated:
        return Refuse(Reason.UNAUTHENTICATED)  # a forgery as far as we can tell: nobody told
    if reading.code is None:
        return Refuse(Reason.NO_CODE)
    return Decide(_COMMANDS[reading.said])


def decided(decision: Decision, *, repeated: bool) -> Outcome:
    if decision is Decision.ACCEPT:
        return Outcome.ALREADY_ACCEPTED if repeated else Outcome.ACCEPTED
    return Outcome.ALREADY_DECLINED if repeated else Outcome.DECLINED


def code_problem(
    *, request_open: bool, expired: bool, decided: bool, sender_ok: bool
) -> Reason | None:
    """Why a known code cannot decide now (late, used, closed, not the sender's), or None."""
    if not request_open:
        return Reason.CLOSED
    if expired:
        return Reason.EXPIRED
    if decided:
        return Reason.USED
    if not sender_ok:
        return Reason.SENDER_MISMATCH  # the owner is not told: a forged From mails nobody
    return None


def thread_reason(reason: Reason, *, request_open: bool, decided: bool) -> Reason:
    """What a validator found on the thread is told: its own code's state comes first."""
    if not request_open:
        return Reason.CLOSED
    if decided:
        return Reason.USED
    return reason


def sender_matches(sender: str | None, owner: Collection[str]) -> bool:
    """The one sender check: the From is one of the owner's (normalized) addresses."""
    return sender is not None and sender in owner


def may_decide(sender: str | None, owner: Collection[str], *, require_sender_match: bool) -> bool:
    """A decision's sender: None is no mail (the command line, the web), never refused."""
    return sender is None or not require_sender_match or sender_matches(sender, owner)


def may_tell(
    tell: Tell,
    *,
    authenticated: bool,
    sender: str | None,
    owner: Collection[str],
    require_sender_match: bool,
) -> bool:
    """Only mail that claims to come from the account itself gets it an answer."""
    if not authenticated:
        return False
    if tell is Tell.CODE_OWNER and not require_sender_match:
        return True
    return sender_matches(sender, owner)


def source_locked(wrong_codes: int, limit: int) -> bool:
    """A source past its wrong codes (within the window) is refused as "locked"; 0: no limit."""
    return limit > 0 and wrong_codes >= limit


def request_flooded(wrong_codes: int, limit: int) -> bool:
    """Wrong codes on one request from every source, past far more than anyone mistypes."""
    return limit > 0 and wrong_codes > limit
