"""Owned leases (store/leases.py): a claim is held while its owner's heartbeat goes on.

The whole daemons are in tests/faults/; here the rules, on both databases:
who holds what, when it is free again, and that a live owner's claim is never
taken on time alone.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from countersign.store import leases
from countersign.store.db import Store
from countersign.store.models import OutboxMessage, Worker
from countersign.workflow import outbox
from countersign.workflow.policy import Policy
from tests.mail_helpers import new_tech_request

TIMEOUT = timedelta(seconds=15)


def test_a_live_owner_keeps_its_claims_however_long_it_holds_them(
    world: Store, policy: Policy, t0: datetime
) -> None:
    new_tech_request(world, policy, t0)
    owner = leases.register(world, "live", t0)
    assert len(outbox.claim_due(world, t0, owner=owner)) == 2
    later = t0 + timedelta(hours=2)
    leases.beat(world, owner, "live", later - timedelta(seconds=5))
    assert leases.release_orphans(world, later, TIMEOUT) == {"outbox": 0, "inbox": 0, "hooks": 0}
    assert outbox.claim_due(world, later) == []  # nobody else gets them


def test_a_stopped_heart_frees_its_claims_and_a_clean_stop_frees_them_at_once(
    world: Store, policy: Policy, t0: datetime
) -> None:
    new_tech_request(world, policy, t0)
    dead = leases.register(world, "dead", t0)
    outbox.claim_due(world, t0, limit=1, owner=dead)
    stopping = leases.register(world, "stopping", t0)
    outbox.claim_due(world, t0, limit=1, owner=stopping)
    leases.unregister(world, stopping, t0 + timedelta(seconds=1), TIMEOUT)  # SIGTERM
    other = leases.register(world, "other", t0 + timedelta(seconds=1))
    claimed = outbox.claim_due(world, t0 + timedelta(seconds=1), owner=other)
    assert len(claimed) == 1  # the stopped one's, at once; the dead one's not yet
    leases.beat(world, other, "other", t0 + timedelta(seconds=16))
    assert leases.release_orphans(world, t0 + timedelta(seconds=16), TIMEOUT)["outbox"] == 1


def test_a_worker_forgotten_during_an_outage_comes_back_with_its_id(
    world: Store, t0: datetime
) -> None:
    owner = leases.register(world, "stalled", t0)
    with world.write() as session:  # another daemon removed its row meanwhile
        session.execute(Worker.__table__.delete())
    leases.beat(world, owner, "stalled", t0 + timedelta(seconds=30))
    with world.read() as session:
        assert session.scalars(select(Worker.id)).all() == [owner]


def test_one_holder_of_a_named_lease_until_its_heart_stops_or_it_lets_go(
    world: Store, t0: datetime
) -> None:
    first, second = leases.register(world, "one", t0), leases.register(world, "two", t0)
    mailbox = "imap:user@host:993/INBOX"
    assert leases.hold(world, mailbox, first, t0, TIMEOUT)
    assert not leases.hold(world, mailbox, second, t0, TIMEOUT)
    assert leases.hold(world, mailbox, first, t0 + timedelta(seconds=5), TIMEOUT)  # renewed
    leases.beat(world, second, "two", t0 + timedelta(seconds=20))
    assert leases.hold(world, mailbox, second, t0 + timedelta(seconds=20), TIMEOUT)  # first died
    assert not leases.hold(world, mailbox, first, t0 + timedelta(seconds=20), TIMEOUT)
    leases.let_go(world, mailbox, second)
    assert leases.hold(world, mailbox, first, t0 + timedelta(seconds=21), timedelta(days=1))


def test_a_failed_pass_gives_back_what_it_held_but_what_was_sent(
    world: Store, policy: Policy, t0: datetime
) -> None:
    new_tech_request(world, policy, t0)
    owner = leases.register(world, "me", t0)
    sent, unsent = (e.outbox_id for e in outbox.claim_due(world, t0, owner=owner))
    assert leases.give_back(world, OutboxMessage, owner, keep={sent}) == 1
    with world.read() as session:
        statuses = dict(session.execute(select(OutboxMessage.id, OutboxMessage.status)).all())
    assert statuses == {sent: "sending", unsent: "pending"}


def test_the_instance_key_lasts_across_restarts(tmp_path: object) -> None:
    from pathlib import Path

    folder = Path(str(tmp_path)) / "var"
    key = leases.instance_key(folder)
    assert len(key) == 32 and leases.instance_key(folder) == key
