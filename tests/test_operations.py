"""The operator's commands on SQLite and PostgreSQL, run as real `countersign` processes:
`status`, `outbox list|retry`, `audit`, `purge`, `db current|check`, and the schema gate."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text

from countersign.rules.states import Decision
from countersign.store.db import Store
from countersign.store.models import Event, InboxMessage, OutboxMessage, Validator
from countersign.workflow import sweeps
from countersign.workflow.inbox import store_received
from countersign.workflow.inbox_batch import process_due
from countersign.workflow.outbox import RetryPolicy, mark_failed
from countersign.workflow.policy import Policy
from countersign.workflow.requests import decide
from tests.cli_helpers import Cli, clean_env
from tests.mail_helpers import codes, new_tech_request, notice_ids, reply
from tests.test_inbox import read

OLD = timedelta(days=120)


def command(store: Store, tmp_path: Any) -> Cli:
    url = store.engine.url.render_as_string(hide_password=False)
    return Cli(tmp_path, clean_env(COUNTERSIGN_DATA_DIR=str(tmp_path / "var"),
                                   COUNTERSIGN_DATABASE_URL=url))  # fmt: skip


def finished_by_mail(store: Store, policy: Policy, now: datetime) -> tuple[int, list[str]]:
    """A request both validators accepted, the admin by mail: done at ``now``; its codes."""
    request_id = new_tech_request(store, policy, now)
    issued = codes(store, request_id)
    raw = reply(issued["admin@example.com"], request_id=request_id,
                in_reply_to=notice_ids(store, request_id)["admin@example.com"])  # fmt: skip
    recipient = f"confirm+{issued['admin@example.com']}@countersign.localhost"
    store_received(store, raw, channel="smtp", envelope_from="admin@example.com",
                   recipients=[recipient], now=now)  # fmt: skip
    while process_due(store, policy, read, now):
        pass
    decide(store, issued["new@example.com"], Decision.ACCEPT, policy, request_id=request_id,
           via="cli", now=now)  # fmt: skip
    sweeps.apply_ready(store, policy, now=now)
    # The notices are handed over: their codes are erased, as delivery does.
    with store.write() as session:
        session.execute(text("UPDATE outbox SET status = 'sent', code = NULL"))
    return request_id, list(issued.values())


def test_purge_forgets_bodies_codes_and_addresses_and_audit_keeps_the_history(
    world: Store, policy: Policy, t0: datetime, tmp_path: Any
) -> None:
    now = datetime.now(t0.tzinfo)
    old, old_codes = finished_by_mail(world, policy, now - OLD)
    cli = command(world, tmp_path)
    before = cli.json("audit", str(old), "--json")
    assert [e["event"] for e in before][:2] == ["created", "state"]
    assert {"accept", "mail-in", "applied"} <= {e["event"] for e in before}
    assert any(e["door"] == "smtp" and e["actor"] == "admin@example.com" for e in before)

    purged = cli.json("purge", "--older-than", "90d", "--json")
    assert purged["requests"] == 1 and purged["mail"] == 1 and purged["codes"] == 2

    with world.read() as session:
        mail = session.scalars(select(InboxMessage)).all()
        assert [(m.raw, m.recipients, m.envelope_from) for m in mail] == [(b"", [], None)]
        notices = session.scalars(select(OutboxMessage).where(OutboxMessage.request_id == old))
        assert all(n.code is None and n.context == {} for n in notices)
        hashes = session.scalars(select(Validator.code_hash).where(Validator.request_id == old))
        assert list(hashes) == [None, None]
        trail = " ".join(json.dumps(e.detail) for e in session.scalars(select(Event)))
    dump = json.dumps(cli.json("inbox", "--json")) + trail
    for code in old_codes:
        assert code not in dump and code.replace("-", "") not in dump
    assert cli.json("audit", str(old), "--json") == before  # the history stays whole


def test_purge_keeps_what_is_newer_than_the_cut_or_still_open(
    world: Store, policy: Policy, t0: datetime, tmp_path: Any
) -> None:
    now = datetime.now(t0.tzinfo)
    recent, _ = finished_by_mail(world, policy, now - timedelta(days=10))
    cli = command(world, tmp_path)
    open_request = cli.json("change", "split.com", "--as", "tech@example.com",
                            "--tech", "new@example.com")[0]["id"]  # fmt: skip
    purged = cli.json("purge", "--older-than", "90d", "--json")
    assert purged == {"requests": 0, "mail": 0, "notices": 0, "codes": 0, "files": 0}
    with world.read() as session:
        assert session.scalar(select(InboxMessage.raw)) != b""
        kept = session.scalars(
            select(Validator.code_hash).where(Validator.request_id == open_request)
        )
        assert all(kept)
    assert recent
    bad = cli.run("purge", "--older-than", "soon")
    assert bad.code == 2 and "--older-than" in bad.stderr


def test_status_outbox_list_and_retry_with_a_fresh_code(
    world: Store, policy: Policy, t0: datetime, tmp_path: Any
) -> None:
    now = datetime.now(t0.tzinfo)
    request_id = new_tech_request(world, policy, now)
    first_codes = codes(world, request_id)
    with world.read() as session:
        failing = session.scalar(select(OutboxMessage.id).where(OutboxMessage.account_id.in_(
            select(Validator.account_id).where(Validator.request_id == request_id)
        )).order_by(OutboxMessage.id.desc()))  # fmt: skip
    assert failing is not None
    mark_failed(world, failing, "550 mailbox unavailable", permanent=True, now=now,
                policy=RetryPolicy())  # fmt: skip
    cli = command(world, tmp_path)

    shown = cli.json("status", "--json")
    assert shown["queues"]["outbox"]["waiting"] == 1
    assert shown["queues"]["outbox"]["failed"] == 1
    assert shown["queues"]["outbox"]["oldestDue"] is not None
    assert shown["queues"]["inbox"] == {"waiting": 0, "quarantined": 0, "oldestDue": None,
                                        "oldestDueAgeSeconds": 0.0}  # fmt: skip
    assert shown["requests"]["validatingByCustomers"] == 1
    assert [f["failed"] for f in shown["failingRecipients"]] == [1]
    assert shown["doors"]["smtp"]["listening"] is False
    text_lines = cli.ok("status").stdout
    assert "outbox: 1 waiting, 1 failed" in text_lines

    listed = cli.json("outbox", "list", "--failed", "--json")
    assert [m["id"] for m in listed] == [failing]
    assert listed[0]["lastError"] == "550 mailbox unavailable"
    assert "code" not in listed[0]
    assert len(cli.json("outbox", "list", "--json")) == 2

    retried = cli.json("outbox", "retry", str(failing), "--json")
    assert retried["status"] == "pending" and retried["attempts"] == 0
    again = codes(world, request_id)
    changed = [who for who in again if again[who] != first_codes.get(who)]
    assert len(changed) == 1  # the retried notice carries a fresh code; the other is untouched
    refused = cli.run("outbox", "retry", str(failing))
    assert refused.code == 1 and "is pending" in refused.stderr
    assert cli.run("audit", "9999").code == 1


def test_db_current_and_check(store: Store, tmp_path: Any) -> None:
    from alembic import command as alembic

    from countersign.store.migrate import alembic_config

    cli = command(store, tmp_path)
    current = cli.json("db", "current", "--json")
    assert current["revision"] == current["head"] and current["pending"] is False
    assert cli.run("db", "check").code == 0
    alembic.downgrade(alembic_config(store.engine), "0001")
    try:
        check = cli.run("db", "check")
        assert check.code == 1 and "migration pending" in check.stdout
        if store.dialect == "postgresql":
            # Only `db upgrade` (or serve --migrate) moves a shared schema: one line, exit 2.
            for args in (("account", "list"), ("serve",)):
                refused = cli.run(*args)
                assert refused.code == 2, str(refused)
                assert refused.stderr_lines == [
                    "countersign: the database schema is at revision 0001, this version needs"
                    f" {current['head']}: run 'countersign db upgrade' (or 'countersign serve"
                    " --migrate')"
                ]
            assert cli.run("db", "check").code == 1  # still: nothing migrated it
            assert cli.json("db", "upgrade", "--json")["upgraded"] is True
        else:
            assert cli.run("account", "list").code == 0  # SQLite upgrades itself
        assert cli.run("db", "check").code == 0
    finally:
        alembic.upgrade(alembic_config(store.engine), "head")


def test_migrations_from_the_first_revision_keep_the_data(world: Store) -> None:
    """Down to 0001 with data in the tables, then up again: nothing lost."""
    from alembic import command as alembic

    from countersign.store.migrate import alembic_config, current_revision, head_revision

    config = alembic_config(world.engine)
    head = head_revision(world.engine)
    alembic.downgrade(config, "0001")
    assert current_revision(world.engine) == "0001"
    alembic.upgrade(config, "head")
    assert current_revision(world.engine) == head
    with world.read() as session:
        assert session.execute(text("SELECT count(*) FROM accounts")).scalar() == 5
        assert session.execute(text("SELECT count(*) FROM services")).scalar() == 2


def test_serve_migrate_upgrades_and_the_retention_sweep_purges(
    world: Store, policy: Policy, t0: datetime, tmp_path: Any
) -> None:
    """`serve --migrate` moves an old schema (PostgreSQL's only other way than db upgrade);
    with `retention` set, serve purges at start and then daily."""
    from alembic import command as alembic

    from countersign.store.migrate import alembic_config
    from tests.test_service import NotifySocket, terminate

    old, _ = finished_by_mail(world, policy, datetime.now(t0.tzinfo) - OLD)
    alembic.downgrade(alembic_config(world.engine), "0001")
    cli = command(world, tmp_path)
    assert cli.run("db", "check").code == 1
    notify = NotifySocket()
    daemon = cli.start("serve", "--migrate", "--only", "sweeps", NOTIFY_SOCKET=notify.name,
                       COUNTERSIGN_RETENTION="90d")  # fmt: skip
    try:
        notify.wait_for("READY=1", daemon)

        def purged() -> bool:
            with world.read() as session:
                return session.scalar(select(InboxMessage.raw)) == b""

        deadline = datetime.now(t0.tzinfo) + timedelta(seconds=30)
        while not purged():
            assert datetime.now(t0.tzinfo) < deadline, "the retention sweep did not purge"
            assert daemon.poll() is None
            time.sleep(0.1)
    finally:
        code, log, _ = terminate(daemon)
        notify.close()
    assert code == 0, log
    assert cli.run("db", "check").code == 0
    assert "purged 1 request(s)" in log
    assert [e["event"] for e in cli.json("audit", str(old), "--json")][:1] == ["created"]
