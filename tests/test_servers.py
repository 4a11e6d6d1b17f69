"""Self-tests of the real-server fixtures in tests/servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiosmtplib
import pytest
from imapclient import IMAPClient

import tests.servers.fixtures as server_fixtures
from tests.servers.dovecot import DovecotServer, make_message
from tests.servers.fixtures import dovecot, dovecot_factory, require_dovecot, smtp_sink
from tests.servers.smtp_sink import SmtpSink

# Imported so these tests run whether or not tests/conftest.py star-imports them.
__all__ = ["dovecot", "dovecot_factory", "smtp_sink"]

# Dovecot delays IDLE notifications by ~500 ms; allow for a slow machine.
IDLE_TIMEOUT = 5.0


def _wait_idle(client: IMAPClient, kind: bytes, timeout: float = IDLE_TIMEOUT) -> list[object]:
    """IDLE responses until one of type ``kind`` (e.g. b"EXISTS") or the deadline."""
    seen: list[object] = []
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        responses = client.idle_check(timeout=remaining)
        seen.extend(responses)
        if any(isinstance(r, tuple) and kind in r for r in responses):
            return seen
    raise AssertionError(f"no {kind!r} within {timeout}s; got {seen!r}")


# -- Dovecot -----------------------------------------------------------------


@pytest.mark.dovecot
def test_dovecot_login_append_search_move(dovecot: DovecotServer) -> None:
    with dovecot.connect() as imap:
        folders = {name for _flags, _sep, name in imap.list_folders()}
        assert {"INBOX", "Processed"} <= folders

        # One plain APPEND from the client, two through the MULTIAPPEND helper.
        imap.append("INBOX", make_message(subject="first"))
        uids = dovecot.append([make_message(subject="second"), make_message(subject="third")])
        assert uids == [2, 3]

        imap.select_folder("INBOX")
        assert imap.search("ALL") == [1, 2, 3]
        assert imap.search(["SUBJECT", "second"]) == [2]

        imap.move([2], "Processed")
        assert imap.search("ALL") == [1, 3]

    assert dovecot.uids("Processed") == [1]
    moved = dovecot.fetch("Processed")
    assert b"Subject: second" in moved[1]


@pytest.mark.dovecot
def test_dovecot_append_many_uses_multiappend(
    dovecot: DovecotServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Plain APPEND runs at ~280 messages/s; seeding must not fall back to it.
    def no_single_append(*args: object, **kwargs: object) -> None:
        raise AssertionError("append() used instead of MULTIAPPEND")

    monkeypatch.setattr(IMAPClient, "append", no_single_append)
    uids = dovecot.append(make_message(subject=f"bulk {i}") for i in range(1200))
    assert uids == list(range(1, 1201))
    assert dovecot.uids() == uids


@pytest.mark.dovecot
def test_dovecot_idle_reports_append(dovecot: DovecotServer) -> None:
    with dovecot.connect() as imap:
        imap.select_folder("INBOX")
        imap.idle()
        dovecot.append([make_message(subject="wake up")])
        responses = _wait_idle(imap, b"EXISTS")
        imap.idle_done()
    assert (1, b"EXISTS") in responses


@pytest.mark.dovecot
def test_dovecot_restart_mid_idle(dovecot: DovecotServer) -> None:
    dovecot.append([make_message(subject="before restart")])
    port = dovecot.port
    imap = dovecot.connect()
    try:
        imap.select_folder("INBOX")
        imap.idle()
        dovecot.restart()
        # A restart is a real shutdown: the IDLE session is told BYE (or just
        # sees EOF, which idle_check reports as no responses), promptly.
        started = time.monotonic()
        responses = imap.idle_check(timeout=IDLE_TIMEOUT)
        assert time.monotonic() - started < IDLE_TIMEOUT
        assert responses == [] or responses[0][0] == b"BYE", responses
    finally:
        imap.shutdown()

    assert dovecot.port == port
    with dovecot.connect() as again:
        again.select_folder("INBOX")
        assert again.search("ALL") == [1]
        again.idle()
        dovecot.append([make_message(subject="after restart")])
        _wait_idle(again, b"EXISTS")
        again.idle_done()


@pytest.mark.dovecot
def test_dovecot_uidvalidity_change(dovecot: DovecotServer) -> None:
    dovecot.append([make_message(subject=str(i)) for i in range(3)])
    before = dovecot.uidvalidity()

    with dovecot.connect() as imap:
        assert imap.select_folder("INBOX")[b"UIDVALIDITY"] == before

    # A session that has INBOX selected is thrown out at its next command.
    stale = dovecot.connect()
    stale.select_folder("INBOX")
    after = dovecot.change_uidvalidity()
    assert after != before
    with pytest.raises(IMAPClient.AbortError):
        stale.noop()
    stale.shutdown()

    with dovecot.connect() as imap:
        assert imap.select_folder("INBOX")[b"UIDVALIDITY"] == after
        assert imap.search("ALL") == [1, 2, 3]
        # Expunge UID 1 so that renumbering is observable below.
        imap.delete_messages([1])
        imap.expunge()

    rebuilt = dovecot.change_uidvalidity(renumber=True)
    assert rebuilt not in (before, after)
    with dovecot.connect() as imap:
        assert imap.select_folder("INBOX")[b"UIDVALIDITY"] == rebuilt
        assert imap.search("ALL") == [1, 2]


@pytest.mark.dovecot
def test_dovecot_factory_other_user(dovecot_factory: Callable[..., DovecotServer]) -> None:
    server = dovecot_factory(user="other", password="pw", folders=("Processed", "Held"))
    with server.connect() as imap:
        assert imap.folder_exists("Held")
    with server.connect(login=False) as anonymous, pytest.raises(IMAPClient.Error):
        anonymous.login("other", "wrong")


def test_require_dovecot_skips_locally_fails_on_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_fixtures, "dovecot_binary", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_dovecot()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        require_dovecot()


# -- SMTP sink ----------------------------------------------------------------


async def _send(sink: SmtpSink, subject: str = "hello", to: str = "rcpt@example.test") -> str:
    """Send one message to the sink; returns its Message-ID."""
    message_id = f"<{subject.replace(' ', '-')}-{time.monotonic_ns()}@example.test>"
    await aiosmtplib.send(
        make_message(subject=subject, to=to, message_id=message_id),
        sender="from@example.test",
        recipients=[to],
        hostname=sink.host,
        port=sink.port,
        timeout=5,
    )
    return message_id


async def test_sink_records_delivery(smtp_sink: SmtpSink) -> None:
    message_id = await _send(smtp_sink, "normal")
    (received,) = smtp_sink.wait_for(1)
    assert received.mail_from == "from@example.test"
    assert received.rcpt_tos == ("rcpt@example.test",)
    assert received.message_id == message_id
    assert received.message["Subject"] == "normal"
    assert b"Subject: normal" in received.data


async def test_sink_451_then_success(smtp_sink: SmtpSink) -> None:
    smtp_sink.fail_next("451 4.3.0 Try again later")
    with pytest.raises(aiosmtplib.SMTPResponseException) as info:
        await _send(smtp_sink, "retry me")
    assert info.value.code == 451
    assert smtp_sink.messages == []

    await _send(smtp_sink, "retry me")
    assert len(smtp_sink.wait_for(1)) == 1
    assert [(r.stage, r.reply) for r in smtp_sink.rejections] == [
        ("data", "451 4.3.0 Try again later")
    ]
    assert smtp_sink.pending_actions() == 0


async def test_sink_550_at_rcpt_and_data(smtp_sink: SmtpSink) -> None:
    smtp_sink.fail_next("550 5.1.1 No such user", stage="rcpt")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await _send(smtp_sink, "nobody home")
    assert refused.value.recipients[0].code == 550

    smtp_sink.fail_next("550 5.7.1 Rejected", stage="data")
    with pytest.raises(aiosmtplib.SMTPResponseException) as rejected:
        await _send(smtp_sink, "content rejected")
    assert rejected.value.code == 550

    smtp_sink.reject_recipient("Gone@example.test")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await _send(smtp_sink, "to gone", to="gone@example.test")
    assert smtp_sink.messages == []


async def test_sink_drop_after_data(smtp_sink: SmtpSink) -> None:
    smtp_sink.drop_after_data_next()
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await _send(smtp_sink, "lost reply")
    # The sink did get the whole message: the client just cannot know.
    assert [m.message["Subject"] for m in smtp_sink.dropped] == ["lost reply"]
    assert smtp_sink.messages == []

    await _send(smtp_sink, "resent")
    assert [m.message["Subject"] for m in smtp_sink.wait_for(1)] == ["resent"]


async def test_sink_stop_start_same_port(smtp_sink: SmtpSink) -> None:
    port = smtp_sink.port
    await _send(smtp_sink, "before")
    smtp_sink.stop()
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await _send(smtp_sink, "while down")
    smtp_sink.start()
    assert smtp_sink.port == port
    await _send(smtp_sink, "after")
    assert [m.message["Subject"] for m in smtp_sink.wait_for(2)] == ["before", "after"]


async def test_sink_wait_for_async_and_timeout(smtp_sink: SmtpSink) -> None:
    waiter = asyncio.create_task(smtp_sink.wait_for_async(3, timeout=5))
    await asyncio.gather(*(_send(smtp_sink, f"concurrent {i}") for i in range(3)))
    assert len(await waiter) == 3

    started = time.monotonic()
    with pytest.raises(TimeoutError, match="3 of 4"):
        smtp_sink.wait_for(4, timeout=0.2)
    assert time.monotonic() - started < 2


def test_sink_rejects_non_failure_replies(smtp_sink: SmtpSink) -> None:
    with pytest.raises(ValueError):
        smtp_sink.fail_next("250 OK")
    with pytest.raises(ValueError):
        smtp_sink.fail_next("try again")
