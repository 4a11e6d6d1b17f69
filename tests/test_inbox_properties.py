"""Properties of the whole mail-in pipeline (store, read, act) on mail nobody would write by hand.

For arbitrary bytes and arbitrary MIME trees: no exception escapes (every row
ends "done", none is retried or quarantined), nothing about any request
changes, nobody is mailed, and each reading takes bounded time.
"""

from __future__ import annotations

import time
from datetime import datetime
from email.message import Message
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from countersign.gateway.mail_in.sweep import InboundSettings, read_inbound
from countersign.rules.readings import Reading
from countersign.store.db import Store
from countersign.store.models import ChangeRequest, InboxMessage, OutboxMessage, Validator
from countersign.workflow.inbox import store_received
from countersign.workflow.inbox_batch import Received, process_due
from countersign.workflow.policy import Policy
from tests.conftest import T0
from tests.mail_helpers import new_tech_request
from tests.test_reading_properties import HEADER_NAMES, header_value, mime_tree

READ_BUDGET = 1.0  # seconds for one reading; typical is a millisecond or two
PIPELINE = settings(
    max_examples=150,
    deadline=None,  # the budget is asserted on the reading itself, not on the database work
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SENDERS = st.sampled_from([None, "", "<>", "bob@example.net", "admin@example.com"])


@pytest.fixture
def live(world: Store, policy: Policy, t0: datetime) -> Store:
    """A store with one request waiting for both its validators."""
    new_tech_request(world, policy, t0)
    return world


def snapshot(store: Store) -> tuple[Any, ...]:
    """Everything a message could wrongly change: requests, validators, notices."""
    with store.read() as session:
        requests = session.execute(select(ChangeRequest.id, ChangeRequest.state)).all()
        validators = session.execute(
            select(Validator.id, Validator.decision, Validator.code_hash, Validator.delivery_error)
        ).all()
        notices = session.scalar(select(func.count()).select_from(OutboxMessage))
        return tuple(requests), tuple(validators), notices


def through_pipeline(store: Store, policy: Policy, raw: bytes, envelope_from: str | None) -> None:
    timings: list[float] = []

    def timed(item: Received) -> Reading:
        started = time.perf_counter()
        try:
            return read_inbound(item, InboundSettings())
        finally:
            timings.append(time.perf_counter() - started)

    store_received(
        store,
        raw,
        channel="smtp",
        envelope_from=envelope_from,
        recipients=["confirm+K7QWJ3XR-M2PZ4TLA-VB6NYD5E-HC3GUF7S@countersign.localhost"],
        now=T0,
    )
    process_due(store, policy, timed, T0)
    assert all(seconds < READ_BUDGET for seconds in timings), timings
    with store.read() as session:
        stuck = session.scalars(select(InboxMessage).where(InboxMessage.status != "done")).all()
        assert not stuck, [(row.status, row.outcome) for row in stuck]


@PIPELINE
@given(raw=st.binary(max_size=8192), envelope_from=SENDERS)
def test_arbitrary_bytes_change_nothing(
    live: Store, policy: Policy, raw: bytes, envelope_from: str | None
) -> None:
    before = snapshot(live)
    through_pipeline(live, policy, raw, envelope_from)
    assert snapshot(live) == before


@PIPELINE
@given(
    tree=mime_tree,
    headers=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_value), max_size=10),
    envelope_from=SENDERS,
)
def test_arbitrary_mime_structures_change_nothing(
    live: Store,
    policy: Policy,
    tree: Message,
    headers: list[tuple[str, str]],
    envelope_from: str | None,
) -> None:
    before = snapshot(live)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    raw = head.encode("utf-8", "surrogatepass") + tree.as_bytes()
    through_pipeline(live, policy, raw, envelope_from)
    assert snapshot(live) == before
