"""A composed notice parses back as the message we meant, whatever the values held."""

from __future__ import annotations

import email
import re
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.message import EmailMessage, Message

import pytest

from countersign.gateway.mail_out.message import checked_address, compose_notice
from countersign.gateway.mail_out.render import RenderedNotice, render_notice

ROOT_ID = "<root.1@countersign.localhost>"
HEADERS = (
    "Message-ID", "Date", "From", "To", "Subject", "Auto-Submitted",
    "X-Auto-Response-Suppress", "X-Countersign-Request", "X-Countersign-Kind",
    "Reply-To", "In-Reply-To", "References",
)  # fmt: skip


def notice(
    subject: str = "[Countersign #7] Contact change for example.com is done",
) -> RenderedNotice:
    return RenderedNotice(
        subject=subject,
        text="Countersign request #7 (example.com)\n\nHello,\n",
        html="<p>\nCountersign request #7\n</p>\n<p>&lt;script&gt;</p>\n",
    )


def compose(
    rendered: RenderedNotice | None = None,
    *,
    to_address: str = "alice@example.com",
    thread_root: str | None = ROOT_ID,
    reply_to: str | None = "confirm+ABCDEFGHIJKLMNOPQRSTUVWXYZ234567@countersign.localhost",
    from_header: str = "Countersign <contacts@countersign.localhost>",
) -> EmailMessage:
    return compose_notice(
        rendered or notice(),
        kind="completed",
        request_id=7,
        to_address=to_address,
        from_header=from_header,
        message_id="<abc.2@countersign.localhost>",
        reply_to=reply_to,
        thread_root=thread_root,
        date=datetime(2026, 3, 8, 11, 5, tzinfo=UTC),
    )


def parsed(msg: EmailMessage) -> Message:
    return email.message_from_bytes(msg.as_bytes(), policy=policy.default)


def text_and_html(message: Message) -> tuple[str, str]:
    assert isinstance(message, EmailMessage)
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    assert isinstance(text_part, EmailMessage) and isinstance(html_part, EmailMessage)
    return text_part.get_content(), html_part.get_content()


def test_structure_is_alternative_text_then_html() -> None:
    message = parsed(compose())
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())  # type: ignore[attr-defined]
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert all(part.get_content_charset() == "utf-8" for part in parts)
    text, html = text_and_html(message)
    assert text.startswith("Countersign request #7")
    assert "&lt;script&gt;" in html and "<script>" not in html


def test_every_header_present_exactly_once() -> None:
    message = parsed(compose())
    for name in HEADERS:
        assert len(message.get_all(name) or []) == 1, name
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Auto-Response-Suppress"] == "All"
    assert message["X-Countersign-Request"] == "7"
    assert message["X-Countersign-Kind"] == "completed"
    assert message["Message-ID"] == "<abc.2@countersign.localhost>"
    assert message["To"] == "alice@example.com"
    assert message["Date"] == "Sun, 08 Mar 2026 11:05:00 +0000"


def test_threading_headers_point_at_the_root() -> None:
    message = parsed(compose())
    assert message["In-Reply-To"] == ROOT_ID
    assert message["References"] == ROOT_ID


def test_root_message_has_no_threading_headers() -> None:
    for root in (None, "<abc.2@countersign.localhost>"):
        message = parsed(compose(thread_root=root, reply_to=None))
        assert message["In-Reply-To"] is None
        assert message["References"] is None
        assert message["Reply-To"] is None


def test_header_injection_adds_no_header() -> None:
    evil = notice(subject="[Countersign #7] Eve\r\nBcc: x@evil.example\nX-Evil: 1\r\n\r\nbody")
    message = parsed(compose(evil, from_header="Countersign\r\nBcc: y@evil.example <c@d.example>"))
    assert message["Bcc"] is None and message["X-Evil"] is None
    assert "Bcc: x@evil.example" in str(message["Subject"])
    raw = compose(evil).as_bytes()
    assert not re.search(rb"^(Bcc|X-Evil):", raw, flags=re.MULTILINE | re.IGNORECASE)


@pytest.mark.parametrize(
    "address",
    [
        "Eve\r\nBcc: x@evil.example",
        "alice@example.com\r\nBcc: x@evil.example",
        "alice@example.com, bob@example.com",
        "Alice <alice@example.com>",
        "alice",
        "alice@",
        "@example.com",
        "a..b@example.com",
        "élodie@exemple.fr",
        "",
        "x" * 250 + "@example.com",
    ],
)
def test_bad_recipient_is_refused(address: str) -> None:
    with pytest.raises(ValueError):
        compose(to_address=address)


def test_good_addresses_pass() -> None:
    assert checked_address(" bob+tag@example.org ") == "bob+tag@example.org"
    assert checked_address('"odd name"@example.org') == '"odd name"@example.org'


def test_non_ascii_subject_round_trips() -> None:
    subject = "[Countersign #7] Changement de contacts pour exemple.fr effectué — ✓"
    msg = compose(notice(subject=subject))
    raw = msg.as_bytes()
    assert b"=?utf-8?" in raw  # RFC 2047, not raw 8-bit in a header
    assert parsed(msg)["Subject"] == subject


def test_long_and_hostile_values_keep_lines_short() -> None:
    long_subject = "[Countersign #7] " + "a" * 1500 + " " + "é" * 400
    rendered = RenderedNotice(subject=long_subject, text="x" * 5000 + "\n", html="<p>" + "é" * 3000)
    raw = compose(rendered).as_bytes()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert parsed(compose(rendered))["Subject"] == long_subject


@pytest.mark.parametrize("language", ["en", "fr"])
def test_real_notice_composes_and_parses_back(language: str) -> None:
    context = {
        "request": {
            "id": 7, "serviceDomain": "exemple.fr <script>", "contactTypes": ["contactTech"],
            "fromAccount": "alice@example.com", "toAccount": "bob@example.org",
            "askingAccount": "alice@example.com", "state": "done",
            "dateRequest": "2026-03-07T10:00:00Z", "dateDone": "2026-03-08T11:05:00Z",
            "expires": None, "error": None, "validators": [],
        },
        "recipient": {"email": "alice@example.com", "language": language},
        "code": None, "link": None, "reply_address": None, "reason": None,
        "public_url": "http://127.0.0.1:8080",
    }  # fmt: skip
    rendered = render_notice("completed", language, context)
    msg = compose(rendered)
    raw = msg.as_bytes()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    message = parsed(msg)
    # The stdlib may fold just before an encoded word and give back one more
    # space there on reading: same words, same order.
    assert message["Subject"].split() == rendered.subject.split()
    text, html = text_and_html(message)
    # Long lines make the body base64 or quoted-printable, encoded with CRLF.
    assert text.replace("\r\n", "\n") == rendered.text
    assert html.replace("\r\n", "\n") == rendered.html
    assert "&lt;script&gt;" in html and "<script>" not in html


def test_naive_and_offset_dates_are_written_in_utc() -> None:
    naive = compose_notice(
        notice(), kind="completed", request_id=7, to_address="a@example.com",
        from_header="c@example.com", message_id="<m@example.com>", reply_to=None,
        thread_root=None, date=datetime(2026, 3, 8, 11, 5),
    )  # fmt: skip
    assert naive["Date"] == "Sun, 08 Mar 2026 11:05:00 +0000"
    offset = compose_notice(
        notice(), kind="completed", request_id=7, to_address="a@example.com",
        from_header="c@example.com", message_id="<m@example.com>", reply_to=None,
        thread_root=None, date=datetime(2026, 3, 8, 12, 5, tzinfo=timezone(timedelta(hours=1))),
    )  # fmt: skip
    assert offset["Date"] == "Sun, 08 Mar 2026 11:05:00 +0000"
