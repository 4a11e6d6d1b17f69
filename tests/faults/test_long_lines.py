"""Show 7: a reply with one 5,000-character HTML line, as HTML-only clients send it.

aiosmtpd alone answers such a DATA "500 Line too long" (its 1,001-octet
limit), and the sender's server then bounces a real answer; `serve` takes it,
as Postfix does, up to inbound.max_bytes, and applies the ACCEPT in it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosmtplib
import pytest
from sqlalchemy import text

from countersign.store.db import Store
from tests.cli_helpers import fresh_database
from tests.faults.harness import DOMAIN, Daemon, count, seed_with_replies, wait_until_settled

pytestmark = pytest.mark.faults


def html_only(reply_raw: bytes, width: int) -> bytes:
    """The same reply, its body one HTML line of ``width`` characters (no line breaks at all)."""
    head, _, _ = reply_raw.partition(b"\r\n\r\n")
    head = head.replace(b"Content-Type: text/plain", b"Content-Type: text/html")
    start = b"<html><body><div>Accept, thanks</div><blockquote>"
    end = b"</blockquote></body></html>"
    filler = b"Your contact change request is waiting for your answer. " * (width // 50)
    line = start + filler[: width - len(start) - len(end)] + end
    assert len(line) == width
    return head + b"\r\n\r\n" + line + b"\r\n"


def test_a_reply_with_a_5000_character_html_line_is_accepted_and_applied(tmp_path: Path) -> None:
    url = fresh_database(tmp_path / "countersign.db")
    store = Store(url)
    (reply, *_) = seed_with_replies(store, 1)
    daemon = Daemon("long-lines", tmp_path, url)
    daemon.start()
    try:
        raw = html_only(reply.raw, 5000)

        async def send() -> tuple[tuple[int, str], int, int]:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=daemon.smtp_port, timeout=30)
            await client.connect()
            try:
                # Real protocol errors still get 500: an unknown command, an overlong one.
                unknown = await client.execute_command(b"BOGUS")
                overlong = await client.execute_command(b"NOOP " + b"x" * 2000)
                await client.mail("mta@client.test")
                await client.rcpt(reply.to)
                code, message = await client.data(raw)
                return (code, message), unknown.code, overlong.code
            finally:
                client.close()

        (code, message), unknown, overlong = asyncio.run(send())
        counts, _ = wait_until_settled(store, lambda: {reply.message_id}, 30, replies_only=True)
        with store.read() as session:
            outcome = session.execute(text("SELECT outcome FROM inbox")).scalar()
        longest = max(len(line) for line in raw.split(b"\r\n"))
        print(
            f"\na reply with one {longest}-octet line to"
            f" confirm+…@{DOMAIN}: answered {code} {message}; inbox outcome {outcome!r}; {counts};"
            f" an unknown command answered {unknown}, a 2,005-octet command {overlong}"
        )
        assert code == 250
        assert unknown == overlong == 500
        assert counts.lost == counts.undecided == 0, counts
        assert outcome == "accepted"
        assert count(store, {reply.message_id}).decided_twice == 0
        assert daemon.stop() == 0
    finally:
        daemon.stop()
        store.dispose()
