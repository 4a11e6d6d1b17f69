"""`countersign serve` itself, end to end, next to a parse-only aiosmtpd sink in the same round.

A real `serve` process (every door and sweep on, notices delivered over SMTP to
a relay sink in a process of its own) takes replies over SMTP from another
process (8 connections); each reply quotes the confirm-request it answers and
accepts it, half of them completing their request (then applied, and its
`completed` notices delivered).  Three set-ups, each on a database of its own:

  sqlite      one daemon, SQLite
  postgresql  one daemon, PostgreSQL (a fresh database on COUNTERSIGN_TEST_DATABASE_URL)
  two         two daemons on one PostgreSQL, the client's connections split between them

Each round: the parse-only sink takes the round's replies (the ceiling of a
Python SMTP server on this machine, this minute), then fresh daemons take the
same number of fresh replies.  "End to end" runs from the first reply's end of
DATA to the last decision committed or notice delivered, whichever is later;
latency is per reply, end of DATA -> its decision committed (the daemon's audit
line, written once the transaction committed).  Medians of the rounds; the
ratio is taken within each round.

Flat out (the default) the latency is mostly the queue that builds while replies
arrive faster than they are decided; ``--paced RATE`` sends below capacity and
shows the latency of one reply's own path.

Usage: python bench/serve_bench.py [--replies 1000] [--rounds 3] [--only sqlite,postgresql,two]
                                   [--paced RATE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cpu import per_item
from bench.mail_in_bench import sink_rate, write_replies
from bench.seeding import seed_requests
from bench.serving import (
    Daemon,
    Machine,
    Relay,
    create_database,
    drop_database,
    mark_claimed_sent,
    postgresql_base,
    received_at,
    round_cpu,
    send_replies,
    settled,
)
from countersign.config import Config
from countersign.store.db import Store
from countersign.store.migrate import upgrade

SETUPS = ("sqlite", "postgresql", "two")
TARGETS = {
    "sqlite": "target >= 500/s and >= 0.40 of the sink",
    "postgresql": "target >= 400/s, p99 < 100 ms",
    "two": "target >= 0.9 of one daemon on PostgreSQL",
}


@dataclass(frozen=True)
class Round:
    sink: float  # msg/s the parse-only sink took
    rate: float  # decisions/s end to end
    acked: float  # 250s/s the client saw
    latencies: list[float]  # s, end of DATA -> committed
    notices: int
    cpu: dict[str, float]  # CPU ms per reply, by process
    sink_cpu: float  # CPU ms per message of the parse-only sink's process

    @property
    def ceiling(self) -> float:
        """Replies/s if every core did nothing but these processes' work per reply."""
        return (os.cpu_count() or 1) * 1000 / sum(self.cpu.values())


def run_round(
    setup: str,
    folder: Path,
    url: str,
    relay: Relay,
    replies: list[tuple[str, bytes]],
    pace: float = 0.0,
) -> Round:
    sink_started = time.process_time()
    sink = asyncio.run(sink_rate(replies))
    sink_cpu = (time.process_time() - sink_started) * 1000 / len(replies)
    store = Store(url)
    daemons = [Daemon(folder / f"d{n}", url, relay.port) for n in range(2 if setup == "two" else 1)]
    try:
        for daemon in daemons:
            daemon.start()
        relay.take()
        before = round_cpu(daemons, relay, url)  # the client counts its own
        sent = send_replies([d.smtp_port for d in daemons], replies, pace=pace)
        deadline = time.monotonic() + 300
        while not settled(store, len(replies)) and time.monotonic() < deadline:
            time.sleep(0.2)
        notices = relay.take()
        after = round_cpu(daemons, relay, url)
    finally:
        for daemon in daemons:
            daemon.stop()
    received = received_at(store)
    store.dispose()
    committed: dict[str, float] = {}
    for daemon in daemons:
        committed |= daemon.committed()
    wanted = {raw_id(raw) for _, raw in replies}
    ends = {m: committed[m] for m in wanted if m in committed}
    if len(ends) < len(wanted):
        raise RuntimeError(f"{len(wanted) - len(ends)} replies not decided (see {folder})")
    start = min(received[m] for m in wanted)
    last = max([*ends.values(), *(at for at, _ in notices)])
    latencies = [ends[m] - received[m] for m in wanted]
    rate = len(replies) / (last - start)
    cpu = per_item(before, after, len(replies))
    cpu["client"] = sent.cpu * 1000 / len(replies)
    acked = len(replies) / sent.seconds
    return Round(sink, rate, acked, latencies, len(notices), cpu, sink_cpu)


def raw_id(raw: bytes) -> str:
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    line = next(x for x in head.split("\r\n") if x.lower().startswith("message-id:"))
    return line.split(":", 1)[1].strip().strip("<>")


def prepare(url: str, folder: Path, count: int) -> list[tuple[str, bytes]]:
    """Migrated, seeded, each validator's reply written; the confirm-requests count as sent."""
    store = Store(url)
    upgrade(store.engine)
    seed_requests(store, count)
    replies = write_replies(store, Config(data_dir=str(folder)), count)
    mark_claimed_sent(store)
    store.dispose()
    return replies


def run_setup(setup: str, args: argparse.Namespace, relay: Relay) -> list[Round] | None:
    base = postgresql_base()
    if setup != "sqlite" and base is None:
        print(f"{setup}: skipped (COUNTERSIGN_TEST_DATABASE_URL is not set)")
        return None
    name = f"bench_serve_{os.getpid()}_{setup}"
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder}/countersign.db" if base is None or setup == "sqlite" else ""
        url = url or create_database(base or "", name)
        try:
            replies = prepare(url, folder, args.replies * args.rounds)
            rounds = []
            for n in range(args.rounds):
                chunk = replies[n * args.replies : (n + 1) * args.replies]
                done = run_round(setup, folder / f"round{n + 1}", url, relay, chunk, args.paced)
                rounds.append(done)
                print(f"{setup} round {n + 1}: {line(done)}", flush=True)
        finally:
            if setup != "sqlite" and base is not None:
                drop_database(base, name)
    return rounds


def line(done: Round) -> str:
    q = statistics.quantiles(done.latencies, n=100)
    return (
        f"sink {done.sink:5.0f} msg/s; serve {done.rate:5.0f} decisions/s end to end"
        f" (250s at {done.acked:4.0f}/s, {done.notices} notices);"
        f" ratio {done.rate / done.sink:.2f};"
        f" latency p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms"
        f"\n    CPU ms per reply: {cpu_line(done.cpu)}"
        f" (the sink: {done.sink_cpu:.2f} per message)"
        f"; all the cores could do {done.ceiling:.0f}/s at that cost"
    )


def cpu_line(cpu: dict[str, float]) -> str:
    parts = ", ".join(f"{role} {ms:.2f}" for role, ms in cpu.items())
    return f"{parts}; total {sum(cpu.values()):.2f}"


def summary(setup: str, rounds: list[Round], one: float | None) -> str:
    rate = statistics.median(r.rate for r in rounds)
    ratio = statistics.median(r.rate / r.sink for r in rounds)
    p50 = statistics.median(statistics.quantiles(r.latencies, n=100)[49] for r in rounds)
    p99 = statistics.median(statistics.quantiles(r.latencies, n=100)[98] for r in rounds)
    sink = statistics.median(r.sink for r in rounds)
    text = (
        f"{setup:10} median {rate:5.0f} decisions/s, sink {sink:5.0f} msg/s, ratio {ratio:.2f},"
        f" p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
    )
    if setup == "two" and one:
        text += f", {rate / one:.2f} of one daemon"
    cpu = {role: statistics.median(r.cpu[role] for r in rounds) for role in rounds[0].cpu}
    ceiling = statistics.median(r.ceiling for r in rounds)
    return (
        f"{text}  ({TARGETS[setup]})\n{'':10} CPU ms per reply: {cpu_line(cpu)};"
        f" ceiling at that cost {ceiling:.0f}/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=1000, help="fresh replies per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(SETUPS), help="of sqlite,postgresql,two")
    parser.add_argument(
        "--paced",
        type=float,
        default=0.0,
        help="send at most this many replies/s (latency below capacity); default: flat out",
    )
    args = parser.parse_args()
    args.replies -= args.replies % 2
    machine = Machine.now()
    pace = f", paced at {args.paced:.0f}/s" if args.paced else ""
    print(
        f"{machine.date}, {machine.cores} cores, load {machine.load}; {args.replies} replies{pace}"
    )
    relay = Relay()
    results: dict[str, list[Round]] = {}
    try:
        for setup in args.only.split(","):
            rounds = run_setup(setup.strip(), args, relay)
            if rounds:
                results[setup.strip()] = rounds
    finally:
        relay.close()
    one = (
        statistics.median(r.rate for r in results.get("postgresql", []))
        if results.get("postgresql")
        else None
    )
    print(f"load after: {Machine.now().load}")
    for setup, rounds in results.items():
        print(summary(setup, rounds, one))


if __name__ == "__main__":
    main()
