"""The reference text walked end to end in a real browser against the real daemon:
sign in by the mailed link, My contacts, Modify contacts, My requests, accept on the
page with the code from the mail, Resend request, the other contact accepting by
replying to the mail over SMTP, and My requests showing done.

Debian's Chromium under Playwright (skips locally without it; fails under CI).
COUNTERSIGN_SCREENSHOT_DIR keeps screenshots of the pages on the way.
"""

from __future__ import annotations

import os
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from countersign.store.db import Store
from countersign.workflow import requests
from countersign.workflow.directory import AccountChanges, add_account, add_service
from tests.account_support import DESKTOP, PHONE, Maildir, launch_browser, shot, within_screen
from tests.cli_helpers import Cli, clean_env, fresh_database
from tests.servers.dovecot import free_port
from tests.test_cli import stop
from tests.test_mail_e2e import reply_to

ADMIN, NEW = "admin@example.com", "new@example.com"
SHOTS = (
    Path(os.environ["COUNTERSIGN_SCREENSHOT_DIR"])
    if os.environ.get("COUNTERSIGN_SCREENSHOT_DIR")
    else None
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[str, int, Store, Maildir]]:
    """`countersign serve` with its web page, SMTP in and a Maildir outbox."""
    data = tmp_path / "var"
    url = fresh_database(data / "countersign.db")
    store = Store(url)
    add_account(store, ADMIN, AccountChanges(zone="EU"))
    add_account(store, NEW, AccountChanges(zone="EU", language="fr"))
    add_service(store, "example.com", ADMIN, ADMIN, ADMIN)
    add_service(store, "example.org", ADMIN, ADMIN, ADMIN)
    web, smtp = free_port(), free_port()
    cli = Cli(tmp_path, clean_env(COUNTERSIGN_DATA_DIR=str(data)))
    process = cli.start(
        "serve",
        COUNTERSIGN_SCHEDULER_SWEEP_EVERY="1s",
        COUNTERSIGN_INBOUND_SMTP_PORT=str(smtp),
        COUNTERSIGN_WEB_PORT=str(web),
        COUNTERSIGN_MAIL_PUBLIC_URL=f"http://127.0.0.1:{web}",
    )
    base = f"http://127.0.0.1:{web}"
    try:
        _wait_listening(web, process)
        yield base, smtp, store, Maildir(data / "outbox")
    finally:
        code, log = stop(process)
        store.dispose()
    assert code == 0, log
    assert "Traceback" not in log, log


def _wait_listening(port: int, process: Any) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail("the daemon's web server did not listen within 30s")


def sign_in(page: Any, base: str, address: str, mail: Maildir) -> None:
    page.goto(f"{base}/account")
    page.get_by_label("Email").fill(address)
    page.locator("form button[type=submit]").click()
    assert page.locator("h1").inner_text() in {"Check your email", "Consultez vos emails"}
    link = mail.wait_for("sign-in", address).sign_in_link
    page.goto(link)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(f"{base}/account/contacts")


def test_the_reference_walk_in_a_browser(
    browser: Any, daemon: tuple[str, int, Store, Maildir]
) -> None:
    base, smtp, store, mail = daemon
    admin = browser.new_context(viewport=DESKTOP, locale="en-GB")
    page = admin.new_page()

    # Sign in by the mailed link; My contacts lists the services.
    sign_in(page, base, ADMIN, mail)
    assert page.locator("h1").inner_text() == "My contacts"
    rows = page.locator("table.list tbody tr")
    assert rows.count() == 2
    assert "example.com" in rows.nth(0).inner_text()
    shot(page, SHOTS, "walk-1-my-contacts.png")

    # "..." then Modify contacts on example.com: a new technical contact; Confirm.
    rows.nth(0).get_by_role("link", name="Modify contacts").click()
    page.get_by_label("New technical contact").fill(NEW)
    page.get_by_role("button", name="Confirm").click()
    assert "Your request is made" in page.locator("p.done").inner_text()
    (row,) = page.locator("table.list tbody tr").all()
    assert "pending" in row.inner_text()
    assert row.inner_text().count("not answered yet") == 2
    task = requests.list_requests(store, account=ADMIN)[0]["id"]

    # The new contact sees it pending too, in French.
    other = browser.new_context(viewport=PHONE, locale="fr-FR")
    theirs = other.new_page()
    sign_in(theirs, base, NEW, mail)
    theirs.get_by_role("link", name="Mes demandes").first.click()
    assert "en attente" in theirs.locator("table.list tbody tr").first.inner_text()

    # The admin accepts on the request's page with the code from its mail.
    code = mail.wait_for("confirm-request", ADMIN).code
    first_code_of_new = mail.wait_for("confirm-request", NEW).code
    page.get_by_role("link", name=f"Request {task}").click()
    page.get_by_label("Validation code").fill(code)
    page.get_by_role("button", name="Accept").click()
    note = page.locator("p.done").inner_text()
    assert "still pending validation from new@example.com" in note
    shot(page, SHOTS, "walk-2-waiting-for-the-other.png")

    # Resend request: the other gets a new code, and the old one no longer works.
    page.get_by_role("button", name="Resend request").click()
    assert "new code has been sent to new@example.com" in page.locator("p.done").inner_text()
    resent = mail.wait_for("confirm-request", NEW)
    assert resent.code != first_code_of_new
    theirs.goto(f"{base}/account/requests/{task}")
    theirs.get_by_label("Code de validation").fill(first_code_of_new)
    theirs.get_by_role("button", name="Accepter").click()
    assert "pas votre code valide" in theirs.locator("p.notice").inner_text()
    assert requests.show(store, task)["validators"][1]["decision"] is None

    # The other contact accepts by replying to the new mail over SMTP.
    with smtplib.SMTP("127.0.0.1", smtp, timeout=10) as client:
        client.send_message(reply_to(resent.message, NEW))
    deadline = time.monotonic() + 30
    while requests.show(store, task)["state"] != "done" and time.monotonic() < deadline:
        time.sleep(0.2)
    shown = requests.show(store, task)
    assert shown["state"] == "done"
    assert [(v["decision"], v["via"]) for v in shown["validators"]] == [
        ("accept", "web"),
        ("accept", "smtp"),
    ]

    # My requests shows done.
    page.get_by_role("link", name="My requests").first.click()
    assert "done" in page.locator("table.list tbody tr").first.inner_text()
    page.locator("#state").select_option("done")
    page.get_by_role("button", name="Filter").click()
    assert page.locator("table.list tbody tr").count() == 1
    shot(page, SHOTS, "walk-3-my-requests-done.png")
    assert within_screen(page, "header form button")
    admin.close()
    other.close()
