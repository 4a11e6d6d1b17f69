"""The mail-in pipeline over a real store (SQLite and PostgreSQL): what a reply does, and
the ways it must do nothing (forged, stale, guessed, automated, locked, poisonous)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from countersign.gateway.mail_in.sweep import InboundSettings, read_inbound
from countersign.rules.readings import Reading
from countersign.rules.states import Decision
from countersign.store import leases
from countersign.store.db import Store
from countersign.store.models import ChangeRequest, OutboxMessage
from countersign.workflow import inbox_batch, inbox_views, message_ids, sweeps
from countersign.workflow.codes import hash_code
from countersign.workflow.deciding import decide
from countersign.workflow.inbox import store_received
from countersign.workflow.inbox_batch import Received, process_due
from countersign.workflow.policy import Policy
from countersign.workflow.requests import show
from tests.mail_helpers import (
    codes,
    command_results,
    decisions,
    inbox_rows,
    mail_events,
    new_tech_request,
    notice_ids,
    reply,
)

SETTINGS = InboundSettings()
GUESS = "AAAAAAAA-BBBBBBBB-CCCCCCCC-DDDDDDDD"


def read(item: Received) -> Reading:
    return read_inbound(item, SETTINGS)


def deliver(store: Store, raw: bytes, now: datetime, channel: str = "smtp") -> int | None:
    return store_received(
        store, raw, channel=channel, envelope_from="someone@example.net", recipients=[], now=now
    )


def receive(store: Store, policy: Policy, raw: bytes, now: datetime) -> str | None:
    """Store one message and run the pipeline; the row's outcome."""
    deliver(store, raw, now)
    while process_due(store, policy, read, now):
        pass
    return inbox_rows(store)[-1][1]


@pytest.fixture
def request_id(world: Store, policy: Policy, t0: datetime) -> int:
    return new_tech_request(world, policy, t0)


def outbox_kinds(store: Store) -> list[str]:
    """The kinds of notices queued after the confirm-requests, in order."""
    with store.read() as session:
        kinds = session.scalars(select(OutboxMessage.kind).order_by(OutboxMessage.id))
        return [k for k in kinds if k != "confirm-request"]


def admin_reply(store: Store, request_id: int, **kwargs: object) -> bytes:
    code = codes(store, request_id)["admin@example.com"]
    thread = notice_ids(store, request_id)["admin@example.com"]
    return reply(code, request_id=request_id, in_reply_to=thread, **kwargs)  # type: ignore[arg-type]


# --- what works --------------------------------------------------------------------------


def test_accept_by_mail_is_applied_once(
    world: Store, policy: Policy, t0: datetime, request_id: int
) -> None:
    raw = admin_reply(world, request_id)
    assert receive(world, policy, raw, t0) == "accepted"
    assert decisions(world, request_id)["admin@example.com"] == ("accept", "smtp")
    # The same message again, by either door: acknowledged, stored once, done once.
    assert deliver(world, raw, t0) is None
    assert deliver(world, raw, t0, channel="imap") is None
    assert process_due(world, policy, read, t0) == 0
    assert inbox_rows(world) == [("done", "accepted")]
    assert command_results(world) == []
    event = mail_events(world)[0]
    assert event["read"] == "accept" and event["outcome"] == "accepted"
    assert codes(world, request_id)["admin@example.com"] not in str(event)


def test_decline_by_mail_refuses_the_request(
    world: Store, policy: Policy, t0: datetime, request_id: int
) -> None:
    raw = admin_reply(world, request_id, first_line="Decline. I never asked for this.")
    assert receive(world, policy, raw, t0) == "declined"
    from countersign.workflow.requests import show

    assert show(world, request_id)["state"] == "refused"


def test_code_typed_on_the_line_works_without_reply_address(
    world: Store, policy: Policy, t0: datetime, request_id: int
) -> None:
    code = codes(world, request_id)["new@example.com"]
    raw = reply(None, first_line=f"ACCEPT {code.lower()}", sender="New@Example.com")
    assert receive(world, policy, raw, t0) == "accepted"
    assert decisions(world, request_id)["new@example.com"] == ("accept", "smtp")


def test_message_key_is_the_readers_message_id() -> None:
    raw = reply("X", message_id="<abc.123@mail.example.com> (comment)")
    assert message_ids.message_key(raw) == "abc.123@mail.example.com"
    headerless = b"no headers at all, just text\r\n"
    assert message_ids.message_key(headerless).startswith("sha256:")


# --- Show 3: each changes nothing, and answers as the contract says ----------------------


def test_forged_from_changes_nothing_and_tells_nobody(
    world: Store, policy: Policy, t0: datetime, request_id: int
) -> None:
    raw = admin_reply(world, request_id, sender="mallory@evil.example")
    assert receive(world, policy, raw, t0) == "refused:sender-mismatch"
    assert decisions(world, request_id)["admin@example.com"] == (None, None)
    assert command_results(world) == []


def test_code_of_another_request_changes_nothing(
    world: Store, policy: Policy, t0: datetime, request_id: int
) -> None:
    other = new_tech_request(world, policy, t0, domain="split.com")
    other_code = codes(world, other)["admin@example.com"]
    thread = notice_ids(world, request_id)["admin@example.com"]
    raw = reply(None, first_line=f"Accept {other_code}", in_reply_to=thread, request_id=request_id)
    assert receive(world, policy, raw, t0) == "refused:unknown-code"
    assert decisions(world, request_id)["admin@example.com"] == (None, None)
    assert decisions(world, other)["admin@example.com"] == (None, None)
    # The sender is that request's validator: it is told, about the request it replied to.
    assert command_results(world) == [("admin@example.com", "unknown-code")]


def test_used_code_changes_nothing_and_says_so(
    world: Store, policy: Policy, t0: datetime, request_id: int
) -> None:
    assert receive(world, policy, admin_reply(world, request_id), t0) == "accepted"
    again = admin_reply(world, request_id, first_line="Decline")
    assert receive(world, policy, again, t0) == "refused:used"
    assert decisions(world, request_id)["admin@example.com"] == ("accept", "smtp")
    assert command_results(world) == [("admin@example.com", "used")]


def test_used_code_without_thread_headers_is_still_answered_to_its_owner(
    world: Store, policy: Policy, t0: datetime, request_id: int
) -> None:
    code = codes(world, request_id)["admin@example.com"]
    assert receive(world, policy, reply(code, request_id=request_id), t0) == "accepted"
    # A bare second reply: no In-Reply-To, no References, just the code in the address.
    again = reply(code, request_id=request_id, first_line="Decline", message_id="<again@x.test>")
    assert receive(world, policy, again, t0) == "refused:used"
    assert command_results(world) == [("admin@example.com", "used")]


def test_expired_request_changes_nothing_and_says_so(
    world: Store, policy: Policy, t0: datetime, request_id: int
) -> None:
    late = t0 + policy.expire_after + timedelta(minutes=1)
    assert receive(world, policy, admin_reply(world, request_id), late) == "refused:expired"
    assert decisions(world, request_id)["admin@example.com"] == (None, None)
    assert command_results(world) == [("admin@example.com", "expired")]


def test_guessed_code_from_a_stranger_changes_nothing_and_tells_nobody(
    world: Store, policy: Policy, t0: datetime, request_id: int
) -> None:
    raw = reply(GUESS, sender="mallory@evil.example")
    assert receive(world, policy, raw, t0) == "refused:unknown-code"
    assert decisions(world, request_id) == {
        "admin@example.com": (None, None),
        "new@example.com": (None, None),
    }
    assert command_results(world) == []


def test_wrong_codes_limit_their_source_not_the_validator(
    world: Store, policy: Policy, t0: datetime, request_id: int
) -> None:
    for attempt in range(policy.bad_code_limit + 2):
        raw = reply(GUESS, sender="admin@example.com", first_line=f"Accept ({attempt})")
        expected = "refused:unknown-code" if attempt < policy.bad_code_limit else "refused:locked"
        assert receive(world, policy, raw, t0 + timedelta(minutes=attempt)) == expected
    # The right code, from that same sender and source, within the hour: it works.
    assert receive(world, policy, admin_reply(world, request_id), t0 + timedelta(minutes=30)) == (
        "accepted"
    )
    assert decisions(world, request_id)["admin@example.com"] == ("accept", "smtp")
    assert command_results(world) == []


def deliver_both_replies(world: Store, request_id: int, at: datetime) -> None:
    """Both validators' replies accepting, stored and due: one batch completes the request."""
    tokens = codes(world, request_id)
    threads = notice_ids(world, request_id)
    for account in ("admin@example.com", "new@example.com"):
        raw = reply(
            tokens[account], sender=account, request_id=request_id, in_reply_to=threads[account]
        )
        deliver(world, raw, at)


def test_both_validators_in_one_batch_complete_the_request(
    world: Store, policy: Policy, t0: datetime, request_id: int
) -> None:
    # Both replies are claimed and decided together: the second decision must see
    # the first, though neither is written to the database before the batch ends.
    deliver_both_replies(world, request_id, t0)
    assert process_due(world, policy, read, t0) == 2
    assert inbox_rows(world) == [("done", "accepted"), ("done", "accepted")]
    assert decisions(world, request_id) == {
        "admin@example.com": ("accept", "smtp"),
        "new@example.com": ("accept", "smtp"),
    }
    # Applied in the batch that completed it, the sweep left nothing to do.
    assert show(world, request_id)["state"] == "done"
    assert sweeps.apply_ready(world, policy, now=t0) == 0
    # Only the first to answer waited for the other; then everyone is told it is done.
    kinds = outbox_kinds(world)
    assert kinds[0] == "accepted-waiting" and set(kinds[1:]) == {"completed"}, kinds


def test_a_batch_whose_apply_fails_still_decides_and_leaves_the_change_to_the_sweep(
    world: Store, policy: Policy, t0: datetime, request_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fault injected where the batch applies what it completed (a bug, a rule that
    # raises): the replies must not be lost or quarantined for it.
    deliver_both_replies(world, request_id, t0)
    real_apply = sweeps._apply
    calls: list[int] = []

    def broken(*args: object, **kwargs: object) -> None:
        calls.append(1)
        raise RuntimeError("injected: applying failed")

    monkeypatch.setattr(sweeps, "_apply", broken)
    assert process_due(world, policy, read, t0) == 2
    assert calls == [1]  # tried once, in the batch; one message at a time does not apply
    assert inbox_rows(world) == [("done", "accepted"), ("done", "accepted")]
    assert show(world, request_id)["state"] == "checkValidity"
    monkeypatch.setattr(sweeps, "_apply", real_apply)
    assert sweeps.apply_ready(world, policy, now=t0) == 1
    assert show(world, request_id)["state"] == "done"


def test_a_transaction_applies_only_the_ready_requests_it_holds_locked(
    world: Store, policy: Policy, t0: datetime, request_id: int
) -> None:
    # Completed on the page: ready, and the apply sweep's (another daemon's may hold it).
    for code in codes(world, request_id).values():
        decide(world, code, Decision.ACCEPT, policy, request_id=request_id, via="web", now=t0)
    with world.write() as session:
        read_only = session.get(ChangeRequest, request_id)
        assert read_only is not None and read_only.state == "checkValidity"
        assert sweeps.apply_in(session, policy, {}, t0) is False  # read, not locked: left
        assert read_only.state == "checkValidity"
        assert sweeps.apply_in(session, policy, {request_id: read_only}, t0) is True
    assert show(world, request_id)["state"] == "done"


def test_wrong_codes_past_the_limit_in_one_batch_do_not_stop_the_real_reply(
    world: Store, policy: Policy, t0: datetime, request_id: int
) -> None:
    for attempt in range(policy.bad_code_limit + 1):
        deliver(
            world, reply(GUESS, sender="admin@example.com", first_line=f"Accept ({attempt})"), t0
        )
    deliver(world, admin_reply(world, request_id), t0)
    while process_due(world, policy, read, t0):
        pass
    assert [outcome for _, outcome in inbox_rows(world)] == [
        *["refused:unknown-code"] * policy.bad_code_limit,
        "refused:locked",
        "accepted",
    ]
    assert decisions(world, request_id)["admin@example.com"] == ("accept", "smtp")


def test_answers_go_once_a_day_per_address_and_reason(
    world: Store, policy: Policy, t0: datetime, request_id: int
) -> None:
    for minute in range(3):
        raw = admin_reply(world, request_id, first_line="Accept\nDecline, actually")
        receive(world, policy, raw, t0 + timedelta(minutes=minute))
    assert command_results(world) == [("admin@example.com", "ambiguous")]
    receive(world, policy, admin_reply(world, request_id, first_line="Thanks!"), t0)
    tomorrow = t0 + timedelta(days=1, minutes=5)
    receive(world, policy, admin_reply(world, request_id, first_line="ACCEPT\nDECLINE"), tomorrow)
    assert command_results(world) == [
        ("admin@example.com", "ambiguous"),
        ("admin@example.com", "no-command"),
        ("admin@example.com", "ambiguous"),
    ]
    assert decisions(world, request_id)["admin@example.com"] == (None, None)


def test_no_code_anywhere_changes_nothing(world: Store, policy: Policy, t0: datetime) -> None:
    assert receive(world, policy, reply(None), t0) == "refused:no-code"
    assert command_results(world) == []


def test_unparseable_from_changes_nothing(
    world: Store, policy: Policy, t0: datetime, request_id: int
) -> None:
    raw = admin_reply(world, request_id).replace(b"<admin@example.com>", b"<not an address>")
    assert receive(world, policy, raw, t0) == "refused:unknown-sender"
    assert decisions(world, request_id)["admin@example.com"] == (None, None)


def test_automated_mail_quoting_accept_is_recorded_only(
    world: Store, policy: Policy, t0: datetime, request_id: int
) -> None:
    raw = admin_reply(world, request_id, headers=[("Auto-Submitted", "auto-replied")])
    assert receive(world, policy, raw, t0) == "automated"
    assert decisions(world, request_id)["admin@example.com"] == (None, None)
    assert command_results(world) == []
    assert mail_events(world)[0]["read"] == "automated"


def test_bounce_of_a_notice_marks_the_validator(
    world: Store, policy: Policy, t0: datetime, request_id: int
) -> None:
    bounce = dsn_bounce("new@example.com", request_id)
    assert receive(world, policy, bounce, t0) == "bounce"
    from countersign.workflow.requests import show

    shown = {v["account"]: v for v in show(world, request_id)["validators"]}
    assert "bounced" in shown["new@example.com"]["deliveryError"]
    assert "deliveryError" not in shown["admin@example.com"]
    assert command_results(world) == []


def dsn_bounce(recipient: str, request_id: int) -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\r\n"
        f"To: contacts@{SETTINGS.mail_domain}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <bounce-1@mx.example.com>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.com\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: contacts@{SETTINGS.mail_domain}\r\nTo: {recipient}\r\n"
        f"X-Countersign-Request: {request_id}\r\nX-Countersign-Kind: confirm-request\r\n"
        "--B--\r\n"
    ).encode()


# --- inbound.trusted_authserv_id ----------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "outcome"),
    [
        ("mx.countersign.test; dkim=pass; dmarc=pass header.from=example.com", "accepted"),
        ("mx.countersign.test; dmarc=fail header.from=example.com", "refused:unauthenticated"),
        ("mx.elsewhere.test; dmarc=pass header.from=example.com", "refused:unauthenticated"),
    ],
)
def test_trusted_server_must_vouch_for_the_sender(
    world: Store, policy: Policy, t0: datetime, request_id: int, header: str, outcome: str
) -> None:
    trusted = dataclasses.replace(SETTINGS, trusted_authserv_id="mx.countersign.test")
    raw = admin_reply(world, request_id, headers=[("Authentication-Results", header)])
    deliver(world, raw, t0)
    process_due(world, policy, lambda item: read_inbound(item, trusted), t0)
    assert inbox_rows(world) == [("done", outcome)]


def test_only_the_topmost_header_of_the_trusted_server_counts() -> None:
    from countersign.gateway.mail_in.reading_headers import dmarc_passed, header_block

    raw = (
        b"Authentication-Results: mx.countersign.test; dmarc=fail\r\n"
        b"Authentication-Results: mx.countersign.test; dmarc=pass\r\n"  # the sender's own
        b"From: a@example.com\r\n\r\nbody\r\n"
    )
    assert dmarc_passed(header_block(raw), "mx.countersign.test") is False
    assert dmarc_passed(header_block(raw), None) is True


# --- poison messages ----------------------------------------------------------------------


def test_poison_message_is_quarantined_and_the_rest_go_on(
    world: Store, policy: Policy, t0: datetime, request_id: int
) -> None:
    deliver(world, b"Message-ID: <poison@x>\r\nFrom: a@example.com\r\n\r\nboom\r\n", t0)
    deliver(world, admin_reply(world, request_id), t0)

    def fragile(item: Received) -> Reading:
        if b"boom" in item.raw:
            raise RuntimeError("reader crashed")
        return read(item)

    now = t0
    for _ in range(3):
        process_due(world, policy, fragile, now)
        now += timedelta(minutes=5)
    assert [status for status, _ in inbox_rows(world)] == ["quarantined", "done"]
    assert decisions(world, request_id)["admin@example.com"] == ("accept", "smtp")
    (failed,) = inbox_views.list_inbox(world, failed=True)
    assert failed["attempts"] == 3 and "reader crashed" in failed["outcome"]
    assert process_due(world, policy, fragile, now + timedelta(hours=1)) == 0

    inbox_views.retry(world, failed["id"], now=now)
    assert process_due(world, policy, read, now) == 1
    assert inbox_rows(world)[0] == ("done", "no-command")
    assert inbox_views.list_inbox(world, failed=True) == []


def test_a_processor_that_dies_every_time_ends_in_quarantine(
    world: Store, policy: Policy, t0: datetime
) -> None:
    deliver(world, reply(GUESS), t0)
    now = t0
    for life in range(3):
        owner = leases.register(world, f"daemon-{life}", now)
        assert len(inbox_batch.claim_due(world, now, owner=owner)) == 1  # claimed, then it dies
        now += timedelta(seconds=16)  # its heartbeat is past leases.owner_timeout
        assert leases.release_orphans(world, now, timedelta(seconds=15))["inbox"] == 1
    assert inbox_batch.claim_due(world, now) == []
    assert inbox_rows(world)[0][0] == "quarantined"


def test_retry_refuses_what_is_not_quarantined(world: Store, policy: Policy, t0: datetime) -> None:
    from countersign.workflow.errors import NotFound, Refusal

    (made,) = [deliver(world, reply(GUESS), t0)]
    assert made is not None
    with pytest.raises(Refusal):
        inbox_views.retry(world, made)
    with pytest.raises(NotFound):
        inbox_views.retry(world, made + 100)


@pytest.mark.parametrize(
    ("from_lines", "why"),
    [
        (["From: admin@example.com", "From: mallory@example.org"], "2 From headers"),
        (["From: mallory@example.org", "From: admin@example.com"], "2 From headers"),
        (["From: admin@example.com, mallory@example.org"], "a From of 2 mailboxes"),
    ],
)
def test_a_mail_of_several_senders_is_nobodys(
    world: Store,
    policy: Policy,
    t0: datetime,
    request_id: int,
    from_lines: list[str],
    why: str,
) -> None:
    """Even with the validator's real code: no decision, no answer, and the reason recorded."""
    genuine = admin_reply(world, request_id).decode()
    head, body = genuine.split("\r\n\r\n", 1)
    lines = [line for line in head.split("\r\n") if not line.startswith("From:")]
    raw = ("\r\n".join(from_lines + lines) + "\r\n\r\n" + body).encode()
    assert receive(world, policy, raw, t0) == "malformed"
    assert decisions(world, request_id)["admin@example.com"] == (None, None)
    assert command_results(world) == []
    event = mail_events(world)[0]
    assert why in str(event["reason"]) and event["read"] == "malformed"


def test_a_stand_in_written_by_the_sender_is_no_code(
    world: Store, policy: Policy, t0: datetime, request_id: int
) -> None:
    """Someone who learned a code's hash (a stolen backup) cannot use it as the code."""
    real = codes(world, request_id)["admin@example.com"]
    stand_in = f"hashed{hash_code(real)}"
    for raw in (
        reply(None, first_line=f"ACCEPT {stand_in}"),
        reply(None, to=f"confirm+{stand_in}@countersign.localhost"),
    ):
        assert receive(world, policy, raw, t0) in ("refused:no-code", "no-command")
    assert decisions(world, request_id)["admin@example.com"] == (None, None)
    # Whereas the code itself, redacted on the way in, still works.
    assert receive(world, policy, admin_reply(world, request_id), t0) == "accepted"
