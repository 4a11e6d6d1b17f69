"""The log of a whole flow, at -v and in JSON: every line parses, no secret in any of them,
and every decision has its line with the request and the door it came through.

A real daemon, real SMTP on loopback, a real Dovecot for IMAP, the web page and
the API over HTTP: changes, replies through every door, bad codes and a lock-out.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import os
import re
import secrets
import smtplib
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import pytest

from countersign.gateway.logs import REDACT, RedactingFilter
from tests.cli_helpers import Cli, Db, clean_env, free_port, fresh_database
from tests.servers.dovecot import DovecotServer
from tests.servers.fixtures import dovecot, dovecot_factory
from tests.test_service import NotifySocket, terminate

__all__ = ["dovecot", "dovecot_factory"]  # the fixtures, imported to be found
pytestmark = pytest.mark.dovecot

A, B, C, D = (f"{n}@example.org" for n in ("asker", "bea", "cy", "dee"))
API_KEY = "apikey-" + secrets.token_hex(12)
WAIT = 40.0


def notices(outbox: Path) -> dict[tuple[int, str], str]:
    """(request, address) -> the code of the newest confirm-request in the Maildir."""
    found: dict[tuple[int, str], str] = {}
    for path in sorted((outbox / "new").glob("*"), key=lambda p: p.stat().st_mtime):
        notice = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if notice["X-Countersign-Kind"] in ("confirm-request", "reminder"):
            local = parseaddr(str(notice["Reply-To"]))[1].split("@")[0]
            to = parseaddr(str(notice["To"]))[1]
            found[(int(notice["X-Countersign-Request"]), to)] = local.split("+", 1)[1]
    return found


def wait(check: Any, what: str, daemon: Any) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if value := check():
            return value
        assert daemon.poll() is None, daemon.communicate()[1]
        time.sleep(0.1)
    pytest.fail(f"not within {WAIT}s: {what}")


def reply(sender: str, code: str, text: str = "Accept") -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = f"confirm+{code}@countersign.localhost"
    message["Subject"] = "Re: your request"
    message["Message-ID"] = f"<{secrets.token_hex(8)}@client.example.org>"
    message.set_content(f"{text}\n\nBest regards\n")
    return message.as_bytes()


def http(port: int, path: str, *, form: dict[str, str] | None = None, body: Any = None) -> int:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    data = None
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def secret_forms(code: str) -> list[str]:
    bare = code.replace("-", "")
    return [code, bare, bare.lower(), code.lower(), bare[:16]]


def test_a_whole_flow_logs_every_decision_in_json_and_no_secret(
    tmp_path: Path, dovecot: DovecotServer
) -> None:
    db = Db(tmp_path / "var" / "countersign.db")
    fresh_database(db.path)
    services = [(f"s{i}.example.com", A, A, A) for i in range(1, 4)]
    db.seed([A, B, C, D, "mallory@example.net"], services)
    (tmp_path / "countersign.toml").write_text(
        f"""
[api]
keys = {{ crm = "{API_KEY}" }}
[inbound]
imap_host = "{dovecot.host}"
imap_port = {dovecot.port}
imap_user = "{dovecot.user}"
imap_password = "{dovecot.password}"
imap_tls = false
bad_code_limit = 2
[scheduler]
sweep_every = "1s"
""",
        encoding="utf-8",
    )
    smtp_port, web_port = free_port(), free_port()
    env = clean_env(COUNTERSIGN_DATA_DIR=str(tmp_path / "var"), COUNTERSIGN_DATABASE_URL=db.url)
    cli = Cli(tmp_path, env)
    first = cli.json("change", "s1.example.com", "--as", A, "--tech", B)[0]["id"]
    notify = NotifySocket()
    daemon = cli.start(
        "serve",
        "-v",
        "--log-format",
        "json",
        NOTIFY_SOCKET=notify.name,
        COUNTERSIGN_INBOUND_SMTP_PORT=str(smtp_port),
        COUNTERSIGN_WEB_PORT=str(web_port),
    )
    outbox = tmp_path / "var" / "outbox"
    try:
        notify.wait_for("READY=1", daemon)
        assert http(web_port, "/v1/service/s2.example.com/changeContact",
                    body={"askingAccount": A, "contactTech": C}) == 200  # fmt: skip
        second = db.query("SELECT max(id) FROM requests")[0][0]
        codes = wait(lambda: len(found := notices(outbox)) >= 4 and found, "4 codes", daemon)
        # SMTP: the asker accepts the first; IMAP: the new tech contact accepts it.
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=20) as smtp:
            smtp.sendmail(A, [f"confirm+{codes[(first, A)]}@countersign.localhost"],
                          reply(A, codes[(first, A)]))  # fmt: skip
        dovecot.append([reply(B, codes[(first, B)])])
        # Web and API: both validators of the second.
        page = {"token": codes[(second, A)], "decision": "accept"}
        assert http(web_port, f"/confirm/{second}", form=page) == 200
        api = {"token": codes[(second, C)]}
        assert http(web_port, f"/v1/contactChange/{second}/accept", body=api) == 200
        # Bad codes from one sender until it is locked out (bad_code_limit = 2).
        guess = "ABCDEFGH-ABCDEFGH-ABCDEFGH-ABCDEFGH"
        stored = 2  # the two real replies; then each guess taken at RCPT
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=20) as smtp:
            for attempt in range(3):
                raw = reply("mallory@example.net", guess)
                try:
                    smtp.sendmail(
                        "mallory@example.net", [f"confirm+{guess}@countersign.localhost"], raw
                    )
                    stored += 1
                except smtplib.SMTPRecipientsRefused as refused:
                    # Once the first two are read and counted, the third is refused at RCPT.
                    assert attempt == 2 and refused.recipients
                    assert [code for code, _ in refused.recipients.values()] == [450]
        assert http(web_port, f"/confirm/{second}", form={**page, "token": guess}) != 200

        def done() -> bool:
            states = db.query("SELECT state FROM requests WHERE id IN (?, ?)", first, second)
            return [s for (s,) in states] == ["done", "done"]

        wait(done, "both requests done", daemon)
        wait(lambda: db.count("inbox") == stored and not db.query(
            "SELECT 1 FROM inbox WHERE status = 'pending'"), "mail read", daemon)  # fmt: skip
    finally:
        code, log, _ = terminate(daemon)
        notify.close()
    assert code == 0, log
    lines = [json.loads(line) for line in log.splitlines()]  # every line parses
    assert len(lines) > 20
    everything = log
    for code_text in codes.values():
        for form in secret_forms(code_text):
            assert form not in everything, form
    for secret in (API_KEY, dovecot.password, "DATA readline"):
        assert secret not in everything, secret
    decisions = {
        (line["request"], line["door"], line["account"])
        for line in lines
        if line.get("event") == "accept"
    }
    assert decisions == {(first, "smtp", A), (first, "imap", B), (second, "web", A),
                         (second, "api", C)}  # fmt: skip
    events = {line.get("event") for line in lines}
    assert {"bad-code", "locked-out", "state", "mail-in", "created"} <= events, events
    mails = [line for line in lines if line.get("event") == "mail-in"]
    assert all(line.get("message_id") and line.get("door") in ("smtp", "imap") for line in mails)
    assert any(line["logger"] == "countersign.imap" and "IMAP" in line["message"] for line in lines)


def test_the_filter_drops_aiosmtpd_data_lines_and_redacts_every_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    REDACT.know(["hunter2-password"])
    keep = RedactingFilter()
    code = "ABCDEFGH-IJKLMNOP-QRSTUVWX-YZ234567"

    def record(name: str, level: int, message: str, *args: Any) -> logging.LogRecord | None:
        made = logging.LogRecord(name, level, __file__, 1, message, args, None)
        return made if keep.filter(made) else None

    assert record("mail.log", logging.DEBUG, "DATA readline: %s", b"Accept, my code") is None
    rcpt = record("mail.log", logging.INFO, "RCPT TO:<confirm+%s@x.example>", code.lower())
    assert rcpt is not None and code.lower() not in rcpt.getMessage()
    assert "confirm+***@x.example" in rcpt.getMessage()
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
        for text in (
            f"code {code}",
            f"code {code.replace('-', '')}",
            f"GET /confirm/3?token={code} 200",
            "login with hunter2-password",
            "Authorization: Bearer abc.def",
            "postgresql+psycopg://cs:dbpass@db/cs",
        ):
            made = record("countersign.x", level, "%s", text)
            assert made is not None
            said = made.getMessage()
            assert not re.search(r"ABCDEFGH|abcdefgh|hunter2|abc\.def|dbpass", said, re.I), said
    REDACT.know([])


@pytest.mark.parametrize("journal", [True, False], ids=["journald", "terminal"])
def test_under_journald_lines_carry_no_time_of_their_own(tmp_path: Path, journal: bool) -> None:
    """journald stamps each line itself: a second timestamp in the text is noise."""
    from tests.cli_helpers import COMMAND

    notify = NotifySocket()
    stderr_file = tmp_path / "stderr"
    with stderr_file.open("w") as stream:
        stat = os.fstat(stream.fileno())
        env = clean_env(
            COUNTERSIGN_DATA_DIR=str(tmp_path / "var"),
            COUNTERSIGN_INBOUND_SMTP_PORT=str(free_port()),
            NOTIFY_SOCKET=notify.name,
        )
        if journal:
            env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
        daemon = subprocess.Popen(
            [*COMMAND, "serve", "--only", "smtp"], cwd=tmp_path, env=env, stderr=stream, text=True
        )
        try:
            notify.wait_for("READY=1", daemon)
        finally:
            code, _, _ = terminate(daemon)
            notify.close()
    assert code == 0
    lines = stderr_file.read_text().splitlines()
    assert any("ready: smtp" in line for line in lines), lines
    stamped = [line for line in lines if re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line)]
    if journal:
        assert not stamped, lines
        assert all(
            re.match(r"^<[3467]>(DEBUG|INFO|WARNING|ERROR|CRITICAL) ", line) for line in lines
        )
    else:
        assert stamped == lines
