"""Bulk import of accounts and services from JSON Lines, all or nothing.

Every line is checked before anything is written, then everything goes in
one transaction with multi-row inserts: 100,000 lines take seconds, and a bad
line leaves the store exactly as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from rules.contacts import Refusal
from store.db import Store
from store.models import Account, Service
from workflow.directory import AccountChanges, parse_balance, valid_changes, valid_email
from workflow.requests import record, utcnow

ACCOUNT_KEYS = {"account", "zone", "contactEmail", "language", "paymentMethodValid", "balanceDue"}
SERVICE_KEYS = {"service", "contactAdmin", "contactTech", "contactBilling"}
CHUNK = 5_000  # rows per INSERT statement batch / IN (...) lookup
MAX_REPORTED = 20


class ImportRejected(Refusal):
    def __init__(self, problems: list[str]) -> None:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__("bad-import", f"{problems[0]}{more}; nothing was imported")
        self.problems = problems


@dataclass
class Batch:
    accounts: list[dict[str, Any]] = field(default_factory=list)
    services: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)  # line, domain
    problems: list[str] = field(default_factory=list)

    def problem(self, line: int, text: str) -> None:
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(f"line {line}: {text}")


def _parse_account(item: dict[str, Any]) -> dict[str, Any]:
    unknown = set(item) - ACCOUNT_KEYS
    if unknown:
        raise Refusal("bad-import", f"unknown field {sorted(unknown)[0]!r}")
    if "zone" not in item:
        raise Refusal("bad-import", "an account needs a zone")
    paid = item.get("paymentMethodValid", True)
    if not isinstance(paid, bool):
        raise Refusal("bad-import", "paymentMethodValid must be true or false")
    changes = valid_changes(
        AccountChanges(
            zone=str(item["zone"]),
            contact_email=item.get("contactEmail"),
            language=item.get("language", "en"),
            payment_method_valid=paid,
            balance_due=parse_balance(str(item.get("balanceDue", "0"))),
        )
    )
    return {
        "email": valid_email(str(item["account"])),
        "zone": changes.zone,
        "contact_email": changes.contact_email,
        "language": changes.language,
        "payment_method_valid": changes.payment_method_valid,
        "balance_due": changes.balance_due or Decimal(0),
    }


def _parse_service(item: dict[str, Any]) -> tuple[str, dict[str, str]]:
    missing = SERVICE_KEYS - set(item)
    if missing:
        raise Refusal("bad-import", f"a service needs {sorted(missing)[0]}")
    if set(item) - SERVICE_KEYS:
        raise Refusal("bad-import", f"unknown field {sorted(set(item) - SERVICE_KEYS)[0]!r}")
    domain = str(item["service"]).strip().lower()
    if not domain or any(ch.isspace() for ch in domain):
        raise Refusal("bad-import", f"not a service name: {item['service']!r}")
    roles = {
        "admin_id": valid_email(str(item["contactAdmin"])),
        "tech_id": valid_email(str(item["contactTech"])),
        "billing_id": valid_email(str(item["contactBilling"])),
    }
    return domain, roles


def read_lines(lines: Iterable[str]) -> Batch:
    """Parse and check every line; accounts must come before services that name them."""
    batch = Batch()
    emails: set[str] = set()
    domains: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not isinstance(item, dict):
                raise Refusal("bad-import", "expected a JSON object")
            if "account" in item:
                account = _parse_account(item)
                if account["email"] in emails:
                    raise Refusal("bad-import", f"account {account['email']} appears twice")
                emails.add(account["email"])
                batch.accounts.append(account)
            elif "service" in item:
                domain, roles = _parse_service(item)
                if domain in domains:
                    raise Refusal("bad-import", f"service {domain} appears twice")
                domains.add(domain)
                batch.services.append((number, domain, roles))
            else:
                raise Refusal("bad-import", 'expected an "account" or a "service" object')
        except json.JSONDecodeError as error:
            batch.problem(number, f"not JSON: {error.msg}")
        except Refusal as refusal:
            batch.problem(number, refusal.message)
    return batch


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def import_lines(store: Store, lines: Iterable[str]) -> dict[str, int]:
    """Import everything or nothing; returns how many accounts and services went in."""
    batch = read_lines(lines)
    if batch.problems:
        raise ImportRejected(batch.problems)
    now = utcnow()
    with store.write() as session:
        new_emails = [a["email"] for a in batch.accounts]
        for chunk in _chunks(new_emails):
            taken = session.scalars(select(Account.email).where(Account.email.in_(chunk))).first()
            if taken:
                raise ImportRejected([f"account already exists: {taken}"])
        for start in range(0, len(batch.accounts), CHUNK):
            rows = batch.accounts[start : start + CHUNK]
            # Core insert of the table, not the ORM bulk path: the ORM splits rows whose
            # None values differ into separate statements (thousands of them).
            session.execute(insert(Account.__table__), [{**row, "created_at": now} for row in rows])
        _insert_services(session, batch, now)
        record(session, "imported", now, accounts=len(batch.accounts), services=len(batch.services))
    return {"accounts": len(batch.accounts), "services": len(batch.services)}


def _insert_services(session: Session, batch: Batch, now: datetime) -> None:
    named = sorted({email for _, _, roles in batch.services for email in roles.values()})
    ids: dict[str, int] = {}
    for chunk in _chunks(named):
        found = session.execute(select(Account.email, Account.id).where(Account.email.in_(chunk)))
        ids.update((email, account_id) for email, account_id in found)
    domains = [domain for _, domain, _ in batch.services]
    for chunk in _chunks(domains):
        taken = session.scalars(select(Service.domain).where(Service.domain.in_(chunk))).first()
        if taken:
            raise ImportRejected([f"service already exists: {taken}"])
    rows = []
    for line, domain, roles in batch.services:
        unknown = [email for email in roles.values() if email not in ids]
        if unknown:
            raise ImportRejected([f"line {line}: unknown account {unknown[0]}"])
        rows.append({"domain": domain, "created_at": now, **{k: ids[v] for k, v in roles.items()}})
    for start in range(0, len(rows), CHUNK):
        session.execute(insert(Service.__table__), rows[start : start + CHUNK])
