"""Requests by state, as /metrics and `countersign status` report them, without counting history.

The final states come from tallies kept as requests move (store/tallies.py):
whatever way a request ends, the figures must be what a full count would say,
and a store upgraded from before the tallies starts from its real counts.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from alembic import command
from sqlalchemy import func, select, text

from countersign.rules.contacts import ContactType
from countersign.rules.states import Decision
from countersign.store.db import Store
from countersign.store.migrate import alembic_config, upgrade
from countersign.store.models import ChangeRequest
from countersign.workflow import operations, requests, sweeps
from countersign.workflow.directory import AccountChanges, add_service, update_account
from countersign.workflow.policy import Policy
from tests.mail_helpers import codes, new_tech_request


def full_count(store: Store) -> Counter[str]:
    with store.read() as session:
        grouped = select(ChangeRequest.state, func.count()).group_by(ChangeRequest.state)
        return Counter({state: count for state, count in session.execute(grouped)})


def reported(store: Store) -> Counter[str]:
    with store.read() as session:
        return Counter({k: v for k, v in operations.request_counts(session).items() if v})


def accept_all(store: Store, request_id: int, policy: Policy, now: datetime) -> None:
    for code in codes(store, request_id).values():
        requests.decide(store, code, Decision.ACCEPT, policy, now=now)


def test_every_way_a_request_ends_is_counted(world: Store, policy: Policy, t0: datetime) -> None:
    for n in range(5):
        add_service(
            world, f"s{n}.com", "admin@example.com", "admin@example.com", "bill@example.com"
        )
    accept_all(world, new_tech_request(world, policy, t0, domain="s0.com"), policy, t0)
    refused = new_tech_request(world, policy, t0, domain="s1.com")
    code = codes(world, refused)["new@example.com"]
    requests.decide(world, code, Decision.DECLINE, policy, now=t0)
    aborted = new_tech_request(world, policy, t0, domain="s2.com")
    requests.cancel(world, aborted, "admin@example.com", policy, now=t0)
    new_tech_request(world, policy, t0, domain="s3.com")  # expires below
    new_billing = {ContactType.BILLING: "tech@example.com"}
    (failing,) = requests.change_contacts(
        world, "s4.com", "bill@example.com", new_billing, policy, now=t0
    )
    accept_all(world, failing["id"], policy, t0)
    # The new billing contact owes money by the time the change is applied: error.
    update_account(world, "tech@example.com", AccountChanges(balance_due=Decimal(5)))
    new_tech_request(world, policy, t0 + timedelta(days=9))  # still open
    sweeps.apply_ready(world, policy, now=t0)
    sweeps.expire_due(world, policy, now=t0 + timedelta(days=8))

    expected = {"done", "refused", "aborted", "expired", "error", "validatingByCustomers"}
    assert set(full_count(world)) == expected
    assert reported(world) == full_count(world)


def test_an_upgraded_store_reports_the_requests_it_already_had(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    command.upgrade(alembic_config(store.engine), "0005")
    at = "2026-11-02 09:00:00"
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO accounts (id, email, zone, language, payment_method_valid,"
                f" balance_due, created_at) VALUES (1, 'a@example.com', 'EU', 'en', 1, 0, '{at}')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO services (id, domain, admin_id, tech_id, billing_id, created_at)"
                f" VALUES (1, 'example.com', 1, 1, 1, '{at}')"
            )
        )
        for n, state in enumerate(("done", "done", "expired", "validatingByCustomers")):
            connection.execute(
                text(
                    "INSERT INTO requests (service_id, contact_types, from_account_id,"
                    " to_account_id, asking_account_id, state, date_request, expires_at,"
                    f" reminders_sent) VALUES (1, '[]', 1, 1, 1, :state, '{at}', '{at}', {n})"
                ),
                {"state": state},
            )
    upgrade(store.engine)
    assert reported(store) == Counter({"done": 2, "expired": 1, "validatingByCustomers": 1})
    store.dispose()
