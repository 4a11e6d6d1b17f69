"""Limits on guessing codes cost only the guesser (issue 12, Show 1 and 2).

Real doors: the page and the API on a real uvicorn, SMTP on the daemon's
aiosmtpd over loopback, the command line as a process; the store on SQLite and
PostgreSQL.  An attacker hammers every open request with wrong codes from one
source per door; afterwards each validator's real code still works, from that
very source, and the attacker's wrong codes are refused as limited.
"""

from __future__ import annotations

import asyncio
import dataclasses
import smtplib
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx2 as httpx
import pytest
from sqlalchemy import func, select

from countersign.config import ApiConfig, Config, WebConfig
from countersign.gateway.mail_in.smtp import start_smtp
from countersign.gateway.mail_in.sweep import InboundSettings, read_inbound
from countersign.gateway.sources import ClientSources
from countersign.gateway.web.app import create_app
from countersign.rules.contacts import ContactType
from countersign.rules.readings import Reading
from countersign.rules.states import Decision
from countersign.store.db import Store
from countersign.store.models import Event, InboxMessage, WrongCode
from countersign.workflow import guess_limits, requests
from countersign.workflow.errors import BadCode
from countersign.workflow.inbox_batch import Received, process_due
from countersign.workflow.policy import Policy
from tests.cli_helpers import Cli, clean_env
from tests.mail_helpers import codes, inbox_rows, notice_ids, reply
from tests.web_support import KEY, free_port, running_server

ATTEMPTS = 1000
WRONG = "AAAAAAAA-BBBBBBBB-CCCCCCCC-DDDDDDDD"
PAGE_ATTACKER, API_ATTACKER = "203.0.113.7", "203.0.113.8"
SMTP_ATTACKER = "127.0.0.2"  # all of 127/8 is loopback on Linux: a second client address
DOMAIN = "countersign.localhost"
NOT_BASE32 = str.maketrans("0189", "QRST")  # a different wrong code each time


def read(item: Received) -> Reading:
    return read_inbound(item, InboundSettings())


def drain(store: Store, policy: Policy) -> None:
    while process_due(store, policy, read):
        pass


@pytest.fixture
def open_requests(world: Store, policy: Policy) -> list[int]:
    """Three open requests, six validators: one request per door that mail goes through."""
    made = [
        requests.change_contacts(
            world, "example.com", "admin@example.com", {ContactType.TECH: "new@example.com"}, policy
        ),
        requests.change_contacts(
            world,
            "example.com",
            "admin@example.com",
            {ContactType.BILLING: "bill@example.com"},
            policy,
        ),
        requests.change_contacts(
            world, "split.com", "tech@example.com", {ContactType.TECH: "new@example.com"}, policy
        ),
    ]
    return [int(m[0]["id"]) for m in made]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    # The proxy in front of the page and the API is this machine: it forwards the client.
    return Config(
        data_dir=str(tmp_path),
        web=WebConfig(trusted_proxies=("127.0.0.1",)),
        api=ApiConfig(keys={"panel": KEY}),
    )


@pytest.fixture
def web(world: Store, config: Config) -> Iterator[str]:
    with running_server(create_app(world, config, health=lambda: True), free_port()) as base:
        yield base


class SmtpDoor:
    """The daemon's SMTP server on a loop of its own, and a client bound to one address."""

    def __init__(self, store: Store, config: Config) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        started = asyncio.run_coroutine_threadsafe(
            start_smtp(store, config, host="127.0.0.1", port=0), self.loop
        )
        self.server = started.result(30)
        self.port = int(self.server.sockets[0].getsockname()[1])

    def client(self, source: str) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, timeout=60, source_address=(source, 0))

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def smtp(world: Store, config: Config) -> Iterator[SmtpDoor]:
    door = SmtpDoor(world, config)
    yield door
    door.close()


def send(client: smtplib.SMTP, raw: bytes, to: str) -> str:
    """One message; "250" or the refusal's code and text."""
    try:
        client.sendmail("someone@example.net", [to], raw)
    except smtplib.SMTPRecipientsRefused as refused:
        code, text = refused.recipients[to]
        return f"{code} {text.decode()}"
    return "250"


def attack_page(base: str, ids: list[int]) -> Counter[int]:
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=base, headers={"X-Forwarded-For": PAGE_ATTACKER}) as client:
        for attempt in range(ATTEMPTS):
            target = ids[attempt % len(ids)]
            page = client.post(f"/confirm/{target}", data={"token": WRONG, "decision": "accept"})
            statuses[page.status_code] += 1
        # Opening links with wrong codes is limited too, and says why.
        look = client.get(f"/confirm/{ids[0]}?token={WRONG}")
        assert look.status_code == 429 and "from your address" in look.text
    return statuses


def attack_api(base: str, ids: list[int]) -> Counter[int]:
    statuses: Counter[int] = Counter()
    headers = {"Authorization": f"Bearer {KEY}", "X-Forwarded-For": API_ATTACKER}
    with httpx.Client(base_url=base, headers=headers) as client:
        for attempt in range(ATTEMPTS):
            target = ids[attempt % len(ids)]
            answer = client.post(f"/v1/contactChange/{target}/accept", json={"token": WRONG})
            statuses[answer.status_code] += 1
    return statuses


def attack_smtp(store: Store, policy: Policy, door: SmtpDoor, ids: list[int]) -> Counter[str]:
    """Wrong codes in the reply address, forged From, processed as they come."""
    answers: Counter[str] = Counter()
    client = door.client(SMTP_ATTACKER)
    for attempt in range(ATTEMPTS):
        if attempt and attempt % 200 == 0:  # a relay's connection is not forever
            client.quit()
            client = door.client(SMTP_ATTACKER)
        wrong = f"AAAAAAAA-BBBBBBBB-CCCCCCCC-{attempt:08d}".translate(NOT_BASE32)
        raw = reply(wrong, request_id=ids[attempt % len(ids)])
        answers[send(client, raw, f"confirm+{wrong}@{DOMAIN}").split(" ")[0]] += 1
        if attempt % 20 == 19:
            drain(store, policy)  # the daemon's inbox sweep, which counts the wrong codes
    client.quit()
    drain(store, policy)
    return answers


def test_a_thousand_wrong_codes_per_door_limit_the_source_and_no_validator(
    world: Store,
    policy: Policy,
    config: Config,
    open_requests: list[int],
    web: str,
    smtp: SmtpDoor,
    tmp_path: Path,
) -> None:
    ids = open_requests
    genuine = {i: codes(world, i) for i in ids}
    limit = policy.bad_code_limit

    page = attack_page(web, ids)
    api = attack_api(web, ids)
    mail = attack_smtp(world, policy, smtp, ids)
    print(f"page: {dict(page)}  api: {dict(api)}  smtp: {dict(mail)}")

    # Each attacking source had its few wrong codes answered, then was refused.
    assert page == {400: limit, 429: ATTEMPTS - limit}
    assert api == {400: limit, 429: ATTEMPTS - limit}
    # SMTP counts when it reads, after the 250: a few more get in before it knows.
    assert mail["450"] >= ATTEMPTS - limit - 20 and mail["250"] + mail["450"] == ATTEMPTS
    refused_mail = Counter(outcome for _, outcome in inbox_rows(world))
    assert refused_mail["refused:unknown-code"] == limit
    assert refused_mail["refused:locked"] == mail["250"] - limit
    with world.read() as session:
        counted = Counter(session.scalars(select(WrongCode.source)))
        bad_events = session.scalar(
            select(func.count()).select_from(Event).where(Event.kind == "bad-code")
        )
        guesses_kept = [len(r) for r in session.scalars(select(InboxMessage.raw))]
    assert counted == {PAGE_ATTACKER: limit, API_ATTACKER: limit, SMTP_ATTACKER: limit}
    assert bad_events == 3 * limit  # the audit trail does not grow with the attack
    assert max(guesses_kept) < 1000  # guesses kept as their headers, not in full

    # Now every genuine code, from the attacker's own sources, on every door.
    tech, billing, split = ids
    with httpx.Client(base_url=web, headers={"X-Forwarded-For": PAGE_ATTACKER}) as client:
        for account in ("admin@example.com", "new@example.com"):
            form = {"token": genuine[tech][account], "decision": "accept"}
            assert client.post(f"/confirm/{tech}", data=form).status_code == 200
    headers = {"Authorization": f"Bearer {KEY}", "X-Forwarded-For": API_ATTACKER}
    with httpx.Client(base_url=web, headers=headers) as client:
        token = genuine[billing]["admin@example.com"]
        answer = client.post(f"/v1/contactChange/{billing}/accept", json={"token": token})
        assert answer.status_code == 200, answer.text
    cli = Cli(tmp_path, clean_env(COUNTERSIGN_DATABASE_URL=world.url))
    cli.ok("accept", str(billing), genuine[billing]["bill@example.com"])  # never limited
    client = smtp.client(SMTP_ATTACKER)
    threads = notice_ids(world, split)
    for account in ("tech@example.com", "new@example.com"):
        code = genuine[split][account]
        raw = reply(code, sender=account, request_id=split, in_reply_to=threads[account])
        assert send(client, raw, f"confirm+{code}@{DOMAIN}") == "250"
    client.quit()
    drain(world, policy)
    for request_id in ids:
        shown = requests.show(world, request_id)
        # Completed by mail, split's was applied in the batch; the others await the sweep.
        assert shown["state"] == ("done" if request_id == split else "checkValidity"), shown
    # And the attackers are still limited.
    with pytest.raises(BadCode, match="your address"):
        requests.decide(world, WRONG, Decision.ACCEPT, policy, source=PAGE_ATTACKER)


def test_five_forged_from_mails_do_not_stop_the_real_reply(
    world: Store, policy: Policy, open_requests: list[int], smtp: SmtpDoor
) -> None:
    """Show 2: the old lock was keyed on the From header, which anyone can write."""
    tech = open_requests[0]
    client = smtp.client("127.0.0.1")
    for attempt in range(5):
        forged = reply(
            WRONG, sender="admin@example.com", request_id=tech, first_line=f"Accept ({attempt})"
        )
        assert send(client, forged, f"confirm+{WRONG}@{DOMAIN}") == "250"
    drain(world, policy)
    code = codes(world, tech)["admin@example.com"]
    thread = notice_ids(world, tech)["admin@example.com"]
    real = reply(code, sender="admin@example.com", request_id=tech, in_reply_to=thread)
    assert send(client, real, f"confirm+{code}@{DOMAIN}") == "250"
    client.quit()
    drain(world, policy)
    assert [o for _, o in inbox_rows(world)] == ["refused:unknown-code"] * 5 + ["accepted"]
    admin = requests.show(world, tech)["validators"][0]
    assert (admin["account"], admin["decision"], admin["via"]) == (
        "admin@example.com",
        "accept",
        "smtp",
    )


def test_a_double_submit_is_already_accepted_never_wrong(
    world: Store, policy: Policy, open_requests: list[int], web: str
) -> None:
    """Twenty simultaneous POSTs of one valid code: one acts, the rest say it is done."""
    tech = open_requests[0]
    code = codes(world, tech)["admin@example.com"]

    async def twenty() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=web) as client:
            form = {"token": code, "decision": "accept"}
            return list(
                await asyncio.gather(
                    *(client.post(f"/confirm/{tech}", data=form) for _ in range(20))
                )
            )

    pages = asyncio.run(twenty())
    assert [p.status_code for p in pages] == [200] * 20
    waiting = [p for p in pages if "Accepted: waiting for the other contact" in p.text]
    already = [p for p in pages if "You have already accepted this request" in p.text]
    assert (len(waiting), len(already)) == (1, 19)
    with world.read() as session:
        assert session.scalar(select(func.count()).select_from(WrongCode)) == 0
        accepts = session.scalar(
            select(func.count()).select_from(Event).where(Event.kind == "accept")
        )
    assert accepts == 1


def test_the_request_ceiling_refuses_wrong_codes_only(
    world: Store, open_requests: list[int]
) -> None:
    """Many sources on one request: past the ceiling wrong codes are refused, the real one works."""
    tech = open_requests[0]
    strict = dataclasses.replace(Policy(), bad_code_limit=100, bad_code_request_limit=5)
    refusals = []
    for n in range(7):
        try:
            requests.decide(
                world, WRONG, Decision.ACCEPT, strict, request_id=tech, source=f"198.51.100.{n}"
            )
        except BadCode as bad:
            refusals.append(bad.code)
    assert refusals == ["unknown-code"] * 5 + ["locked"] * 2
    code = codes(world, tech)["new@example.com"]
    result = requests.decide(
        world, code, Decision.ACCEPT, strict, request_id=tech, source="198.51.100.9"
    )
    assert result.account == "new@example.com"


def test_the_window_slides(world: Store, open_requests: list[int], t0: datetime) -> None:
    policy = Policy(bad_code_limit=2, bad_code_window=timedelta(minutes=10))

    def wrong(minutes: int) -> str:
        try:
            requests.decide(
                world,
                WRONG,
                Decision.ACCEPT,
                policy,
                source="192.0.2.1",
                now=t0 + timedelta(minutes=minutes),
            )
        except BadCode as bad:
            return bad.code
        raise AssertionError("a wrong code was taken")

    assert [wrong(m) for m in (0, 1, 2, 11, 12, 13)] == [
        "unknown-code",
        "unknown-code",
        "locked",
        "unknown-code",
        "unknown-code",
        "locked",
    ]
    # The command line is the operator's: never counted, never limited.
    assert all(
        _cli_wrong(world, policy, t0 + timedelta(minutes=13)) == "unknown-code" for _ in range(5)
    )


def _cli_wrong(world: Store, policy: Policy, now: datetime) -> str:
    try:
        requests.decide(world, WRONG, Decision.ACCEPT, policy, now=now)
    except BadCode as bad:
        return bad.code
    raise AssertionError("a wrong code was taken")


@pytest.mark.parametrize(
    ("peer", "forwarded", "source"),
    [
        ("127.0.0.1", ["203.0.113.7"], "203.0.113.7"),
        ("127.0.0.1", ["6.6.6.6, 203.0.113.7"], "203.0.113.7"),  # the left is the sender's
        ("127.0.0.1", ["203.0.113.7, 127.0.0.1"], "203.0.113.7"),  # a chain of our proxies
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", ["junk"], "127.0.0.1"),
        ("192.0.2.9", ["203.0.113.7"], "192.0.2.9"),  # not a trusted proxy: header ignored
        ("2001:db8:1:2:3:4:5:6", [], "2001:db8:1:2::/64"),  # one subscriber's IPv6 network
        ("::ffff:192.0.2.1", [], "192.0.2.1"),
    ],
)
def test_the_source_of_a_request(peer: str, forwarded: list[str], source: str) -> None:
    from starlette.requests import Request

    headers = [(b"x-forwarded-for", f.encode()) for f in forwarded]
    scope = {"type": "http", "client": (peer, 5000), "headers": headers}
    sources = ClientSources.from_config(Config(web=WebConfig(trusted_proxies=("127.0.0.0/8",))))
    assert sources.of(Request(scope)) == source
    assert guess_limits.source_key(peer) == ClientSources().of(Request(scope))


def test_a_message_names_a_few_reply_addresses_at_most(world: Store, smtp: SmtpDoor) -> None:
    client = smtp.client("127.0.0.1")
    client.ehlo()
    assert client.mail("someone@example.net")[0] == 250
    wanted = [f"confirm+{WRONG[:-1]}{letter}@{DOMAIN}" for letter in "ABCDEFG"]
    answers = [client.rcpt(address) for address in wanted]
    assert [code for code, _ in answers] == [250] * 3 + [452] * 4
    assert b"Too many confirmation addresses" in answers[3][1]
    assert client.rcpt(f"postmaster@{DOMAIN}")[0] == 250  # other addresses are not capped so
    client.quit()
