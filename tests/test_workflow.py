"""workflow/ over a real store (SQLite and PostgreSQL): the acts and their notices."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, text

from countersign.rules.contacts import ContactType, Refusal
from countersign.rules.states import Decision
from countersign.store.db import Store
from countersign.store.models import Base, Event, OutboxMessage, Service
from countersign.workflow import requests, sweeps
from countersign.workflow.codes import normalize_code
from countersign.workflow.directory import AccountChanges, update_account
from countersign.workflow.errors import BadCode
from countersign.workflow.policy import Policy
from tests.mail_helpers import codes as latest_codes

ACCEPT, DECLINE = Decision.ACCEPT, Decision.DECLINE
TECH, BILLING = ContactType.TECH, ContactType.BILLING


def notices(store: Store, request_id: int) -> list[tuple[str, str]]:
    with store.read() as session:
        rows = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.request_id == request_id)
            .order_by(OutboxMessage.id)
        )
        return [(row.kind, row.account.email) for row in rows]


def contacts(store: Store, domain: str) -> tuple[str, str, str]:
    with store.read() as session:
        service = session.scalars(select(Service).where(Service.domain == domain)).one()
        return service.admin.email, service.tech.email, service.billing.email


def new_tech(
    store: Store, policy: Policy, t0: datetime, domain: str = "example.com"
) -> dict[str, Any]:
    (made,) = requests.change_contacts(
        store, domain, "admin@example.com", {TECH: "new@example.com"}, policy, now=t0
    )
    return made


def accept_all(store: Store, policy: Policy, request_id: int, now: datetime) -> None:
    for code in latest_codes(store, request_id).values():
        requests.decide(store, code, ACCEPT, policy, request_id=request_id, now=now)


# --- change ---------------------------------------------------------------------------------


def test_change_asks_each_validator_with_its_own_code(
    world: Store, policy: Policy, t0: datetime
) -> None:
    made = new_tech(world, policy, t0)
    assert made["state"] == "validatingByCustomers"
    assert made["contactTypes"] == ["contactTech"]
    assert (made["fromAccount"], made["toAccount"], made["askingAccount"]) == (
        "admin@example.com",
        "new@example.com",
        "admin@example.com",
    )
    assert made["expires"] == "2026-11-09T09:00:00Z"
    assert [v["account"] for v in made["validators"]] == ["admin@example.com", "new@example.com"]
    assert notices(world, made["id"]) == [
        ("confirm-request", "admin@example.com"),
        ("confirm-request", "new@example.com"),
    ]
    codes = latest_codes(world, made["id"])
    assert len(set(codes.values())) == 2
    assert all(normalize_code(code) for code in codes.values())


def test_one_action_makes_one_request_per_from_to_pair(
    world: Store, policy: Policy, t0: datetime
) -> None:
    made = requests.change_contacts(
        world,
        "split.com",
        "admin@example.com",
        {TECH: "new@example.com", BILLING: "new@example.com"},
        policy,
        now=t0,
    )
    assert [(r["contactTypes"], r["fromAccount"]) for r in made] == [
        (["contactTech"], "tech@example.com"),
        (["contactBilling"], "bill@example.com"),
    ]


def test_second_open_request_for_a_type_is_refused(
    world: Store, policy: Policy, t0: datetime
) -> None:
    new_tech(world, policy, t0)
    with pytest.raises(Refusal) as caught:
        requests.change_contacts(
            world, "example.com", "admin@example.com", {TECH: "tech@example.com"}, policy, now=t0
        )
    assert caught.value.code == "already-open"


def test_refused_change_writes_nothing(world: Store, policy: Policy, t0: datetime) -> None:
    with pytest.raises(Refusal):
        requests.change_contacts(
            world, "example.com", "admin@example.com", {TECH: "ca@example.ca"}, policy, now=t0
        )
    assert requests.list_requests(world) == []


# --- accept, apply ----------------------------------------------------------------------------


def test_both_accept_then_the_sweep_applies_and_tells_everyone(
    world: Store, policy: Policy, t0: datetime
) -> None:
    made = new_tech(world, policy, t0)
    codes = latest_codes(world, made["id"])
    first = requests.decide(world, codes["admin@example.com"], ACCEPT, policy, now=t0)
    assert first.waiting_for == ("new@example.com",)
    assert first.request["state"] == "validatingByCustomers"
    second = requests.decide(
        world,
        codes["new@example.com"],
        ACCEPT,
        policy,
        via="smtp",
        sender="new@example.com",
        now=t0 + timedelta(hours=1),
    )
    assert second.request["state"] == "checkValidity"
    assert second.request["validators"][1] == {
        "account": "new@example.com",
        "decision": "accept",
        "at": "2026-11-02T10:00:00Z",
        "via": "smtp",
        "comment": None,
    }
    assert contacts(world, "example.com")[1] == "admin@example.com"  # not yet applied

    assert sweeps.apply_ready(world, policy, now=t0 + timedelta(hours=2)) == 1
    done = requests.show(world, made["id"])
    assert (done["state"], done["dateDone"]) == ("done", "2026-11-02T11:00:00Z")
    assert contacts(world, "example.com") == (
        "admin@example.com",
        "new@example.com",
        "admin@example.com",
    )
    assert notices(world, made["id"])[2:] == [
        ("accepted-waiting", "admin@example.com"),
        ("completed", "admin@example.com"),
        ("completed", "new@example.com"),
    ]
    assert sweeps.apply_ready(world, policy, now=t0 + timedelta(hours=3)) == 0


def test_previous_contact_not_validating_is_told_after_success(
    world: Store, policy: Policy, t0: datetime
) -> None:
    made = new_tech(world, policy, t0, domain="split.com")
    accept_all(world, policy, made["id"], t0)
    sweeps.apply_ready(world, policy, now=t0)
    assert ("previous-contact-notice", "tech@example.com") in notices(world, made["id"])


def test_admin_taking_over_needs_only_its_own_acceptance(
    world: Store, policy: Policy, t0: datetime
) -> None:
    (made,) = requests.change_contacts(
        world, "split.com", "admin@example.com", {TECH: "admin@example.com"}, policy, now=t0
    )
    assert [v["account"] for v in made["validators"]] == ["admin@example.com"]
    accept_all(world, policy, made["id"], t0)
    sweeps.apply_ready(world, policy, now=t0)
    assert contacts(world, "split.com")[1] == "admin@example.com"
    assert notices(world, made["id"])[-1] == ("previous-contact-notice", "tech@example.com")


def test_rules_are_checked_again_before_applying(
    world: Store, policy: Policy, t0: datetime
) -> None:
    (made,) = requests.change_contacts(
        world, "split.com", "admin@example.com", {BILLING: "new@example.com"}, policy, now=t0
    )
    accept_all(world, policy, made["id"], t0)
    update_account(world, "new@example.com", AccountChanges(balance_due=Decimal("9.99")))
    sweeps.apply_ready(world, policy, now=t0)
    failed = requests.show(world, made["id"])
    assert failed["state"] == "error"
    assert "9.99" in failed["error"]
    assert contacts(world, "split.com")[2] == "bill@example.com"
    assert notices(world, made["id"])[-2:] == [
        ("error", "admin@example.com"),
        ("error", "new@example.com"),
    ]
    # The rule's code rides with its words, so a French notice can say it in French.
    with world.read() as session:
        told = session.scalars(
            select(OutboxMessage.context).where(
                OutboxMessage.request_id == made["id"], OutboxMessage.kind == "error"
            )
        ).all()
    assert [c["reason_code"] for c in told] == ["balance-due", "balance-due"]
    assert all("9.99" in c["reason"] for c in told)


# --- codes ----------------------------------------------------------------------------------


def test_a_code_works_once(world: Store, policy: Policy, t0: datetime) -> None:
    made = new_tech(world, policy, t0)
    code = latest_codes(world, made["id"])["admin@example.com"]
    requests.decide(world, code, ACCEPT, policy, request_id=made["id"], now=t0)
    with pytest.raises(BadCode) as caught:
        requests.decide(world, code, DECLINE, policy, request_id=made["id"], now=t0)
    # Known as used, with its owner: a mailed reuse is answered to that account.
    assert (caught.value.code, caught.value.account_id) == ("used", caught.value.account_id)
    assert caught.value.account_id is not None
    assert requests.show(world, made["id"])["validators"][0]["decision"] == "accept"


def test_a_code_works_only_for_its_own_request(world: Store, policy: Policy, t0: datetime) -> None:
    first = new_tech(world, policy, t0)
    (second,) = requests.change_contacts(
        world, "split.com", "admin@example.com", {TECH: "new@example.com"}, policy, now=t0
    )
    code = latest_codes(world, first["id"])["admin@example.com"]
    with pytest.raises(BadCode):
        requests.decide(world, code, ACCEPT, policy, request_id=second["id"], now=t0)
    assert requests.show(world, second["id"])["validators"][0]["decision"] is None


def test_codes_are_read_whatever_their_case_and_grouping(
    world: Store, policy: Policy, t0: datetime
) -> None:
    made = new_tech(world, policy, t0)
    code = latest_codes(world, made["id"])["admin@example.com"]
    typed = code.lower().replace("-", " ")
    assert requests.decide(world, typed, ACCEPT, policy, now=t0).account == "admin@example.com"


def test_resend_replaces_the_codes_of_those_still_to_answer(
    world: Store, policy: Policy, t0: datetime
) -> None:
    made = new_tech(world, policy, t0)
    old = latest_codes(world, made["id"])
    requests.decide(world, old["admin@example.com"], ACCEPT, policy, now=t0)
    requests.resend(world, made["id"], policy, now=t0)
    assert notices(world, made["id"])[-1] == ("confirm-request", "new@example.com")
    new = latest_codes(world, made["id"])
    assert new["new@example.com"] != old["new@example.com"]
    with pytest.raises(BadCode):
        requests.decide(world, old["new@example.com"], ACCEPT, policy, now=t0)
    requests.decide(world, new["new@example.com"], ACCEPT, policy, now=t0)
    assert requests.show(world, made["id"])["state"] == "checkValidity"


def test_decline_refuses_and_kills_the_other_code(
    world: Store, policy: Policy, t0: datetime
) -> None:
    made = new_tech(world, policy, t0)
    codes = latest_codes(world, made["id"])
    requests.decide(world, codes["new@example.com"], DECLINE, policy, now=t0)
    assert requests.show(world, made["id"])["state"] == "refused"
    with pytest.raises(BadCode):
        requests.decide(world, codes["admin@example.com"], ACCEPT, policy, now=t0)
    assert notices(world, made["id"])[2:] == [
        ("refused", "admin@example.com"),
        ("refused", "new@example.com"),
    ]


def test_cancel_by_the_asking_account_only(world: Store, policy: Policy, t0: datetime) -> None:
    made = new_tech(world, policy, t0)
    with pytest.raises(Refusal):
        requests.cancel(world, made["id"], "new@example.com", policy, now=t0)
    assert requests.cancel(world, made["id"], "ADMIN@example.com", policy, now=t0)["state"] == (
        "aborted"
    )
    for code in latest_codes(world, made["id"]).values():
        with pytest.raises(BadCode):
            requests.decide(world, code, ACCEPT, policy, now=t0)
    with pytest.raises(Refusal):
        requests.cancel(world, made["id"], "admin@example.com", policy, now=t0)


def test_expiry_by_sweep_kills_codes_and_tells_validators(
    world: Store, policy: Policy, t0: datetime
) -> None:
    made = new_tech(world, policy, t0)
    assert sweeps.expire_due(world, policy, now=t0 + timedelta(days=6)) == 0
    assert sweeps.expire_due(world, policy, now=t0 + timedelta(days=7)) == 1
    assert requests.show(world, made["id"])["state"] == "expired"
    for code in latest_codes(world, made["id"]).values():
        with pytest.raises(BadCode):
            requests.decide(world, code, ACCEPT, policy, now=t0 + timedelta(days=7))
    assert notices(world, made["id"])[-2:] == [
        ("expired", "admin@example.com"),
        ("expired", "new@example.com"),
    ]


def test_a_code_used_after_expiry_expires_the_request_on_the_spot(
    world: Store, policy: Policy, t0: datetime
) -> None:
    made = new_tech(world, policy, t0)
    code = latest_codes(world, made["id"])["new@example.com"]
    with pytest.raises(BadCode) as caught:
        requests.decide(world, code, ACCEPT, policy, now=t0 + timedelta(days=8))
    assert caught.value.code == "expired"
    assert requests.show(world, made["id"])["state"] == "expired"


def test_sender_must_own_the_code(world: Store, policy: Policy, t0: datetime) -> None:
    made = new_tech(world, policy, t0)
    code = latest_codes(world, made["id"])["new@example.com"]
    with pytest.raises(BadCode) as caught:
        requests.decide(world, code, ACCEPT, policy, sender="eve@evil.test", now=t0)
    assert caught.value.code == "sender-mismatch"
    update_account(world, "new@example.com", AccountChanges(contact_email="inbox@new.test"))
    requests.decide(world, code, ACCEPT, policy, sender="Inbox@New.test", now=t0)


def test_reminders_go_on_schedule_to_those_still_to_answer(
    world: Store, policy: Policy, t0: datetime
) -> None:
    made = new_tech(world, policy, t0)
    first = latest_codes(world, made["id"])
    requests.decide(world, first["admin@example.com"], ACCEPT, policy, now=t0)
    assert sweeps.remind_due(world, policy, now=t0 + timedelta(days=1)) == 0
    assert sweeps.remind_due(world, policy, now=t0 + timedelta(days=2)) == 1
    assert sweeps.remind_due(world, policy, now=t0 + timedelta(days=3)) == 0
    assert sweeps.remind_due(world, policy, now=t0 + timedelta(days=5)) == 1
    assert sweeps.remind_due(world, policy, now=t0 + timedelta(days=6)) == 0
    kinds = notices(world, made["id"])
    assert kinds[-2:] == [("reminder", "new@example.com"), ("reminder", "new@example.com")]
    fresh = latest_codes(world, made["id"])["new@example.com"]
    with pytest.raises(BadCode):
        requests.decide(world, first["new@example.com"], ACCEPT, policy, now=t0)
    requests.decide(world, fresh, ACCEPT, policy, now=t0 + timedelta(days=6))


def test_no_plaintext_code_is_stored_outside_the_outbox(
    world: Store, policy: Policy, t0: datetime
) -> None:
    made = new_tech(world, policy, t0)
    accept_code = latest_codes(world, made["id"])["admin@example.com"]
    requests.decide(world, accept_code, ACCEPT, policy, now=t0)
    requests.resend(world, made["id"], policy, now=t0)
    with world.read() as session:
        all_codes = {str(c) for c in session.scalars(select(OutboxMessage.code)) if c}
    forms = {form for code in all_codes for form in (code, normalize_code(code) or "")}
    with world.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            for row in connection.execute(table.select()):
                for column, value in row._mapping.items():
                    if table.name == "outbox" and column == "code":
                        continue
                    dumped = str(value).upper()
                    assert not any(form in dumped for form in forms), (table.name, column)


def test_every_act_leaves_an_audit_entry(world: Store, policy: Policy, t0: datetime) -> None:
    made = new_tech(world, policy, t0)
    accept_all(world, policy, made["id"], t0)
    sweeps.apply_ready(world, policy, now=t0)
    with world.read() as session:
        kinds = list(
            session.scalars(
                select(Event.kind).where(Event.request_id == made["id"]).order_by(Event.id)
            )
        )
    assert kinds == ["created", "state", "accept", "accept", "state", "state", "applied", "state"]


def test_my_requests_lists_by_account_and_state(world: Store, policy: Policy, t0: datetime) -> None:
    made = new_tech(world, policy, t0)
    (other,) = requests.change_contacts(
        world, "split.com", "tech@example.com", {TECH: "bill@example.com"}, policy, now=t0
    )
    ids = lambda **kw: [r["id"] for r in requests.list_requests(world, **kw)]  # noqa: E731
    assert ids() == [made["id"], other["id"]]
    assert ids(account="new@example.com") == [made["id"]]
    assert ids(account="bill@example.com") == [other["id"]]
    assert ids(state="done") == []
    with pytest.raises(Refusal):
        ids(account="ghost@example.com")


def test_sqlite_writes_take_the_write_lock_up_front(store: Store) -> None:
    """Two processes cannot both read "no open request" and then both write one."""
    if store.dialect != "sqlite":
        pytest.skip("SQLite only: PostgreSQL locks rows instead")
    probe = sqlite3.connect(str(store.engine.url.database), timeout=0, isolation_level=None)
    with store.write() as session:
        session.execute(text("SELECT 1"))
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            probe.execute("BEGIN IMMEDIATE")
    probe.execute("BEGIN IMMEDIATE")  # free again once the write transaction ends
    probe.close()
