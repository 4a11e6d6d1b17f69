"""Show 6: two daemons configured on one Dovecot mailbox, sharing one PostgreSQL.

One IMAP session at a time (seen from Dovecot: `doveadm who`), every reply
applied once; SIGKILL the daemon that reads: the other reads within 30 s.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from countersign.store.db import Store
from tests.faults.harness import Daemon, count, seed_with_replies, wait_until_settled
from tests.servers.dovecot import DovecotServer

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.dovecot]
REQUESTS = 40  # 80 replies: half before the kill, half after


def imap_sessions(server: DovecotServer) -> int:
    """Dovecot's own count of open IMAP sessions for the mailbox's user."""
    assert server.doveadm is not None
    shown = subprocess.run(
        [server.doveadm, "-c", str(server.config_path), "who", "-1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return sum(1 for line in shown.stdout.splitlines()[1:] if " imap " in f" {line} ")


def reading(daemon: Daemon) -> bool:
    return "IMAP in reading" in daemon.log()


def wait(condition: object, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, f"not within {timeout}s: {what}"
        time.sleep(0.2)
    return time.monotonic() - started


def start_both(daemons: list[Daemon], dovecot: DovecotServer) -> tuple[list[int], list[str]]:
    """Both daemons up, one reading: Dovecot's session counts, and who logged that it reads."""
    for daemon in daemons:
        daemon.start()
    wait(lambda: any(reading(d) for d in daemons), 60, "one daemon reads")
    time.sleep(3)  # the other had time to try as well
    sessions = [imap_sessions(dovecot) for _ in range(5)]
    return sessions, [d.name for d in daemons if reading(d)]


def test_one_reader_per_mailbox_and_a_prompt_takeover_when_it_dies(
    tmp_path: Path, pg_url: str, dovecot: DovecotServer
) -> None:
    store = Store(pg_url)
    replies = seed_with_replies(store, REQUESTS)
    imap = {
        "COUNTERSIGN_INBOUND_IMAP_HOST": dovecot.host,
        "COUNTERSIGN_INBOUND_IMAP_PORT": str(dovecot.port),
        "COUNTERSIGN_INBOUND_IMAP_USER": dovecot.user,
        "COUNTERSIGN_INBOUND_IMAP_PASSWORD": dovecot.password,
        "COUNTERSIGN_INBOUND_IMAP_TLS": "false",
    }
    daemons = [Daemon(name, tmp_path, pg_url, **imap) for name in ("a", "b")]
    try:
        sessions, readers = start_both(daemons, dovecot)
        first_half = {r.message_id for r in replies[: len(replies) // 2]}
        dovecot.append([r.raw for r in replies[: len(replies) // 2]])
        before, took = wait_until_settled(store, lambda: first_half, 60, replies_only=True)

        (holder,) = [d for d in daemons if reading(d)]
        (other,) = [d for d in daemons if d is not holder]
        holder.kill()
        killed = time.monotonic()
        dovecot.append([r.raw for r in replies[len(replies) // 2 :]])
        everything = {r.message_id for r in replies}
        after, _ = wait_until_settled(store, lambda: everything, 45, replies_only=True)
        taken_over = time.monotonic() - killed
        sessions_after = imap_sessions(dovecot)
        print(
            f"\none Dovecot mailbox, two daemons: IMAP sessions seen {sessions}, readers {readers};"
            f" {len(first_half)} replies: {before} ({took:.1f}s)"
            f"\nreader {holder.name} killed: all {len(everything)} replies decided"
            f" {taken_over:.1f}s after the kill by {other.name}; {after};"
            f" IMAP sessions then: {sessions_after}"
        )
        assert sessions == [1] * 5 and len(readers) == 1
        assert before.lost == before.undecided == before.decided_twice == 0, before
        assert after.lost == after.undecided == after.decided_twice == 0, after
        assert count(store, everything).decided_twice == 0
        assert taken_over <= 30, taken_over
        assert reading(other) and sessions_after == 1
        assert other.stop() == 0, other.log()
        assert "Traceback" not in other.log(), other.log()
    finally:
        for daemon in daemons:
            daemon.stop()
        store.dispose()
