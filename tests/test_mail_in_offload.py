"""Replies processed in the mail-in process under a burst: decided exactly as here, and
nothing lost when that process dies in the middle."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from countersign.config import Config, DatabaseConfig
from countersign.gateway.mail_in import sweep as mail_in_module
from countersign.gateway.mail_in.sweep import BURST, InboundSettings, MailIn
from countersign.rules.contacts import ContactType
from countersign.rules.readings import Reading
from countersign.store.db import Store
from countersign.workflow.directory import add_service
from countersign.workflow.inbox import store_received
from countersign.workflow.inbox_batch import BATCH, Received
from countersign.workflow.policy import Policy
from countersign.workflow.requests import change_contacts
from tests.conftest import add
from tests.mail_helpers import codes, decisions, inbox_rows, notice_ids, reply

REQUESTS = BATCH  # two replies each: a burst of two full batches


def many_requests(store: Store, policy: Policy, now: datetime) -> list[int]:
    made = []
    for i in range(REQUESTS):
        add(store, f"owner{i}@example.com")
        add(store, f"new{i}@example.com")
        owner = f"owner{i}@example.com"
        add_service(store, f"s{i}.example.com", owner, owner, owner)
        (request,) = change_contacts(
            store, f"s{i}.example.com", owner, {ContactType.TECH: f"new{i}@example.com"}, policy
        )
        made.append(int(request["id"]))
    return made


def deliver_replies(store: Store, request_ids: list[int], now: datetime) -> None:
    for request_id in request_ids:
        threads = notice_ids(store, request_id)
        for account, code in codes(store, request_id).items():
            raw = reply(code, sender=account, request_id=request_id, in_reply_to=threads[account])
            store_received(
                store, raw, channel="smtp", envelope_from=account, recipients=[], now=now
            )


@pytest.fixture
def mail_in(store: Store, tmp_path: Path) -> Iterator[MailIn]:
    # The mail-in process opens the store by the configured URL: the test's own.
    config = Config(data_dir=str(tmp_path), database=DatabaseConfig(url=store.url))
    made = MailIn(store, config, offload=True)
    yield made
    made.close()


@pytest.fixture
def read_here(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The inbox ids of the messages read in this process (the mail-in process has its own)."""
    seen: list[int] = []
    original = mail_in_module.read_inbound

    def counted(item: Received, settings: InboundSettings) -> Reading:
        seen.append(item.id)
        return original(item, settings)

    monkeypatch.setattr(mail_in_module, "read_inbound", counted)
    return seen


def wait_until_processing_elsewhere(mail_in: MailIn) -> None:
    for _ in range(600):  # a spawned interpreter importing the workflow: a second or two
        if mail_in.worker.running:
            return
        time.sleep(0.05)
    raise AssertionError("the mail-in process never came up")


def test_a_burst_is_processed_in_the_mail_in_process_and_decided_the_same(
    store: Store, policy: Policy, mail_in: MailIn, read_here: list[int], t0: datetime
) -> None:
    request_ids = many_requests(store, policy, t0)
    deliver_replies(store, request_ids, t0)
    assert BATCH >= BURST
    first = mail_in.process_due()  # here; the burst starts the mail-in process
    assert first >= BATCH
    assert len(read_here) == first
    wait_until_processing_elsewhere(mail_in)
    woken: list[str] = []
    store.on_commit("outbox", lambda: woken.append("outbox"))
    while mail_in.process_due():
        pass
    assert len(read_here) == first  # the rest were read and decided in the mail-in process
    # Its commits wake this process's sweeps: the requests it completed and applied
    # there have their notices to deliver.
    assert woken
    assert {outcome for _, outcome in inbox_rows(store)} == {"accepted"}
    for request_id in request_ids:
        assert {d for d, _ in decisions(store, request_id).values()} == {"accept"}


def test_the_reading_process_dying_loses_nothing(
    store: Store, policy: Policy, mail_in: MailIn, read_here: list[int], t0: datetime
) -> None:
    request_ids = many_requests(store, policy, t0)
    half = len(request_ids) // 2
    deliver_replies(store, request_ids[:half], t0)
    mail_in.process_due()
    wait_until_processing_elsewhere(mail_in)
    (worker,) = multiprocessing.active_children()
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    deliver_replies(store, request_ids[half:], t0)
    before = len(read_here)
    while mail_in.process_due():
        pass
    assert not mail_in.worker.running  # given up on: this process works alone from now on
    assert len(read_here) - before == 2 * (len(request_ids) - half)
    assert [outcome for _, outcome in inbox_rows(store)] == ["accepted"] * 2 * len(request_ids)
