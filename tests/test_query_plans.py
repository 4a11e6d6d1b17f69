"""Acting on a reply reads by index only: no statement scans a table.

A scan costs nothing on the few rows of a test and grows with every request
ever made; SQLite's planner shows it where a timing never would (a nested
inner join once made each decision read every validator and account).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from countersign.gateway.mail_in.sweep import InboundSettings, read_inbound
from countersign.rules.states import Decision
from countersign.store import leases
from countersign.store.db import Store
from countersign.workflow import inbox_batch, outbox
from countersign.workflow.inbox import store_received
from countersign.workflow.inbox_batch import Received, process_due
from countersign.workflow.policy import Policy
from countersign.workflow.requests import decide, resend
from tests.mail_helpers import codes, new_tech_request, notice_ids, reply

Statement = tuple[str, Any]


@contextmanager
def statements(store: Store) -> Iterator[list[Statement]]:
    seen: list[Statement] = []

    def keep(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        if sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            seen.append((sql, params))

    event.listen(store.engine, "before_cursor_execute", keep)
    try:
        yield seen
    finally:
        event.remove(store.engine, "before_cursor_execute", keep)


def scans(store: Store, seen: list[Statement]) -> list[str]:
    """Every plan step that reads a whole table (or materializes a join) instead of an index."""
    found = []
    with store.engine.connect() as connection:
        for sql, params in seen:
            plan = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)
            found += [
                f"{step[3]}  <-  {sql[:200]}"
                for step in plan
                if str(step[3]).startswith(("SCAN", "MATERIALIZE"))
            ]
    return found


# The planner asked is SQLite's; PostgreSQL plans by its statistics, which a test's
# few rows would not exercise.
sqlite_only = pytest.mark.parametrize("store", ["sqlite"], indirect=True)


@sqlite_only
def test_a_reply_by_mail_is_acted_on_without_a_scan(
    world: Store, policy: Policy, t0: datetime
) -> None:
    request_id = new_tech_request(world, policy, t0)
    raw = reply(
        codes(world, request_id)["admin@example.com"],
        request_id=request_id,
        in_reply_to=notice_ids(world, request_id)["admin@example.com"],
    )
    store_received(world, raw, channel="smtp", envelope_from=None, recipients=[], now=t0)

    def read(item: Received) -> Any:
        return read_inbound(item, InboundSettings())

    with statements(world) as seen:
        assert process_due(world, policy, read, t0) == 1
    assert seen
    assert scans(world, seen) == []


@sqlite_only
def test_decide_and_resend_read_without_a_scan(world: Store, policy: Policy, t0: datetime) -> None:
    request_id = new_tech_request(world, policy, t0)
    with statements(world) as resending:
        resend(world, request_id, policy, now=t0)
    code = codes(world, request_id)["new@example.com"]
    with statements(world) as deciding:
        decide(world, code, Decision.ACCEPT, policy, now=t0)
    assert resending and deciding
    assert scans(world, resending + deciding) == []


@sqlite_only
def test_claims_and_their_takeover_read_by_index(
    world: Store, policy: Policy, t0: datetime
) -> None:
    """The claim of due work, the heartbeat, the takeover of a dead daemon's claims."""
    new_tech_request(world, policy, t0)  # two notices in the outbox
    store_received(world, reply("X"), channel="smtp", envelope_from=None, recipients=[], now=t0)
    with statements(world) as seen:
        owner = leases.register(world, "plans", t0)
        assert outbox.claim_due(world, t0, owner=owner)
        assert inbox_batch.claim_due(world, t0, owner=owner)
        leases.beat(world, owner, "plans", t0)
        freed = leases.release_orphans(world, t0 + timedelta(minutes=1), timedelta(seconds=15))
        assert freed == {"outbox": 2, "inbox": 1}
        assert leases.hold(world, "imap:box", owner, t0, timedelta(seconds=15))
    assert seen
    assert scans(world, seen) == []
