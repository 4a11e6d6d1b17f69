"""The reply policy (rules/replies.py) from facts alone, and its one table."""

from __future__ import annotations

import dataclasses

import pytest

from countersign.gateway.mail_out.render import LANGUAGES, render_notice
from countersign.rules.readings import Reading, Said
from countersign.rules.replies import (
    TREATMENTS,
    Decide,
    MarkBounced,
    Outcome,
    Reason,
    Record,
    Refuse,
    Tell,
    code_problem,
    judge,
    may_decide,
    may_tell,
    thread_reason,
)
from countersign.rules.states import Decision
from tests.test_render import make_context

REPLY = Reading("m1@example.net", "bob@example.net", Said.ACCEPT, "CODE", "ACCEPT in line 1")


def test_every_reason_has_its_treatment() -> None:
    assert set(TREATMENTS) == set(Reason)


def test_a_command_with_a_code_from_a_vouched_sender_is_decided() -> None:
    assert judge(REPLY, require_sender_match=True) == Decide(Decision.ACCEPT)
    declined = dataclasses.replace(REPLY, said=Said.DECLINE)
    assert judge(declined, require_sender_match=True) == Decide(Decision.DECLINE)


@pytest.mark.parametrize(
    ("change", "verdict"),
    [
        ({"sender": None}, Refuse(Reason.UNKNOWN_SENDER)),
        ({"authenticated": False}, Refuse(Reason.UNAUTHENTICATED)),
        ({"code": None}, Refuse(Reason.NO_CODE)),
        ({"said": Said.AMBIGUOUS}, Refuse(Reason.AMBIGUOUS)),
        ({"said": Said.NO_COMMAND}, Refuse(Reason.NO_COMMAND)),
        ({"said": Said.BOUNCE}, MarkBounced()),
        ({"said": Said.AUTOMATED}, Record(Outcome.AUTOMATED)),
    ],
)
def test_what_stops_a_reply(change: dict[str, object], verdict: object) -> None:
    reading = dataclasses.replace(REPLY, **change)
    assert judge(reading, require_sender_match=True) == verdict


def test_a_sender_that_names_nobody_may_decide_when_matching_is_off() -> None:
    anonymous = dataclasses.replace(REPLY, sender=None)
    assert judge(anonymous, require_sender_match=False) == Decide(Decision.ACCEPT)


@pytest.mark.parametrize("reason", [Reason.LOCKED, Reason.SENDER_MISMATCH, Reason.UNAUTHENTICATED])
def test_guessers_and_forgers_are_told_nothing(reason: Reason) -> None:
    assert TREATMENTS[reason].tell == ()


def test_a_late_code_is_refused_for_its_state_first() -> None:
    facts = {"request_open": True, "expired": False, "decided": False, "sender_ok": True}
    assert code_problem(**facts) is None
    assert code_problem(**facts | {"request_open": False, "decided": True}) is Reason.CLOSED
    assert code_problem(**facts | {"expired": True, "decided": True}) is Reason.EXPIRED
    assert code_problem(**facts | {"decided": True, "sender_ok": False}) is Reason.USED
    assert code_problem(**facts | {"sender_ok": False}) is Reason.SENDER_MISMATCH
    assert thread_reason(Reason.NO_CODE, request_open=True, decided=True) is Reason.USED


def test_one_sender_check_for_deciding_and_for_answering() -> None:
    owner = {"bob@example.net"}
    assert may_decide(None, owner, require_sender_match=True)  # the web, the command line
    assert not may_decide("eve@example.net", owner, require_sender_match=True)
    assert may_decide("eve@example.net", owner, require_sender_match=False)
    told = {"authenticated": True, "sender": "eve@example.net", "owner": owner}
    assert may_tell(Tell.CODE_OWNER, **told, require_sender_match=False)
    # Guessed from the thread, not known from a code: the From must match all the same.
    assert not may_tell(Tell.THREAD, **told, require_sender_match=False)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("reason", [r for r, t in TREATMENTS.items() if t.tell])
def test_every_reason_told_has_its_words(language: str, reason: Reason) -> None:
    context = make_context() | {"reason": None, "reason_code": str(reason)}
    text = render_notice("command-result", language, context).text
    assert {"en": "Reason: unknown", "fr": "Motif : inconnu"}[language] not in text
