"""Claiming the outbox: a notice shows its request as the API does, and goes where it should."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from countersign.rules.contacts import ContactType
from countersign.rules.states import Decision
from countersign.store.db import Store
from countersign.store.models import OutboxMessage
from countersign.workflow import requests
from countersign.workflow.directory import AccountChanges, update_account
from countersign.workflow.outbox import RetryPolicy, claim_due, mark_failed, mark_sent
from countersign.workflow.policy import Policy

TECH = ContactType.TECH


def test_a_claimed_notice_shows_its_request_as_request_show_does(
    world: Store, policy: Policy
) -> None:
    now = datetime.now(UTC)
    (made,) = requests.change_contacts(
        world, "split.com", "admin@example.com", {TECH: "new@example.com"}, policy, now=now
    )
    request_id = int(made["id"])
    first = claim_due(world, now, 10)
    codes = {envelope.to_address: envelope.code for envelope in first}
    # One validator's mail bounced for good, the other decides: both show in the view.
    bounced = next(e for e in first if e.to_address == "new@example.com")
    mark_failed(
        world, bounced.outbox_id, "550 no such user", permanent=True, now=now, policy=RetryPolicy()
    )
    mark_sent(world, [e.outbox_id for e in first if e is not bounced], now)
    requests.decide(world, str(codes["admin@example.com"]), Decision.ACCEPT, policy)
    later = datetime.now(UTC) + timedelta(seconds=1)
    claimed = claim_due(world, later, 10)
    shown = requests.show(world, request_id)
    assert any("deliveryError" in v for v in shown["validators"])
    assert any(v["decision"] == "accept" for v in shown["validators"])
    assert claimed and all(envelope.request == shown for envelope in claimed)
    mark_sent(world, [e.outbox_id for e in claimed], later)

    update_account(world, "new@example.com", AccountChanges(contact_email="fixed@example.org"))
    requests.resend(world, request_id, policy)
    (resent,) = claim_due(world, later + timedelta(seconds=1), 10)
    assert resent.request == requests.show(world, request_id)
    # The mail goes to the contact email as it is now, and threads under the first mail.
    assert resent.to_address == "fixed@example.org"
    assert resent.recipient["email"] == "new@example.com"
    first_to_new = [e for e in first if e.recipient["email"] == "new@example.com"]
    assert resent.thread_root == first_to_new[0].message_id != resent.message_id
    with world.read() as session:
        row = session.scalars(
            select(OutboxMessage).where(OutboxMessage.id == resent.outbox_id)
        ).one()
        assert row.status == "sending" and resent.message_id == row.message_id
        assert resent.queued_at == row.created_at and resent.code == row.code is not None


def test_each_recipient_threads_under_a_mail_it_received(world: Store, policy: Policy) -> None:
    now = datetime.now(UTC)
    (made,) = requests.change_contacts(
        world, "split.com", "admin@example.com", {TECH: "new@example.com"}, policy, now=now
    )
    first = {e.to_address: e for e in claim_due(world, now, 10)}
    assert set(first) == {"admin@example.com", "new@example.com"}
    # A first mail starts its recipient's thread: it threads under nothing else.
    assert all(e.thread_root in (None, e.message_id) for e in first.values())
    mark_sent(world, [e.outbox_id for e in first.values()], now)

    requests.resend(world, int(made["id"]), policy)
    later = now + timedelta(seconds=1)
    resent = {e.to_address: e for e in claim_due(world, later, 10)}
    assert set(resent) == set(first)
    for address, envelope in resent.items():
        assert envelope.thread_root == first[address].message_id
