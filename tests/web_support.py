"""Helpers for the web and API tests: real mail out of the real outbox, a real server.

Codes are read the way a person reads them: the daemon's own delivery renders
and composes each notice into the Maildir (no relay configured), and the link
is taken out of the mail's text.
"""

from __future__ import annotations

import asyncio
import mailbox
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from fastapi import FastAPI

from countersign.config import ApiConfig, Config, MailConfig
from countersign.gateway.mail_out.delivery import Deliverer
from countersign.gateway.web.server import serve_web
from countersign.store.db import Store

KEY = "s3cret-panel-key"
LINK = re.compile(r"(https?://\S+/confirm/(\d+)\?token=([A-Z2-7-]+))")


def web_config(
    data_dir: Path, *, keys: dict[str, str] | None = None, public_url: str = "http://127.0.0.1:8080"
) -> Config:
    return Config(
        data_dir=str(data_dir),
        mail=MailConfig(public_url=public_url),
        api=ApiConfig(keys={"panel": KEY} if keys is None else keys),
    )


@dataclass(frozen=True)
class Mail:
    to: str
    kind: str
    request_id: int
    text: str

    @property
    def link(self) -> str:
        found = LINK.search(self.text)
        assert found, f"no confirmation link in the {self.kind} mail to {self.to}"
        return found[1]

    @property
    def code(self) -> str:
        found = LINK.search(self.text)
        assert found
        return found[3]


class Mailbox:
    """The Maildir the daemon writes to when no relay is configured."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self.seen: list[Mail] = []

    def deliver(self) -> list[Mail]:
        """Send what is due, then take the new mail out of the Maildir (oldest first)."""
        deliverer = Deliverer(self.store, self.config)

        async def drain() -> None:
            while await deliverer.deliver_due():
                pass

        # A thread of its own: Playwright's sync API keeps a loop running in this one.
        with ThreadPoolExecutor(1) as worker:
            worker.submit(asyncio.run, drain()).result()
        box = mailbox.Maildir(self.config.outbox_dir, create=True)
        # Order only matters between deliveries (a resend's code replaces the earlier one).
        fresh = [_mail(box.get_bytes(key)) for key in sorted(box.keys())]
        box.clear()
        self.seen += fresh
        return fresh

    def latest(self, to: str, kinds: tuple[str, ...] = ("confirm-request", "reminder")) -> Mail:
        self.deliver()
        for mail in reversed(self.seen):
            if mail.to == to and mail.kind in kinds:
                return mail
        raise AssertionError(f"no {kinds} mail to {to}; got {[(m.kind, m.to) for m in self.seen]}")


def _mail(raw: bytes) -> Mail:
    message = BytesParser(policy=email_policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return Mail(
        to=str(message["To"]),
        kind=str(message["X-Countersign-Kind"]),
        request_id=int(str(message["X-Countersign-Request"])),
        text=body.get_content(),
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_server(app: FastAPI, port: int) -> Iterator[str]:
    """The app on a real uvicorn, in a thread with its own loop, as the daemon runs it."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve_web(app, "127.0.0.1", port, stop))
        except BaseException as error:  # reported to the test below
            failure.append(error)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="web-test", daemon=True)
    thread.start()
    _wait_listening(port, failure)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
    assert not failure, failure


def _wait_listening(port: int, failure: list[BaseException]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert not failure, failure
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the web server did not listen on {port}")
