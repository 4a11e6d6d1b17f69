"""CPU cost of reading one stored reply, next to a bare parse of the same bytes.

Both figures come from one run over the same messages, so their ratio holds on any
machine:

  bare parse   email.message_from_bytes(raw, policy=compat32): the least any reader
               of a message does;
  read         gateway.mail_in.sweep.read_inbound: what the "inbox" sweep pays per message
               before it decides (parse, bounce and automation checks, quote cut,
               mailparser_reply's second opinion, DMARC and References checks).

The typical replies are built as bench/mail_in_bench.py builds them: the real
composer's confirm-request notice quoted with "> " under "Accept, thanks". The
corpus (tests/corpus/*.eml) adds every client's shapes, bounces and automated mail.

Usage: flock /tmp/countersign-bench.lock python bench/reading_bench.py [--replies 400]
"""

from __future__ import annotations

import argparse
import email
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from email.policy import compat32
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.mail_in_bench import write_replies
from bench.seeding import seed_requests
from countersign.config import Config
from countersign.gateway.mail_in.sweep import InboundSettings, read_inbound
from countersign.store.db import Store
from countersign.store.migrate import upgrade
from countersign.workflow.inbox_batch import Received

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "corpus"
ROUNDS = 7  # the fastest round is reported: the others lost time to the neighbours


def typical_replies(count: int) -> list[Received]:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        upgrade(store.engine)
        config = Config(data_dir=tmp)
        seed_requests(store, count)
        replies = write_replies(store, config, count)
        store.dispose()
    return [
        Received(n, "smtp", raw, (to,), "someone@client.bench.test", 0)
        for n, (to, raw) in enumerate(replies)
    ]


def corpus_messages() -> list[Received]:
    expected = json.loads((CORPUS / "expected.json").read_text())
    return [
        Received(
            n,
            "smtp",
            (CORPUS / name).read_bytes(),
            tuple(spec["recipients"]),
            spec["envelope_sender"],
            0,
        )
        for n, (name, spec) in enumerate(sorted(expected.items()))
    ]


def per_item_us(items: Sequence[Received], work: Callable[[Received], object]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        for item in items:
            work(item)
        best = min(best, time.process_time() - started)
    return best / len(items) * 1e6


def report(label: str, items: Sequence[Received], settings: InboundSettings) -> None:
    bare = per_item_us(items, lambda item: email.message_from_bytes(item.raw, policy=compat32))
    read = per_item_us(items, lambda item: read_inbound(item, settings))
    size = sum(len(item.raw) for item in items) / len(items)
    print(
        f"{label:<22} {len(items):5d} msgs, {size / 1024:4.1f} KB avg: bare parse {bare:7.1f} us,"
        f" read {read:7.1f} us, ratio {read / bare:5.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=400)
    args = parser.parse_args()
    settings = InboundSettings(trusted_authserv_id="mx.countersign.localhost")
    report("typical replies", typical_replies(args.replies - args.replies % 2), settings)
    report("corpus", corpus_messages(), settings)


if __name__ == "__main__":
    main()
