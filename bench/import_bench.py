"""How fast `countersign import` is, against a raw sqlite3 baseline in the same run.

    .venv/bin/python bench/import_bench.py [--lines 100000]

Generates N JSON Lines (half accounts, then half services, each service naming
three of the accounts) into a temporary file, imports them into a fresh SQLite
database with ``workflow.importer.import_lines`` and prints lines/second and
seconds.  Then, for scale, inserts the same rows with a plain
``sqlite3.executemany`` into bare tables (no checks, no ORM) and prints that
rate and the ratio: the figure to watch is the ratio, not the absolute rate,
which depends on the machine.  The issue's target: 100,000 accounts and
services well under a minute on SQLite.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from countersign.store.db import Store
from countersign.store.migrate import upgrade
from countersign.workflow.importer import import_lines

ZONES = ("EU", "CA", "US")


def generate(path: Path, lines: int) -> tuple[int, int]:
    """Write ``lines`` JSON Lines: accounts first, then services naming them."""
    accounts = lines // 2
    services = lines - accounts
    with path.open("w", encoding="utf-8") as out:
        for i in range(accounts):
            item: dict[str, object] = {"account": f"user{i}@example.org", "zone": ZONES[i % 3]}
            if i % 4 == 0:
                item["contactEmail"] = f"mail{i}@example.net"
            if i % 5 == 0:
                item["language"] = "fr"
            if i % 7 == 0:
                item["balanceDue"] = "12.50"
            out.write(json.dumps(item) + "\n")
        for j in range(services):
            # Same zone for all three contacts, as a real book of services would have.
            admin = j % accounts
            tech = (admin + 3) % accounts
            billing = (admin + 6) % accounts
            out.write(
                json.dumps(
                    {
                        "service": f"service{j}.example.com",
                        "contactAdmin": f"user{admin}@example.org",
                        "contactTech": f"user{tech}@example.org",
                        "contactBilling": f"user{billing}@example.org",
                    }
                )
                + "\n"
            )
    return accounts, services


def run_importer(source: Path, database: Path) -> float:
    store = Store(f"sqlite:///{database}")
    upgrade(store.engine)
    started = time.perf_counter()
    with source.open(encoding="utf-8") as lines:
        counts = import_lines(store, lines)
    elapsed = time.perf_counter() - started
    store.dispose()
    print(f"  imported {counts['accounts']} accounts, {counts['services']} services")
    return elapsed


def _bare_tables(database: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT UNIQUE, contact_email TEXT,"
        " zone TEXT, language TEXT, payment_method_valid INTEGER, balance_due TEXT,"
        " created_at TEXT)"
    )
    connection.execute(
        "CREATE TABLE services (id INTEGER PRIMARY KEY, domain TEXT UNIQUE, admin_id INTEGER,"
        " tech_id INTEGER, billing_id INTEGER, created_at TEXT)"
    )
    return connection


def run_baseline(source: Path, database: Path) -> float:
    """The floor: parse each line and executemany into bare tables, one transaction."""
    connection = _bare_tables(database)
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ")
    started = time.perf_counter()
    accounts = []
    services = []
    with source.open(encoding="utf-8") as lines:
        for line in lines:
            item = json.loads(line)
            if "account" in item:
                accounts.append(
                    (
                        item["account"],
                        item.get("contactEmail"),
                        item["zone"],
                        item.get("language", "en"),
                        1,
                        item.get("balanceDue", "0"),
                        now,
                    )
                )
            else:
                services.append(item)
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(
        "INSERT INTO accounts (email, contact_email, zone, language, payment_method_valid,"
        " balance_due, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        accounts,
    )
    ids = dict(connection.execute("SELECT email, id FROM accounts"))
    connection.executemany(
        "INSERT INTO services (domain, admin_id, tech_id, billing_id, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        [
            (
                s["service"],
                ids[s["contactAdmin"]],
                ids[s["contactTech"]],
                ids[s["contactBilling"]],
                now,
            )
            for s in services
        ],
    )
    connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000, help="JSON Lines to generate")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="countersign-bench-") as tmp:
        folder = Path(tmp)
        source = folder / "import.jsonl"
        accounts, services = generate(source, args.lines)
        total = accounts + services
        print(f"{total} lines ({accounts} accounts, {services} services) in {source.name}")

        print("countersign importer (workflow.importer.import_lines, SQLite):")
        ours = run_importer(source, folder / "countersign.db")
        print(f"  {ours:.2f} s, {total / ours:,.0f} lines/s")

        print("baseline (json.loads + sqlite3 executemany into bare tables):")
        floor = run_baseline(source, folder / "baseline.db")
        print(f"  {floor:.2f} s, {total / floor:,.0f} lines/s")

        print(f"importer takes {ours / floor:.1f}x the baseline's time")


if __name__ == "__main__":
    main()
