"""Every account page, and the confirmation page, in a real browser: in English and
French, on a desktop and on a 390x844 phone, where the action buttons of the
confirmation page and of a request's page are on screen without scrolling, and
no text overflows its page.

COUNTERSIGN_SCREENSHOT_DIR=docs/screenshots keeps a PNG of each (as docs/ holds them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from countersign.gateway.web.app import create_app
from countersign.rules.contacts import ContactType
from countersign.store.db import Store
from countersign.store.migrate import upgrade
from countersign.workflow import requests
from countersign.workflow.directory import AccountChanges, add_account, add_service, update_account
from countersign.workflow.policy import Policy
from tests.account_support import DESKTOP, PHONE, Maildir, launch_browser, shot, within_screen
from tests.web_support import free_port, running_server, web_config

ADMIN, NEW = "admin@example.com", "new@example.com"
SHOTS = (
    Path(os.environ["COUNTERSIGN_SCREENSHOT_DIR"])
    if os.environ.get("COUNTERSIGN_SCREENSHOT_DIR")
    else None
)
SIZES = {"desktop": DESKTOP, "phone": PHONE}
LOCALES = {"en": "en-GB", "fr": "fr-FR"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Store, Maildir, Any]]:
    store = Store(f"sqlite:///{tmp_path / 'countersign.db'}")
    upgrade(store.engine)
    add_account(store, ADMIN, AccountChanges(zone="EU"))
    add_account(store, NEW, AccountChanges(zone="EU"))
    add_account(store, "billing.department@example.com", AccountChanges(zone="EU"))
    add_service(store, "example.com", ADMIN, ADMIN, "billing.department@example.com")
    add_service(store, "a-rather-long-service-name.example.org", ADMIN, NEW, ADMIN)
    port = free_port()
    config = web_config(tmp_path, public_url=f"http://127.0.0.1:{port}")
    from tests.web_support import Mailbox

    mailbox = Mailbox(store, config)
    with running_server(create_app(store, config, health=lambda: True), port) as url:
        yield url, store, Maildir(config.outbox_dir), mailbox
    store.dispose()


def no_overflow(page: Any) -> bool:
    """Nothing wider than the screen or its box: no horizontal scrolling, nothing cut off."""
    return bool(
        page.evaluate(
            "document.documentElement.scrollWidth <= window.innerWidth && "
            "[...document.querySelectorAll('main, .bar')].every("
            "  e => e.scrollWidth <= e.clientWidth)"
        )
    )


# Each visible text and each form control with the colours behind it, as the browser
# computed them: [kind, foreground, background], kind "text" or "control".
_COLOURS = """
() => {
  const rgb = c => (c.match(/[\\d.]+/g) || []).map(Number);
  const behind = e => {
    for (let n = e; n; n = n.parentElement) {
      const c = rgb(getComputedStyle(n).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const out = [];
  for (const e of document.querySelectorAll("body *")) {
    const style = getComputedStyle(e);
    if (style.visibility === "hidden" || e.getClientRects().length === 0) continue;
    if (e.closest(".sr")) continue;
    const own = [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (own) out.push(["text", rgb(style.color).slice(0, 3), behind(e), e.tagName]);
    if (["INPUT", "SELECT", "BUTTON"].includes(e.tagName) && e.type !== "hidden") {
      const outer = behind(e.parentElement);
      const fill = behind(e);
      const edge = parseFloat(style.borderTopWidth) > 0 && rgb(style.borderTopColor)[3] !== 0
        ? rgb(style.borderTopColor).slice(0, 3) : fill;
      out.push(["control", edge, outer, e.tagName]);
    }
  }
  return out;
}
"""


def luminance(rgb: list[float]) -> float:
    def channel(value: float) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: list[float], b: list[float]) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def poor_contrast(page: Any) -> list[tuple[str, str, float]]:
    """Text under 4.5:1 (WCAG AA) or a control whose edge is under 3:1 (WCAG 1.4.11)."""
    poor = []
    for kind, fg, bg, tag in page.evaluate(_COLOURS):
        ratio = contrast(fg, bg)
        if ratio < (4.5 if kind == "text" else 3.0):
            poor.append((kind, tag, round(ratio, 2)))
    return poor


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("lang", sorted(LOCALES))
def test_every_page_in_both_languages_and_sizes(
    browser: Any, served: tuple[str, Store, Maildir, Any], lang: str, size: str
) -> None:
    url, store, _, mailbox = served
    update_account(store, ADMIN, AccountChanges(language=lang))
    (made,) = requests.change_contacts(
        store, "example.com", ADMIN, {ContactType.TECH: NEW}, Policy()
    )
    context = browser.new_context(viewport=SIZES[size], locale=LOCALES[lang])
    page = context.new_page()

    def look(name: str) -> None:
        assert no_overflow(page), f"{name} is wider than the {size} screen"
        assert poor_contrast(page) == [], name
        shot(page, SHOTS, f"{name}-{lang}-{size}.png")

    page.goto(f"{url}/account")
    look("account-sign-in")
    page.locator("#email").fill(ADMIN)
    page.locator("main form button[type=submit]").click()
    look("account-check-mail")
    link = next(m for m in reversed(mailbox.deliver()) if m.kind == "sign-in")
    page.goto(_sign_in_link(link.text))
    look("account-continue")
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(f"{url}/account/contacts")
    look("account-my-contacts")
    page.goto(f"{url}/account/contacts/example.com")
    look("account-modify-contacts")
    page.goto(f"{url}/account/requests")
    look("account-my-requests")
    page.goto(f"{url}/account/requests/{made['id']}")
    look("account-request")
    if size == "phone":
        for button in ("button.accept", "button.decline", ".more button"):
            assert within_screen(page, button), f"{button} of a request's page is below the fold"

    confirm = mailbox.latest(ADMIN)
    page.goto(confirm.link)
    look("confirm-page")
    if size == "phone":
        for button in ("button.accept", "button.decline"):
            assert within_screen(page, button), (
                f"{button} of the confirmation page is below the fold"
            )
    context.close()


def _sign_in_link(text: str) -> str:
    from tests.account_support import SIGN_IN_LINK

    found = SIGN_IN_LINK.search(text)
    assert found
    return found[1]
