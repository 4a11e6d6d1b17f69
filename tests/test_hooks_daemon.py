"""The applier and the `hooks` commands through a real `serve` and the command line.

Show: nothing is applied twice when the daemon is SIGKILLed between POSTing a
`request.apply` and recording its answer; the contact change is then seen by
`services --account`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import Cli, Db, fresh_database
from tests.faults.harness import Daemon
from tests.hook_receiver import Receiver

SECRET = "whsec-daemon-test"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver(SECRET)
    yield made
    made.close()


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.2)


def seeded(tmp_path: Path) -> Db:
    db = Db(tmp_path / "countersign.db")
    fresh_database(db.path)
    db.seed(
        ["admin@example.com", "tech@example.com", "bill@example.com", "new@example.com"],
        [("split.com", "admin@example.com", "tech@example.com", "bill@example.com")],
    )
    return db


def test_a_daemon_killed_mid_apply_applies_once_after_its_restart(
    tmp_path: Path, receiver: Receiver
) -> None:
    db = seeded(tmp_path)
    receiver.hold_first = 8.0  # the first request.apply is held: the daemon dies waiting
    daemon = Daemon(
        "solo",
        tmp_path,
        db.url,
        COUNTERSIGN_APPLY_URL=receiver.url,
        COUNTERSIGN_APPLY_SECRET=SECRET,
        COUNTERSIGN_APPLY_FIRST_RETRY="500ms",
    )
    cli = Cli(tmp_path, daemon.env)
    # Asked and accepted before the daemon runs: the codes are still in the outbox to read.
    made = cli.json("change", "split.com", "--as", "admin@example.com", "--tech", "new@example.com")
    request_id = str(made[0]["id"])
    for code in db.codes(int(request_id)).values():
        cli.ok("accept", request_id, code)
    assert cli.json("request", "show", request_id)["state"] == "checkValidity"
    daemon.start()
    try:
        assert receiver.held.wait(60), daemon.log()
        daemon.kill()  # between the POST and recording its answer
        shown = cli.json("request", "show", request_id)
        assert shown["state"] == "doing"
        assert cli.json("services", "--account", "new@example.com") == []
        daemon.start()
        restarted = time.monotonic()
        wait_for(lambda: cli.json("request", "show", request_id)["state"] == "done", 60, "done")
        print(f"\ndone {time.monotonic() - restarted:.1f}s after the restart")

        applies = [e for e in receiver.received if e["type"] == "request.apply"]
        assert len(receiver.raw) == 2 and receiver.bad_signatures == 0  # POSTed twice...
        assert len({e["id"] for e in applies}) == 1  # ...as one event, to drop a second copy
        applied = db.query("SELECT count(*) FROM events WHERE kind = 'applied'")[0][0]
        done_moves = db.query(
            "SELECT count(*) FROM events WHERE kind = 'state' AND detail LIKE '%\"done\"%'"
        )[0][0]
        assert (applied, done_moves) == (1, 1)  # Countersign applied it once
        kinds = [kind for kind, _ in db.mails(int(request_id))]
        assert kinds.count("completed") == 2 and kinds.count("previous-contact-notice") == 1
        assert cli.json("services", "--account", "new@example.com") == [
            {"serviceDomain": "split.com", "contactTypes": ["contactTech"]}
        ]
        rows = cli.json("hooks", "list")
        assert [(r["type"], r["status"]) for r in rows] == [("request.apply", "sent")]
        assert cli.json("hooks", "list", "--failed") == []
        assert daemon.stop() == 0, daemon.log()
        assert "Traceback" not in daemon.log(), daemon.log()
    finally:
        daemon.stop()


def test_send_test_signs_a_ping_the_receiver_verifies(tmp_path: Path, receiver: Receiver) -> None:
    cli = Cli(tmp_path, {**Daemon("x", tmp_path, "sqlite://").env})
    result = cli.json("hooks", "send-test", receiver.url, "--secret", SECRET)
    assert result["ok"] and result["status"] == 200
    assert receiver.received[0]["type"] == "ping"
    wrong = cli.run("hooks", "send-test", receiver.url, "--secret", "wrong")
    assert wrong.code == 1 and wrong.stderr_lines == [f"countersign: {receiver.url}: HTTP 401"]
    assert receiver.bad_signatures == 1
