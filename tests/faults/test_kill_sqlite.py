"""Show 3: one SQLite `serve`, SIGKILL under reply load, started again at once.

Every reply answered 250 before the kill is decided within 30 s of the restart
(its claim came back with the new life of the same data folder, not after a
lease), nothing answered 250 is lost, nothing is decided twice, nothing is
left claimed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from countersign.store.db import Store
from tests.cli_helpers import fresh_database
from tests.faults.harness import Daemon, Sender, count, seed_with_replies, wait_until_settled

pytestmark = pytest.mark.faults
REQUESTS = 200  # 400 replies


def test_sigkill_under_reply_load_then_restart_decides_every_acknowledged_reply(
    tmp_path: Path,
) -> None:
    url = fresh_database(tmp_path / "countersign.db")
    store = Store(url)
    replies = seed_with_replies(store, REQUESTS)
    daemon = Daemon("solo", tmp_path, url)
    daemon.start()
    sender = Sender(replies, [daemon.smtp_port], lanes=4)
    sender.start()
    try:
        sender.wait_for(len(replies) // 3, timeout=120)
        daemon.kill()
        before_kill = set(sender.acked)  # polled just before: all of these were answered 250
        at_kill = count(store, before_kill)
        daemon.start()
        restarted = time.monotonic()
        counts, _ = wait_until_settled(store, lambda: before_kill, 30, replies_only=True)
        decided_in = time.monotonic() - restarted
        sender.finish(timeout=180)
        final, _ = wait_until_settled(store, lambda: sender.acked, 60, expected=len(replies))
        print(
            f"\nSQLite kill: {len(before_kill)} replies answered 250 before the kill;"
            f" at the kill: {at_kill}"
            f"\n{decided_in:.1f}s after the restart, of those: {counts}"
            f"\nat the end: {len(sender.acked)} of {len(replies)} answered 250; {final}"
        )
        assert counts.lost == 0 and counts.undecided == 0, counts
        assert decided_in <= 30, decided_in
        assert final == count(store, sender.acked)
        assert final.lost == final.undecided == final.decided_twice == final.claimed == 0, final
        assert final.outbox_open == 0, final
        assert daemon.stop() == 0, daemon.log()
        assert "Traceback" not in daemon.log(), daemon.log()
    finally:
        sender.process.kill()
        daemon.stop()
        store.dispose()
