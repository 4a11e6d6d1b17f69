"""IMAP in: read replies from a mailbox (imapclient, in a thread of its own).

The loop: connect (TLS, or STARTTLS, when configured), select the folder,
fetch what is past the cursor (``BODY.PEEK[]``, in batches), store it with
the cursor in one transaction, then move it to the processed folder (or flag
it \\Seen where the server has no MOVE).  Then IDLE until the server says
something changed, renewed well inside the 29 minutes a server may wait, with
a periodic look anyway in case a notification is lost.  Any error: drop the
connection and reconnect with a growing delay.

One reader per mailbox across all daemons sharing a store: a reader reads
only while it holds the mailbox's lease (store/leases.py), which a daemon
whose heartbeat stopped loses to the next one that asks, within the owner
timeout and a check.

Store first, move after: a crash in between leaves stored messages in the
folder, which the next connection moves (they are behind the cursor), and
which the inbox's Message-ID deduplication would not act on twice anyway.
"""

from __future__ import annotations

import logging
import random
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from imapclient import IMAPClient, SocketTimeout

from countersign.config import Config
from countersign.store import leases
from countersign.store.db import Store
from countersign.workflow.imap_cursor import Cursor, start_cursor, store_fetched, touch_cursor

log = logging.getLogger("countersign.imap")

BATCH = 100  # UIDs per FETCH and per MOVE: one MOVE per message caps near 160/s on Dovecot
IDLE_RENEW = 9 * 60.0  # seconds; servers may drop an IDLE after 29 minutes (RFC 2177)
CONTACT_EVERY = 60.0  # seconds between two notes of "IMAP answered" in the store
POLL_EVERY = 60.0  # seconds: look even without a notification
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 60.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 60.0
IDLE_SLICE = 0.25  # seconds per idle_check, so stop() is heard quickly


@dataclass(frozen=True)
class ImapSettings:
    host: str
    port: int
    user: str
    password: str
    folder: str
    processed_folder: str
    tls: bool
    starttls: bool
    max_bytes: int

    @classmethod
    def from_config(cls, config: Config) -> ImapSettings:
        inbound = config.inbound
        if not inbound.imap_host:
            raise ValueError("inbound.imap_host is not set")
        return cls(
            host=inbound.imap_host,
            port=inbound.imap_port,
            user=inbound.imap_user or "",
            password=inbound.imap_password or "",
            folder=inbound.imap_folder,
            processed_folder=inbound.imap_processed_folder,
            tls=inbound.imap_tls,
            starttls=inbound.imap_starttls,
            max_bytes=inbound.max_bytes,
        )

    @property
    def mailbox(self) -> str:
        """The cursor's key: one per account and folder."""
        return f"{self.user}@{self.host}:{self.port}/{self.folder}"


class ConnectionLost(Exception):
    """The server went away while we were idling."""


class MailboxLease:
    """Whether this daemon is the one reading a mailbox, asked of the store."""

    def __init__(self, store: Store, mailbox: str, owner: int, timeout: timedelta) -> None:
        self.store = store
        self.name = f"imap:{mailbox}"
        self.owner = owner
        self.timeout = timeout
        self.check_every = timeout.total_seconds() / 3

    def held(self) -> bool:
        try:
            return leases.hold(self.store, self.name, self.owner, datetime.now(UTC), self.timeout)
        except Exception as error:
            if not self.store.health.failed(error):
                log.exception("IMAP: could not ask who reads %s", self.name)
            return False  # nothing can be stored meanwhile anyway

    def let_go(self) -> None:
        try:
            leases.let_go(self.store, self.name, self.owner)
        except Exception as error:
            if not self.store.health.failed(error):
                log.exception("IMAP: could not let go of %s", self.name)


class ImapReader(threading.Thread):
    """Reads one folder until stop(); every error ends in a reconnect, never in a dead thread."""

    def __init__(
        self,
        store: Store,
        settings: ImapSettings,
        *,
        poll_every: float = POLL_EVERY,
        backoff_first: float = BACKOFF_FIRST,
        lease: MailboxLease | None = None,
    ) -> None:
        super().__init__(name="imap-in", daemon=True)
        self.store = store
        self.settings = settings
        self.poll_every = min(poll_every, IDLE_RENEW)
        self.backoff_first = backoff_first
        self.connections = 0  # sessions opened: tests watch it across a server restart
        self.reading = False  # logged in with the folder selected: /healthz reports it
        self.stored = 0
        self.lease = lease  # None: the only daemon on this store, it always reads
        self._stopping = threading.Event()
        self._last_check = 0.0

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self.join(timeout)
        if self.lease is not None:
            self.lease.let_go()  # another daemon takes the mailbox at once

    def run(self) -> None:
        delay = self.backoff_first
        while self._wait_for_lease():
            client: Any = None
            ready = False
            try:
                client = self._connect()
                self.connections += 1
                cursor = self._select(client)
                ready = self.reading = True
                self._serve(client, cursor)
            except Exception as error:
                # A session that got as far as its folder worked: the delays start over.
                delay = self._pause(error, self.backoff_first if ready else delay)
            finally:
                self.reading = False
                if client is not None:
                    _close(client)

    def _wait_for_lease(self) -> bool:
        """Until this daemon may read the mailbox (or stops): False once stopping."""
        told = False
        while not self._stopping.is_set():
            if self._still_reader(force=True):
                return True
            if not told:
                log.info("IMAP %s: another daemon reads it; standing by", self.settings.mailbox)
                told = True
            assert self.lease is not None
            self._stopping.wait(self.lease.check_every)
        return False

    def _still_reader(self, *, force: bool = False) -> bool:
        if self.lease is None:
            return True
        if not force and time.monotonic() - self._last_check < self.lease.check_every:
            return True
        self._last_check = time.monotonic()
        return self.lease.held()

    def _pause(self, error: Exception, delay: float) -> float:
        if self._stopping.is_set():
            return delay
        wait = delay * random.uniform(0.8, 1.2)
        log.warning("IMAP %s: %s; reconnecting in %.1fs", self.settings.host, error, wait)
        self._stopping.wait(wait)
        return min(delay * 2, BACKOFF_MAX)

    def _connect(self) -> Any:
        s = self.settings
        timeout = SocketTimeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT)
        context = ssl.create_default_context()
        client = IMAPClient(
            s.host, port=s.port, ssl=s.tls, ssl_context=context if s.tls else None, timeout=timeout
        )
        try:
            if s.starttls and not s.tls:
                client.starttls(context)
            client.login(s.user, s.password)
        except Exception:
            client.shutdown()
            raise
        return client

    def _serve(self, client: Any, cursor: Cursor) -> None:
        idle = client.has_capability("IDLE")
        touched = time.monotonic()
        while not self._stopping.is_set():
            cursor = self._sync(client, cursor)
            if time.monotonic() - touched >= CONTACT_EVERY:
                touch_cursor(self.store, self.settings.mailbox, datetime.now(UTC))
                touched = time.monotonic()
            if idle:
                self._idle(client)
            else:
                self._stopping.wait(self.poll_every)
                client.noop()

    def _select(self, client: Any) -> Cursor:
        s = self.settings
        if not client.folder_exists(s.processed_folder):
            client.create_folder(s.processed_folder)
        selected = client.select_folder(s.folder)
        cursor = start_cursor(self.store, s.mailbox, int(selected[b"UIDVALIDITY"]))
        log.info("IMAP in reading %s (UIDVALIDITY %s)", s.mailbox, cursor.uidvalidity)
        if cursor.last_uid > 0:
            # Stored but not yet moved when the last session ended: move them now.
            self._file_away(client, client.search(["UID", f"1:{cursor.last_uid}"]))
        return cursor

    def _sync(self, client: Any, cursor: Cursor) -> Cursor:
        """Store and file away everything past the cursor, a batch at a time."""
        while not self._stopping.is_set():
            found = client.search(["UID", f"{cursor.last_uid + 1}:*"])
            # "N:*" always matches the last message, even when its UID is below N.
            fresh = sorted(int(uid) for uid in found if int(uid) > cursor.last_uid)
            if not fresh:
                break
            cursor = self._take(client, cursor, fresh[:BATCH])
        return cursor

    def _take(self, client: Any, cursor: Cursor, uids: Sequence[int]) -> Cursor:
        sizes = client.fetch(uids, ["RFC822.SIZE"])
        limit = self.settings.max_bytes
        small = [u for u in uids if u in sizes and int(sizes[u][b"RFC822.SIZE"]) <= limit]
        skipped = [u for u in uids if u not in small]
        for uid in skipped:
            size = sizes.get(uid, {}).get(b"RFC822.SIZE")
            log.warning("IMAP UID %s skipped: %s bytes (inbound.max_bytes is %s)", uid, size, limit)
        bodies = client.fetch(small, ["BODY.PEEK[]"]) if small else {}
        messages = [(u, bytes(bodies[u][b"BODY[]"])) for u in small if u in bodies]
        skipped += [u for u in small if u not in bodies]  # expunged meanwhile by someone else
        cursor = store_fetched(
            self.store,
            self.settings.mailbox,
            cursor,
            messages,
            skipped=skipped,
            now=datetime.now(UTC),
        )
        self.stored += len(messages)
        self._file_away(client, list(uids))
        return cursor

    def _file_away(self, client: Any, uids: Sequence[int]) -> None:
        """Out of the folder: MOVE in batches, or \\Seen where the server cannot MOVE."""
        can_move = client.has_capability("MOVE")
        for start in range(0, len(uids), BATCH):
            batch = list(uids[start : start + BATCH])
            if can_move:
                client.move(batch, self.settings.processed_folder)
            else:
                client.add_flags(batch, [b"\\Seen"])

    def _idle(self, client: Any) -> None:
        """Wait for news (EXISTS) or the poll interval, whichever comes first."""
        client.idle()
        try:
            self._wait_for_news(client)
        finally:
            client.idle_done()

    def _wait_for_news(self, client: Any) -> None:
        deadline = time.monotonic() + self.poll_every
        silent_returns = 0
        while not self._stopping.is_set() and time.monotonic() < deadline:
            if not self._still_reader():
                raise ConnectionLost("another daemon reads this mailbox now")
            started = time.monotonic()
            responses = client.idle_check(timeout=IDLE_SLICE)
            if any(_says(r, b"BYE") for r in responses):
                raise ConnectionLost("the server closed the session (BYE)")
            if any(_says(r, b"EXISTS") for r in responses):
                return
            # imapclient returns [] at once on a closed socket instead of raising.
            quick = not responses and time.monotonic() - started < IDLE_SLICE / 2
            silent_returns = silent_returns + 1 if quick else 0
            if silent_returns >= 3:
                raise ConnectionLost("the connection was closed")


def _says(response: Any, word: bytes) -> bool:
    return isinstance(response, tuple) and word in response[:2]


def _close(client: Any) -> None:
    try:
        client.logout()
    except Exception:
        try:
            client.shutdown()
        except Exception as error:
            log.debug("IMAP connection not closed cleanly: %s", error)


def start_imap(store: Store, config: Config, owner: int | None = None) -> ImapReader | None:
    """The reader thread when ``inbound.imap_host`` is set; None otherwise.

    With ``owner`` (this daemon's worker id) it reads only while it holds the mailbox's lease.
    """
    if not config.inbound.imap_host:
        return None
    settings = ImapSettings.from_config(config)
    lease = None
    if owner is not None:
        lease = MailboxLease(store, settings.mailbox, owner, config.owner_timeout)
    reader = ImapReader(store, settings, lease=lease)
    reader.start()
    return reader
