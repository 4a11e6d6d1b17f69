"""What the end-to-end benchmarks share: real `serve` processes, a relay sink, databases, a client.

Everything here runs the daemon as its users do (a subprocess, its own log) and
observes it from outside: when each reply was committed is read from the
daemon's own audit lines (one per event, written once its transaction
committed), when each notice was delivered from the relay sink's clock.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.cpu import daemon_family, database_server, seconds
from countersign.store.db import Store

REPO = Path(__file__).resolve().parents[1]
PER_CONNECTION = 500  # then reconnect: the daemon allows 1000 MAILs per session
_SCRIPT = Path(sys.executable).with_name("countersign")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, str(REPO / "daemon.py")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the daemon -------------------------------------------------------------------------


class Daemon:
    """One `countersign serve` with every door on, its log in a file."""

    def __init__(self, folder: Path, database_url: str, relay_port: int, **env: str) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.smtp_port, self.web_port = free_port(), free_port()
        self.log_path = folder / "serve.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERSIGN_")}
        self.env = base | {
            "COUNTERSIGN_DATA_DIR": str(folder),
            "COUNTERSIGN_DATABASE_URL": database_url,
            "COUNTERSIGN_INBOUND_SMTP_PORT": str(self.smtp_port),
            "COUNTERSIGN_WEB_PORT": str(self.web_port),
            "COUNTERSIGN_OUTBOUND_SMTP_HOST": "127.0.0.1",
            "COUNTERSIGN_OUTBOUND_SMTP_PORT": str(relay_port),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*COMMAND, "serve"], env=self.env, stdout=log, stderr=log, cwd=self.folder
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited:\n{self.log_path.read_text()[-3000:]}")
            if self._healthy():
                return
            time.sleep(0.1)
        raise RuntimeError(f"serve not ready after {timeout}s")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/healthz", timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def committed(self) -> dict[str, float]:
        """Message-ID -> when its "mail-in" audit event was committed (from the log's stamps)."""
        found: dict[str, float] = {}
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = _MAIL_IN.match(line)
            if match is not None:
                stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
                found[match.group(2)] = stamp.timestamp()
        return found


_MAIL_IN = re.compile(
    r"^(\S+ \S+) (?:INFO|WARNING) countersign\.audit: .*: mail-in .*message_id=([^\s\]]+)"
)


# --- the relay: an aiosmtpd sink in its own process, recording when each notice came ---


def _relay(port: int, conn: Any) -> None:
    from aiosmtpd.smtp import SMTP

    arrived: list[tuple[float, str]] = []
    lock = threading.Lock()

    class Record:
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
            head = envelope.original_content[:4096]
            kind = _KIND.search(head)
            with lock:
                arrived.append((time.time(), kind.group(1).decode() if kind else "?"))
            return "250 OK"

    def answer() -> None:  # "take": what came since the last take
        while True:
            conn.recv()
            with lock:
                taken = list(arrived)
                arrived.clear()
            conn.send(taken)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_server(lambda: SMTP(Record(), hostname="relay.bench"), "127.0.0.1", port)
        conn.send("ready")
        threading.Thread(target=answer, daemon=True).start()
        await asyncio.Event().wait()

    asyncio.run(main())


_KIND = re.compile(rb"X-Countersign-Kind: (\S+)")


class Relay:
    def __init__(self) -> None:
        self.port = free_port()
        self._conn, theirs = multiprocessing.Pipe()
        self.process = multiprocessing.Process(target=_relay, args=(self.port, theirs), daemon=True)
        self.process.start()
        assert self._conn.recv() == "ready"

    def take(self) -> list[tuple[float, str]]:
        """(arrival time, kind) of every notice since the last take."""
        self._conn.send("take")
        return list(self._conn.recv())

    def close(self) -> None:
        self.process.terminate()


def round_cpu(daemons: Sequence[Daemon], relay: Relay, url: str) -> dict[str, float]:
    """CPU seconds so far of the daemons' processes (by role), the relay and PostgreSQL's."""
    used = {"relay": seconds(relay.process.pid or 0)}
    if url.startswith("postgresql"):
        used["postgresql"] = database_server()
    for daemon in daemons:
        for role, spent in daemon_family(daemon.pid).items():
            used[role] = used.get(role, 0.0) + spent
    return used


# --- databases --------------------------------------------------------------------------


def postgresql_base() -> str | None:
    return os.environ.get("COUNTERSIGN_TEST_DATABASE_URL") or None


def create_database(base: str, name: str) -> str:
    """A fresh PostgreSQL database beside ``base``'s; its URL."""
    _admin(base, f'DROP DATABASE IF EXISTS "{name}"')
    _admin(base, f'CREATE DATABASE "{name}"')
    return make_url(base).set(database=name).render_as_string(hide_password=False)


def drop_database(base: str, name: str) -> None:
    _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(base: str, statement: str) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(make_url(base).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(statement))
    engine.dispose()


def mark_claimed_sent(store: Store) -> None:
    """The confirm-requests the replies quote count as delivered (the replies hold their codes)."""
    with store.write() as session:
        session.execute(
            text(
                "UPDATE outbox SET status = 'sent', sent_at = created_at, code = NULL"
                " WHERE status = 'sending'"
            )
        )


def received_at(store: Store) -> dict[str, float]:
    """Message-ID -> end of DATA (the daemon stamps each arrival right after the final dot)."""
    with store.read() as session:
        rows = session.execute(text("SELECT message_id, received_at FROM inbox")).all()
    return {m: _epoch(at) for m, at in rows}


def _epoch(at: Any) -> float:
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return float(at.timestamp())


def settled(store: Store, replies: int) -> bool:
    """``replies`` inbox rows done in all, none left, every request applied, every notice out."""
    with store.read() as session:
        left = session.execute(
            text(
                "SELECT (SELECT count(*) FROM inbox WHERE status = 'done'),"
                " (SELECT count(*) FROM inbox WHERE status <> 'done'),"
                " (SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')),"
                " (SELECT count(*) FROM requests WHERE state IN ('checkValidity', 'doing'))"
            )
        ).one()
    return left[0] >= replies and not any(left[1:])


# --- the client: replies over SMTP from a process of its own ---------------------------


def _client(
    ports: Sequence[int], replies: list[tuple[str, bytes]], lanes: int, pace: float, out: Any
) -> None:
    import aiosmtplib

    async def lane(number: int, chunk: list[tuple[str, bytes]]) -> None:
        port = ports[number % len(ports)]
        sent = 0
        for start in range(0, len(chunk), PER_CONNECTION):
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=60)
            await smtp.connect()
            for to, raw in chunk[start : start + PER_CONNECTION]:
                if pace:  # this lane's turns of ``pace`` replies/s in all, evenly spaced
                    due = began + (sent * lanes + number) / pace
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                await smtp.sendmail("someone@client.bench.test", [to], raw)
                sent += 1
            await smtp.quit()

    began = time.perf_counter()

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(lane(i, replies[i::lanes]) for i in range(lanes)))
        return time.perf_counter() - started

    cpu = time.process_time()
    seconds = asyncio.run(main())
    out.send((seconds, time.process_time() - cpu))


@dataclass(frozen=True)
class Sent:
    seconds: float  # until every reply was answered 250
    cpu: float  # CPU seconds the client's process used


def send_replies(
    ports: Sequence[int], replies: list[tuple[str, bytes]], lanes: int = 8, pace: float = 0.0
) -> Sent:
    """Every reply sent and answered, ``lanes`` connections spread over ``ports``.

    ``pace``: at most that many replies a second in all (0: as fast as they are answered).
    """
    receiving, sending = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.Process(
        target=_client, args=(list(ports), replies, lanes, pace, sending)
    )
    process.start()
    seconds, cpu = receiving.recv()
    process.join()
    return Sent(float(seconds), float(cpu))


@dataclass(frozen=True)
class Machine:
    """Where and when: each figure is read beside these."""

    cores: int
    load: str
    date: str

    @classmethod
    def now(cls) -> Machine:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        return cls(os.cpu_count() or 0, load, datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
