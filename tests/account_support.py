"""Helpers for the account pages' tests: a browser, the mail a daemon left in its
Maildir, and links and codes read out of that mail as a person reads them."""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing_server

CHROMIUM = os.environ.get("COUNTERSIGN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SIGN_IN_LINK = re.compile(r"(https?://\S+/account/sign-in/([A-Za-z0-9_-]+))")
CONFIRM_LINK = re.compile(r"(https?://\S+/confirm/(\d+)\?token=([A-Z2-7-]+))")
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


def launch_browser() -> Iterator[Any]:
    """Debian's Chromium under Playwright; skips locally without it, fails under CI."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        missing_server(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_server("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass(frozen=True)
class Mail:
    message: EmailMessage

    @property
    def kind(self) -> str:
        return str(self.message["X-Countersign-Kind"])

    @property
    def to(self) -> str:
        return str(self.message["To"])

    @property
    def text(self) -> str:
        body = self.message.get_body(preferencelist=("plain",))
        assert body is not None
        return str(body.get_content())

    @property
    def sign_in_link(self) -> str:
        found = SIGN_IN_LINK.search(self.text)
        assert found, f"no sign-in link in the {self.kind} mail to {self.to}"
        return found[1]

    @property
    def confirm_link(self) -> str:
        found = CONFIRM_LINK.search(self.text)
        assert found, f"no confirmation link in the {self.kind} mail to {self.to}"
        return found[1]

    @property
    def code(self) -> str:
        found = CONFIRM_LINK.search(self.text)
        assert found, f"no code in the {self.kind} mail to {self.to}"
        return found[3]


class Maildir:
    """The daemon's outbox Maildir, read as new mail arrives (each file once)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seen: set[str] = set()
        self.mails: list[Mail] = []
        self.taken: set[int] = set()  # indexes in mails that wait_for returned

    def fresh(self) -> list[Mail]:
        new: list[Mail] = []
        if not (self.folder / "new").is_dir():
            return new  # nothing delivered yet
        for path in sorted((self.folder / "new").glob("*"), key=lambda p: p.stat().st_mtime_ns):
            if path.name not in self.seen:
                self.seen.add(path.name)
                parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
                assert isinstance(parsed, EmailMessage)
                new.append(Mail(parsed))
        self.mails += new
        return new

    def wait_for(self, kind: str, to: str, timeout: float = 30.0) -> Mail:
        """The next mail of ``kind`` to ``to`` not returned before."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.fresh()
            for index, mail in enumerate(self.mails):
                if mail.kind == kind and mail.to == to and index not in self.taken:
                    self.taken.add(index)
                    return mail
            time.sleep(0.1)
        got = [(m.kind, m.to) for m in self.mails]
        pytest.fail(f"no {kind} mail to {to} within {timeout}s; got {got}")


def shot(page: Any, folder: Path | None, name: str) -> None:
    """A screenshot of the whole page, when screenshots are asked for."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / name), full_page=True)


def within_screen(page: Any, selector: str) -> bool:
    """Whether every element ``selector`` names is on screen without scrolling."""
    viewport = page.viewport_size
    boxes = [
        page.locator(selector).nth(i).bounding_box() for i in range(page.locator(selector).count())
    ]
    assert boxes, f"nothing matches {selector}"
    return all(
        box is not None
        and box["y"] >= 0
        and box["y"] + box["height"] <= viewport["height"]
        and box["x"] >= 0
        and box["x"] + box["width"] <= viewport["width"]
        for box in boxes
    )
