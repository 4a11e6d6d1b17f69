"""The account pages over HTTP (FastAPI's test client, the real store, the real
delivery into the Maildir): the sign-in link, sessions, CSRF, that a GET changes
nothing, and the limits on what anyone can make Countersign send, on the pages,
on the API and in the mail that goes (or does not), with an injected clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from countersign.config import ApiConfig, Config, LimitsConfig, MailConfig
from countersign.gateway.mail_out.delivery import Deliverer
from countersign.gateway.web.app import create_app
from countersign.rules.contacts import ContactType
from countersign.store.db import Store
from countersign.store.models import Base, WebSession
from countersign.workflow import requests
from countersign.workflow.policy import Policy
from tests.account_support import Mail, Maildir
from tests.conftest import T0
from tests.web_support import KEY

ADMIN, NEW, TECH = "admin@example.com", "new@example.com", "tech@example.com"
CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def make_config(tmp_path: Path, public_url: str = "http://127.0.0.1:8080", **limits: Any) -> Config:
    return Config(
        data_dir=str(tmp_path),
        mail=MailConfig(public_url=public_url),
        api=ApiConfig(
            keys={"panel": KEY, "reseller": "reseller-key"},
            key_limits={"reseller": "open_requests_per_account=1, mails_per_recipient=2"},
        ),
        limits=dataclasses.replace(LimitsConfig(), **limits),
    )


class Site:
    """One app on the store, its clock and its Maildir; browsers are test clients."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self.clock = Clock()
        self.app = create_app(store, config, health=lambda: True, clock=self.clock)
        self.maildir = Maildir(config.outbox_dir)
        self.clients: list[TestClient] = []

    def browser(self, base_url: str = "http://testserver") -> TestClient:
        client = TestClient(self.app, base_url=base_url)
        self.clients.append(client)
        return client

    def mail(self) -> list[Mail]:
        """Deliver what is due (the daemon's own delivery) and return the new mail."""
        deliverer = Deliverer(self.store, self.config)

        async def drain() -> None:
            while await deliverer.deliver_due():
                pass

        asyncio.run(drain())
        return self.maildir.fresh()

    def ask_link(self, client: TestClient, address: str) -> Any:
        form = client.get("/account")
        return client.post("/account/sign-in", data={"email": address, "csrf": csrf(form.text)})

    def sign_in(self, client: TestClient, address: str) -> None:
        assert self.ask_link(client, address).status_code == 200
        (mail,) = [m for m in self.mail() if m.kind == "sign-in"]
        path = local(mail.sign_in_link)
        page = client.get(path)
        done = client.post(path, data={"csrf": csrf(page.text)}, follow_redirects=False)
        assert done.status_code == 303, done.text


def csrf(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found[1]


def local(link: str) -> str:
    return "/" + link.split("/", 3)[3]


@pytest.fixture
def site(world: Store, tmp_path: Path) -> Iterator[Site]:
    made = Site(world, make_config(tmp_path))
    yield made
    for client in made.clients:
        client.close()


def every_link(mail: Mail) -> set[str]:
    """Every http(s) link in the mail, its text and its HTML."""
    html = mail.message.get_body(preferencelist=("html",))
    assert html is not None
    found = re.findall(r"https?://[^\s\"'<>]+", mail.text + str(html.get_content()))
    return {link.replace("&amp;", "&") for link in found}


def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    with store.read() as session:
        return {
            table.name: [
                tuple(row) for row in session.execute(select(table).order_by(*table.primary_key))
            ]
            for table in Base.metadata.sorted_tables
        }


# --- sign-in ---------------------------------------------------------------------------


def test_the_same_answer_for_an_unknown_address_and_no_mail_to_it(site: Site) -> None:
    client = site.browser()
    unknown = site.ask_link(client, "nobody@example.com")
    known = site.ask_link(client, ADMIN)
    assert unknown.status_code == known.status_code == 200
    strip = re.compile(r'name="csrf" value="[0-9a-f]+"')
    assert strip.sub("", unknown.text) == strip.sub("", known.text)
    assert "Check your email" in known.text
    (mail,) = site.mail()
    assert (mail.kind, mail.to) == ("sign-in", ADMIN)
    headers = mail.message
    assert headers.get_content_type() == "multipart/alternative"
    assert headers["Auto-Submitted"] == "auto-generated"
    assert str(headers["Message-ID"]).endswith("@countersign.localhost>")
    assert headers["X-Countersign-Request"] == "0"
    assert str(headers["Subject"]).startswith("[Countersign] ")
    assert headers["Reply-To"] is None
    html = headers.get_body(preferencelist=("html",))
    assert html is not None and mail.sign_in_link in html.get_content()
    # The token is not at rest: only its hash, and the outbox copy went with the mail.
    token = mail.sign_in_link.rsplit("/", 1)[1]
    assert token not in repr(snapshot(site.store))


def test_no_log_line_holds_a_token_or_a_cookie(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = site.browser()
    site.sign_in(client, ADMIN)
    client.get("/account/contacts")
    (link,) = [m.sign_in_link for m in site.maildir.mails if m.kind == "sign-in"]
    secrets = [link.rsplit("/", 1)[1], str(client.cookies.get("countersign_session"))]
    # Every logger but the test client's own (httpx logs each URL it asks for).
    lines = [r.getMessage() for r in caplog.records if not r.name.startswith("httpx")]
    assert any("/account/sign-in/<token>" in line for line in lines)
    assert not [line for line in lines for secret in secrets if secret in line]


def test_a_french_account_gets_french(site: Site) -> None:
    from countersign.workflow.directory import AccountChanges, update_account

    update_account(site.store, NEW, AccountChanges(language="fr"))
    site.ask_link(site.browser(), NEW)
    (mail,) = site.mail()
    assert "Lien de connexion" in mail.text and "Votre lien de connexion" in str(
        mail.message["Subject"]
    )


def test_a_link_works_once_and_not_after_15_minutes(site: Site) -> None:
    client = site.browser()
    site.ask_link(client, ADMIN)
    site.ask_link(client, ADMIN)
    first, second = (local(m.sign_in_link) for m in site.mail())
    form = client.get(first)
    assert form.status_code == 200 and "Continue" in form.text
    assert (
        client.post(first, data={"csrf": csrf(form.text)}, follow_redirects=False).status_code
        == 303
    )
    again = site.browser()
    page = again.get(first)
    assert page.status_code == 410 and "already been used" in page.text
    token = csrf(again.get("/account").text)
    refused = again.post(first, data={"csrf": token}, follow_redirects=False)
    assert refused.status_code == 410 and "countersign_session" not in refused.headers.get(
        "set-cookie", ""
    )

    site.clock.now = T0 + timedelta(minutes=15)
    late = site.browser()
    page = late.get(second)
    assert page.status_code == 410 and "expired" in page.text
    token = csrf(late.get("/account").text)
    assert late.post(second, data={"csrf": token}, follow_redirects=False).status_code == 410
    assert late.get("/account/contacts", follow_redirects=False).status_code == 303


def test_the_session_cookie(world: Store, tmp_path: Path) -> None:
    site = Site(world, make_config(tmp_path, public_url="https://panel.example.com"))
    client = site.browser("https://testserver")  # Secure cookies come back over https only
    site.ask_link(client, ADMIN)
    (mail,) = site.mail()
    path = local(mail.sign_in_link)
    done = client.post(path, data={"csrf": csrf(client.get(path).text)}, follow_redirects=False)
    cookie = done.headers["set-cookie"]
    assert cookie.startswith("countersign_session=")
    for part in ("HttpOnly", "Secure", "SameSite=lax", "Path=/account", "Max-Age=43200"):
        assert part in cookie, cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    with world.read() as session:
        hashes = list(session.scalars(select(WebSession.session_hash)))
    assert hashes == [hashlib.sha256(value.encode()).hexdigest()]
    assert value not in repr(snapshot(world))
    plain = Site(world, make_config(tmp_path / "plain"))
    assert "Secure" not in plain.browser().get("/account").headers["set-cookie"]


def test_a_cookie_stops_working_after_sign_out(site: Site) -> None:
    client = site.browser()
    site.sign_in(client, ADMIN)
    cookie = client.cookies.get("countersign_session")
    page = client.get("/account/contacts")
    assert page.status_code == 200 and "example.com" in page.text
    out = client.post("/account/sign-out", data={"csrf": csrf(page.text)})
    assert out.status_code == 200 and "Signed out" in out.text
    thief = site.browser()
    thief.cookies.set("countersign_session", str(cookie), path="/account")
    for path in ("/account/contacts", "/account/requests"):
        answer = thief.get(path, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].endswith("account")


def test_another_accounts_request_is_not_found(site: Site, policy: Policy) -> None:
    (theirs,) = requests.change_contacts(
        site.store, "split.com", TECH, {ContactType.TECH: NEW}, policy
    )
    client = site.browser()
    site.sign_in(client, ADMIN)
    page = client.get(f"/account/requests/{theirs['id']}")
    assert page.status_code == 404
    token = csrf(client.get("/account/requests").text)
    for act in ("decide", "resend", "cancel"):
        answer = client.post(
            f"/account/requests/{theirs['id']}/{act}",
            data={"csrf": token, "token": "X", "decision": "accept"},
        )
        assert answer.status_code == 404
    assert requests.show(site.store, theirs["id"])["state"] == "validatingByCustomers"
    assert f"Request {theirs['id']}" not in client.get("/account/requests").text


def test_a_form_without_its_csrf_token_is_refused(site: Site, policy: Policy) -> None:
    client = site.browser()
    client.get("/account")
    assert client.post("/account/sign-in", data={"email": ADMIN}).status_code == 403
    assert site.mail() == []
    site.sign_in(client, ADMIN)
    (made,) = requests.change_contacts(
        site.store, "example.com", ADMIN, {ContactType.BILLING: NEW}, policy, now=T0
    )
    site.mail()
    before = snapshot(site.store)
    posts = [
        ("/account/contacts/example.com", {"contactTech": NEW}),
        (f"/account/requests/{made['id']}/resend", {}),
        (f"/account/requests/{made['id']}/cancel", {}),
        (f"/account/requests/{made['id']}/decide", {"token": "X", "decision": "accept"}),
        ("/account/sign-out", {}),
    ]
    for path, form in posts:
        for token in (None, "0" * 64):
            data = form if token is None else {**form, "csrf": token}
            answer = client.post(path, data=data)
            assert answer.status_code == 403, path
            assert "This form has expired" in answer.text
    assert snapshot(site.store) == before
    assert site.mail() == []
    assert client.get("/account/contacts").status_code == 200  # still signed in


# --- a GET changes nothing ----------------------------------------------------------------


def test_no_get_of_any_page_or_mailed_link_changes_anything(site: Site) -> None:
    client = site.browser()
    site.sign_in(client, ADMIN)
    page = client.get("/account/contacts/example.com")
    made = client.post(
        "/account/contacts/example.com", data={"csrf": csrf(page.text), "contactTech": NEW}
    )
    assert made.status_code == 200 and "Your request is made" in made.text
    site.ask_link(site.browser(), NEW)  # a sign-in link not used yet
    mails = site.mail()
    assert sorted(m.kind for m in mails) == ["confirm-request", "confirm-request", "sign-in"]
    task = requests.list_requests(site.store, account=ADMIN)[0]["id"]
    before = snapshot(site.store)

    pages = ["/account", "/account/contacts", "/account/contacts?name=split",
             "/account/contacts/example.com", "/account/requests",
             "/account/requests?state=validatingByCustomers", f"/account/requests/{task}",
             f"/account/requests/{task}?note=resent", "/static/countersign.css"]  # fmt: skip
    links = sorted({local(link) for m in mails for link in every_link(m)})
    assert len(links) == 3  # two confirmation links and the sign-in link
    scanner = site.browser()
    for path in pages + links:
        for who in (client, scanner):
            assert who.get(path).status_code < 500
            assert who.head(path).status_code < 500
    assert snapshot(site.store) == before

    # The scanned link still signs in: its GET used nothing.
    (sign_in_link,) = [p for p in links if "/account/sign-in/" in p]
    person = site.browser()
    form = person.get(sign_in_link)
    answer = person.post(sign_in_link, data={"csrf": csrf(form.text)}, follow_redirects=False)
    assert answer.status_code == 303


# --- modify contacts ------------------------------------------------------------------------


def test_a_refusal_of_the_rules_is_shown_in_words(site: Site) -> None:
    client = site.browser()
    site.sign_in(client, TECH)
    listed = client.get("/account/contacts")
    assert "split.com" in listed.text and ">example.com<" not in listed.text
    form = client.get("/account/contacts/split.com")
    answer = client.post(
        "/account/contacts/split.com", data={"csrf": csrf(form.text), "contactAdmin": NEW}
    )
    assert answer.status_code == 400
    assert "Refused: not allowed for" in answer.text
    assert client.get("/account/contacts/example.com").status_code == 404
    assert requests.list_requests(site.store) == []


# --- limits ---------------------------------------------------------------------------------


def test_sign_in_mails_per_address_a_refusal_names_the_limit_and_it_lifts(site: Site) -> None:
    client = site.browser()
    for minute in range(3):
        site.clock.now = T0 + timedelta(minutes=minute)
        assert site.ask_link(client, ADMIN).status_code == 200
        assert site.ask_link(client, "nobody@example.com").status_code == 200
    site.clock.now = T0 + timedelta(minutes=30)
    for address in (ADMIN, "nobody@example.com"):  # the same refusal: no account is revealed
        refused = site.ask_link(client, address)
        assert refused.status_code == 429
        assert (
            "the limit of 3 sign-in emails to one address in an hour is reached;"
            " it lifts on 2 November 2026 at 10:00 UTC" in refused.text
        )
    assert [m.kind for m in site.mail()] == ["sign-in"] * 3  # by mail: three, not four
    site.clock.now = T0 + timedelta(hours=1)
    assert site.ask_link(client, ADMIN).status_code == 200
    assert [(m.kind, m.to) for m in site.mail()] == [("sign-in", ADMIN)]


def test_sign_in_mails_per_client(world: Store, tmp_path: Path) -> None:
    site = Site(world, make_config(tmp_path, sign_in_per_client=2))
    client = site.browser()
    assert site.ask_link(client, ADMIN).status_code == 200
    assert site.ask_link(client, NEW).status_code == 200
    refused = site.ask_link(client, TECH)
    assert refused.status_code == 429
    assert "the limit of 2 sign-in emails asked from one computer in an hour" in refused.text
    assert len(site.mail()) == 2
    site.clock.now = T0 + timedelta(hours=1)
    assert site.ask_link(client, TECH).status_code == 200


def modify(client: TestClient, service: str, **wanted: str) -> Any:
    form = client.get(f"/account/contacts/{service}")
    return client.post(f"/account/contacts/{service}", data={"csrf": csrf(form.text), **wanted})


def test_open_requests_per_account_on_the_page(world: Store, tmp_path: Path) -> None:
    site = Site(world, make_config(tmp_path, open_requests_per_account=2))
    client = site.browser()
    site.sign_in(client, ADMIN)
    assert "Your request is made" in modify(client, "example.com", contactTech=NEW).text
    assert "Your request is made" in modify(client, "split.com", contactTech=NEW).text
    refused = modify(client, "example.com", contactBilling=NEW)
    assert refused.status_code == 429
    assert (
        "the limit of 2 open requests asked by one account is reached;"
        " it lifts when one of your open requests closes" in refused.text
    )
    first = requests.list_requests(world, account=ADMIN)[0]["id"]
    page = client.get(f"/account/requests/{first}")
    cancelled = client.post(f"/account/requests/{first}/cancel", data={"csrf": csrf(page.text)})
    assert "The request is cancelled" in cancelled.text
    assert "Your request is made" in modify(client, "example.com", contactBilling=NEW).text


def test_mails_per_recipient_on_the_page_and_in_the_mail(world: Store, tmp_path: Path) -> None:
    site = Site(world, make_config(tmp_path, mails_per_recipient=2))
    client = site.browser()
    site.sign_in(client, ADMIN)
    assert "Your request is made" in modify(client, "example.com", contactTech=NEW).text
    task = requests.list_requests(world, account=ADMIN)[0]["id"]
    page = client.get(f"/account/requests/{task}")
    site.clock.now = T0 + timedelta(hours=2)
    assert (
        "A new email"
        in client.post(f"/account/requests/{task}/resend", data={"csrf": csrf(page.text)}).text
    )
    site.clock.now = T0 + timedelta(hours=3)
    refused = client.post(f"/account/requests/{task}/resend", data={"csrf": csrf(page.text)})
    assert refused.status_code == 429
    assert (
        "the limit of 2 validation emails to one address in a day is reached;"
        " it lifts on 3 November 2026 at 09:00 UTC" in refused.text
    )
    to_new = [m for m in site.mail() if m.to == NEW and m.kind == "confirm-request"]
    assert len(to_new) == 2  # by mail: the third never went
    site.clock.now = T0 + timedelta(days=1)
    site.sign_in(client, ADMIN)  # the 12-hour session has ended meanwhile
    page = client.get(f"/account/requests/{task}")
    lifted = client.post(f"/account/requests/{task}/resend", data={"csrf": csrf(page.text)})
    assert lifted.status_code == 200 and "A new email" in lifted.text
    assert len([m for m in site.mail() if m.to == NEW and m.kind == "confirm-request"]) == 1


def test_an_api_key_has_limits_only_when_given_some(site: Site) -> None:
    api = site.browser()
    limited = {"Authorization": "Bearer reseller-key"}
    own = {"Authorization": f"Bearer {KEY}"}
    body = {"askingAccount": ADMIN, "contactTech": NEW}
    assert (
        api.post("/v1/service/example.com/changeContact", json=body, headers=limited).status_code
        == 200
    )
    refused = api.post("/v1/service/split.com/changeContact", json=body, headers=limited)
    assert refused.status_code == 429
    assert refused.json()["code"] == "limit-reached"
    assert (
        "limit open_requests_per_account (1) reached for admin@example.com"
        in refused.json()["message"]
    )
    # The provider's own key has none; neither has the command line (no limits passed).
    assert (
        api.post("/v1/service/split.com/changeContact", json=body, headers=own).status_code == 200
    )
    requests.change_contacts(
        site.store, "example.com", ADMIN, {ContactType.BILLING: NEW}, Policy(), now=T0
    )

    # mails_per_recipient=2 for the limited key: admin@ (a validator of all three) has had
    # 3 code mails already today, new@ too.
    task = requests.list_requests(site.store, account=ADMIN)[0]["id"]
    site.clock.now = T0 + timedelta(hours=1)
    resend = api.post(f"/v1/contactChange/{task}/resendEmail", headers=limited)
    assert resend.status_code == 429 and resend.json()["code"] == "limit-reached"
    assert (
        resend.json()["message"] == "limit mails_per_recipient (2) reached for admin@example.com;"
        " it lifts at 2026-11-03T09:00:00Z"
    )
    assert int(resend.headers["Retry-After"]) > 0
    assert api.post(f"/v1/contactChange/{task}/resendEmail", headers=own).status_code == 200


def test_a_session_alone_never_decides_and_the_code_must_be_ones_own(site: Site) -> None:
    client = site.browser()
    site.sign_in(client, ADMIN)
    assert "Your request is made" in modify(client, "example.com", contactTech=NEW).text
    mails = {m.to: m for m in site.mail() if m.kind == "confirm-request"}
    task = requests.list_requests(site.store, account=ADMIN)[0]["id"]
    page = client.get(f"/account/requests/{task}")
    path, token = f"/account/requests/{task}/decide", csrf(page.text)
    without = client.post(path, data={"csrf": token, "decision": "accept"})
    assert without.status_code == 400 and "Enter the validation code" in without.text
    theirs = client.post(path, data={"csrf": token, "decision": "accept", "token": mails[NEW].code})
    assert theirs.status_code == 400 and "not your valid code" in theirs.text
    assert [v["decision"] for v in requests.show(site.store, task)["validators"]] == [None, None]

    data = {"csrf": token, "decision": "accept", "token": mails[ADMIN].code}
    accepted = client.post(path, data=data | {"comment": "Fine by me,\nthanks"})
    assert "still pending validation from new@example.com" in accepted.text
    from countersign.store.models import Event

    with site.store.read() as session:
        comments = list(session.scalars(select(Event).where(Event.kind == "comment")))
    assert [(c.actor, c.detail) for c in comments] == [(ADMIN, {"text": "Fine by me, thanks"})]
    again = client.post(path, data=data)  # a double submit: said so, counted as nothing
    assert again.status_code == 200 and "already given this answer" in again.text


def test_two_daemons_share_the_counts_and_a_race_passes_no_limit(
    world: Store, tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from countersign.store.models import SignInLink
    from countersign.workflow import sign_in
    from countersign.workflow.send_limits import LimitReached, SendLimits

    first, second = Site(world, make_config(tmp_path)), Site(world, make_config(tmp_path))
    assert first.ask_link(first.browser(), ADMIN).status_code == 200
    assert second.ask_link(second.browser(), ADMIN).status_code == 200
    assert first.ask_link(first.browser(), ADMIN).status_code == 200
    assert second.ask_link(second.browser(), ADMIN).status_code == 429  # counted together

    # Eight asks at once for one address, two left in the window: two pass, six are refused.
    limits = SendLimits(sign_in_per_address=5)
    start = Barrier(8)

    def ask(_: int) -> str:
        start.wait()
        try:
            sign_in.ask(world, NEW, None, T0, sign_in.SignInSettings(), limits)
        except LimitReached:
            return "refused"
        return "mailed"

    for _ in range(3):
        sign_in.ask(world, NEW, None, T0, sign_in.SignInSettings(), limits)
    with ThreadPoolExecutor(8) as pool:
        outcomes = sorted(pool.map(ask, range(8)))
    assert outcomes == ["mailed"] * 2 + ["refused"] * 6
    with world.read() as session:
        links = session.scalars(select(SignInLink).where(SignInLink.address == NEW)).all()
    assert len(links) == 5


def test_code_mails_count_by_the_address_they_go_to(world: Store, tmp_path: Path) -> None:
    from countersign.workflow.directory import AccountChanges, update_account

    for account in (NEW, TECH):  # two accounts, one mailbox
        update_account(world, account, AccountChanges(contact_email="Shared@Example.net"))
    update_account(world, ADMIN, AccountChanges(contact_email="zz-admin@example.com"))
    site = Site(world, make_config(tmp_path, mails_per_recipient=2))
    client = site.browser()
    site.sign_in(client, ADMIN)
    assert "Your request is made" in modify(client, "example.com", contactTech=NEW).text
    assert "Your request is made" in modify(client, "example.com", contactBilling=TECH).text
    refused = modify(client, "split.com", contactBilling=NEW)
    assert refused.status_code == 429
    assert "validation emails to one address in a day" in refused.text
    mails = [m.to for m in site.mail() if m.kind == "confirm-request"]
    assert sorted(mails) == ["shared@example.net"] * 2 + ["zz-admin@example.com"] * 2


def test_stale_sign_in_links_and_sessions_are_forgotten_and_live_ones_kept(
    world: Store,
) -> None:
    """The hourly sweep: a link the limits no longer count, and a session expired or
    signed out, go (each names an address or an account); what can still be used,
    or still counts against the limit, stays."""
    from countersign.store.models import SignInLink
    from countersign.workflow import sign_in
    from countersign.workflow.send_limits import LimitReached, SendLimits

    limits, settings = SendLimits(sign_in_per_address=2), sign_in.SignInSettings()
    old = T0 - timedelta(hours=13)
    assert sign_in.ask(world, ADMIN, None, old, settings, limits)
    signed_out, _ = sign_in.redeem(world, _token_of_last_link(world), old, settings)
    sign_in.sign_out(world, signed_out, old)
    for _ in range(2):  # two asks within the hour: the limit is reached
        assert sign_in.ask(world, NEW, None, T0, settings, limits)
    live, _ = sign_in.redeem(world, _token_of_last_link(world), T0, settings)

    sign_in.forget_stale(world, T0 + timedelta(minutes=1), limits)

    with world.read() as session:
        addresses = sorted(link.address for link in session.scalars(select(SignInLink)))
        sessions = session.scalars(select(WebSession)).all()
    assert addresses == [NEW, NEW]  # the old ask went, the two counted ones stay
    assert [s.session_hash for s in sessions] == [sign_in.secret_hash(live)]
    assert sign_in.signed_in(world, live, T0 + timedelta(minutes=1)) is not None
    with pytest.raises(LimitReached):  # forgetting did not lift the limit
        sign_in.ask(world, NEW, None, T0 + timedelta(minutes=2), settings, limits)


def _token_of_last_link(store: Store) -> str:
    """The newest sign-in link's token, read from the notice that carries it."""
    from countersign.store.models import OutboxMessage

    with store.read() as session:
        row = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.kind == "sign-in")
            .order_by(OutboxMessage.id.desc())
        ).first()
    assert row is not None
    return str(row.code)
