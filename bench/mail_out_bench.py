"""Notices rendered and delivered per second, next to the sink's raw rate.

Both figures come from one run against the same local SMTP sink (aiosmtpd
that discards, in its own process so it has the other core):

  raw       the same notices, rendered beforehand, sent by the daemon's own
            SMTP transport (same client code, same connections): the ceiling
            set by the sink and the SMTP client alone;
  pipeline  outbox rows made by the workflow (SQLite), then claimed, rendered,
            composed, sent and marked sent by the real Deliverer.

Each round runs both, one after the other; between rounds the outbox rows are
put back as they were (pending, with their codes). The machine is shared, so
compare the figures of one round (the ratio), and look at several rounds.

Usage: python bench/mail_out_bench.py [--notices 4000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text

from bench.cpu import children, per_item, seconds
from bench.seeding import seed_requests
from countersign.config import Config, OutboundConfig
from countersign.gateway.mail_out.delivery import (
    BATCH,
    CONNECTIONS,
    Deliverer,
    MailSettings,
    Ready,
    SmtpTransport,
    compose_all,
)
from countersign.store.db import Store
from countersign.store.migrate import upgrade
from countersign.workflow.outbox import claim_due


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_sink(port: int, ready: multiprocessing.synchronize.Event) -> None:
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


@dataclass
class Run:
    """A run's rate, and the CPU ms per notice of each process it used."""

    rate: float
    cpu: dict[str, float]


class Spent:
    """CPU seconds of this process and others, from a start."""

    def __init__(self, **others: int) -> None:
        self.others = others
        self.start = self._now()

    def _now(self) -> dict[str, float]:
        return {"main": time.process_time()} | {n: seconds(p) for n, p in self.others.items()}

    def per(self, count: int) -> dict[str, float]:
        return per_item(self.start, self._now(), count)


async def raw_rate(config: Config, messages: list[Ready], sink: int) -> Run:
    transport = SmtpTransport(config, MailSettings.from_config(config).envelope_sender)
    spent = Spent(sink=sink)
    started = time.perf_counter()
    outcomes = await transport.send(messages)
    await transport.close()
    elapsed = time.perf_counter() - started
    assert all(outcome.error is None for outcome in outcomes), outcomes[:3]
    return Run(len(messages) / elapsed, spent.per(len(messages)))


async def pipeline_rate(store: Store, config: Config, notices: int, sink: int) -> Run:
    deliverer = Deliverer(store, config)
    # As `serve` does (runtime.py): its composing process starts with it, not at a burst.
    deliverer.composer.start()
    while deliverer.composer.enabled and not deliverer.composer.running:
        await asyncio.sleep(0.05)
    composing = [child for child, role in children(os.getpid()) if role == "spawned"]
    spent = Spent(sink=sink, **({"composing": composing[-1]} if composing else {}))
    started = time.perf_counter()
    sent = 0
    while handled := await deliverer.deliver_due():
        sent += handled
    elapsed = time.perf_counter() - started
    cpu = spent.per(sent)
    deliverer.close()
    assert sent == notices, (sent, notices)
    return Run(sent / elapsed, cpu)


def cpu_line(run: Run) -> str:
    return ", ".join(f"{name} {ms:.2f}" for name, ms in run.cpu.items())


def prerendered(store: Store, config: Config, count: int) -> list[Ready]:
    """The same notices, rendered ahead (the rows are given back for the pipeline run)."""
    envelopes = claim_due(store, datetime.now(UTC), count)
    composed = compose_all(envelopes, MailSettings.from_config(config))
    assert not composed.broken, composed.broken
    return composed.ready


def saved_codes(store: Store) -> list[dict[str, object]]:
    with store.engine.connect() as connection:
        rows = connection.execute(text("SELECT id, code FROM outbox")).all()
    return [{"id": row.id, "code": row.code} for row in rows]


def reset_outbox(store: Store, codes: list[dict[str, object]]) -> None:
    """Every row due again, as the workflow left it (delivery erased the codes)."""
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE outbox SET status = 'pending', next_attempt_at = created_at,"
                " sent_at = NULL, attempts = 0, code = :code WHERE id = :id"
            ),
            codes,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notices", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    notices = args.notices - args.notices % 2

    port = free_port()
    ready = multiprocessing.Event()
    sink = multiprocessing.Process(target=run_sink, args=(port, ready), daemon=True)
    sink.start()
    ready.wait(10)
    print(f"notices: {notices}, {CONNECTIONS} SMTP connections, batches of {BATCH}")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        upgrade(store.engine)
        seed_requests(store, notices)
        codes = saved_codes(store)
        config = Config(
            data_dir=tmp, outbound=OutboundConfig(smtp_host="127.0.0.1", smtp_port=port)
        )
        for round_ in range(1, args.rounds + 1):
            reset_outbox(store, codes)
            messages = prerendered(store, config, notices)
            raw = asyncio.run(raw_rate(config, messages, sink.pid or 0))
            reset_outbox(store, codes)
            full = asyncio.run(pipeline_rate(store, config, notices, sink.pid or 0))
            ratios.append(full.rate / raw.rate)
            print(
                f"round {round_}: sink, pre-rendered {raw.rate:6.0f} msg/s;"
                f" countersign, outbox to sink {full.rate:6.0f} notices/s;"
                f" ratio {full.rate / raw.rate:.2f}\n"
                f"    CPU ms per notice: pre-rendered {cpu_line(raw)}; countersign {cpu_line(full)}"
            )
        store.dispose()
    sink.terminate()
    print(f"median ratio: {statistics.median(ratios):.2f} (target >= 0.50, and >= 500 notices/s)")


if __name__ == "__main__":
    main()
