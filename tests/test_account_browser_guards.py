"""The account pages' guards seen in a real browser, on an in-process server with an
injected clock: a sign-in link works once and not after 15 minutes, a cookie is
dead after sign-out and useless on another account's request, a form posted
without its CSRF token is refused, a mail scanner opening every page and link
changes nothing, and a send limit is refused on the page with when it lifts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from countersign.gateway.web.app import create_app
from countersign.rules.contacts import ContactType
from countersign.store.db import Store
from countersign.store.migrate import upgrade
from countersign.store.models import Base
from countersign.workflow import requests
from countersign.workflow.directory import AccountChanges, add_account, add_service
from countersign.workflow.policy import Policy
from tests.account_support import DESKTOP, launch_browser
from tests.conftest import T0
from tests.web_support import Mailbox, free_port, running_server, web_config

ADMIN, NEW, TECH = "admin@example.com", "new@example.com", "tech@example.com"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Store, Mailbox, Clock]]:
    store = Store(f"sqlite:///{tmp_path / 'countersign.db'}")
    upgrade(store.engine)
    for email in (ADMIN, NEW, TECH):
        add_account(store, email, AccountChanges(zone="EU"))
    add_service(store, "example.com", ADMIN, ADMIN, ADMIN)
    add_service(store, "split.com", ADMIN, TECH, ADMIN)
    port = free_port()
    config = web_config(tmp_path, public_url=f"http://127.0.0.1:{port}")
    clock = Clock()
    with running_server(create_app(store, config, health=lambda: True, clock=clock), port) as url:
        yield url, store, Mailbox(store, config), clock
    store.dispose()


def ask_link(page: Any, url: str, address: str) -> str:
    page.goto(f"{url}/account")
    page.locator("#email").fill(address)
    page.locator("main form button[type=submit]").click()
    return str(page.locator("main").inner_text())


def latest_link(mailbox: Mailbox, address: str) -> str:
    from tests.account_support import SIGN_IN_LINK

    mail = mailbox.latest(address, kinds=("sign-in",))
    found = SIGN_IN_LINK.search(mail.text)
    assert found
    return found[1]


def snapshot(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    with store.read() as session:
        return {
            t.name: [tuple(r) for r in session.execute(select(t).order_by(*t.primary_key))]
            for t in Base.metadata.sorted_tables
        }


def test_links_sessions_and_forms_are_guarded(browser: Any, site: tuple[Any, ...]) -> None:
    url, store, mailbox, clock = site
    person = browser.new_context(viewport=DESKTOP)
    page = person.new_page()
    ask_link(page, url, ADMIN)
    link = latest_link(mailbox, ADMIN)
    page.goto(link)
    page.get_by_role("button", name="Continue").click()
    assert page.locator("h1").inner_text() == "My contacts"

    # Once only: the same link again, even in this browser, signs nobody in.
    page.goto(link)
    assert page.locator("h1").inner_text() == "This link no longer works"
    assert "already been used" in page.locator("main").inner_text()
    assert page.get_by_role("button", name="Continue").count() == 0

    # Not after 15 minutes.
    other = browser.new_context(viewport=DESKTOP)
    late = other.new_page()
    ask_link(late, url, NEW)
    stale = latest_link(mailbox, NEW)
    clock.now = T0 + timedelta(minutes=15)
    late.goto(stale)
    assert "has expired" in late.locator("main").inner_text()
    late.goto(f"{url}/account/requests")
    assert late.locator("h1").inner_text() == "Sign in"

    # Another account's request: not found, and nothing about it is shown.
    (theirs,) = requests.change_contacts(
        store, "split.com", TECH, {ContactType.TECH: NEW}, Policy()
    )
    page.goto(f"{url}/account/requests/{theirs['id']}")
    assert page.locator("h1").inner_text() == "Not found"
    assert "split.com" not in page.locator("main").inner_text()

    # A form posted without its CSRF token, with this browser's own cookies.
    before = snapshot(store)
    answer = person.request.post(f"{url}/account/contacts/example.com", form={"contactTech": NEW})
    assert answer.status == 403 and "This form has expired" in answer.text()
    assert snapshot(store) == before

    # After sign-out the cookie is dead, even copied into another browser.
    cookies = person.cookies()
    page.get_by_role("button", name="Sign out").click()
    assert page.locator("h1").inner_text() == "Signed out"
    thief = browser.new_context(viewport=DESKTOP)
    thief.add_cookies(cookies)
    stolen = thief.new_page()
    stolen.goto(f"{url}/account/contacts")
    assert stolen.locator("h1").inner_text() == "Sign in"
    for context in (person, other, thief):
        context.close()


def test_a_scanner_opening_every_page_and_link_changes_nothing(
    browser: Any, site: tuple[Any, ...]
) -> None:
    url, store, mailbox, _ = site
    person = browser.new_context(viewport=DESKTOP)
    page = person.new_page()
    ask_link(page, url, ADMIN)
    page.goto(latest_link(mailbox, ADMIN))
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("link", name="Modify contacts").first.click()
    page.get_by_label("New technical contact").fill(NEW)
    page.get_by_role("button", name="Confirm").click()
    ask_link(browser.new_context().new_page(), url, NEW)  # a link nobody has used
    mails = mailbox.deliver()
    links = [line for m in mails for line in m.text.split() if line.startswith("http")]
    assert len(links) == 3
    task = requests.list_requests(store, account=ADMIN)[0]["id"]
    pages = [f"{url}/account{p}" for p in ("", "/contacts", "/contacts/split.com",
             "/requests", "/requests?state=done", f"/requests/{task}")]  # fmt: skip
    before = snapshot(store)
    for visitor in (person, browser.new_context(java_script_enabled=True)):
        look = visitor.new_page()
        for target in pages + links:
            look.goto(target)
            look.wait_for_load_state("networkidle")
    assert snapshot(store) == before


def test_a_limit_is_refused_on_the_page_with_when_it_lifts(
    browser: Any, site: tuple[Any, ...]
) -> None:
    url, _, mailbox, clock = site
    page = browser.new_context(viewport=DESKTOP, locale="fr-FR").new_page()
    for _ in range(3):
        assert "Consultez vos emails" in ask_link(page, url, ADMIN)
    refused = ask_link(page, url, ADMIN)
    assert (
        "la limite de 3 emails de connexion vers une même adresse en une heure est atteinte ;"
        " elle sera levée le 2 novembre 2026 à 10:00 UTC" in refused
    )
    assert [m.kind for m in mailbox.deliver()] == ["sign-in"] * 3
    clock.now = T0 + timedelta(hours=1)
    assert "Consultez vos emails" in ask_link(page, url, ADMIN)
    assert [m.kind for m in mailbox.deliver()] == ["sign-in"]
