"""Webhooks and the applier against a real HTTP receiver on 127.0.0.1.

The acts run in-process on the `store` fixture (SQLite and PostgreSQL); the
deliveries go out through gateway.hooks.sender.HookSender over real HTTP, and every
signature is checked by the helper docs/api.md shows receivers.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from countersign.config import ApplyConfig, Config, HookEndpoint, HooksConfig
from countersign.gateway.hooks.sender import HookSender
from countersign.rules.contacts import ContactType
from countersign.rules.states import Decision
from countersign.store.db import Store
from countersign.store.models import Event, HookDelivery, OutboxMessage
from countersign.workflow import hook_queue, hooks, sweeps
from countersign.workflow.operations import purge
from countersign.workflow.policy import Policy
from countersign.workflow.records import get_service
from countersign.workflow.requests import change_contacts, decide, show
from tests.hook_receiver import Receiver, docs_verify

SECRET = "whsec-test-secret"
# How long the receiver fails or is down in the outage tests: 3 s by default, so the
# suite stays quick; COUNTERSIGN_TEST_HOOK_OUTAGE=60 runs the full minute.
OUTAGE = float(os.environ.get("COUNTERSIGN_TEST_HOOK_OUTAGE", "3"))


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver(SECRET)
    yield made
    made.close()


def hooked(receiver: Receiver) -> Config:
    endpoint = HookEndpoint(url=receiver.url, secret=SECRET)
    return Config(hooks=HooksConfig(endpoints=(endpoint,), first_retry="200ms", timeout="5s"))


def applying(receiver: Receiver) -> Config:
    return Config(apply=ApplyConfig(url=receiver.url, secret=SECRET, first_retry="200ms"))


def codes(store: Store, request_id: int) -> dict[int, str]:
    with store.read() as session:
        rows = session.execute(
            select(OutboxMessage.account_id, OutboxMessage.code).where(
                OutboxMessage.request_id == request_id, OutboxMessage.code.is_not(None)
            )
        ).all()
    return {account: code for account, code in rows}


def ask_and_accept(store: Store, policy: Policy) -> int:
    made = change_contacts(
        store, "split.com", "admin@example.com", {ContactType.TECH: "new@example.com"}, policy
    )
    request_id = int(made[0]["id"])
    for code in codes(store, request_id).values():
        decide(store, code, Decision.ACCEPT, policy, request_id=request_id, via="api")
    sweeps.apply_ready(store, policy)
    return request_id


def deliver_until(sender: HookSender, done: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "deliveries did not settle"
        asyncio.run(sender.deliver_due())
        time.sleep(0.05)


def open_deliveries(store: Store) -> int:
    with store.read() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(HookDelivery)
                .where(HookDelivery.status.in_(("pending", "sending")))
            )
            or 0
        )


def test_a_full_change_arrives_in_order_each_once_signed_and_retried_through_500s(
    world: Store, policy: Policy, receiver: Receiver
) -> None:
    config = hooked(receiver)
    hooks.attach(world, config)
    receiver.fail_for(OUTAGE)  # the receiver answers 500 for OUTAGE seconds
    request_id = ask_and_accept(world, policy)
    started = time.monotonic()
    deliver_until(HookSender(world, config), lambda: open_deliveries(world) == 0, OUTAGE + 120)
    print(f"\nall delivered {time.monotonic() - started:.1f}s after a {OUTAGE:.0f}s outage")

    seen = [(e["type"], e["data"].get("after"), e["request"]["state"]) for e in receiver.received]
    print(f"\nreceived in order: {seen}\nrefused first: {len(receiver.refused_with)} x 500")
    assert seen == [
        ("request.created", None, "todo"),
        ("request.state_changed", "validatingByCustomers", "validatingByCustomers"),
        ("validator.decided", None, "validatingByCustomers"),
        ("validator.decided", None, "validatingByCustomers"),
        ("request.state_changed", "checkValidity", "checkValidity"),
        ("request.state_changed", "doing", "doing"),
        ("request.state_changed", "done", "done"),
    ]
    ids = [e["id"] for e in receiver.received]
    assert len(set(ids)) == len(ids) == 7  # each event once
    assert {e["request"]["id"] for e in receiver.received} == {request_id}
    assert {e["data"]["account"] for e in receiver.received[2:4]} == {
        "admin@example.com",
        "new@example.com",
    }
    assert receiver.bad_signatures == 0
    assert receiver.refused_with and set(receiver.refused_with) == {500}  # it was retried
    assert hook_queue.failed_count(world) == 0


def test_a_wrong_secret_is_rejected_by_the_documented_helper(
    world: Store, policy: Policy, receiver: Receiver
) -> None:
    wrong = Config(hooks=HooksConfig(endpoints=(HookEndpoint(url=receiver.url, secret="nope"),)))
    hooks.attach(world, wrong)
    change_contacts(
        world, "split.com", "admin@example.com", {ContactType.TECH: "new@example.com"}, policy
    )
    asyncio.run(HookSender(world, wrong).deliver_due())
    # Only `created` was sent: the request's next event waits for it (in order).
    assert receiver.received == [] and receiver.bad_signatures == 1
    verify = docs_verify()
    header, body = receiver.raw[0]
    assert verify("nope", header, body)  # what it was signed with
    assert not verify(SECRET, header, body)
    assert not verify("nope", header, body + b" ")  # a body changed on the way
    assert not verify("nope", header, body, tolerance=-1)  # too old
    rows = hook_queue.listing(world)
    assert [r["status"] for r in rows] == ["pending", "pending"]  # to be retried
    assert rows[0]["lastError"] == "HTTP 401" and rows[0]["attempts"] == 1
    assert rows[1]["attempts"] == 0


def test_no_endpoint_no_rows_and_the_change_applied_at_once(world: Store, policy: Policy) -> None:
    hooks.attach(world, Config())
    request_id = ask_and_accept(world, policy)
    assert show(world, request_id)["state"] == "done"
    assert hook_queue.listing(world) == []


# --- the applier -------------------------------------------------------------------------


def test_apply_2xx_makes_it_done_and_the_contact_changes(
    world: Store, policy: Policy, receiver: Receiver
) -> None:
    config = applying(receiver)
    hooks.attach(world, config)
    request_id = ask_and_accept(world, policy)
    assert show(world, request_id)["state"] == "doing"
    assert get_service(world, "split.com")["contactTech"] == "tech@example.com"  # not yet
    deliver_until(HookSender(world, config), lambda: show(world, request_id)["state"] != "doing")
    assert show(world, request_id)["state"] == "done"
    assert get_service(world, "split.com")["contactTech"] == "new@example.com"
    assert [e["type"] for e in receiver.received] == ["request.apply"]
    assert receiver.received[0]["request"]["state"] == "doing"


def test_apply_422_gives_error_with_its_message_and_the_error_notices(
    world: Store, policy: Policy, receiver: Receiver
) -> None:
    config = applying(receiver)
    hooks.attach(world, config)
    receiver.answer = (422, {"message": "registry refused"})
    request_id = ask_and_accept(world, policy)
    deliver_until(HookSender(world, config), lambda: show(world, request_id)["state"] != "doing")
    shown = show(world, request_id)
    assert (shown["state"], shown["error"]) == ("error", "registry refused")
    assert get_service(world, "split.com")["contactTech"] == "tech@example.com"
    with world.read() as session:
        kinds = session.scalars(
            select(OutboxMessage.kind).where(
                OutboxMessage.request_id == request_id, OutboxMessage.kind == "error"
            )
        ).all()
    assert len(kinds) == 2  # both validators told, as for any error
    assert len(receiver.received) == 1  # a refusal is an answer: not retried


def test_apply_receiver_down_leaves_doing_with_the_reason_then_done(
    world: Store, policy: Policy, receiver: Receiver
) -> None:
    config = applying(receiver)
    hooks.attach(world, config)
    receiver.down_for(OUTAGE)  # not listening: every POST is a refused connection
    request_id = ask_and_accept(world, policy)
    sender = HookSender(world, config)
    asyncio.run(sender.deliver_due())
    shown = show(world, request_id)
    assert shown["state"] == "doing"
    assert shown["error"].startswith("applying: cannot reach the receiver: "), shown["error"]
    print(f"\nwhile down: {shown['state']}, error {shown['error']!r}")
    started = time.monotonic()
    deliver_until(sender, lambda: show(world, request_id)["state"] != "doing", OUTAGE + 120)
    shown = show(world, request_id)
    print(f"back: {shown['state']} {time.monotonic() - started:.1f}s later")
    assert (shown["state"], shown["error"]) == ("done", None)
    assert get_service(world, "split.com")["contactTech"] == "new@example.com"
    with world.read() as session:
        applied = session.scalar(
            select(func.count()).select_from(Event).where(Event.kind == "applied")
        )
    assert applied == 1
    assert len(receiver.received) == 1  # the first POST that reached it was the last


def test_given_up_after_give_up_after_shown_in_metrics_and_retried_by_hand(
    world: Store, policy: Policy, receiver: Receiver
) -> None:
    from countersign.gateway.metrics import make_registry, scrape

    endpoint = HookEndpoint(url=receiver.url, secret=SECRET, events=("request.created",))
    config = Config(hooks=HooksConfig(endpoints=(endpoint,), give_up_after="0s"))
    hooks.attach(world, config)
    receiver.fail_for(60.0)
    change_contacts(
        world, "split.com", "admin@example.com", {ContactType.TECH: "new@example.com"}, policy
    )
    asyncio.run(HookSender(world, config).deliver_due())
    failed = hook_queue.listing(world, failed_only=True)
    assert [(r["type"], r["lastError"]) for r in failed] == [("request.created", "HTTP 500")]
    assert len(hook_queue.listing(world)) == 1  # only the type the endpoint asked for
    text = scrape(make_registry(world)).decode()
    assert "countersign_hooks_failed 1.0" in text
    assert 'countersign_hook_deliveries_total{outcome="failed",target="webhook"}' in text
    receiver.fail_until = 0
    assert hook_queue.retry(world, failed[0]["id"], datetime.now(UTC))["status"] == "pending"
    asyncio.run(HookSender(world, config).deliver_due())
    assert [e["type"] for e in receiver.received] == ["request.created"]
    assert "countersign_hooks_failed 0.0" in scrape(make_registry(world)).decode()


def test_purge_forgets_the_finished_deliveries_of_purged_requests_and_keeps_open_ones(
    world: Store, policy: Policy, receiver: Receiver
) -> None:
    """Each delivery holds the request as it was (addresses, the validators' words):
    retention that forgets a request's mail must forget those copies too."""
    config = hooked(receiver)
    hooks.attach(world, config)
    finished = ask_and_accept(world, policy)
    deliver_until(HookSender(world, config), lambda: open_deliveries(world) == 0)
    receiver.fail_for(3600)  # the next request's deliveries stay open
    still_open = int(
        change_contacts(
            world,
            "example.com",
            "admin@example.com",
            {ContactType.TECH: "tech@example.com"},
            policy,
        )[0]["id"]
    )
    later = datetime.now(UTC) + timedelta(days=200)
    counts, purged_ids, forgotten = purge(world, timedelta(days=90), now=later)

    assert purged_ids == [finished] and forgotten == 7
    assert set(counts) == {"requests", "mail", "notices", "codes"}  # the contract's shape
    with world.read() as session:
        left = session.execute(select(HookDelivery.request_id, HookDelivery.status)).all()
    assert left and {request for request, _ in left} == {still_open}
    assert {status for _, status in left} <= {"pending", "sending"}
