"""Mail out against a real SMTP server on loopback (an aiosmtpd sink with scripted failures).

Each notice kind is produced by the workflow, rendered, composed and sent by
the real Deliverer; the sink's received bytes are parsed back as a mail client
would.  Failures: 451 then success, 550, a connection dropped after DATA, and
the relay down for a while.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import signal
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email import policy as email_policy
from email.errors import HeaderParseError
from email.generator import BytesGenerator
from email.headerregistry import Address
from email.message import EmailMessage, Message
from io import BytesIO
from pathlib import Path

import pytest
from sqlalchemy import select, text

from countersign.config import Config, OutboundConfig
from countersign.gateway.mail_out import delivery
from countersign.gateway.mail_out.delivery import Deliverer
from countersign.gateway.mail_out.message import as_bytes, checked_address, compose_notice
from countersign.gateway.mail_out.render import KINDS, RenderedNotice, render_notice
from countersign.gateway.mail_out.wire import Outcome, Ready
from countersign.rules.contacts import ContactType
from countersign.rules.states import Decision, NoticeKind
from countersign.store import leases
from countersign.store.db import Store
from countersign.store.models import Account, Base, OutboxMessage
from countersign.workflow import requests, sweeps
from countersign.workflow.directory import AccountChanges, update_account
from countersign.workflow.notices import queue_notice
from countersign.workflow.outbox import claim_due
from countersign.workflow.policy import Policy
from tests.servers.smtp_sink import SmtpSink

TIMEOUT = timedelta(seconds=15)  # leases.owner_timeout's default

TECH, BILLING = ContactType.TECH, ContactType.BILLING
CODE = re.compile(r"\b[A-Z2-7]{8}-[A-Z2-7]{8}-[A-Z2-7]{8}-[A-Z2-7]{8}\b")


def relay_config(sink: SmtpSink, tmp_path: Path) -> Config:
    return Config(
        data_dir=str(tmp_path),
        outbound=OutboundConfig(smtp_host=sink.host, smtp_port=sink.port, timeout="5s"),
    )


@pytest.fixture
def deliverer(world: Store, smtp_sink: SmtpSink, tmp_path: Path) -> Iterator[Deliverer]:
    deliverer = Deliverer(world, relay_config(smtp_sink, tmp_path))
    yield deliverer
    deliverer.close()  # as `serve` does when it stops


def now() -> datetime:
    return datetime.now(UTC)


async def drain(deliverer: Deliverer, at: datetime | None = None) -> int:
    total = 0
    while handled := await deliverer.deliver_due(at):
        total += handled
    return total


def received(sink: SmtpSink) -> list[EmailMessage]:
    return [
        message_from_bytes(m.data, policy=email_policy.default)  # type: ignore[misc]
        for m in sink.messages
    ]


def text_of(mail: EmailMessage) -> str:
    body = mail.get_body(("plain",))
    assert body is not None
    return str(body.get_content())  # type: ignore[attr-defined]


def by_kind(mails: list[EmailMessage], kind: str) -> list[EmailMessage]:
    return [m for m in mails if m["X-Countersign-Kind"] == kind]


def change_tech(store: Store, policy: Policy, domain: str = "split.com") -> int:
    (made,) = requests.change_contacts(
        store, domain, "admin@example.com", {TECH: "new@example.com"}, policy, now=now()
    )
    return int(made["id"])


# --- every kind, well formed --------------------------------------------------------------


def assert_well_formed(mail: EmailMessage, kind: str, request_id: int) -> None:
    assert mail.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in mail.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert re.fullmatch(r"<[0-9a-f]{32}@countersign\.localhost>", mail["Message-ID"])
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["X-Auto-Response-Suppress"] == "All"
    assert mail["X-Countersign-Request"] == str(request_id)
    assert mail["X-Countersign-Kind"] == kind
    assert mail["From"] == "Countersign <contacts@countersign.localhost>"
    assert mail["Date"] is not None
    for header in ("Message-ID", "To", "Subject", "From"):
        assert len(mail.get_all(header) or []) == 1


async def test_a_complete_change_mails_every_kind_well_formed(
    world: Store, policy: Policy, deliverer: Deliverer, smtp_sink: SmtpSink
) -> None:
    update_account(world, "new@example.com", AccountChanges(language="fr"))
    request_id = change_tech(world, policy)
    assert await drain(deliverer) == 2
    confirms = received(smtp_sink)
    assert sorted(m["To"] for m in confirms) == ["admin@example.com", "new@example.com"]
    for mail in confirms:
        assert_well_formed(mail, "confirm-request", request_id)
        body = text_of(mail)
        (code,) = set(CODE.findall(body))
        assert f"http://127.0.0.1:8080/confirm/{request_id}?token={code}" in body
        assert mail["Reply-To"] == f"confirm+{code}@countersign.localhost"
        # The code in the mail works: the acceptance goes through the workflow.
        requests.decide(world, code, Decision.ACCEPT, policy, request_id=request_id)
    french = next(m for m in confirms if m["To"] == "new@example.com")
    assert "Bonjour" in text_of(french) or "contact technique" in text_of(french)
    assert "technical contact" in text_of(next(m for m in confirms if m is not french))

    sweeps.apply_ready(world, policy)
    await drain(deliverer)
    mails = received(smtp_sink)
    kinds = [m["X-Countersign-Kind"] for m in mails[2:]]
    assert sorted(kinds) == [
        "accepted-waiting",
        "completed",
        "completed",
        "previous-contact-notice",
    ]
    received_first = {m["To"]: m["Message-ID"] for m in confirms}
    for mail in mails[2:]:
        assert_well_formed(mail, mail["X-Countersign-Kind"], request_id)
        # Each threads under the first mail its own recipient had; the previous contact's
        # first mail of the request starts a thread of its own.
        assert mail["In-Reply-To"] == received_first.get(mail["To"])
        assert "Reply-To" not in mail
        assert not CODE.search(text_of(mail))
    (notice,) = by_kind(mails, "previous-contact-notice")
    assert notice["To"] == "tech@example.com"


@pytest.mark.parametrize("kind", ["refused", "aborted", "expired", "error", "reminder"])
async def test_failure_and_reminder_kinds(
    world: Store, policy: Policy, deliverer: Deliverer, smtp_sink: SmtpSink, kind: str
) -> None:
    request_id = change_tech(world, policy)
    await drain(deliverer)
    codes = {m["To"]: CODE.findall(text_of(m))[0] for m in received(smtp_sink)}
    later = now() + timedelta(days=8)
    if kind == "refused":
        requests.decide(world, codes["new@example.com"], Decision.DECLINE, policy)
    elif kind == "aborted":
        requests.cancel(world, request_id, "admin@example.com", policy)
    elif kind == "expired":
        sweeps.expire_due(world, policy, now=later)
    elif kind == "error":
        for code in codes.values():
            requests.decide(world, code, Decision.ACCEPT, policy)
        update_account(world, "new@example.com", AccountChanges(zone="CA"))
        sweeps.apply_ready(world, policy)
    else:
        sweeps.remind_due(world, policy, now=now() + timedelta(days=2))
    await drain(deliverer, later)
    mails = by_kind(received(smtp_sink), kind)
    # Nobody had answered: every validator is reminded, or told the outcome.
    assert sorted(m["To"] for m in mails) == ["admin@example.com", "new@example.com"]
    for mail in mails:
        assert_well_formed(mail, kind, request_id)
    if kind == "reminder":
        fresh = CODE.findall(text_of(mails[0]))[0]
        assert fresh not in codes.values()
    if kind == "error":
        assert "CA" in text_of(mails[0])


async def test_command_result_goes_to_the_account(
    world: Store, policy: Policy, deliverer: Deliverer, smtp_sink: SmtpSink
) -> None:
    request_id = change_tech(world, policy)
    with world.write() as session:
        account = session.scalars(select(Account).where(Account.email == "new@example.com")).one()
        request = requests.load_request(session, request_id)
        queue_notice(
            session,
            kind=NoticeKind.COMMAND_RESULT,
            account=account,
            request=request,
            now=now(),
            domain=policy.mail_domain,
            context={"reason": "This code has already been used."},
        )
    await drain(deliverer)
    (mail,) = by_kind(received(smtp_sink), "command-result")
    assert_well_formed(mail, "command-result", request_id)
    assert "already been used" in text_of(mail)


# --- failures ---------------------------------------------------------------------------


def outbox_rows(store: Store) -> list[OutboxMessage]:
    with store.read() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


async def test_451_then_success_delivers_once_with_the_same_message_id(
    world: Store, policy: Policy, deliverer: Deliverer, smtp_sink: SmtpSink
) -> None:
    change_tech(world, policy)
    smtp_sink.fail_next("451 4.3.0 Try again later")
    assert await deliverer.deliver_due() == 2
    assert len(smtp_sink.messages) == 1
    waiting = [row for row in outbox_rows(world) if row.status == "pending"]
    assert [row.last_error for row in waiting] == ["451 4.3.0 Try again later"]
    retry_at = waiting[0].next_attempt_at
    assert timedelta(seconds=40) < retry_at - now() < timedelta(seconds=80)
    assert await deliverer.deliver_due() == 0  # not due yet
    await drain(deliverer, retry_at)
    ids = [m.message_id for m in smtp_sink.messages]
    assert len(ids) == 2 and len(set(ids)) == 2
    assert waiting[0].message_id.strip("<>") in {i.strip("<>") for i in ids if i}
    assert all(row.status == "sent" for row in outbox_rows(world))


async def test_550_is_permanent_and_shown_on_the_request(
    world: Store, policy: Policy, deliverer: Deliverer, smtp_sink: SmtpSink
) -> None:
    update_account(world, "new@example.com", AccountChanges(contact_email="old@gone.test"))
    request_id = change_tech(world, policy)
    smtp_sink.reject_recipient("old@gone.test", "550 5.1.1 No such user")
    await drain(deliverer)
    shown = requests.show(world, request_id)
    failing = next(v for v in shown["validators"] if v["account"] == "new@example.com")
    assert failing["deliveryError"] == ("mail to old@gone.test failed: 550 5.1.1 No such user")
    assert await deliverer.deliver_due(now() + timedelta(days=1)) == 0  # not retried

    # The seed's remedy: fix the contact email, then resend.
    update_account(world, "new@example.com", AccountChanges(contact_email="new@fixed.test"))
    requests.resend(world, request_id, policy)
    await drain(deliverer)
    assert smtp_sink.messages[-1].rcpt_tos == ("new@fixed.test",)
    shown = requests.show(world, request_id)
    assert all("deliveryError" not in v for v in shown["validators"])


async def test_connection_dropped_after_data_is_retried_with_the_same_message_id(
    world: Store, policy: Policy, deliverer: Deliverer, smtp_sink: SmtpSink
) -> None:
    change_tech(world, policy)
    smtp_sink.drop_after_data_next()
    await deliverer.deliver_due()
    (lost,) = smtp_sink.dropped
    await drain(deliverer, now() + timedelta(minutes=5))
    assert lost.message_id in [m.message_id for m in smtp_sink.messages]
    assert len(smtp_sink.messages) == 2


async def test_relay_down_for_a_while_then_everything_once(
    world: Store, policy: Policy, deliverer: Deliverer, smtp_sink: SmtpSink
) -> None:
    smtp_sink.stop()
    change_tech(world, policy)
    change_tech(world, policy, domain="example.com")
    await deliverer.deliver_due()
    await deliverer.deliver_due(now() + timedelta(minutes=3))  # still down
    assert {row.status for row in outbox_rows(world)} == {"pending"}
    assert all("unreachable" in (row.last_error or "") for row in outbox_rows(world))
    smtp_sink.start()
    await drain(deliverer, now() + timedelta(hours=2))
    ids = [m.message_id for m in smtp_sink.messages]
    assert len(ids) == len(set(ids)) == len(outbox_rows(world)) == 4


async def test_giving_up_after_the_configured_time(
    world: Store, policy: Policy, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    request_id = change_tech(world, policy)
    deliverer = Deliverer(world, relay_config(smtp_sink, tmp_path))
    smtp_sink.fail_next("451 4.3.0 Try again later", times=10)
    await deliverer.deliver_due()
    await drain(deliverer, now() + timedelta(days=3))
    gave_up = [row for row in outbox_rows(world) if row.status == "failed"]
    assert gave_up and all(row.code is None for row in gave_up)
    assert any("deliveryError" in v for v in requests.show(world, request_id)["validators"])


# --- secrets and hostile values -----------------------------------------------------------


async def test_no_plaintext_code_remains_after_delivery(
    world: Store, policy: Policy, deliverer: Deliverer, smtp_sink: SmtpSink
) -> None:
    change_tech(world, policy)
    change_tech(world, policy, domain="example.com")
    await drain(deliverer)
    codes = {c for m in received(smtp_sink) for c in CODE.findall(text_of(m))}
    assert len(codes) == 4
    forms = codes | {c.replace("-", "") for c in codes}
    with world.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            for row in connection.execute(table.select()):
                dumped = " ".join(str(v) for v in row).upper()
                assert not any(form in dumped for form in forms), table.name


async def test_hostile_names_neither_add_headers_nor_run_markup(
    world: Store, policy: Policy, deliverer: Deliverer, smtp_sink: SmtpSink
) -> None:
    # A system of record that let these through: straight into the store.
    with world.engine.begin() as connection:
        connection.execute(
            text("UPDATE services SET domain = :d WHERE domain = 'split.com'"),
            {"d": "eve.example\r\nbcc: x@evil.test <script>alert(1)</script>"},
        )
    (made,) = requests.change_contacts(
        world,
        "eve.example\r\nbcc: x@evil.test <script>alert(1)</script>",
        "admin@example.com",
        {BILLING: "new@example.com"},
        policy,
        now=now(),
    )
    await drain(deliverer)
    assert len(smtp_sink.messages) == 2
    for raw in smtp_sink.messages:
        assert raw.rcpt_tos in {("admin@example.com",), ("new@example.com",)}
        mail = message_from_bytes(raw.data, policy=email_policy.default)  # type: ignore[arg-type]
        assert mail["Bcc"] is None
        assert "\n" not in str(mail["Subject"])
        html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert "<script>" not in html and "&lt;script&gt;" in html
    assert made["serviceDomain"].startswith("eve.example")


async def test_without_a_relay_mail_is_written_to_the_outbox_maildir(
    world: Store, policy: Policy, tmp_path: Path
) -> None:
    deliverer = Deliverer(world, Config(data_dir=str(tmp_path)))
    change_tech(world, policy)
    assert await drain(deliverer) == 2
    files = sorted((tmp_path / "outbox" / "new").iterdir())
    assert len(files) == 2
    mails = [message_from_bytes(f.read_bytes(), policy=email_policy.default) for f in files]
    assert {m["X-Countersign-Kind"] for m in mails} == {"confirm-request"}  # type: ignore[index]
    assert all(row.code is None and row.status == "sent" for row in outbox_rows(world))
    # Text files a person can grep: LF line ends, the code on a line of its own words.
    raw = files[0].read_text(encoding="ascii", errors="replace")
    assert "\r" not in raw
    assert any(line.startswith("Your personal code: ") for line in raw.splitlines())


async def test_a_claim_of_a_daemon_whose_heart_stopped_is_taken_over(
    world: Store, policy: Policy, deliverer: Deliverer, smtp_sink: SmtpSink
) -> None:
    change_tech(world, policy)
    dead = leases.register(world, "other-daemon", now())
    assert len(claim_due(world, now(), owner=dead)) == 2  # claimed, then the daemon died
    assert await deliverer.deliver_due() == 0
    # Its heartbeat is 10 s old: still alive for a 15 s timeout; nothing is taken.
    assert leases.release_orphans(world, now() + timedelta(seconds=10), TIMEOUT)["outbox"] == 0
    assert await deliverer.deliver_due() == 0
    freed = leases.release_orphans(world, now() + timedelta(seconds=16), TIMEOUT)
    assert freed["outbox"] == 2
    await drain(deliverer)
    assert len(smtp_sink.messages) == 2
    assert {row.status for row in outbox_rows(world)} == {"sent"}


async def test_a_daemon_started_again_takes_back_its_claims_at_once(
    world: Store, policy: Policy, deliverer: Deliverer, smtp_sink: SmtpSink
) -> None:
    change_tech(world, policy)
    first_life = leases.register(world, "this-data-dir", now())
    assert len(claim_due(world, now(), owner=first_life)) == 2  # then SIGKILL
    leases.register(world, "this-data-dir", now())  # the same data, a second later
    assert leases.release_orphans(world, now(), TIMEOUT, heartbeats=False)["outbox"] == 2
    await drain(deliverer)
    assert len(smtp_sink.messages) == 2


# --- a pass of several batches ------------------------------------------------------------


def ids_of(sink: SmtpSink) -> list[str]:
    return sorted((m.message_id or "").strip("<>") for m in sink.messages)


async def test_a_pass_sends_batch_after_batch_each_notice_once_over_kept_connections(
    world: Store,
    policy: Policy,
    deliverer: Deliverer,
    smtp_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(delivery, "BATCH", 1)  # four batches: claimed while another is sent
    change_tech(world, policy)
    change_tech(world, policy, domain="example.com")
    assert await deliverer.deliver_due() == 4
    rows = outbox_rows(world)
    assert ids_of(smtp_sink) == sorted(row.message_id.strip("<>") for row in rows)
    assert all(row.status == "sent" and row.code is None for row in rows)
    # One connection carried every batch of the pass (a batch of one needs no more).
    assert len({m.peer for m in smtp_sink.messages}) == 1
    assert await deliverer.deliver_due() == 0


async def test_a_retry_within_a_pass_waits_for_its_time(
    world: Store,
    policy: Policy,
    deliverer: Deliverer,
    smtp_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(delivery, "BATCH", 1)
    change_tech(world, policy)
    change_tech(world, policy, domain="example.com")
    smtp_sink.fail_next("451 4.3.0 Try again later")
    assert await deliverer.deliver_due() == 4  # the refused one is not claimed again
    assert len(smtp_sink.messages) == 3
    assert sorted(row.status for row in outbox_rows(world)) == ["pending", "sent", "sent", "sent"]
    (waiting,) = [row for row in outbox_rows(world) if row.status == "pending"]
    await drain(deliverer, waiting.next_attempt_at)
    assert len(set(ids_of(smtp_sink))) == 4
    assert waiting.message_id.strip("<>") in ids_of(smtp_sink)


async def test_a_pass_told_to_stop_finishes_what_it_claimed_and_claims_no_more(
    world: Store,
    policy: Policy,
    deliverer: Deliverer,
    smtp_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(delivery, "BATCH", 1)
    change_tech(world, policy)
    change_tech(world, policy, domain="example.com")  # four batches of one
    send = deliverer.transport.send

    async def stopped_while_sending(
        batch: Sequence[Ready], on_answer: delivery.OnAnswer | None = None
    ) -> list[Outcome]:
        deliverer.stop_claiming()  # `serve` is stopped during the first batch
        return await send(batch, on_answer)

    monkeypatch.setattr(deliverer.transport, "send", stopped_while_sending)
    claimed = await deliverer.deliver_due()
    statuses = sorted(row.status for row in outbox_rows(world))
    # What was claimed (the batch sent, those claimed ahead) is sent and recorded;
    # the rest is left pending, not claimed.
    assert 1 <= claimed < 4
    assert statuses == ["pending"] * (4 - claimed) + ["sent"] * claimed
    assert len(smtp_sink.messages) == claimed
    assert await deliverer.deliver_due() == 0


# --- a burst: composing in a process of its own -----------------------------------------


async def composing_process(deliverer: Deliverer) -> multiprocessing.process.BaseProcess:
    """Start the deliverer's composing process, as a full batch does; wait until it is up."""
    before = set(multiprocessing.active_children())
    deliverer.composer.start()
    for _ in range(1200):  # spawning a Python and loading the templates: a second or so
        if deliverer.composer.running:
            (process,) = set(multiprocessing.active_children()) - before
            return process
        await asyncio.sleep(0.05)
    raise AssertionError("the composing process never came up")


async def test_under_a_burst_notices_composed_apart_go_once_each_and_stop_with_the_daemon(
    world: Store, policy: Policy, deliverer: Deliverer, smtp_sink: SmtpSink
) -> None:
    process = await composing_process(deliverer)
    request_id = change_tech(world, policy)
    change_tech(world, policy, domain="example.com")
    assert await drain(deliverer) == 4
    mails = received(smtp_sink)
    assert len({m["Message-ID"] for m in mails}) == 4
    assert_well_formed(by_kind(mails, "confirm-request")[0], "confirm-request", request_id)
    assert all(row.status == "sent" and row.code is None for row in outbox_rows(world))
    assert deliverer.composer.running  # it did the composing: nothing fell back
    deliverer.close()
    assert not process.is_alive()


async def test_ctrl_c_leaves_the_composing_process_to_the_daemon(
    world: Store, policy: Policy, deliverer: Deliverer, smtp_sink: SmtpSink
) -> None:
    # Ctrl-C signals the whole process group; the daemon then stops it in order.
    process = await composing_process(deliverer)
    assert process.pid is not None
    os.kill(process.pid, signal.SIGINT)
    change_tech(world, policy)
    assert await drain(deliverer) == 2
    assert deliverer.composer.running and process.is_alive()


async def test_a_composing_process_that_dies_loses_no_notice(
    world: Store, policy: Policy, deliverer: Deliverer, smtp_sink: SmtpSink
) -> None:
    process = await composing_process(deliverer)
    process.kill()  # out of memory, say
    process.join()
    change_tech(world, policy)
    change_tech(world, policy, domain="example.com")
    assert await drain(deliverer) == 4  # composed in the daemon's process instead
    assert len({m.message_id for m in smtp_sink.messages}) == 4
    assert all(row.status == "sent" for row in outbox_rows(world))
    assert not deliverer.composer.running


# --- fast composing, the stdlib's bytes ---------------------------------------------------


def stdlib_bytes(msg: Message) -> bytes:
    """What the stdlib's own compat32 generator writes for `msg`."""
    buffer = BytesIO()
    BytesGenerator(
        buffer, mangle_from_=False, policy=email_policy.compat32.clone(linesep="\r\n")
    ).flatten(msg)
    return buffer.getvalue()


SUBJECTS = [
    "[Countersign #7] Contact change for example.com: your validation is needed",
    "[Countersign #7] " + "word " * 40,
    "[Countersign #7] Changement de contacts pour exemple.fr effectué — ✓",
    "[Countersign #7] a;b,c\td  e" + "x" * 90,
    "short",
    "x " * 34 + "x",  # 78 characters with "Subject: ": the longest line written as it is
    "x " * 35,
]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_flattening_writes_what_the_stdlib_writes(kind: str) -> None:
    request = {
        "id": 7, "serviceDomain": "exemple.fr <b>", "contactTypes": ["contactTech"],
        "fromAccount": "a@example.com", "toAccount": "b@example.org",
        "askingAccount": "a@example.com", "state": "done", "dateRequest": None,
        "dateDone": "2026-03-08T11:05:00Z", "expires": "2026-03-14T11:00:00Z",
        "error": "boom", "validators": [{"account": "b@example.org", "decision": None}],
    }  # fmt: skip
    context = {
        "request": request, "recipient": {"email": "a@example.com", "language": "fr"},
        "code": "ABCDEFGH-IJKLMNOP-QRSTUVWX-YZ234567", "link": "http://x/confirm/7?token=A",
        "reply_address": "confirm+A@countersign.localhost", "reason": "r", "public_url": "http://x",
    }  # fmt: skip
    for language in ("en", "fr"):
        rendered = render_notice(kind, language, context)
        for subject in [rendered.subject, *SUBJECTS]:
            notice = RenderedNotice(subject, rendered.text, rendered.html + "é" * 600)
            msg = compose_notice(
                notice, kind=kind, request_id=7, to_address="a@example.com",
                from_header="Countersign <contacts@countersign.localhost>",
                message_id="<m@countersign.localhost>", reply_to="confirm+A@countersign.localhost",
                thread_root="<r@countersign.localhost>",
            )  # fmt: skip
            assert as_bytes(msg) == stdlib_bytes(msg) == msg.as_bytes()


@pytest.mark.parametrize(
    "address",
    [
        "bob@example.org", " bob+tag@example.org ", "o'hara!#$%&*/=?^_`{|}~-@x.y",
        "a.b.c@d.e.f", "a..b@example.com", ".a@example.com", "a.@example.com",
        "a@b..c", "a@", "@b", "a@b@c", '"odd name"@example.org', "x" * 250 + "@example.com",
        "x" * 242 + "@example.com",
    ],
)  # fmt: skip
def test_plain_addresses_pass_as_the_stdlib_parser_would_have_them(address: str) -> None:
    try:
        parsed = Address(addr_spec=address.strip())
        expected: str | None = parsed.addr_spec if len(parsed.addr_spec) <= 254 else None
    except (ValueError, IndexError, HeaderParseError):
        expected = None
    try:
        got: str | None = checked_address(address)
    except ValueError:
        got = None
    assert got == expected
