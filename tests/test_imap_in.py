"""IMAP in against a real Dovecot (tests/servers): replies appended to the mailbox are stored,
moved to Processed and applied once, across a server restart and a new UIDVALIDITY.

Dovecot reports new mail during IDLE about 500 ms late: waits here allow seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest

from countersign.gateway.mail_in.imap import ImapReader, ImapSettings
from countersign.gateway.mail_in.sweep import InboundSettings, read_inbound
from countersign.rules.readings import Reading
from countersign.store.db import Store
from countersign.workflow.imap_cursor import read_cursor
from countersign.workflow.inbox import store_received
from countersign.workflow.inbox_batch import Received, process_due
from countersign.workflow.policy import Policy
from tests.mail_helpers import codes, decisions, inbox_rows, new_tech_request, notice_ids, reply
from tests.servers.dovecot import DovecotServer, make_message
from tests.servers.fixtures import dovecot, dovecot_factory

__all__ = ["dovecot", "dovecot_factory"]  # the fixtures, imported to be found

pytestmark = pytest.mark.dovecot
WAIT = 10.0


def wait_until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


def settings(server: DovecotServer, max_bytes: int = 5_242_880) -> ImapSettings:
    return ImapSettings(
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password,
        folder="INBOX",
        processed_folder="Processed",
        tls=False,
        starttls=False,
        max_bytes=max_bytes,
    )


@pytest.fixture
def reading(world: Store, dovecot: DovecotServer) -> Iterator[Callable[..., ImapReader]]:
    started: list[ImapReader] = []

    def start(**kwargs: object) -> ImapReader:
        reader = ImapReader(world, settings(dovecot, **kwargs), poll_every=5, backoff_first=0.1)  # type: ignore[arg-type]
        reader.start()
        started.append(reader)
        return reader

    yield start
    for reader in started:
        reader.stop()
        assert not reader.is_alive()


def read(item: Received) -> Reading:
    return read_inbound(item, InboundSettings())


def process(store: Store, policy: Policy) -> int:
    handled = 0
    while batch := process_due(store, policy, read):
        handled += batch
    return handled


def replies(store: Store, request_id: int) -> dict[str, bytes]:
    threads = notice_ids(store, request_id)
    return {
        email: reply(code, sender=email, in_reply_to=threads[email], request_id=request_id)
        for email, code in codes(store, request_id).items()
    }


def test_replies_are_stored_moved_and_applied_once(
    world: Store,
    policy: Policy,
    t0: datetime,
    dovecot: DovecotServer,
    reading: Callable[..., ImapReader],
) -> None:
    request_id = new_tech_request(world, policy, datetime.now(t0.tzinfo))
    mails = replies(world, request_id)
    automated = make_message(
        sender="admin@example.com", headers=[("Auto-Submitted", "auto-replied")]
    )
    dovecot.append([*mails.values(), automated])
    reader = reading()
    wait_until(lambda: len(dovecot.uids("Processed")) == 3, "3 messages moved to Processed")
    assert dovecot.uids("INBOX") == []
    assert process(world, policy) == 3
    assert decisions(world, request_id) == {
        "admin@example.com": ("accept", "imap"),
        "new@example.com": ("accept", "imap"),
    }
    # The same replies again (a client that sends twice): stored once, applied once.
    dovecot.append(list(mails.values()))
    wait_until(lambda: len(dovecot.uids("Processed")) == 5, "the copies moved too")
    assert process(world, policy) == 0
    assert sorted(outcome or "" for _, outcome in inbox_rows(world)) == [
        "accepted",
        "accepted",
        "automated",
    ]
    assert reader.connections == 1


def test_a_dovecot_restart_mid_idle_is_survived(
    world: Store, policy: Policy, dovecot: DovecotServer, reading: Callable[..., ImapReader]
) -> None:
    reader = reading()
    dovecot.append([make_message(subject="first")])
    wait_until(lambda: len(inbox_rows(world)) == 1, "the first message stored")
    time.sleep(0.3)  # into IDLE
    dovecot.restart()
    dovecot.append([make_message(subject="after the restart")])
    wait_until(lambda: len(inbox_rows(world)) == 2, "a message stored after the restart")
    wait_until(lambda: dovecot.uids("INBOX") == [], "moved after the restart")
    assert reader.connections >= 2
    assert reader.is_alive()


def test_a_new_uidvalidity_doubles_nothing(
    world: Store, policy: Policy, dovecot: DovecotServer, reading: Callable[..., ImapReader]
) -> None:
    request_id = new_tech_request(world, policy, datetime.now().astimezone())
    mails = replies(world, request_id)
    admin, new = mails["admin@example.com"], mails["new@example.com"]
    dovecot.append([admin])
    reader = reading()
    wait_until(lambda: dovecot.uids("Processed") != [], "the first reply moved")
    before = read_cursor(world, settings(dovecot).mailbox)
    assert before is not None and before.last_uid >= 1

    # The mailbox is rebuilt (UIDs restart, UIDVALIDITY changes) holding the old
    # reply again next to a new one: only the new one may count.
    dovecot.append([admin, new])
    dovecot.change_uidvalidity(renumber=True)
    wait_until(lambda: len(inbox_rows(world)) == 2, "the new reply stored")
    wait_until(lambda: dovecot.uids("INBOX") == [], "everything moved")
    after = read_cursor(world, settings(dovecot).mailbox)
    assert after is not None and after.uidvalidity != before.uidvalidity
    assert reader.connections >= 2
    assert process(world, policy) == 2
    assert decisions(world, request_id) == {
        "admin@example.com": ("accept", "imap"),
        "new@example.com": ("accept", "imap"),
    }
    assert [outcome for _, outcome in inbox_rows(world)] == ["accepted", "accepted"]


def test_stored_but_not_moved_before_a_crash_is_moved_not_redone(
    world: Store, dovecot: DovecotServer, reading: Callable[..., ImapReader]
) -> None:
    raw = make_message(subject="stored, then the daemon died")
    store_received(
        world,
        raw,
        channel="imap",
        envelope_from=None,
        recipients=(),
        now=datetime.now().astimezone(),
    )
    dovecot.append([raw, make_message(subject="new")])
    reading()
    wait_until(lambda: len(dovecot.uids("Processed")) == 2, "both moved")
    assert len(inbox_rows(world)) == 2


def test_oversized_messages_are_skipped(
    world: Store,
    dovecot: DovecotServer,
    reading: Callable[..., ImapReader],
    caplog: pytest.LogCaptureFixture,
) -> None:
    dovecot.append([make_message(body="x" * 20_000 + "\r\n"), make_message(subject="small")])
    reading(max_bytes=10_000)
    wait_until(lambda: len(dovecot.uids("Processed")) == 2, "both filed away")
    assert len(inbox_rows(world)) == 1
    assert any("skipped" in record.getMessage() for record in caplog.records)


def test_stop_is_prompt(dovecot: DovecotServer, reading: Callable[..., ImapReader]) -> None:
    reader = reading()
    wait_until(lambda: reader.connections == 1, "connected")
    time.sleep(0.2)
    started = time.monotonic()
    reader.stop()
    assert not reader.is_alive()
    assert time.monotonic() - started < 3
