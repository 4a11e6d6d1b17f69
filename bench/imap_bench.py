"""`countersign serve` reading replies from a real Dovecot, next to a bare imapclient baseline.

Both take the same number of replies, appended to the mailbox at once (MULTIAPPEND):

  baseline     imapclient alone: select, FETCH BODY.PEEK[] in batches of 100, parse each
               message (email.policy.default), MOVE each batch to Processed;
  countersign  a real `serve` (every door and sweep on, IMAP read with IDLE, notices
               delivered to a relay sink), counted from the append's end to the last
               decision committed or notice delivered, whichever is later.

Rounds of baseline then Countersign on fresh replies; the ratio is taken per round.
Dovecot's IDLE reports new mail ~0.5 s after it arrives, always: Countersign's figure
carries that delay, the baseline's does not.

Usage: python bench/imap_bench.py [--replies 1000] [--rounds 3] [--only sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text

from bench.cpu import named, per_item
from bench.serve_bench import cpu_line, prepare, raw_id
from bench.serving import (
    Daemon,
    Machine,
    Relay,
    create_database,
    drop_database,
    postgresql_base,
    round_cpu,
    settled,
)
from countersign.store.db import Store
from tests.servers.dovecot import DovecotServer, dovecot_binary

BATCH = 100


def baseline(dovecot: DovecotServer, replies: list[bytes]) -> float:
    """Messages/s of a bare fetch-parse-move over what was just appended."""
    dovecot.append(replies)
    started = time.perf_counter()
    with dovecot.connect() as client:
        client.select_folder("INBOX")
        uids = sorted(client.search("ALL"))
        for at in range(0, len(uids), BATCH):
            batch = uids[at : at + BATCH]
            for data in client.fetch(batch, [b"BODY.PEEK[]"]).values():
                email.message_from_bytes(data[b"BODY[]"], policy=email.policy.default)
            client.move(batch, "Processed")
    return len(replies) / (time.perf_counter() - started)


def countersign(
    daemon: Daemon, dovecot: DovecotServer, relay: Relay, url: str, replies: list[bytes]
) -> float:
    """Decisions/s end to end, from the append's end."""
    store = Store(url)
    relay.take()
    before = done(store)
    spent = _cpu(daemon, relay, url)
    dovecot.append(replies)
    appended = time.time()
    deadline = time.monotonic() + 300
    while not settled(store, before + len(replies)) and time.monotonic() < deadline:
        time.sleep(0.1)
    used = _cpu(daemon, relay, url)
    store.dispose()
    notices = relay.take()
    cpu = per_item(spent, used, len(replies))
    print(f"    CPU ms per reply: {cpu_line(cpu)}", flush=True)
    committed = daemon.committed()
    wanted = [raw_id(raw) for raw in replies]
    missing = [m for m in wanted if m not in committed]
    if missing:
        raise RuntimeError(f"{len(missing)} replies not decided (see {daemon.log_path})")
    last = max([*(committed[m] for m in wanted), *(at for at, _ in notices)])
    return len(replies) / (last - appended)


def _cpu(daemon: Daemon, relay: Relay, url: str) -> dict[str, float]:
    """CPU seconds so far: the round's processes (bench/serving.py) and Dovecot's."""
    return round_cpu([daemon], relay, url) | {"dovecot": named("imap", "dovecot")}


def done(store: Store) -> int:
    with store.read() as session:
        return int(
            session.execute(text("SELECT count(*) FROM inbox WHERE status = 'done'")).scalar() or 0
        )


def imap_env(dovecot: DovecotServer) -> dict[str, str]:
    return {
        "COUNTERSIGN_INBOUND_IMAP_HOST": dovecot.host,
        "COUNTERSIGN_INBOUND_IMAP_PORT": str(dovecot.port),
        "COUNTERSIGN_INBOUND_IMAP_USER": dovecot.user,
        "COUNTERSIGN_INBOUND_IMAP_PASSWORD": dovecot.password,
        "COUNTERSIGN_INBOUND_IMAP_TLS": "false",
    }


def run_setup(setup: str, args: argparse.Namespace, relay: Relay) -> list[tuple[float, float]]:
    base = postgresql_base()
    name = f"bench_imap_{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="imap-bench-") as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder}/countersign.db" if setup == "sqlite" else ""
        url = url or create_database(base or "", name)
        rounds = []
        try:
            replies = [raw for _, raw in prepare(url, folder, 2 * args.replies * args.rounds)]
            with DovecotServer() as dovecot:
                for n in range(args.rounds):
                    chunk = replies[2 * n * args.replies : (2 * n + 1) * args.replies]
                    bare = baseline(dovecot, chunk)
                    fresh = replies[(2 * n + 1) * args.replies : (2 * n + 2) * args.replies]
                    daemon = Daemon(folder / f"round{n + 1}", url, relay.port, **imap_env(dovecot))
                    daemon.start()
                    try:
                        rate = countersign(daemon, dovecot, relay, url, fresh)
                    finally:
                        daemon.stop()
                    rounds.append((bare, rate))
                    print(
                        f"{setup} round {n + 1}: baseline {bare:5.0f} msg/s;"
                        f" serve {rate:5.0f} decisions/s end to end; ratio {rate / bare:.2f}",
                        flush=True,
                    )
        finally:
            if setup != "sqlite":
                drop_database(base or "", name)
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="sqlite,postgresql")
    args = parser.parse_args()
    if dovecot_binary() is None:
        print("imap: skipped (Dovecot is not installed)")
        return
    machine = Machine.now()
    print(f"{machine.date}, {machine.cores} cores, load {machine.load}; {args.replies} replies")
    relay = Relay()
    results = {}
    try:
        for setup in args.only.split(","):
            if setup != "sqlite" and postgresql_base() is None:
                print(f"{setup}: skipped (COUNTERSIGN_TEST_DATABASE_URL is not set)")
                continue
            results[setup] = run_setup(setup, args, relay)
    finally:
        relay.close()
    for setup, rounds in results.items():
        ratio = statistics.median(rate / bare for bare, rate in rounds)
        rate = statistics.median(rate for _, rate in rounds)
        bare = statistics.median(bare for bare, _ in rounds)
        print(
            f"{setup:10} median {rate:5.0f} decisions/s, baseline {bare:5.0f} msg/s,"
            f" ratio {ratio:.2f} (target >= 0.40)"
        )


if __name__ == "__main__":
    main()
