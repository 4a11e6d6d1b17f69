"""Two daemons sharing PostgreSQL: the last two acceptances arrive at the same
moment, then both sweep.  The request is applied once, with one audit entry and
one outbox row per notice."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier

import pytest
from sqlalchemy import func, select

from countersign.rules.contacts import ContactType
from countersign.rules.states import Decision
from countersign.store.db import Store
from countersign.store.models import Event, OutboxMessage
from countersign.workflow import requests, sweeps
from countersign.workflow.policy import Policy

pytestmark = pytest.mark.postgres
ROUNDS = 8


def accept_then_sweep(url: str, code: str, barrier: Barrier) -> str:
    """One daemon's part: its own engine and connections, as another process would."""
    store, policy = Store(url), Policy()
    try:
        barrier.wait(timeout=30)
        result = requests.decide(store, code, Decision.ACCEPT, policy, via="smtp")
        barrier.wait(timeout=30)
        applied = sweeps.apply_ready(store, policy)
        return f"{result.request['state']}:{applied}"
    finally:
        store.dispose()


@pytest.fixture
def pg_world(world: Store) -> Store:
    if world.dialect != "postgresql":
        pytest.skip("the race is between PostgreSQL clients")
    return world


def test_simultaneous_last_acceptances_apply_once(pg_world: Store) -> None:
    policy = Policy()
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        for round_number in range(ROUNDS):
            target = "new@example.com" if round_number % 2 == 0 else "tech@example.com"
            (made,) = requests.change_contacts(
                pg_world,
                "example.com",
                "admin@example.com",
                {ContactType.TECH: target},
                policy,
                now=datetime.now(UTC),
            )
            codes = _codes(pg_world, made["id"])
            barrier = context.Manager().Barrier(2)
            outcomes = pool.starmap(
                accept_then_sweep, [(pg_world.url, code, barrier) for code in codes]
            )
            # One of the two saw the other's acceptance; exactly one sweep applied it.
            assert sorted(o.split(":")[0] for o in outcomes) == [
                "checkValidity",
                "validatingByCustomers",
            ]
            assert sum(int(o.split(":")[1]) for o in outcomes) == 1
            _assert_applied_once(pg_world, made["id"])


def _codes(store: Store, request_id: int) -> list[str]:
    with store.read() as session:
        rows = session.scalars(
            select(OutboxMessage.code).where(
                OutboxMessage.request_id == request_id, OutboxMessage.code.is_not(None)
            )
        )
        return [str(code) for code in rows]


def _assert_applied_once(store: Store, request_id: int) -> None:
    assert requests.show(store, request_id)["state"] == "done"
    with store.read() as session:
        applied = session.scalar(
            select(func.count()).where(Event.request_id == request_id, Event.kind == "applied")
        )
        kinds = Counter(
            session.execute(
                select(OutboxMessage.kind, OutboxMessage.account_id).where(
                    OutboxMessage.request_id == request_id
                )
            ).all()
        )
    assert applied == 1
    assert all(count == 1 for count in kinds.values()), kinds
    assert Counter(kind for kind, _ in kinds) == {
        "confirm-request": 2,
        "accepted-waiting": 1,
        "completed": 2,
    } or Counter(kind for kind, _ in kinds) == {
        "confirm-request": 2,
        "accepted-waiting": 1,
        "completed": 2,
        "previous-contact-notice": 1,
    }
