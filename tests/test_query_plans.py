"""Acting on a reply reads by index only: no statement scans a table.

A scan costs nothing on the few rows of a test and grows with every request
ever made; SQLite's planner shows it where a timing never would (a nested
inner join once made each decision read every validator and account).

The sweeps' claims also take their rows in the order of the index they read:
a sort of everything due, done again for each batch of 100, makes a backlog
clear in quadratic time.  On PostgreSQL, which plans by statistics a test's
few rows would not exercise, the same statements are planned with sequential
scans and sorts priced out: one still in the plan means no index can serve it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from countersign.gateway import metrics
from countersign.gateway.mail_in.sweep import InboundSettings, read_inbound
from countersign.rules.states import Decision
from countersign.store import leases
from countersign.store.db import Store
from countersign.workflow import inbox_batch, listings, outbox, sweeps
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


def sorts(store: Store, seen: list[Statement]) -> list[str]:
    """Every plan step that sorts (SQLite's temporary B-tree) instead of reading in order."""
    found = []
    with store.engine.connect() as connection:
        for sql, params in seen:
            plan = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)
            found += [f"{step[3]}  <-  {sql[:200]}" for step in plan if "TEMP B-TREE" in step[3]]
    return found


def pg_plan_steps(store: Store, seen: list[Statement]) -> list[str]:
    """PostgreSQL's plan of each statement, one line a node, with scans and sorts priced out."""
    lines = []
    with store.engine.connect() as connection:
        for setting in ("enable_seqscan", "enable_sort", "enable_incremental_sort"):
            connection.exec_driver_sql(f"SET {setting} = off")
        for sql, params in seen:
            plan = connection.exec_driver_sql("EXPLAIN " + sql, params)
            lines += [f"{row[0].strip()}  <-  {sql[:200]}" for row in plan]
        connection.rollback()
    return lines


def pg_scans_and_sorts(store: Store, seen: list[Statement]) -> list[str]:
    steps = pg_plan_steps(store, seen)
    return [step for step in steps if "Seq Scan" in step or "Sort" in step]


# The planner asked is SQLite's; PostgreSQL plans by its statistics, which a test's
# few rows would not exercise (the claims' checks below price its other plans out).
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
        assert freed == {"outbox": 2, "inbox": 1, "hooks": 0}
        assert leases.hold(world, "imap:box", owner, t0, timedelta(seconds=15))
    assert seen
    assert scans(world, seen) == []


@sqlite_only
def test_webhook_claims_read_by_index(world: Store, policy: Policy, t0: datetime) -> None:
    """The head-of-chain claim of hook deliveries (in order per request) scans no table."""
    from countersign.config import Config, HookEndpoint, HooksConfig
    from countersign.workflow import hook_queue, hooks

    endpoint = HookEndpoint(url="http://127.0.0.1:9/hook", secret="s")
    hooks.attach(world, Config(hooks=HooksConfig(endpoints=(endpoint,))))
    new_tech_request(world, policy, t0)  # created, then validating: a chain of two
    with statements(world) as seen:
        assert len(hook_queue.claim_due(world, t0)) == 1  # only the head
    assert seen
    assert scans(world, seen) == []


def _backlog(world: Store, policy: Policy, t0: datetime) -> None:
    """Requests due for each sweep: one ready to apply, others to remind and to expire."""
    ready = new_tech_request(world, policy, t0, domain="split.com")
    for code in codes(world, ready).values():
        decide(world, code, Decision.ACCEPT, policy, now=t0)
    new_tech_request(world, policy, t0)


def _sweeps_seen(world: Store, policy: Policy, t0: datetime) -> list[Statement]:
    with statements(world) as seen:
        assert sweeps.apply_ready(world, policy, now=t0) == 1
        assert sweeps.remind_due(world, policy, now=t0 + timedelta(days=2, hours=1)) == 1
        assert sweeps.expire_due(world, policy, now=t0 + timedelta(days=8)) == 1
    claims = [(sql, p) for sql, p in seen if "LIMIT" in sql.upper() and "requests" in sql]
    assert len({sql for sql, _ in claims}) == 3, claims  # apply's, remind's, expire's
    return claims


@sqlite_only
def test_each_sweep_claims_by_index_in_its_order(
    world: Store, policy: Policy, t0: datetime
) -> None:
    """Apply, remind and expire: a batch reads its rows off an index, nothing sorted."""
    _backlog(world, policy, t0)
    claims = _sweeps_seen(world, policy, t0)
    assert scans(world, claims) == []
    assert sorts(world, claims) == []


@pytest.mark.postgres
@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_each_sweep_claims_by_index_in_its_order_on_postgresql(
    world: Store, policy: Policy, t0: datetime
) -> None:
    _backlog(world, policy, t0)
    claims = _sweeps_seen(world, policy, t0)
    assert pg_scans_and_sorts(world, claims) == []
    # The due time is a bound on the index read, not a filter over every open request.
    assert [step for step in pg_plan_steps(world, claims) if step.startswith("Filter")] == []


def _claims_of_mail(world: Store, policy: Policy, t0: datetime) -> list[Statement]:
    new_tech_request(world, policy, t0)
    store_received(world, reply("X"), channel="smtp", envelope_from=None, recipients=[], now=t0)
    with statements(world) as seen:
        assert outbox.claim_due(world, t0)
        assert inbox_batch.claim_due(world, t0)
    return [(sql, p) for sql, p in seen if "LIMIT" in sql.upper()]


@sqlite_only
def test_mail_claims_take_due_rows_without_a_sort(
    world: Store, policy: Policy, t0: datetime
) -> None:
    claims = _claims_of_mail(world, policy, t0)
    assert len(claims) == 2
    assert sorts(world, claims) == []


@pytest.mark.postgres
@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_mail_claims_take_due_rows_without_a_sort_on_postgresql(
    world: Store, policy: Policy, t0: datetime
) -> None:
    claims = _claims_of_mail(world, policy, t0)
    assert len(claims) == 2
    assert pg_scans_and_sorts(world, claims) == []


# imap_cursors holds one row per mailbox the configuration names: not history.
_BOUNDED_TABLES = ("imap_cursors",)


def _scrape_seen(world: Store, policy: Policy, t0: datetime) -> list[Statement]:
    _backlog(world, policy, t0)
    sweeps.apply_ready(world, policy, now=t0)
    with statements(world) as seen:
        text = metrics.scrape(metrics.make_registry(world)).decode()
    assert 'countersign_requests{state="done"} 1.0' in text
    assert 'countersign_requests{state="validatingByCustomers"} 1.0' in text
    return [(sql, p) for sql, p in seen if not any(t in sql for t in _BOUNDED_TABLES)]


@sqlite_only
def test_metrics_count_no_history(world: Store, policy: Policy, t0: datetime) -> None:
    """/metrics counts open requests and waiting mail by index, reads final states' tallies."""
    seen = _scrape_seen(world, policy, t0)
    assert seen
    assert scans(world, seen) == []


@pytest.mark.postgres
@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_metrics_count_no_history_on_postgresql(world: Store, policy: Policy, t0: datetime) -> None:
    seen = _scrape_seen(world, policy, t0)
    assert [step for step in pg_plan_steps(world, seen) if "Seq Scan" in step] == []


def _listings_seen(world: Store, policy: Policy, t0: datetime) -> list[Statement]:
    request_id = new_tech_request(world, policy, t0)
    with statements(world) as seen:
        assert listings.request_ids(world, state="validatingByCustomers") == [request_id]
        assert listings.request_ids(world, account="new@example.com") == [request_id]
        assert listings.request_ids(world, asking="admin@example.com", state="done") == []
        assert listings.request_ids(world, to="nobody@example.com") == []
    assert len(seen) == 4  # one statement each: no view built, no lookup apart
    return seen


@sqlite_only
def test_id_listings_are_one_indexed_query(world: Store, policy: Policy, t0: datetime) -> None:
    seen = _listings_seen(world, policy, t0)
    assert scans(world, seen) == []
    # By state, the (state, id) index gives the order too.
    assert sorts(world, seen[:1]) == []


@pytest.mark.postgres
@pytest.mark.parametrize("store", ["postgresql"], indirect=True)
def test_id_listings_are_one_indexed_query_on_postgresql(
    world: Store, policy: Policy, t0: datetime
) -> None:
    seen = _listings_seen(world, policy, t0)
    assert [step for step in pg_plan_steps(world, seen) if "Seq Scan" in step] == []
    assert pg_scans_and_sorts(world, seen[:1]) == []
