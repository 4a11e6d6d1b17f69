"""Notices rendered and delivered per second, next to the sink's raw rate.

Both figures come from one run against the same local SMTP sink (aiosmtpd
that discards, in its own process so it has the other core):

  raw       pre-rendered messages sent with aiosmtplib over the same number of
            connections the daemon uses: the ceiling set by the sink and the
            SMTP client alone;
  pipeline  outbox rows made by the workflow (SQLite), then claimed, rendered,
            composed, sent and marked sent by the real Deliverer.

Usage: python bench/mail_out_bench.py [--notices 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiosmtplib
from sqlalchemy import text

from config import Config, OutboundConfig
from gateway.delivery import CONNECTIONS, Deliverer, MailSettings, compose
from rules.contacts import ContactType
from store.db import Store
from store.migrate import upgrade
from workflow.importer import import_lines
from workflow.outbox import claim_due
from workflow.policy import Policy
from workflow.requests import change_contacts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_sink(port: int, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    from aiosmtpd.smtp import SMTP

    class Discard:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 OK"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_server(lambda: SMTP(Discard(), hostname="sink.bench"), "127.0.0.1", port)
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def make_outbox(store: Store, notices: int) -> None:
    """notices/2 requests, each mailing its two validators a confirm-request."""
    services = notices // 2
    lines = [f'{{"account": "admin{i}@bench.test", "zone": "EU"}}' for i in range(services)]
    lines += [f'{{"account": "new{i}@bench.test", "zone": "EU"}}' for i in range(services)]
    lines += [
        f'{{"service": "s{i}.bench.test", "contactAdmin": "admin{i}@bench.test", '
        f'"contactTech": "admin{i}@bench.test", "contactBilling": "admin{i}@bench.test"}}'
        for i in range(services)
    ]
    import_lines(store, lines)
    policy = Policy()
    for i in range(services):
        change_contacts(
            store,
            f"s{i}.bench.test",
            f"admin{i}@bench.test",
            {ContactType.TECH: f"new{i}@bench.test"},
            policy,
        )


async def raw_rate(port: int, messages: list[bytes]) -> float:
    async def lane(chunk: list[bytes]) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        for data in chunk:
            await client.sendmail("contacts@countersign.localhost", ["a@bench.test"], data)
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(lane(messages[i::CONNECTIONS]) for i in range(CONNECTIONS)))
    return len(messages) / (time.perf_counter() - started)


async def pipeline_rate(store: Store, config: Config, notices: int) -> float:
    deliverer = Deliverer(store, config)
    started = time.perf_counter()
    sent = 0
    while handled := await deliverer.deliver_due():
        sent += handled
    elapsed = time.perf_counter() - started
    assert sent == notices, (sent, notices)
    return sent / elapsed


def prerendered(store: Store, config: Config, count: int) -> list[bytes]:
    """The same kind of notice, rendered ahead (from a throwaway copy of the outbox)."""
    settings = MailSettings.from_config(config)
    envelopes = claim_due(store, datetime.now(UTC), count)
    with store.engine.begin() as connection:  # give the rows back for the pipeline run
        connection.execute(
            text("UPDATE outbox SET status = 'pending', next_attempt_at = created_at")
        )
    return [compose(e, settings).as_bytes() for e in envelopes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notices", type=int, default=4000)
    args = parser.parse_args()
    notices = args.notices - args.notices % 2

    port = free_port()
    ready = multiprocessing.Event()
    sink = multiprocessing.Process(target=run_sink, args=(port, ready), daemon=True)
    sink.start()
    ready.wait(10)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        upgrade(store.engine)
        make_outbox(store, notices)
        config = Config(
            data_dir=tmp, outbound=OutboundConfig(smtp_host="127.0.0.1", smtp_port=port)
        )
        messages = prerendered(store, config, notices)
        raw = asyncio.run(raw_rate(port, messages))
        full = asyncio.run(pipeline_rate(store, config, notices))
        store.dispose()
    sink.terminate()
    print(f"notices:                     {notices}")
    print(f"sink, pre-rendered mail:     {raw:8.0f} msg/s ({CONNECTIONS} connections)")
    print(f"countersign, outbox to sink: {full:8.0f} notices/s (claim, render, send, mark)")
    print(f"ratio:                       {full / raw:8.2f} (target >= 0.50, and >= 500 notices/s)")


if __name__ == "__main__":
    main()
