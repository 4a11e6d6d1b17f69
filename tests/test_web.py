"""The link's page, /healthz and /metrics through FastAPI's test client, and the
bad-code lock that mail, the page and the API share."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from countersign.config import Config, InboundConfig, WebConfig
from countersign.gateway.web.app import create_app
from countersign.gateway.web.page import preferred_language
from countersign.rules.contacts import ContactType
from countersign.runtime import StartupError, run_daemon
from countersign.store.db import Store
from countersign.store.models import Event, OutboxMessage, Service, Validator
from countersign.workflow import requests
from countersign.workflow.directory import AccountChanges, add_service, update_account
from countersign.workflow.policy import Policy
from tests.web_support import Mailbox, free_port, web_config

TECH = ContactType.TECH


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return web_config(tmp_path)


@pytest.fixture
def client(world: Store, config: Config) -> Iterator[TestClient]:
    with TestClient(create_app(world, config, health=lambda: True)) as made:
        yield made


@pytest.fixture
def mailbox(world: Store, config: Config) -> Mailbox:
    return Mailbox(world, config)


@pytest.fixture
def task(world: Store, policy: Policy) -> int:
    """admin@ names new@ technical contact of example.com; new@ reads French."""
    update_account(world, "new@example.com", AccountChanges(language="fr"))
    (made,) = requests.change_contacts(
        world, "example.com", "admin@example.com", {TECH: "new@example.com"}, policy
    )
    return int(made["id"])


def snapshot(store: Store) -> tuple[int, int, list[str | None]]:
    """What a look must never change: events, notices, decisions."""
    with store.read() as session:
        events = session.scalar(select(func.count()).select_from(Event)) or 0
        notices = session.scalar(select(func.count()).select_from(OutboxMessage)) or 0
        decisions = list(session.scalars(select(Validator.decision).order_by(Validator.id)))
    return events, notices, decisions


def local(link: str) -> str:
    """The link's path and query, for the test client."""
    return "/" + link.split("://", 1)[1].split("/", 1)[1]


# --- GET: shows, never acts --------------------------------------------------------------------


def test_the_link_shows_the_request_in_the_validators_language(
    client: TestClient, mailbox: Mailbox, task: int
) -> None:
    mail = mailbox.latest("new@example.com")
    page = client.get(local(mail.link))
    assert page.status_code == 200
    html = page.text
    assert '<html lang="fr">' in html
    assert "Confirmer un changement de contacts" in html
    assert "contact technique" in html
    for shown in ("example.com", "admin@example.com", "new@example.com"):
        assert shown in html
    assert f'value="{mail.code}"' in html
    assert ">Accepter</button>" in html and ">Refuser</button>" in html
    assert "<script" not in html
    english = client.get(local(mailbox.latest("admin@example.com").link)).text
    assert "Confirm a change of contacts" in english and "technical contact" in english
    assert "Expires" in english


def test_guard_headers(client: TestClient, mailbox: Mailbox, task: int) -> None:
    for response in (
        client.get(local(mailbox.latest("new@example.com").link)),
        client.get("/healthz"),
        client.get("/v1/contactChange"),
    ):
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["Cache-Control"] == "no-store"
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp
        assert "form-action 'self'" in csp


def test_without_a_token_an_empty_field_and_no_details(client: TestClient, task: int) -> None:
    html = client.get(f"/confirm/{task}").text
    assert "Enter the validation code from your email." in html
    assert 'value=""' in html
    # Ids are sequential: who is changing what is shown to code holders only.
    assert "admin@example.com" not in html and "example.com" not in html.replace("countersign", "")
    french = client.get(f"/confirm/{task}", headers={"Accept-Language": "fr-CA,fr;q=0.9,en;q=0.5"})
    assert "Saisissez le code de validation" in french.text


def test_a_dead_token_says_so_without_details(
    client: TestClient, mailbox: Mailbox, task: int
) -> None:
    html = client.get(f"/confirm/{task}?token=AAAAAAAA-BBBBBBBB-CCCCCCCC-DDDDDDDD").text
    assert "no longer works" in html and 'value=""' in html
    assert "admin@example.com" not in html
    other_request = client.get(
        local(mailbox.latest("new@example.com").link).replace(f"/{task}?", "/999?")
    )
    assert other_request.status_code == 200 and "no longer works" in other_request.text
    assert "new@example.com" not in other_request.text


def test_gets_and_heads_change_nothing(
    client: TestClient, mailbox: Mailbox, world: Store, task: int
) -> None:
    links = [mailbox.latest(to).link for to in ("admin@example.com", "new@example.com")]
    before = snapshot(world)
    for link in links:
        for _ in range(3):
            assert client.get(local(link)).status_code == 200
            assert client.head(local(link)).status_code == 200
    client.get(f"/confirm/{task}?token=WRONG")
    client.get(f"/confirm/{task}?token=AAAAAAAA-BBBBBBBB-CCCCCCCC-DDDDDDDD&decision=accept")
    assert snapshot(world) == before == (before[0], before[1], [None, None])


def test_ids_that_cannot_be_ids_are_404_pages(client: TestClient) -> None:
    for path in ("/confirm/abc", "/confirm/99999999999999999999", "/confirm/0", "/confirm/-1"):
        page = client.get(path)
        assert page.status_code == 404 and "No such request" in page.text
        posted = client.post(path, data={"token": "X", "decision": "accept"})
        assert posted.status_code == 404 and "No such request" in posted.text


def test_an_unknown_id_answers_as_a_request_does_without_its_code(
    client: TestClient, mailbox: Mailbox, task: int
) -> None:
    # Ids are sequential: the page must not say which exist to whoever counts them.
    wrong = "AAAAAAAA-BBBBBBBB-CCCCCCCC-DDDDDDDD"
    for suffix in ("", f"?token={wrong}"):
        known, unknown = client.get(f"/confirm/{task}{suffix}"), client.get(f"/confirm/999{suffix}")
        assert known.status_code == unknown.status_code == 200
        assert without_id(known.text) == without_id(unknown.text)
    form = {"token": wrong, "decision": "accept"}
    known, unknown = (
        client.post(f"/confirm/{task}", data=form),
        client.post("/confirm/999", data=form),
    )
    assert known.status_code == unknown.status_code == 400
    assert without_id(known.text) == without_id(unknown.text)


def without_id(html: str) -> str:
    """The page with the request number it was asked for left out."""
    return re.sub(r'(#|action="|href="|/confirm/)\d+', r"\1ID", html)


# --- POST: acts through the workflow ---------------------------------------------------------


def test_accept_then_accept_then_again(
    client: TestClient, mailbox: Mailbox, world: Store, task: int
) -> None:
    admin = mailbox.latest("admin@example.com").code
    first = client.post(f"/confirm/{task}", data={"token": admin, "decision": "accept"})
    assert first.status_code == 200
    assert "Accepted: waiting for the other contact" in first.text
    assert "new@example.com" in first.text
    assert admin not in first.text
    second = client.post(
        f"/confirm/{task}",
        data={"token": mailbox.latest("new@example.com").code, "decision": "accept"},
    )
    assert second.status_code == 200
    assert "Acceptée : le changement est en cours" in second.text
    again = client.post(f"/confirm/{task}", data={"token": admin, "decision": "accept"})
    # The same answer twice (a double click): said to be done, never counted as wrong.
    assert again.status_code == 200
    assert "You have already accepted this request" in again.text
    changed = client.post(f"/confirm/{task}", data={"token": admin, "decision": "decline"})
    assert changed.status_code == 409
    assert "This request is already accepted, being checked" in changed.text
    shown = requests.show(world, task)
    assert [v["via"] for v in shown["validators"]] == ["web", "web"]


def test_decline(client: TestClient, mailbox: Mailbox, world: Store, task: int) -> None:
    code = mailbox.latest("admin@example.com").code
    page = client.post(f"/confirm/{task}", data={"token": code, "decision": "decline"})
    assert page.status_code == 200 and '<h1 class="ok">Declined</h1>' in page.text
    assert requests.show(world, task)["state"] == "refused"


def test_why_nothing_happened(
    client: TestClient, mailbox: Mailbox, world: Store, task: int
) -> None:
    code = mailbox.latest("admin@example.com").code
    wrong = client.post(f"/confirm/{task}", data={"token": "AAAA", "decision": "accept"})
    assert wrong.status_code == 400 and "does not work for this request" in wrong.text
    empty = client.post(f"/confirm/{task}", data={"token": " ", "decision": "accept"})
    assert empty.status_code == 400 and "Enter the validation code" in empty.text
    odd = client.post(f"/confirm/{task}", data={"token": code, "decision": "maybe"})
    assert odd.status_code == 400 and "Press one of the two buttons" in odd.text
    with world.write() as session:
        request = requests.load_request(session, task)
        request.expires_at = request.date_request
    expired = client.post(f"/confirm/{task}", data={"token": code, "decision": "accept"})
    assert expired.status_code == 409 and "This request has expired" in expired.text


def test_values_are_escaped(
    client: TestClient, world: Store, mailbox: Mailbox, policy: Policy
) -> None:
    # Names and addresses cannot hold markup any more (rules/names.py); a row written
    # before that check, or by hand, is still escaped on the page.
    add_service(
        world, "evil.example", "admin@example.com", "admin@example.com", "admin@example.com"
    )
    with world.write() as session:
        session.execute(
            update(Service)
            .where(Service.domain == "evil.example")
            .values(domain="<i>evil</i>.example")
        )
    requests.change_contacts(
        world, "<i>evil</i>.example", "admin@example.com", {TECH: "new@example.com"}, policy
    )
    html = client.get(local(mailbox.latest("admin@example.com").link)).text
    assert "<i>evil</i>" not in html and "&lt;i&gt;evil&lt;/i&gt;.example" in html


def test_no_code_in_any_log_line(
    client: TestClient, mailbox: Mailbox, task: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    codes = [mailbox.latest(to).code for to in ("admin@example.com", "new@example.com")]
    client.get(f"/confirm/{task}?token={codes[0]}")
    client.post(f"/confirm/{task}", data={"token": codes[0], "decision": "accept"})
    client.post(f"/confirm/{task}", data={"token": codes[0], "decision": "accept"})
    client.post(f"/confirm/{task}", data={"token": codes[1], "decision": "decline"})
    # The server's lines: the test client's own (httpx2) logs the URL it asked for.
    lines = [r.getMessage() for r in caplog.records if not r.name.startswith("httpx")]
    assert any(f"POST /confirm/{task} 200" in line for line in lines)
    assert not [line for line in lines if any(code in line for code in codes)]
    assert not [line for line in lines if "token=" in line]


def test_accept_language() -> None:
    assert preferred_language(None) == "en"
    assert preferred_language("fr-FR,fr;q=0.9") == "fr"
    assert preferred_language("de, fr;q=0.5, en;q=0.4") == "fr"
    assert preferred_language("en;q=0.9, fr;q=0.8") == "en"
    assert preferred_language("fr;q=bogus, en") == "en"


# --- health and metrics --------------------------------------------------------------------------


def test_healthz(world: Store, config: Config, tmp_path: Path) -> None:
    with TestClient(create_app(world, config, health=lambda: True)) as client:
        assert client.get("/healthz").json() == {"status": "ok", "store": True, "loops": True}
    with TestClient(create_app(world, config, health=lambda: False)) as client:
        failing = client.get("/healthz")
        assert failing.status_code == 503 and failing.json()["loops"] is False
    broken = Store(f"sqlite:///{tmp_path}")  # a directory: the database cannot open
    with TestClient(create_app(broken, config, health=lambda: True)) as client:
        failing = client.get("/healthz")
        assert failing.status_code == 503 and failing.json()["store"] is False
    broken.dispose()


def test_metrics(client: TestClient, mailbox: Mailbox, task: int) -> None:
    text = client.get("/metrics").text
    assert 'countersign_requests{state="validatingByCustomers"} 1.0' in text
    assert 'countersign_requests{state="done"} 0.0' in text
    assert "countersign_outbox_depth 2.0" in text
    assert "countersign_inbox_depth 0.0" in text
    code = mailbox.latest("admin@example.com").code
    before = _sample(client, 'countersign_commands_total{channel="web",decision="accept"}')
    client.post(f"/confirm/{task}", data={"token": code, "decision": "accept"})
    after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    assert (
        _sample(client, 'countersign_commands_total{channel="web",decision="accept"}') == before + 1
    )
    for name in (
        "countersign_mail_received_total",
        "countersign_mail_sent_total",
        "countersign_delivery_latency_seconds",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in after.text


def _sample(client: TestClient, series: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


# --- in the daemon ---------------------------------------------------------------------------------


def _daemon_config(tmp_path: Path, web_port: int) -> Config:
    return Config(
        data_dir=str(tmp_path),
        web=WebConfig(host="127.0.0.1", port=web_port),
        inbound=InboundConfig(smtp_port=free_port()),
    )


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status), response.read()


async def test_the_daemon_serves_the_web_on_its_own_loop(tmp_path: Path) -> None:
    port = free_port()
    stop = asyncio.Event()
    daemon = asyncio.create_task(run_daemon(_daemon_config(tmp_path, port), stop))
    for _ in range(200):
        try:
            status, body = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/healthz")
            break
        except OSError:
            await asyncio.sleep(0.05)
    else:
        raise AssertionError("the daemon's web server never answered")
    assert status == 200 and b'"loops":true' in body
    stop.set()
    await asyncio.wait_for(daemon, 20)


def test_a_web_port_in_use_stops_the_daemon_with_one_line(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # As `serve` runs it; the command turns StartupError into one line and exit 1.
        with pytest.raises(StartupError) as failed:
            asyncio.run(run_daemon(_daemon_config(tmp_path, port), asyncio.Event()))
    assert f"web server cannot listen on 127.0.0.1:{port}" in str(failed.value)
    assert "\n" not in str(failed.value)


def test_reopening_a_used_link_is_not_a_wrong_code(
    client: TestClient, mailbox: Mailbox, world: Store, task: int
) -> None:
    link = local(mailbox.latest("admin@example.com").link)
    code = mailbox.latest("admin@example.com").code
    assert (
        client.post(f"/confirm/{task}", data={"token": code, "decision": "accept"}).status_code
        == 200
    )
    for _ in range(15):  # more than inbound.bad_code_limit: the holder's own code, used
        page = client.get(link)
        assert page.status_code == 200 and "no longer works" in page.text
    wrong = f"/confirm/{task}?token=AAAAAAAA-BBBBBBBB-CCCCCCCC-DDDDDDDD"
    assert [client.get(wrong).status_code for _ in range(11)] == [200] * 10 + [429]
