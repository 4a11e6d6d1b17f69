"""Replies processed per second over SMTP, end to end, next to a bare aiosmtpd sink's rate.

Both figures come from one run, with the same replies and the same client (aiosmtplib,
8 connections, in its own process so the server keeps the other core):

  sink         aiosmtpd whose handler only parses each message (email.policy.default)
               and answers 250: what a Python SMTP server does at the least;
  countersign  the daemon's SMTP in (store, then 250) and its "inbox" sweep (read,
               decide, commit; in the mail-in process once the burst has started
               it, a second or so in), on SQLite, exactly as `serve` wires them;
               counted from the first reply's end of DATA to the last decision
               committed.

Rounds of sink then Countersign on fresh replies; the ratio is taken per round (the
shared machine's load moves by the minute) and its median printed.

The replies are real: each quotes the text of the confirm-request the workflow
queued for one validator (rendered by the real composer) and starts with
"Accept, thanks"; half the validators' acceptances complete their request.

Usage: python bench/mail_in_bench.py [--replies 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import logging
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiosmtplib
from aiosmtpd.smtp import SMTP
from sqlalchemy import func, select

from bench.seeding import seed_requests
from countersign.config import Config
from countersign.gateway.mail_in.smtp import start_smtp
from countersign.gateway.mail_in.sweep import InboxResult, MailIn
from countersign.gateway.mail_out.delivery import MailSettings, compose
from countersign.scheduler.sweeper import Sweeper
from countersign.store.db import Store
from countersign.store.migrate import upgrade
from countersign.store.models import Validator
from countersign.workflow.inbox import Arrival, store_many
from countersign.workflow.outbox import claim_due

CONNECTIONS = 8
PER_CONNECTION = 500  # then reconnect: the server allows 1000 MAILs per session


# --- the replies ---------------------------------------------------------------------


def write_replies(store: Store, config: Config, count: int) -> list[tuple[str, bytes]]:
    """(reply address, raw reply) for each confirm-request: what a person's client would send."""
    settings = MailSettings.from_config(config)
    made = []
    for n, envelope in enumerate(claim_due(store, datetime.now(UTC), count)):
        notice = email.message_from_bytes(
            compose(envelope, settings).as_bytes(), policy=email.policy.default
        )
        text = notice.get_body(preferencelist=("plain",))
        assert text is not None
        quoted = "\r\n".join("> " + line for line in text.get_content().splitlines())
        reply_to = str(notice["Reply-To"])
        raw = (
            f"From: Someone <{envelope.to_address}>\r\nTo: {reply_to}\r\n"
            f"Subject: Re: {notice['Subject']}\r\nMessage-ID: <reply{n}@client.bench.test>\r\n"
            f"In-Reply-To: {envelope.message_id}\r\nReferences: {envelope.message_id}\r\n"
            "Date: Mon, 02 Nov 2026 09:30:00 +0000\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n"
            "Accept, thanks\r\n\r\nOn Mon, 2 Nov 2026 at 09:00, Countersign wrote:\r\n"
            f"{quoted}\r\n"
        )
        made.append((reply_to, raw.encode()))
    return made


# --- the client (its own process) ----------------------------------------------------------


def client(port: int, replies: list[tuple[str, bytes]], pace: float, out: Any) -> None:
    """Send every reply over CONNECTIONS lanes; ``pace`` > 0: one reply per lane every pace s."""

    async def lane(chunk: list[tuple[str, bytes]]) -> None:
        for start in range(0, len(chunk), PER_CONNECTION):
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=60)
            await smtp.connect()
            for to, raw in chunk[start : start + PER_CONNECTION]:
                await smtp.sendmail("someone@client.bench.test", [to], raw)
                await asyncio.sleep(pace)
            await smtp.quit()

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(lane(replies[i::CONNECTIONS]) for i in range(CONNECTIONS)))
        return time.perf_counter() - started

    out.send(asyncio.run(main()))


def send_all(port: int, replies: list[tuple[str, bytes]], pace: float = 0.0) -> float:
    """Seconds the client took to have every reply answered 250."""
    receiving, sending = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.Process(target=client, args=(port, replies, pace, sending))
    process.start()
    seconds = float(receiving.recv())
    process.join()
    return seconds


# --- the bare sink ------------------------------------------------------------------------


class ParsingSink:
    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        return "250 OK"


async def sink_rate(replies: list[tuple[str, bytes]]) -> float:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(ParsingSink(), hostname="sink.bench.test"), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    seconds = await asyncio.to_thread(send_all, port, replies)
    server.close()
    return len(replies) / seconds


# --- countersign --------------------------------------------------------------------------


@dataclass
class Clock:
    """End of DATA and commit of the decision, per inbox row."""

    received: dict[int, float] = field(default_factory=dict)
    decided: dict[int, float] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def countersign_rate(
    store: Store, config: Config, replies: list[tuple[str, bytes]], pace: float = 0.0
) -> tuple[float, float, list[float], Clock]:
    clock = Clock()
    loop = asyncio.get_running_loop()

    def receive_many(store: Store, arrivals: Sequence[Arrival]) -> list[int | None]:
        stored = store_many(store, arrivals)
        for arrival, inbox_id in zip(arrivals, stored, strict=True):
            if inbox_id is not None:
                # handle_DATA stamps each arrival right after the final dot.
                clock.received[inbox_id] = arrival.now.timestamp()
        return stored

    def decided(done: InboxResult) -> None:
        clock.decided[done.inbox_id] = done.committed
        outcome = str(done.outcome)
        clock.outcomes[outcome] = clock.outcomes.get(outcome, 0) + 1
        if len(clock.decided) == len(replies):
            loop.call_soon_threadsafe(clock.done.set)

    mail_in = MailIn(store, config, on_outcome=decided)
    sweeper = Sweeper()
    # As `serve` wires it (runtime.build_sweeper), with the timing hook added.
    sweeper.add("inbox", mail_in.process_due, config.sweep_every)
    store.on_commit("inbox", lambda: sweeper.wake("inbox"))
    sweeper.start()
    server = await start_smtp(store, config, host="127.0.0.1", port=0, receive_many=receive_many)
    port = server.sockets[0].getsockname()[1]
    client_seconds = await asyncio.to_thread(send_all, port, replies, pace)
    await asyncio.wait_for(clock.done.wait(), 300)
    server.close()
    sweeper.shutdown()
    mail_in.close()
    first = min(clock.received.values())
    last = max(clock.decided.values())
    latencies = [clock.decided[i] - clock.received[i] for i in clock.decided]
    return len(replies) / (last - first), len(replies) / client_seconds, latencies, clock


def accepted(store: Store) -> int:
    with store.read() as session:
        count = session.scalar(
            select(func.count()).select_from(Validator).where(Validator.decision == "accept")
        )
        return int(count or 0)


@dataclass
class Round:
    sink: float
    rate: float
    acked: float


def main() -> None:
    # Shutting the sweeper down between runs cancels its idle jobs: not worth a traceback.
    logging.getLogger("apscheduler").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=2000, help="replies per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paced", type=int, default=400, help="replies sent at --rate")
    parser.add_argument("--rate", type=float, default=40.0, help="replies/s of the paced run")
    args = parser.parse_args()
    count = args.replies - args.replies % 2
    paced_count = args.paced - args.paced % 2
    rounds: list[Round] = []
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(data_dir=tmp)
        store = Store(config.database_url)  # the mail-in process opens it by this name too
        upgrade(store.engine)
        seed_requests(store, count * args.rounds + paced_count)
        replies = write_replies(store, config, count * args.rounds + paced_count)
        for n in range(args.rounds):
            # Sink then Countersign on the same replies, round after round: the
            # machine's load changes by the minute, the ratio within a round less.
            flood = replies[n * count : (n + 1) * count]
            sink = asyncio.run(sink_rate(flood))
            rate, acked, waited, clock = asyncio.run(countersign_rate(store, config, flood))
            rounds.append(Round(sink, rate, acked))
            latencies += waited
            for outcome, seen in clock.outcomes.items():
                outcomes[outcome] = outcomes.get(outcome, 0) + seen
            print(
                f"round {n + 1}: sink {sink:6.0f} msg/s; countersign {rate:5.0f} decisions/s "
                f"end to end, 250s at {acked:5.0f}/s; ratio {rate / sink:.2f}"
            )
        paced = replies[count * args.rounds :]
        _, _, calm, _ = asyncio.run(
            countersign_rate(store, config, paced, pace=CONNECTIONS / args.rate)
        )
        decisions = accepted(store)
        store.dispose()
    report(args, count, rounds, latencies, calm, outcomes, decisions)


def report(
    args: argparse.Namespace,
    count: int,
    rounds: list[Round],
    latencies: list[float],
    calm: list[float],
    outcomes: dict[str, int],
    decisions: int,
) -> None:
    quantiles = statistics.quantiles(latencies, n=100)
    calm_quantiles = statistics.quantiles(calm, n=100)
    ratio = statistics.median(r.rate / r.sink for r in rounds)
    sink = statistics.median(r.sink for r in rounds)
    acked = statistics.median(r.acked for r in rounds)
    rate = statistics.median(r.rate for r in rounds)
    print(f"replies:                          {count} x {len(rounds)} rounds, {CONNECTIONS} lanes")
    print(f"bare aiosmtpd sink (parse only):  median {sink:6.0f} msg/s")
    print(f"countersign, 250 to the client:   median {acked:6.0f} msg/s")
    print(
        f"countersign, end to end:          median {rate:6.0f} decisions/s (end of DATA to commit)"
    )
    print(f"ratio to the sink:                median {ratio:6.2f} (target >= 0.40, >= 500/s)")
    print(
        f"latency end of DATA -> committed:  p50 {quantiles[49] * 1000:.0f} ms, "
        f"p99 {quantiles[98] * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
    )
    print(
        f"latency at {args.rate:.0f} replies/s:         p50 {calm_quantiles[49] * 1000:.0f} ms, "
        f"p99 {calm_quantiles[98] * 1000:.0f} ms ({len(calm)} replies, not saturated)"
    )
    print(f"outcomes:                         {outcomes}; validators accepted: {decisions}")


if __name__ == "__main__":
    main()
