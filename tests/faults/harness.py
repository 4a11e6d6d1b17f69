"""What the fault tests share: real `serve` processes, replies to send, and the counts.

A fault test runs the daemon as its users do (a subprocess, its own log), sends
real replies over SMTP from a process of its own (as a mail server would: a
reply refused or cut off is sent again), injects the fault, and then counts
from outside what a user would notice: replies answered 250 that were lost or
never decided, decisions applied twice, notices the relay received twice,
rows left claimed, and how long it all took.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text, update

from bench.seeding import seed_requests
from countersign.store.db import Store
from countersign.store.models import Account, ChangeRequest, Event, InboxMessage, OutboxMessage
from tests.cli_helpers import COMMAND, clean_env, free_port

DOMAIN = "countersign.localhost"


# --- the daemon ----------------------------------------------------------------------------


class Daemon:
    """One `countersign serve`, its stderr in a file (a pipe nobody reads would fill up)."""

    def __init__(self, name: str, folder: Path, database_url: str, **env: str) -> None:
        self.name = name
        self.data_dir = folder / name
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.smtp_port = free_port()
        self.web_port = free_port()
        self.log_path = folder / f"{name}.log"
        self.env = clean_env(
            COUNTERSIGN_DATA_DIR=str(self.data_dir),
            COUNTERSIGN_DATABASE_URL=database_url,
            COUNTERSIGN_INBOUND_SMTP_PORT=str(self.smtp_port),
            COUNTERSIGN_WEB_PORT=str(self.web_port),
            COUNTERSIGN_SCHEDULER_SWEEP_EVERY="2s",
            **env,
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self, timeout: float = 60) -> None:
        with open(self.log_path, "ab") as log:  # appended: a restart keeps the first life's
            self.process = subprocess.Popen(
                [*COMMAND, "serve"], env=self.env, stdout=log, stderr=log, cwd=self.data_dir
            )
        self.started_at = time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"{self.name} exited:\n{self.log()}"
            if listening(self.smtp_port):
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not listening after {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, as the OOM killer or a power cut would."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self, timeout: float = 30) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self.name} ignored SIGTERM for {timeout}s") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


# --- the replies -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    message_id: str
    to: str
    raw: bytes


def seed_with_replies(store: Store, requests: int, *, due: int = 0) -> list[Reply]:
    """``requests`` requests of two validators each, and each validator's ACCEPT reply.

    The codes are read from the outbox rows that will mail them (the only place
    a plaintext code lives), before any daemon sends them.  ``due`` more
    requests are seeded with no reply: half due for a reminder, half to expire.
    """
    seed_requests(store, 2 * (requests + 2 * due))
    with store.read() as session:
        rows = session.execute(
            select(
                OutboxMessage.request_id,
                OutboxMessage.code,
                OutboxMessage.message_id,
                Account.email,
            )
            .join(Account, Account.id == OutboxMessage.account_id)
            .where(OutboxMessage.code.is_not(None))
            .order_by(OutboxMessage.id)
        ).all()
    ids = sorted({row.request_id for row in rows})
    replied = set(ids[:requests])
    _make_due(store, ids[requests : requests + due], ids[requests + due :], utcnow())
    return [
        _reply(n, row.code, row.message_id, row.email)
        for n, row in enumerate(rows)
        if row.request_id in replied
    ]


def _reply(n: int, code: str, notice_id: str, sender: str, html_line: str = "") -> Reply:
    message_id = f"<fault-reply-{n}-{os.getpid()}@client.test>"
    to = f"confirm+{code}@{DOMAIN}"
    raw = (
        f"From: {sender}\r\nTo: {to}\r\nSubject: Re: your request\r\n"
        f"Message-ID: {message_id}\r\nIn-Reply-To: {notice_id}\r\nReferences: {notice_id}\r\n"
        "Date: Tue, 01 Dec 2026 09:30:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nAccept, thanks\r\n"
    )
    return Reply(message_id, to, raw.encode())


def _make_due(store: Store, remind: list[int], expire: list[int], now: datetime) -> None:
    with store.write() as session:
        session.execute(
            update(ChangeRequest)
            .where(ChangeRequest.id.in_(remind))
            .values(next_reminder_at=now - timedelta(minutes=1))
        )
        session.execute(
            update(ChangeRequest)
            .where(ChangeRequest.id.in_(expire))
            .values(expires_at=now - timedelta(minutes=1))
        )


# --- the sending side: a process, like a mail server that retries -----------------------------


def send_replies(
    replies: Sequence[Reply],
    ports: Sequence[int],
    acked: Any,
    answers: Any,
    *,
    lanes: int = 4,
    pace: float = 0.0,
) -> None:
    """Send every reply until some port answers 250; each 250 goes into ``acked``.

    ``answers`` gets (time.time(), port, code) for every reply to DATA or failure
    to connect (code 0), so a test can see what was answered when.
    """
    import asyncio

    import aiosmtplib

    async def deliver(reply: Reply, lane: int) -> None:
        attempt = 0
        while True:
            port = ports[(lane + attempt) % len(ports)]
            attempt += 1
            try:
                client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
                await client.connect()
                try:
                    await client.sendmail("mta@client.test", [reply.to], reply.raw)
                    answers.put((time.time(), port, 250))
                    acked.put(reply.message_id)
                    return
                finally:
                    client.close()
            except aiosmtplib.SMTPResponseException as refused:
                answers.put((time.time(), port, refused.code))
            except aiosmtplib.SMTPRecipientsRefused as refused:  # answered at RCPT
                answers.put((time.time(), port, refused.recipients[0].code))
            except (aiosmtplib.SMTPException, OSError):
                answers.put((time.time(), port, 0))
            await asyncio.sleep(min(0.2 * attempt, 1.0))

    async def lane(chunk: Sequence[Reply], number: int) -> None:
        for reply in chunk:
            await deliver(reply, number)
            if pace:
                await asyncio.sleep(pace)

    async def main() -> None:
        await asyncio.gather(*(lane(replies[i::lanes], i) for i in range(lanes)))

    asyncio.run(main())


class Sender:
    """``send_replies`` in a process of its own, with what it was answered readable here."""

    def __init__(self, replies: Sequence[Reply], ports: Sequence[int], **options: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self._acked: Any = context.Queue()
        self._answers: Any = context.Queue()
        self.acked: set[str] = set()
        self.answers: list[tuple[float, int, int]] = []
        self.process = context.Process(
            target=send_replies,
            args=(list(replies), list(ports), self._acked, self._answers),
            kwargs=options,
        )

    def start(self) -> None:
        self.process.start()

    def poll(self) -> int:
        while not self._acked.empty():
            self.acked.add(self._acked.get())
        while not self._answers.empty():
            self.answers.append(self._answers.get())
        return len(self.acked)

    def tally(self) -> dict[tuple[int, int], int]:
        """How many times each port gave each answer (0: no connection)."""
        return dict(Counter((port, code) for _, port, code in self.answers))

    def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.poll() < count:
            assert time.monotonic() < deadline, f"{len(self.acked)} of {count} replies in"
            assert self.process.is_alive() or self.poll() >= count, "the sender died"
            time.sleep(0.05)

    def finish(self, timeout: float) -> None:
        # Drain the queues while waiting: a child process does not exit before
        # everything it put on a queue is read (the pipe fills at a few
        # thousand answers), so a bare join() would wait for itself.
        deadline = time.monotonic() + timeout
        while self.process.is_alive() and time.monotonic() < deadline:
            self.poll()
            self.process.join(0.05)
        if self.process.is_alive():
            self.poll()
            raise AssertionError(
                f"replies still unsent after {timeout}s: {len(self.acked)} answered 250;"
                f" answers by (port, code): {self.tally()}"
            )
        time.sleep(0.2)
        self.poll()


# --- counting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    lost: int  # answered 250, not in the store
    undecided: int  # answered 250, stored, not processed
    decided_twice: int  # a validator's decision recorded more than once
    outbox_open: int  # notices not yet sent (pending or claimed)
    claimed: int  # rows still claimed (sending or processing)
    inbox_open: int = 0  # any stored reply not yet processed, answered 250 or not

    def __str__(self) -> str:
        return (
            f"lost {self.lost}, undecided {self.undecided}, decided twice {self.decided_twice},"
            f" notices open {self.outbox_open}, claimed {self.claimed},"
            f" inbox open {self.inbox_open}"
        )

    @property
    def settled(self) -> bool:
        return not (self.lost or self.undecided or self.outbox_open or self.claimed)


def count(store: Store, acked: set[str]) -> Counts:
    with store.read() as session:
        inbox = dict(
            session.execute(
                select(InboxMessage.message_id, InboxMessage.status).where(
                    InboxMessage.message_id.in_(sorted(m.strip("<>") for m in acked))
                )
            ).all()
        )
        twice = session.scalar(
            select(func.count()).select_from(
                select(Event.request_id, Event.actor)
                .where(Event.kind.in_(("accept", "decline")))
                .group_by(Event.request_id, Event.actor)
                .having(func.count() > 1)
                .subquery()
            )
        )
        open_ = session.scalar(
            select(func.count()).where(OutboxMessage.status.in_(("pending", "sending")))
        )
        claimed = session.scalar(select(func.count()).where(OutboxMessage.status == "sending"))
        claimed = (claimed or 0) + (
            session.scalar(select(func.count()).where(InboxMessage.status == "processing")) or 0
        )
        inbox_open = session.scalar(
            select(func.count()).where(InboxMessage.status.in_(("pending", "processing")))
        )
    return Counts(
        lost=len(acked) - len(inbox),
        undecided=sum(1 for status in inbox.values() if status != "done"),
        decided_twice=twice or 0,
        outbox_open=open_ or 0,
        claimed=claimed,
        inbox_open=inbox_open or 0,
    )


def wait_until_settled(
    store: Store,
    acked: Callable[[], set[str]],
    timeout: float,
    expected: int | None = None,
    *,
    replies_only: bool = False,
) -> tuple[Counts, float]:
    """Poll the counts until nothing is left to do, or ``timeout``; the counts and seconds.

    ``replies_only``: until every reply in ``acked`` is decided (notices may still go out).
    """
    started = time.monotonic()
    while True:
        try:
            counts = count(store, acked())
        except Exception:  # the store is coming back: try again
            counts = None
        if counts is not None and replies_only:
            done = counts.lost == counts.undecided == 0
        else:
            done = counts is not None and counts.settled
        if done and (expected is None or len(acked()) >= expected):
            return counts, time.monotonic() - started  # type: ignore[return-value]
        if time.monotonic() - started > timeout:
            assert counts is not None
            return counts, time.monotonic() - started
        time.sleep(0.5)


def doubled(message_ids: Sequence[str | None]) -> int:
    """Notices the relay received more than once: the copies beyond the first."""
    return sum(n - 1 for n in Counter(message_ids).values() if n > 1)


def notices_due_now(store: Store) -> int:
    with store.read() as session:
        return int(session.execute(text("SELECT count(*) FROM outbox")).scalar() or 0)


def utcnow() -> datetime:
    return datetime.now(UTC)


def open_notices(store: Store, limit: int = 10) -> list[tuple[Any, ...]]:
    """The notices not yet sent, for a failing assertion to show why."""
    with store.read() as session:
        rows = session.execute(
            select(
                OutboxMessage.id,
                OutboxMessage.kind,
                OutboxMessage.status,
                OutboxMessage.attempts,
                OutboxMessage.next_attempt_at,
                OutboxMessage.last_error,
            )
            .where(OutboxMessage.status.in_(("pending", "sending")))
            .limit(limit)
        ).all()
    return [tuple(row) for row in rows]
