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
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from countersign.rules import names
from countersign.rules.contacts import Refusal
from countersign.store.db import Store
from countersign.store.models import Account, Service
from countersign.workflow.directory import AccountChanges, parse_balance, valid_changes, valid_email
from countersign.workflow.lifecycle import record, utcnow

ACCOUNT_KEYS = {"account", "zone", "contactEmail", "language", "paymentMethodValid", "balanceDue"}
SERVICE_KEYS = {"service", "contactAdmin", "contactTech", "contactBilling"}
CHUNK = 5_000  # rows per INSERT statement batch / IN (...) lookup
MAX_REPORTED = 20
# The bare tables: a Core insert, not the ORM bulk path, which splits rows whose
# None values differ into separate statements (thousands of them).
_ACCOUNTS: Table = Account.metadata.tables[Account.__tablename__]
_SERVICES: Table = Service.metadata.tables[Service.__tablename__]


class ImportRejected(Refusal):
    def __init__(self, problems: list[str]) -> None:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__("bad-import", f"{problems[0]}{more}; nothing was imported")
        self.problems = problems


@dataclass
class Batch:
    accounts: list[dict[str, Any]] = field(default_factory=list)
    account_lines: dict[str, int] = field(default_factory=dict)  # email -> line
    services: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)  # line, domain
    problems: list[str] = field(default_factory=list)

    def problem(self, line: int, text: str) -> None:
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(f"line {line}: {text}")


def _text(item: dict[str, Any], key: str, default: str | None = None) -> str:
    value = item.get(key, default)
    if not isinstance(value, str):
        raise Refusal("bad-import", f"{key} must be a string")
    return value


def _parse_account(item: dict[str, Any]) -> dict[str, Any]:
    unknown = set(item) - ACCOUNT_KEYS
    if unknown:
        raise Refusal("bad-import", f"unknown field {sorted(unknown)[0]!r}")
    if "zone" not in item:
        raise Refusal("bad-import", "an account needs a zone")
    paid = item.get("paymentMethodValid", True)
    if not isinstance(paid, bool):
        raise Refusal("bad-import", "paymentMethodValid must be true or false")
    balance = item.get("balanceDue", "0")
    if isinstance(balance, bool) or not isinstance(balance, str | int | float):
        raise Refusal("bad-import", 'balanceDue must be an amount such as "12.50"')
    contact = item.get("contactEmail")
    changes = valid_changes(
        AccountChanges(
            zone=_text(item, "zone"),
            contact_email=None if contact is None else _text(item, "contactEmail"),
            language=_text(item, "language", "en"),
            payment_method_valid=paid,
            balance_due=parse_balance(str(balance)),
        )
    )
    return {
        "email": valid_email(_text(item, "account")),
        "zone": changes.zone,
        "contact_email": changes.contact_email,
        "language": changes.language,
        "payment_method_valid": changes.payment_method_valid,
        "balance_due": changes.balance_due,
    }


def _parse_service(item: dict[str, Any]) -> tuple[str, dict[str, str]]:
    missing = SERVICE_KEYS - set(item)
    if missing:
        raise Refusal("bad-import", f"a service needs {sorted(missing)[0]}")
    if set(item) - SERVICE_KEYS:
        raise Refusal("bad-import", f"unknown field {sorted(set(item) - SERVICE_KEYS)[0]!r}")
    domain = names.check_service(_text(item, "service"))
    roles = {
        "admin_id": valid_email(_text(item, "contactAdmin")),
        "tech_id": valid_email(_text(item, "contactTech")),
        "billing_id": valid_email(_text(item, "contactBilling")),
    }
    return domain, roles


def read_lines(lines: Iterable[str | bytes]) -> Batch:
    """Parse and check every line; accounts must come before services that name them.

    Lines may be text or UTF-8 bytes (a file opened in binary mode, so that a
    byte that is not UTF-8 is reported with its line number); a BOM is ignored.
    """
    batch = Batch()
    emails: set[str] = set()
    domains: set[str] = set()
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                batch.problem(number, f"not UTF-8 text (byte {error.start + 1})")
                continue
        else:
            line = raw
        if number == 1:
            line = line.removeprefix("\ufeff")
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
                batch.account_lines[account["email"]] = number
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


def import_lines(store: Store, lines: Iterable[str | bytes]) -> dict[str, int]:
    """Import everything or nothing; returns how many accounts and services went in."""
    batch = read_lines(lines)
    if batch.problems:
        raise ImportRejected(batch.problems)
    now = utcnow()
    with store.write() as session:
        new_emails = [a["email"] for a in batch.accounts]
        for chunk in _chunks(new_emails):
            taken = session.scalars(select(Account.email).where(Account.email.in_(chunk))).all()
            if taken:
                first = min(taken, key=batch.account_lines.__getitem__)
                line = batch.account_lines[first]
                raise ImportRejected([f"line {line}: account already exists: {first}"])
        for start in range(0, len(batch.accounts), CHUNK):
            rows = batch.accounts[start : start + CHUNK]
            session.execute(insert(_ACCOUNTS), [{**row, "created_at": now} for row in rows])
        _insert_services(session, batch, now)
        record(session, "imported", now, accounts=len(batch.accounts), services=len(batch.services))
    return {"accounts": len(batch.accounts), "services": len(batch.services)}


def _insert_services(session: Session, batch: Batch, now: datetime) -> None:
    named = sorted({email for _, _, roles in batch.services for email in roles.values()})
    ids: dict[str, int] = {}
    for chunk in _chunks(named):
        found = session.execute(select(Account.email, Account.id).where(Account.email.in_(chunk)))
        ids.update((email, account_id) for email, account_id in found)
    service_lines = {domain: line for line, domain, _ in batch.services}
    for chunk in _chunks(list(service_lines)):
        taken = session.scalars(select(Service.domain).where(Service.domain.in_(chunk))).all()
        if taken:
            first = min(taken, key=service_lines.__getitem__)
            line = service_lines[first]
            raise ImportRejected([f"line {line}: service already exists: {first}"])
    rows = []
    for line, domain, roles in batch.services:
        unknown = [email for email in roles.values() if email not in ids]
        if unknown:
            raise ImportRejected([f"line {line}: unknown account {unknown[0]}"])
        rows.append({"domain": domain, "created_at": now, **{k: ids[v] for k, v in roles.items()}})
    for start in range(0, len(rows), CHUNK):
        session.execute(insert(_SERVICES), rows[start : start + CHUNK])
