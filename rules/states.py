"""The request state machine, with OVHcloud's nine states, and who is told what.

Pure: the workflow asks here what a decision, a cancel, an expiry or an
application leads to, and which notices go to whom.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    TODO = "todo"
    VALIDATING = "validatingByCustomers"
    CHECK_VALIDITY = "checkValidity"
    DOING = "doing"
    DONE = "done"
    REFUSED = "refused"
    ABORTED = "aborted"
    EXPIRED = "expired"
    ERROR = "error"


TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.TODO: frozenset({State.VALIDATING}),
    State.VALIDATING: frozenset(
        {State.CHECK_VALIDITY, State.REFUSED, State.ABORTED, State.EXPIRED}
    ),
    State.CHECK_VALIDITY: frozenset({State.DOING, State.ERROR}),
    State.DOING: frozenset({State.DONE, State.ERROR}),
    State.DONE: frozenset(),
    State.REFUSED: frozenset(),
    State.ABORTED: frozenset(),
    State.EXPIRED: frozenset(),
    State.ERROR: frozenset(),
}

# A request holds its service's contact types (no second request for them)
# until it reaches one of these.
FINAL_STATES: frozenset[State] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
OPEN_STATES: frozenset[State] = frozenset(State) - FINAL_STATES


class IllegalTransition(Exception):
    def __init__(self, current: State, target: State) -> None:
        super().__init__(f"a request in state {current} cannot become {target}")
        self.current = current
        self.target = target


def transition(current: State, target: State) -> State:
    """``target`` if the contract allows ``current -> target``; else IllegalTransition."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target)
    return target


class Decision(StrEnum):
    ACCEPT = "accept"
    DECLINE = "decline"


def after_decisions(decisions: Sequence[Decision | None]) -> State:
    """The state a validating request is in once these decisions are known.

    Any decline refuses it; all accepted makes it ready to be checked and
    applied; otherwise it keeps waiting for the others.
    """
    if Decision.DECLINE in decisions:
        return State.REFUSED
    if all(decision is Decision.ACCEPT for decision in decisions):
        return State.CHECK_VALIDITY
    return State.VALIDATING


class NoticeKind(StrEnum):
    CONFIRM_REQUEST = "confirm-request"
    REMINDER = "reminder"
    ACCEPTED_WAITING = "accepted-waiting"
    COMPLETED = "completed"
    PREVIOUS_CONTACT = "previous-contact-notice"
    REFUSED = "refused"
    EXPIRED = "expired"
    ABORTED = "aborted"
    ERROR = "error"
    COMMAND_RESULT = "command-result"
    SIGN_IN = "sign-in"  # the account pages' link; belongs to no request


# Notices that carry a fresh code to the validator they go to.
CODE_NOTICES: frozenset[NoticeKind] = frozenset({NoticeKind.CONFIRM_REQUEST, NoticeKind.REMINDER})

_FINAL_NOTICE: Mapping[State, NoticeKind] = {
    State.DONE: NoticeKind.COMPLETED,
    State.REFUSED: NoticeKind.REFUSED,
    State.EXPIRED: NoticeKind.EXPIRED,
    State.ABORTED: NoticeKind.ABORTED,
    State.ERROR: NoticeKind.ERROR,
}


@dataclass(frozen=True)
class Notice:
    kind: NoticeKind
    account: str  # primary email of the recipient


def notices_on_final(state: State, validators: Sequence[str], from_account: str) -> list[Notice]:
    """Who is told when a request reaches a final state.

    Every validator learns the outcome; the previous contact, when it was not
    asked to validate, is only told after a success.
    """
    kind = _FINAL_NOTICE[state]
    notices = [Notice(kind, account) for account in validators]
    if state is State.DONE and from_account not in validators:
        notices.append(Notice(NoticeKind.PREVIOUS_CONTACT, from_account))
    return notices
