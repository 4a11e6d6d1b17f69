"""A real browser on a real server: open the link of a real confirm-request mail,
see the code filled in, press Accept, read the outcome; and a scanner that only
opens links changes nothing.

Needs Debian's chromium (`apt-get install chromium`; Playwright drives it, its
own browser download is not used).  Skips locally without it; fails under CI.
Set COUNTERSIGN_SCREENSHOT_DIR to keep screenshots of the pages (docs/ has one).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from countersign.config import Config
from countersign.gateway.web.app import create_app
from countersign.rules.contacts import ContactType
from countersign.store.db import Store
from countersign.workflow import requests, sweeps
from countersign.workflow.directory import AccountChanges, update_account
from countersign.workflow.policy import Policy
from tests.account_support import launch_browser
from tests.web_support import Mailbox, free_port, running_server, web_config

SHOTS = os.environ.get("COUNTERSIGN_SCREENSHOT_DIR")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


@pytest.fixture
def served(world: Store, tmp_path: Path) -> Iterator[tuple[str, Config]]:
    port = free_port()
    config = web_config(tmp_path, public_url=f"http://127.0.0.1:{port}")
    with running_server(create_app(world, config, health=lambda: True), port) as url:
        yield url, config


def test_accept_from_the_mail_link_in_a_browser(
    browser: Any,
    served: tuple[str, Config],
    world: Store,
    policy: Policy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url, config = served
    update_account(world, "new@example.com", AccountChanges(language="fr"))
    (made,) = requests.change_contacts(
        world, "example.com", "admin@example.com", {ContactType.TECH: "new@example.com"}, policy
    )
    task = made["id"]
    mailbox = Mailbox(world, config)
    admin, new = mailbox.latest("admin@example.com"), mailbox.latest("new@example.com")
    assert admin.link.startswith(f"{url}/confirm/{task}?token=")

    # A mail scanner: its own context, opens every link (scripts on), never presses a button.
    scanner = browser.new_context(java_script_enabled=True)
    for mail in (admin, new):
        page = scanner.new_page()
        page.goto(mail.link)
        page.wait_for_load_state("networkidle")
        assert scanner.request.head(mail.link).status == 200
        assert scanner.request.get(mail.link).status == 200
    scanner.close()
    untouched = requests.show(world, task)
    assert untouched["state"] == "validatingByCustomers"
    assert [v["decision"] for v in untouched["validators"]] == [None, None]

    # The asking admin, on a phone.
    phone = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-GB")
    page = phone.new_page()
    page.goto(admin.link)
    assert page.locator("h1").inner_text() == "Confirm a change of contacts"
    assert page.locator("input#token").input_value() == admin.code
    assert "technical contact" in page.locator("main").inner_text()
    _shot(page, "confirm-page.png")
    page.get_by_role("button", name="Accept").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Accepted: waiting for the other contact"
    assert "new@example.com" in page.locator("main").inner_text()
    phone.close()

    # The new contact reads French; pressing Accepter completes it.
    desk = browser.new_context(locale="fr-FR")
    page = desk.new_page()
    page.goto(new.link)
    assert page.locator("input#token").input_value() == new.code
    page.get_by_role("button", name="Accepter").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "Acceptée : le changement est en cours"
    desk.close()

    assert sweeps.apply_ready(world, policy) == 1  # the daemon's apply sweep
    assert requests.show(world, task)["state"] == "done"
    for record in caplog.records:
        assert admin.code not in record.getMessage() and new.code not in record.getMessage()


def _shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name), full_page=True)
