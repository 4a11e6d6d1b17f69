"""End to end, as README's "Answering by mail" shows it: the real daemon in a subprocess, the
confirm-request read from its Maildir outbox, a reply quoting it sent with smtplib."""

from __future__ import annotations

import email
import email.policy
import smtplib
import time
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path

import pytest

from tests.cli_helpers import Cli, Db, clean_env
from tests.servers.dovecot import free_port
from tests.test_cli import stop

ADMIN, NEW = "admin@example.com", "new@example.com"
WAIT = 20.0


def wait_for(check: object, what: str, daemon: object) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        assert daemon.poll() is None, daemon.communicate()[1]  # type: ignore[attr-defined]
        time.sleep(0.1)
    pytest.fail(f"not within {WAIT}s: {what}")


def confirm_request_to(outbox: Path, address: str) -> EmailMessage | None:
    for path in sorted((outbox / "new").glob("*")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if msg["X-Countersign-Kind"] == "confirm-request" and address in str(msg["To"]):
            return msg  # type: ignore[return-value]
    return None


def reply_to(notice: EmailMessage, sender: str) -> EmailMessage:
    """What a person's mail client sends: "Accept, thanks" above the quoted notice."""
    text = notice.get_body(preferencelist=("plain",))
    assert text is not None
    quoted = "\n".join(f"> {line}" for line in text.get_content().splitlines())
    reply = EmailMessage()
    reply["From"] = f"The Admin <{sender}>"
    reply["To"] = notice["Reply-To"]
    reply["Subject"] = f"Re: {notice['Subject']}"
    reply["In-Reply-To"] = notice["Message-ID"]
    reply["References"] = notice["Message-ID"]
    reply.set_content(
        f"Accept, thanks\n\nOn Mon, 2 Nov 2026 at 09:00, {notice['From']} wrote:\n{quoted}\n"
    )
    return reply


def test_a_reply_sent_with_smtplib_accepts(tmp_path: Path) -> None:
    cli = Cli(tmp_path, clean_env(COUNTERSIGN_DATA_DIR=str(tmp_path / "var")))
    db = Db(tmp_path / "var" / "countersign.db")
    # One command for the accounts and the service: each command costs a Python start.
    seed = tmp_path / "seed.jsonl"
    seed.write_text(
        f'{{"account": "{ADMIN}", "zone": "EU"}}\n{{"account": "{NEW}", "zone": "EU"}}\n'
        f'{{"service": "example.com", "contactAdmin": "{ADMIN}", "contactTech": "{ADMIN}",'
        f' "contactBilling": "{ADMIN}"}}\n'
    )
    cli.ok("import", str(seed))
    (request,) = cli.json("change", "example.com", "--as", ADMIN, "--tech", NEW)

    smtp_port = free_port()
    daemon = cli.start(
        "serve",
        COUNTERSIGN_SCHEDULER_SWEEP_EVERY="1s",
        COUNTERSIGN_INBOUND_SMTP_PORT=str(smtp_port),
        COUNTERSIGN_WEB_PORT=str(free_port()),
    )
    try:
        outbox = tmp_path / "var" / "outbox"
        wait_for(lambda: confirm_request_to(outbox, ADMIN), "the confirm-request mailed", daemon)
        notice = confirm_request_to(outbox, ADMIN)
        assert notice is not None
        assert parseaddr(str(notice["Reply-To"]))[1].startswith("confirm+")

        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
            smtp.send_message(reply_to(notice, ADMIN))

        def accepted() -> bool:
            rows = db.query(
                "SELECT v.decision, v.via FROM validators v JOIN accounts a ON a.id = v.account_id"
                " WHERE a.email = ?",
                ADMIN,
            )
            return rows == [("accept", "smtp")]

        wait_for(accepted, "the admin's acceptance", daemon)
    finally:
        code, log = stop(daemon)
    assert code == 0, log
    assert "Traceback" not in log, log
    shown = cli.json("request", "show", str(request["id"]))
    assert shown["state"] == "validatingByCustomers"  # the new contact is still to answer
    assert {v["account"]: (v["decision"], v["via"]) for v in shown["validators"]} == {
        ADMIN: ("accept", "smtp"),
        NEW: (None, None),
    }
    assert ("accepted-waiting", ADMIN) in db.mails(request["id"])
