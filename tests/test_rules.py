"""rules/: every row of the contract's rule table both ways, every refusal, every transition."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from countersign.rules.contacts import (
    AccountFacts,
    ContactType,
    PlannedRequest,
    Refusal,
    ServiceFacts,
    plan_change,
    recheck,
)
from countersign.rules.states import (
    FINAL_STATES,
    OPEN_STATES,
    TRANSITIONS,
    Decision,
    IllegalTransition,
    Notice,
    NoticeKind,
    State,
    after_decisions,
    notices_on_final,
    transition,
)

ADMIN, TECH, BILLING = ContactType.ADMIN, ContactType.TECH, ContactType.BILLING


def account(email: str, zone: str = "EU", paid: bool = True, due: str = "0") -> AccountFacts:
    return AccountFacts(email, zone, payment_method_valid=paid, balance_due=Decimal(due))


ACCOUNTS = {
    a.email: a
    for a in (
        account("admin@x"),
        account("tech@x"),
        account("bill@x"),
        account("new@x"),
        account("other@x"),
        account("ca@x", zone="CA"),
        account("owes@x", due="12.50"),
        account("nocard@x", paid=False),
    )
}
SERVICE = ServiceFacts("example.com", {ADMIN: "admin@x", TECH: "tech@x", BILLING: "bill@x"})


def plan(
    asking: str,
    wanted: dict[ContactType, str],
    *,
    service: ServiceFacts | None = SERVICE,
    accounts: dict[str, AccountFacts] = ACCOUNTS,
    open_types: frozenset[ContactType] = frozenset(),
) -> list[PlannedRequest]:
    return plan_change(service, "example.com", asking, wanted, accounts, open_types)


def refusal(asking: str, wanted: dict[ContactType, str], **kwargs: object) -> Refusal:
    with pytest.raises(Refusal) as caught:
        plan(asking, wanted, **kwargs)  # type: ignore[arg-type]
    return caught.value


# --- the five rows of the table, allowed ---------------------------------------------------


@pytest.mark.parametrize("types", [(TECH,), (BILLING,), (TECH, BILLING)])
def test_admin_names_new_tech_and_or_billing_validated_by_admin_and_new_contact(
    types: tuple[ContactType, ...],
) -> None:
    plans = plan("admin@x", dict.fromkeys(types, "new@x"))
    # tech@x and bill@x are different holders: one request per (from, to) pair.
    assert [(p.contact_types, p.from_account) for p in plans] == [
        ((t,), SERVICE.contacts[t]) for t in types
    ]
    assert all(p.validators == ("admin@x", "new@x") for p in plans)
    assert all(p.to_account == "new@x" and p.asking_account == "admin@x" for p in plans)


def test_admin_takes_over_tech_and_billing_itself_validated_by_admin_alone() -> None:
    plans = plan("admin@x", {TECH: "admin@x", BILLING: "admin@x"})
    assert [p.validators for p in plans] == [("admin@x",), ("admin@x",)]
    assert [p.to_account for p in plans] == ["admin@x", "admin@x"]


def test_admin_names_new_admin_validated_by_both() -> None:
    (only,) = plan("admin@x", {ADMIN: "new@x"})
    assert only.contact_types == (ADMIN,)
    assert only.from_account == "admin@x"
    assert only.validators == ("admin@x", "new@x")


def test_tech_replaces_itself_validated_by_tech_and_new_tech() -> None:
    (only,) = plan("tech@x", {TECH: "new@x"})
    assert only.validators == ("tech@x", "new@x")


def test_billing_replaces_itself_validated_by_billing_and_new_billing() -> None:
    (only,) = plan("bill@x", {BILLING: "new@x"})
    assert only.validators == ("bill@x", "new@x")


def test_one_action_groups_types_by_from_and_to_pair() -> None:
    shared = ServiceFacts("s", {ADMIN: "admin@x", TECH: "tech@x", BILLING: "tech@x"})
    (only,) = plan("admin@x", {TECH: "new@x", BILLING: "new@x"}, service=shared)
    assert only.contact_types == (TECH, BILLING)
    two = plan("admin@x", {TECH: "new@x", BILLING: "other@x"}, service=shared)
    assert [(p.contact_types, p.to_account) for p in two] == [
        ((TECH,), "new@x"),
        ((BILLING,), "other@x"),
    ]


def test_emails_are_case_insensitive() -> None:
    (only,) = plan("Admin@X", {TECH: "NEW@x"})
    assert only.to_account == "new@x"


# --- the same rows, refused -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("asking", "contact_type"),
    [
        ("tech@x", ADMIN),  # only the admin names an admin
        ("bill@x", ADMIN),
        ("tech@x", BILLING),  # tech may only replace the tech
        ("bill@x", TECH),  # billing may only replace the billing
        ("other@x", TECH),  # not a contact at all
        ("other@x", BILLING),
    ],
)
def test_wrong_role_is_refused(asking: str, contact_type: ContactType) -> None:
    refused = refusal(asking, {contact_type: "new@x"})
    assert refused.code == "not-allowed"
    assert asking in refused.message


@pytest.mark.parametrize(
    ("asking", "contact_type", "new"),
    [
        ("admin@x", ADMIN, "admin@x"),
        ("admin@x", TECH, "tech@x"),
        ("tech@x", TECH, "tech@x"),
        ("bill@x", BILLING, "bill@x"),
    ],
)
def test_already_that_contact_is_refused(asking: str, contact_type: ContactType, new: str) -> None:
    refused = refusal(asking, {contact_type: new})
    assert refused.code == "already-contact"
    assert "already" in refused.message


@pytest.mark.parametrize("contact_type", [ADMIN, TECH, BILLING])
def test_cross_zone_is_refused(contact_type: ContactType) -> None:
    refused = refusal("admin@x", {contact_type: "ca@x"})
    assert refused.code == "zone-mismatch"
    assert "ca@x (CA)" in refused.message


def test_new_billing_with_balance_due_is_refused() -> None:
    refused = refusal("admin@x", {BILLING: "owes@x"})
    assert refused.code == "balance-due"
    assert "new billing contact owes@x" in refused.message


def test_old_billing_with_balance_due_is_refused() -> None:
    owing = {**ACCOUNTS, "bill@x": account("bill@x", due="3")}
    refused = refusal("admin@x", {BILLING: "new@x"}, accounts=owing)
    assert refused.code == "balance-due"
    assert "current billing contact bill@x" in refused.message


def test_balance_due_does_not_block_a_tech_change() -> None:
    (only,) = plan("admin@x", {TECH: "owes@x"})
    assert only.to_account == "owes@x"


def test_new_billing_without_payment_method_is_refused() -> None:
    refused = refusal("admin@x", {BILLING: "nocard@x"})
    assert refused.code == "no-payment-method"


def test_payment_method_only_matters_for_billing() -> None:
    (only,) = plan("admin@x", {TECH: "nocard@x"})
    assert only.to_account == "nocard@x"


@pytest.mark.parametrize(("asking", "new"), [("ghost@x", "new@x"), ("admin@x", "ghost@x")])
def test_unknown_account_is_refused(asking: str, new: str) -> None:
    refused = refusal(asking, {TECH: new})
    assert (refused.code, refused.message) == ("unknown-account", "unknown account: ghost@x")


def test_unknown_service_is_refused() -> None:
    refused = refusal("admin@x", {TECH: "new@x"}, service=None)
    assert (refused.code, refused.message) == ("unknown-service", "unknown service: example.com")


def test_second_open_request_for_the_same_type_is_refused() -> None:
    refused = refusal("admin@x", {TECH: "new@x"}, open_types=frozenset({TECH}))
    assert refused.code == "already-open"
    # Another type of the same service is free.
    assert plan("admin@x", {BILLING: "new@x"}, open_types=frozenset({TECH}))


def test_nothing_to_change_is_refused() -> None:
    assert refusal("admin@x", {}).code == "nothing-to-change"


# --- recheck before applying --------------------------------------------------------------


def test_recheck_passes_when_nothing_changed() -> None:
    recheck(SERVICE, "example.com", (TECH,), "tech@x", "new@x", "admin@x", ACCOUNTS)


def test_recheck_refuses_when_the_contact_changed_meanwhile() -> None:
    moved = ServiceFacts("example.com", {**SERVICE.contacts, TECH: "other@x"})
    with pytest.raises(Refusal) as caught:
        recheck(moved, "example.com", (TECH,), "tech@x", "new@x", "admin@x", ACCOUNTS)
    assert caught.value.code == "contact-changed"


def test_recheck_refuses_a_balance_that_appeared_meanwhile() -> None:
    owing = {**ACCOUNTS, "new@x": account("new@x", due="1")}
    with pytest.raises(Refusal) as caught:
        recheck(SERVICE, "example.com", (BILLING,), "bill@x", "new@x", "admin@x", owing)
    assert caught.value.code == "balance-due"


def test_recheck_refuses_when_the_asker_lost_its_role() -> None:
    demoted = ServiceFacts("example.com", {**SERVICE.contacts, ADMIN: "other@x"})
    with pytest.raises(Refusal) as caught:
        recheck(demoted, "example.com", (TECH,), "tech@x", "new@x", "admin@x", ACCOUNTS)
    assert caught.value.code == "not-allowed"


# --- the state machine ----------------------------------------------------------------------

ALLOWED = {
    (State.TODO, State.VALIDATING),
    (State.VALIDATING, State.CHECK_VALIDITY),
    (State.VALIDATING, State.REFUSED),
    (State.VALIDATING, State.ABORTED),
    (State.VALIDATING, State.EXPIRED),
    (State.CHECK_VALIDITY, State.DOING),
    (State.CHECK_VALIDITY, State.ERROR),
    (State.DOING, State.DONE),
    (State.DOING, State.ERROR),
}


def test_there_are_the_nine_ovhcloud_states() -> None:
    assert {str(s) for s in State} == {
        "todo",
        "validatingByCustomers",
        "checkValidity",
        "doing",
        "done",
        "refused",
        "aborted",
        "expired",
        "error",
    }


@pytest.mark.parametrize(("current", "target"), sorted(ALLOWED))
def test_allowed_transition(current: State, target: State) -> None:
    assert transition(current, target) is target


@pytest.mark.parametrize(
    ("current", "target"),
    sorted(set(itertools.product(State, State)) - ALLOWED),
)
def test_forbidden_transition(current: State, target: State) -> None:
    with pytest.raises(IllegalTransition):
        transition(current, target)


def test_final_and_open_states() -> None:
    assert {State.DONE, State.REFUSED, State.ABORTED, State.EXPIRED, State.ERROR} == FINAL_STATES
    assert {State.TODO, State.VALIDATING, State.CHECK_VALIDITY, State.DOING} == OPEN_STATES
    assert set(TRANSITIONS) == set(State)


@pytest.mark.parametrize(
    ("decisions", "state"),
    [
        ([None, None], State.VALIDATING),
        ([Decision.ACCEPT, None], State.VALIDATING),
        ([Decision.ACCEPT, Decision.ACCEPT], State.CHECK_VALIDITY),
        ([Decision.ACCEPT], State.CHECK_VALIDITY),
        ([Decision.DECLINE, None], State.REFUSED),
        ([Decision.ACCEPT, Decision.DECLINE], State.REFUSED),
    ],
)
def test_after_decisions(decisions: list[Decision | None], state: State) -> None:
    assert after_decisions(decisions) is state


def test_done_tells_validators_and_the_previous_contact_when_not_a_validator() -> None:
    assert notices_on_final(State.DONE, ["admin@x", "new@x"], "tech@x") == [
        Notice(NoticeKind.COMPLETED, "admin@x"),
        Notice(NoticeKind.COMPLETED, "new@x"),
        Notice(NoticeKind.PREVIOUS_CONTACT, "tech@x"),
    ]


def test_previous_contact_that_validated_gets_only_the_completion() -> None:
    notices = notices_on_final(State.DONE, ["tech@x", "new@x"], "tech@x")
    assert [n.kind for n in notices] == [NoticeKind.COMPLETED, NoticeKind.COMPLETED]


@pytest.mark.parametrize(
    ("state", "kind"),
    [
        (State.REFUSED, NoticeKind.REFUSED),
        (State.EXPIRED, NoticeKind.EXPIRED),
        (State.ABORTED, NoticeKind.ABORTED),
        (State.ERROR, NoticeKind.ERROR),
    ],
)
def test_failures_tell_every_validator_only(state: State, kind: NoticeKind) -> None:
    assert notices_on_final(state, ["admin@x", "new@x"], "tech@x") == [
        Notice(kind, "admin@x"),
        Notice(kind, "new@x"),
    ]
