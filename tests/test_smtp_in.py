"""SMTP in, through a real socket: the daemon's aiosmtpd server on a free port, fed by aiosmtplib.

Every corpus reply goes through it and the pipeline behind it; then the SMTP
answers the contract names: 550 for other domains, 552 over the size limit,
451 when the store fails, 250 once (and only once stored) for a duplicate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import shutil
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from sqlalchemy import select

from countersign.config import Config
from countersign.gateway.mail_in.smtp import Intake, start_smtp
from countersign.gateway.mail_in.sweep import MailIn
from countersign.rules.contacts import ContactType
from countersign.store.db import Store
from countersign.store.models import Account, Validator
from countersign.workflow import requests
from countersign.workflow.codes import hash_code
from countersign.workflow.directory import add_service
from countersign.workflow.inbox import Arrival, store_many, store_received
from countersign.workflow.message_ids import message_key
from countersign.workflow.policy import Policy
from tests.conftest import add
from tests.mail_helpers import command_results, inbox_rows, mail_events, reply

CORPUS = Path(__file__).parent / "corpus"
EXPECTED: dict[str, dict[str, Any]] = json.loads((CORPUS / "expected.json").read_text())
CODES = {
    "address": "K7QWJ3XR-M2PZ4TLA-VB6NYD5E-HC3GUF7S",
    "line": "QX4LN7RA-ZT2MBW6E-PJ5KYC3D-GV7HSU4F",
}
DOMAIN = "countersign.localhost"
# What the pipeline makes of each reading when the code is the sender's own.
PIPELINE = {
    "accept": "accepted",
    "decline": "declined",
    "ambiguous": "ambiguous",
    "no-command": "no-command",
    "automated": "automated",
    "bounce": "bounce",
    "malformed": "malformed",
}


@pytest.fixture
def lite(sqlite_template: Path, tmp_path: Path) -> Iterator[Store]:
    """SQLite only: the pipeline runs on PostgreSQL in test_inbox.py; this is about SMTP."""
    path = tmp_path / "countersign.db"
    shutil.copy(sqlite_template, path)
    store = Store(f"sqlite:///{path}")
    yield store
    store.dispose()


def make_config(**inbound: Any) -> Config:
    config = Config()
    return dataclasses.replace(config, inbound=dataclasses.replace(config.inbound, **inbound))


async def serve(store: Store, config: Config, **kwargs: Any) -> AsyncIterator[int]:
    server = await start_smtp(store, config, host="127.0.0.1", port=0, **kwargs)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def smtp_port(lite: Store) -> AsyncIterator[int]:
    async for port in serve(lite, make_config()):
        yield port


async def send(
    port: int, raw: bytes, recipients: list[str], sender: str = "bob@example.net"
) -> Any:
    # An explicit client: aiosmtplib.send() refuses the null sender "<>" that bounces use.
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10) as client:
        return await client.sendmail(sender, recipients, raw)


def validator_with_code(store: Store, email: str, code: str | None) -> int:
    """A request that ``email`` must validate, whose code is the corpus's."""
    add(store, email)
    add(store, "new@example.com")
    add_service(store, "example.com", email, email, email)
    (made,) = requests.change_contacts(
        store, "example.com", email, {ContactType.TECH: "new@example.com"}, Policy()
    )
    if code is not None:
        with store.write() as session:
            validator = session.scalars(
                select(Validator).join(Account).where(Account.email == email)
            ).one()
            validator.code_hash = hash_code(code)
    return int(made["id"])


def corpus_recipients(spec: dict[str, Any]) -> list[str]:
    """The file's RCPT TOs; those that are not ours (550) become the address such mail uses."""
    ours = [r for r in spec["recipients"] if r.lower().endswith("@" + DOMAIN)]
    if ours:
        return ours
    return [f"contacts@{DOMAIN}"] if spec["outcome"] == "bounce" else [f"confirm@{DOMAIN}"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_corpus_through_smtp(name: str, lite: Store, smtp_port: int) -> None:
    spec = EXPECTED[name]
    raw = (CORPUS / name).read_bytes()
    sender = email.utils.parseaddr(str(email.message_from_bytes(raw).get("From", "")))[1].lower()
    code = CODES.get(spec["code"] or "")
    request_id = validator_with_code(lite, sender or "bob@example.net", code)
    envelope = spec["envelope_sender"]
    await send(
        smtp_port,
        raw,
        corpus_recipients(spec),
        sender="" if envelope in ("", "<>") else (envelope or sender),
    )

    assert MailIn(lite, make_config()).process_due() == 1
    (event,) = mail_events(lite)
    assert event["read"] == spec["outcome"], event["reason"]
    command = spec["outcome"] in ("accept", "decline")
    expected = "refused:no-code" if command and code is None else PIPELINE[spec["outcome"]]
    assert inbox_rows(lite) == [("done", expected)]
    validator = requests.show(lite, request_id)["validators"][0]
    decided = spec["outcome"] if command and code is not None else None
    assert validator["decision"] == decided
    assert validator["via"] == ("smtp" if decided else None)
    if spec["outcome"] in ("automated", "bounce", "malformed"):
        assert command_results(lite) == []


async def test_other_domains_get_550(smtp_port: int) -> None:
    raw = reply("X")
    for stranger in ("alice@example.org", f"confirm@{DOMAIN}.evil.example", f"x@sub.{DOMAIN}"):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await send(smtp_port, raw, [stranger])
        assert refused.value.recipients[0].code == 550
    # A mixed envelope: ours accepted, the stranger refused.
    errors, _ = await send(smtp_port, raw, [f"confirm@{DOMAIN}", "alice@example.org"])
    assert errors["alice@example.org"][0] == 550


async def test_every_address_at_our_domain_is_accepted(lite: Store, smtp_port: int) -> None:
    for n, address in enumerate(
        (
            f"confirm@{DOMAIN}",
            f"Confirm+ABC@{DOMAIN.upper()}",
            f"contacts@{DOMAIN}",
            f"postmaster@{DOMAIN}",
            f"bounces@{DOMAIN}",  # any address at our domain (the contract's rule)
        )
    ):
        await send(smtp_port, reply("X", message_id=f"<m{n}@example.net>"), [address])
    assert len(inbox_rows(lite)) == 5


async def test_oversized_message_gets_552(lite: Store) -> None:
    async for port in serve(lite, make_config(max_bytes=20_000)):
        big = reply("X") + b"x" * 60 + b"\r\n" + (b"y" * 70 + b"\r\n") * 400
        with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
            await send(port, big, [f"confirm@{DOMAIN}"])
        assert refused.value.code == 552
        await send(port, reply("X"), [f"confirm@{DOMAIN}"])  # the next one still goes in
    assert len(inbox_rows(lite)) == 1


async def test_storage_failure_answers_451_and_the_session_goes_on(lite: Store) -> None:
    calls: list[bytes] = []

    def broken(store: Store, raw: bytes, **kwargs: Any) -> int | None:
        calls.append(raw)
        if len(calls) == 1:
            raise RuntimeError("database is locked: /var/secret/path")
        return store_received(store, raw, **kwargs)

    async for port in serve(lite, make_config(), receive=broken):
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10)
        async with client:
            with pytest.raises(aiosmtplib.SMTPDataError) as failed:
                await client.sendmail("bob@example.net", [f"confirm@{DOMAIN}"], reply("X"))
            assert failed.value.code == 451
            assert "secret" not in failed.value.message
            # Same connection, same message: now stored.
            await client.sendmail("bob@example.net", [f"confirm@{DOMAIN}"], reply("X"))
    assert len(inbox_rows(lite)) == 1


async def test_duplicate_is_acknowledged_and_stored_once(lite: Store, smtp_port: int) -> None:
    raw = reply("X", message_id="<same@example.net>")
    for _ in range(2):
        errors, response = await send(smtp_port, raw, [f"confirm@{DOMAIN}"])
        assert errors == {} and response.startswith("2.0.0 OK")
    assert len(inbox_rows(lite)) == 1


async def test_stored_before_250(lite: Store, smtp_port: int) -> None:
    await send(smtp_port, reply("X", message_id="<durable@example.net>"), [f"confirm@{DOMAIN}"])
    # No processing has run: the message is in the inbox table, pending, as received.
    assert inbox_rows(lite) == [("pending", None)]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_message_key_matches_the_reader(name: str) -> None:
    from countersign.gateway.mail_in.reading import read_message

    raw = (CORPUS / name).read_bytes()
    reading = read_message(raw, recipients=[], envelope_sender=None)
    assert message_key(raw) == reading.message_id


async def test_intake_stores_concurrent_messages_together_and_a_failed_group_alone(
    lite: Store,
) -> None:
    groups: list[int] = []

    def fails_together(store: Store, arrivals: Sequence[Arrival]) -> list[int | None]:
        groups.append(len(arrivals))
        if len(arrivals) > 1:
            raise RuntimeError("one bad message in the group")
        return store_many(store, arrivals)

    intake = Intake(lite, fails_together, None)
    now = datetime.now(UTC)
    arrivals = [
        Arrival(reply(str(n), message_id=f"<group{n}@example.net>"), "smtp", None, (), now)
        for n in (1, 2, 3, 3)  # the last one twice: stored once
    ]
    stored = await asyncio.gather(*(intake.store_one(a) for a in arrivals))
    # Sessions waiting together are written together; the failed group is retried
    # message by message, and each still gets its own answer.
    assert groups == [4]
    assert all(isinstance(i, int) for i in stored[:3]) and stored[3] is None
    assert len(inbox_rows(lite)) == 3
