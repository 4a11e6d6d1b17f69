"""Work committed by another process (the command line, another daemon) wakes the
daemon's sweeps at once instead of waiting for the next tick."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from sqlalchemy import text

from countersign.rules.contacts import ContactType
from countersign.store.db import Store
from countersign.store.watch import CommitWatcher
from countersign.workflow.directory import AccountChanges, add_account, add_service
from countersign.workflow.policy import Policy
from countersign.workflow.requests import change_contacts
from tests.cli_helpers import free_port, make_cli

WAIT = 10.0  # seconds: generous, a functional wait on a loaded machine, not a speed check


def test_a_commit_by_another_process_reaches_the_listeners(store: Store) -> None:
    for email in ("alice@example.com", "bob@example.com"):
        add_account(store, email, AccountChanges(zone="EU"))
    add_service(store, "example.com", *(["alice@example.com"] * 3))
    heard = threading.Event()
    store.on_commit("outbox", heard.set)
    watcher = CommitWatcher(store, poll_seconds=0.05)
    watcher.start()
    other = Store(store.url)  # its own engine and connections, as another process has
    try:
        time.sleep(0.3)  # let the watcher take its first look (and LISTEN)
        heard.clear()
        change_contacts(  # queues two notices: the "outbox" topic
            other,
            "example.com",
            "alice@example.com",
            {ContactType.TECH: "bob@example.com"},
            Policy(),
        )
        assert heard.wait(WAIT)
    finally:
        watcher.stop()
        other.dispose()


def test_a_transaction_that_wakes_nothing_is_not_heard(store: Store) -> None:
    heard = threading.Event()
    store.on_commit("outbox", heard.set)
    watcher = CommitWatcher(store, poll_seconds=0.05)
    watcher.start()
    other = Store(store.url)
    try:
        time.sleep(0.3)
        heard.clear()
        with other.write() as session:  # reads only: no topic, no change
            session.execute(text("SELECT 1"))
        assert not heard.wait(1.0)
    finally:
        watcher.stop()
        other.dispose()


def test_a_change_made_on_the_command_line_is_mailed_without_waiting_for_the_tick(
    tmp_path: Path,
) -> None:
    cli, db = make_cli(tmp_path)
    db.seed(["alice@example.com", "bob@example.com"])
    store = Store(db.url)
    add_service(store, "example.com", *(["alice@example.com"] * 3))
    daemon = cli.start(
        "serve",
        COUNTERSIGN_SCHEDULER_SWEEP_EVERY="1h",  # only a wake-up can explain prompt mail
        COUNTERSIGN_INBOUND_SMTP_PORT=str(free_port()),
        COUNTERSIGN_WEB_PORT=str(free_port()),
    )
    outbox = tmp_path / "var" / "outbox" / "new"
    try:
        time.sleep(2)  # the daemon's first sweeps run at start; this comes after them
        cli.ok("change", "example.com", "--as", "alice@example.com", "--tech", "bob@example.com")
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and len(list(outbox.glob("*"))) < 2:
            time.sleep(0.1)
        assert len(list(outbox.glob("*"))) == 2, daemon.poll()
    finally:
        daemon.send_signal(signal.SIGINT)
        daemon.wait(timeout=20)
        store.dispose()
