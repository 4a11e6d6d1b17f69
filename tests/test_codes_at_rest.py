"""No code ever issued is readable at rest (issue 12, Show 3).

A full flow on a SQLite file: requests, notices mailed (to the Maildir), a
resend, replies over real SMTP (plain, base64, quoted-printable, a stale code,
a forged From, a repeat), the page, the API, a decline.  Then every database
file (the WAL and its index included) and every log line are searched for
every code that was ever issued, in every form it was written in.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import httpx2 as httpx
import pytest

from countersign.config import Config
from countersign.gateway.web.app import create_app
from countersign.rules.contacts import ContactType
from countersign.store.db import Store
from countersign.workflow import requests
from countersign.workflow.codes import normalize_code
from countersign.workflow.directory import add_service
from countersign.workflow.policy import Policy
from countersign.workflow.redaction import redact_message
from tests.conftest import add
from tests.mail_helpers import QUOTED_NOTICE, inbox_rows, notice_ids, reply
from tests.test_guess_limits import DOMAIN, SmtpDoor, drain, send
from tests.web_support import KEY, Mailbox, free_port, running_server, web_config


@pytest.fixture
def lite(sqlite_template: Path, tmp_path: Path) -> Iterator[Store]:
    """SQLite only: its files are the ones a test can read whole (PostgreSQL: docs/security.md)."""
    path = tmp_path / "countersign.db"
    shutil.copy(sqlite_template, path)
    store = Store(f"sqlite:///{path}")
    for email in ("admin@example.com", "tech@example.com", "bill@example.com", "new@example.com"):
        add(store, email)
    add_service(store, "example.com", "admin@example.com", "admin@example.com", "admin@example.com")
    add_service(store, "split.com", "admin@example.com", "tech@example.com", "bill@example.com")
    yield store
    store.dispose()


def encoded_reply(code: str, sender: str, request_id: int, thread: str, cte: str) -> bytes:
    """A reply whose text is base64 or quoted-printable: the code is not there as typed."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = f"confirm@{DOMAIN}"  # the code only in the (encoded) body
    msg["Subject"] = f"Re: [Countersign #{request_id}] Change of contacts"
    msg["Message-ID"] = f"<{cte}-{request_id}@mail.example.com>"
    msg["In-Reply-To"] = thread
    quoted = QUOTED_NOTICE.format(request_id=request_id, code=code)
    # A long line, so that quoted-printable breaks it (soft line breaks) around the code.
    text = f"ACCEPT {code}\n\n{'x' * 60} {code} {'y' * 30}\n\n{quoted}"
    msg.set_content(text, cte=cte)
    return msg.as_bytes(policy=SMTP)


def forms(code: str) -> set[str]:
    """Every way a code is written: display form, canonical, lowercase."""
    canonical = normalize_code(code)
    assert canonical is not None
    return {code, canonical, code.lower(), canonical.lower()}


def test_no_code_ever_issued_is_at_rest_after_a_full_flow(
    lite: Store, policy: Policy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # aiosmtpd's mail.log prints every RCPT TO at DEBUG
    config: Config = web_config(tmp_path)
    outbox = Mailbox(lite, config)
    tech = requests.change_contacts(
        lite, "example.com", "admin@example.com", {ContactType.TECH: "new@example.com"}, policy
    )[0]["id"]
    split = requests.change_contacts(
        lite, "split.com", "tech@example.com", {ContactType.TECH: "new@example.com"}, policy
    )[0]["id"]
    billing = requests.change_contacts(
        lite, "example.com", "admin@example.com", {ContactType.BILLING: "bill@example.com"}, policy
    )[0]["id"]
    first = {(m.request_id, m.to): m.code for m in outbox.deliver()}
    requests.resend(lite, tech, policy)  # new codes for tech's validators; the old ones die
    latest = {(m.request_id, m.to): m.code for m in outbox.deliver()}
    code = {**first, **latest}
    stale = first[(tech, "admin@example.com")]

    door = SmtpDoor(lite, config)
    try:
        client = door.client("127.0.0.1")
        threads = {
            **notice_ids(lite, tech),
            **{f"s:{k}": v for k, v in notice_ids(lite, split).items()},
        }
        admin = code[(tech, "admin@example.com")]
        sent = [
            # A stale code (replaced by the resend): refused.
            (reply(stale, request_id=tech), f"confirm+{stale}@{DOMAIN}"),
            # A forged From with a real code: refused, nobody told.
            (
                reply(admin, sender="mallory@example.org", request_id=tech),
                f"confirm+{admin}@{DOMAIN}",
            ),
            # The real reply, then the same again (a second send).
            (
                reply(admin, request_id=tech, in_reply_to=threads["admin@example.com"]),
                f"confirm+{admin}@{DOMAIN}",
            ),
            (
                reply(admin, request_id=tech, in_reply_to=threads["admin@example.com"]),
                f"confirm+{admin}@{DOMAIN}",
            ),
            (
                encoded_reply(
                    code[(tech, "new@example.com")],
                    "new@example.com",
                    tech,
                    threads["new@example.com"],
                    "base64",
                ),
                f"confirm@{DOMAIN}",
            ),
            (
                encoded_reply(
                    code[(split, "new@example.com")],
                    "new@example.com",
                    split,
                    threads["s:new@example.com"],
                    "quoted-printable",
                ),
                f"confirm@{DOMAIN}",
            ),
        ]
        assert [send(client, raw, to) for raw, to in sent] == ["250"] * len(sent)
        client.quit()
        drain(lite, policy)
    finally:
        door.close()
    assert [outcome for _, outcome in inbox_rows(lite)] == [
        "refused:unknown-code",
        "refused:sender-mismatch",
        "accepted",
        "already-accepted",
        "accepted",
        "accepted",
    ]
    app = create_app(lite, config, health=lambda: True)
    with running_server(app, free_port()) as base, httpx.Client(base_url=base) as web:
        form = {"token": code[(split, "tech@example.com")], "decision": "accept"}
        assert web.post(f"/confirm/{split}", data=form).status_code == 200
        refuse = web.post(
            f"/v1/contactChange/{billing}/refuse",
            json={"token": code[(billing, "bill@example.com")]},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert refuse.status_code == 200, refuse.text
    outbox.deliver()  # the notices these made (accepted-waiting, refused, ...) go out too
    # Completed by mail, tech's was applied in the batch; split's, by the page, awaits the sweep.
    assert [requests.show(lite, i)["state"] for i in (tech, split, billing)] == [
        "done",
        "checkValidity",
        "refused",
    ]
    ever = {m.code for m in outbox.seen if m.kind in ("confirm-request", "reminder")}
    assert len(ever) == 8  # six validators, two of them twice (the resend)
    issued = {form for c in ever for form in forms(c)}
    # While the daemon runs (its connections open: the WAL is there), and after.
    assert at_rest(tmp_path, issued, {"countersign.db", "countersign.db-wal"}) == set()
    lite.dispose()
    assert at_rest(tmp_path, issued, {"countersign.db"}) == set()
    lines = [record.getMessage() for record in caplog.records]
    # The SMTP library did log the recipients, with the stand-in where the code was.
    assert any("recip: confirm+hashed" in line for line in lines)
    assert [line for line in lines if any(c in line for c in issued)] == []


def at_rest(folder: Path, issued: set[str], expected: set[str]) -> set[tuple[str, str]]:
    """(file, code) for each code found in a database file (the WAL and its index too)."""
    files = sorted(folder.glob("countersign.db*"))
    assert {f.name for f in files} >= expected
    return {(f.name, c) for f in files for c in issued if c.encode() in f.read_bytes()}


def test_redaction_keeps_what_the_reader_needs() -> None:
    code = "K7QWJ3XR-M2PZ4TLA-VB6NYD5E-HC3GUF7S"
    raw = reply(code, first_line=f"Accept {code.lower()}")
    cleaned, recipients, hashes = redact_message(raw, [f"confirm+{code.replace('-', '')}@{DOMAIN}"])
    assert code not in cleaned.decode() and code.lower() not in cleaned.decode()
    assert len(hashes) == 1 and f"confirm+hashed{hashes[0]}@" in recipients[0]
    assert re.search(rb"Accept hashed[0-9a-f]{64}", cleaned)
    # Our own Message-IDs are hex, which can look like base32: left alone.
    msg_id = "<abcdef23abcdef23abcdef23abcdef23@countersign.localhost>"
    assert redact_message(msg_id.encode(), [])[0] == msg_id.encode()
