"""Pytest fixtures for the real test servers.

Enable them with ``from tests.servers.fixtures import *`` in a conftest.

Fixtures (all function-scoped: each test gets a fresh server, so tests can
restart it, change UIDVALIDITY or script failures without affecting others;
a Dovecot start costs ~50 ms and an SMTP sink ~10 ms here):

``dovecot``
    A started :class:`~tests.servers.dovecot.DovecotServer` with ``host``,
    ``port``, ``user``, ``password``, folders INBOX and Processed, and helpers
    ``connect()``, ``append()``, ``uids()``, ``fetch()``, ``uidvalidity()``,
    ``change_uidvalidity()``, ``restart()``. Skips when Dovecot is not
    installed, but fails when the environment variable CI is "true", so a CI
    image that lost Dovecot cannot silently skip the IMAP tests.

``dovecot_factory``
    ``dovecot_factory(**kwargs)`` starts another DovecotServer (e.g. another
    user or extra folders); all are closed at teardown. Same skip/fail rule.

``smtp_sink``
    A started :class:`~tests.servers.smtp_sink.SmtpSink`, stopped at teardown.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.servers.dovecot import DovecotServer, dovecot_binary
from tests.servers.smtp_sink import SmtpSink

__all__ = ["dovecot", "dovecot_factory", "require_dovecot", "smtp_sink"]


def require_dovecot() -> None:
    """Skip the current test without Dovecot; fail instead when CI=true."""
    if dovecot_binary() is not None:
        return
    message = "Dovecot not installed (run .ci/install-servers)"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip("Dovecot not installed")


@pytest.fixture
def dovecot_factory() -> Iterator[Callable[..., DovecotServer]]:
    require_dovecot()
    servers: list[DovecotServer] = []

    def make(**kwargs: Any) -> DovecotServer:
        server = DovecotServer(**kwargs)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def dovecot(dovecot_factory: Callable[..., DovecotServer]) -> DovecotServer:
    return dovecot_factory()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()
