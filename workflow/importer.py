"""Bulk import of accounts and services from JSON Lines, all or nothing.

The file is read as a stream, a batch of lines at a time: each batch is
checked and written with multi-row inserts, all in one transaction, so
memory stays that of a batch (a 1 M-line file within 200 MB: docs/
performance.md) and a bad line anywhere leaves the store exactly as it was.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, func, insert, select
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
    def __init__(self, problems: list[str], count: int | None = None) -> None:
        count = len(problems) if count is None else count
        more = f" (and {count - 1} more)" if count > 1 else ""
        super().__init__("bad-import", f"{problems[0]}{more}; nothing was imported")
        self.problems = problems


@dataclass
class Batch:
    """Up to CHUNK lines, parsed and checked against each other, to be written together."""

    accounts: list[dict[str, Any]] = field(default_factory=list)
    account_lines: dict[str, int] = field(default_factory=dict)  # email -> line
    services: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)  # line, domain
    service_lines: dict[str, int] = field(default_factory=dict)  # domain -> line


@dataclass
class Report:
    """What is wrong with the file so far: bad lines first, else what the store refuses."""

    problems: list[str] = field(default_factory=list)  # the first MAX_REPORTED bad lines
    bad_lines: int = 0
    refusal: str | None = None  # the first line the store refuses (an existing name, ...)

    def problem(self, line: int, text: str) -> None:
        self.bad_lines += 1
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(f"line {line}: {text}")

    def refuse(self, line: int, text: str) -> None:
        self.refusal = self.refusal or f"line {line}: {text}"

    @property
    def writing(self) -> bool:
        """Whether to go on writing: after the first problem, lines are only checked."""
        return not self.bad_lines and self.refusal is None

    def raise_if_any(self) -> None:
        if self.problems:
            raise ImportRejected(self.problems, self.bad_lines)
        if self.refusal is not None:
            raise ImportRejected([self.refusal])


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


@functools.lru_cache(maxsize=4096)
def _contact(text: str) -> str:
    """A service's contact, checked once for the many lines that name the same account."""
    return valid_email(text)


def _parse_service(item: dict[str, Any]) -> tuple[str, dict[str, str]]:
    missing = SERVICE_KEYS - set(item)
    if missing:
        raise Refusal("bad-import", f"a service needs {sorted(missing)[0]}")
    if set(item) - SERVICE_KEYS:
        raise Refusal("bad-import", f"unknown field {sorted(set(item) - SERVICE_KEYS)[0]!r}")
    domain = names.check_service(_text(item, "service"))
    roles = {
        "admin_id": _contact(_text(item, "contactAdmin")),
        "tech_id": _contact(_text(item, "contactTech")),
        "billing_id": _contact(_text(item, "contactBilling")),
    }
    return domain, roles


def _decoded(number: int, raw: str | bytes, report: Report) -> str | None:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            report.problem(number, f"not UTF-8 text (byte {error.start + 1})")
            return None
    return raw.removeprefix("\ufeff") if number == 1 else raw


def _add_line(batch: Batch, number: int, item: Any) -> None:
    if not isinstance(item, dict):
        raise Refusal("bad-import", "expected a JSON object")
    if "account" in item:
        account = _parse_account(item)
        if account["email"] in batch.account_lines:
            raise Refusal("bad-import", f"account {account['email']} appears twice")
        batch.accounts.append(account)
        batch.account_lines[account["email"]] = number
    elif "service" in item:
        domain, roles = _parse_service(item)
        if domain in batch.service_lines:
            raise Refusal("bad-import", f"service {domain} appears twice")
        batch.services.append((number, domain, roles))
        batch.service_lines[domain] = number
    else:
        raise Refusal("bad-import", 'expected an "account" or a "service" object')


def read_lines(lines: Iterable[str | bytes], report: Report) -> Iterator[Batch]:
    """Parse and check the lines, a batch of up to CHUNK at a time; problems go to ``report``.

    Lines may be text or UTF-8 bytes (a file opened in binary mode, so that a
    byte that is not UTF-8 is reported with its line number); a BOM is ignored.
    A name given twice within a batch is caught here, across batches by the
    store (_check_accounts, _insert_services).
    """
    batch = Batch()
    for number, raw in enumerate(lines, start=1):
        line = _decoded(number, raw, report)
        if line is None or not line.strip():
            continue
        try:
            _add_line(batch, number, json.loads(line))
        except json.JSONDecodeError as error:
            report.problem(number, f"not JSON: {error.msg}")
        except Refusal as refusal:
            report.problem(number, refusal.message)
        if len(batch.accounts) + len(batch.services) >= CHUNK:
            yield batch
            batch = Batch()
    yield batch


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def import_lines(store: Store, lines: Iterable[str | bytes]) -> dict[str, int]:
    """Import everything or nothing; returns how many accounts and services went in.

    Streamed: each batch of lines is checked and written in turn, in one
    transaction for the whole file, so memory stays that of a batch however
    long the file.  After the first problem the rest is only checked (every
    bad line is counted), and the transaction is rolled back.
    """
    report = Report()
    counts = {"accounts": 0, "services": 0}
    now = utcnow()
    with store.write() as session:
        # Rows above these ids were written by this import: a name found there is a repeat.
        known = (
            session.scalar(select(func.max(Account.id))) or 0,
            session.scalar(select(func.max(Service.id))) or 0,
        )
        for batch in read_lines(lines, report):
            if report.writing:
                _check_accounts(session, batch, report, known[0])
            if report.writing:
                _insert_accounts(session, batch, now)
                _insert_services(session, batch, report, known[1], now)
            counts["accounts"] += len(batch.accounts)
            counts["services"] += len(batch.services)
        report.raise_if_any()  # out of the block by an exception: nothing stays
        record(session, "imported", now, accounts=counts["accounts"], services=counts["services"])
    return counts


def _check_accounts(session: Session, batch: Batch, report: Report, known: int) -> None:
    _check_new(session, (Account.email, Account.id), batch.account_lines, report, known, "account")


def _check_new(
    session: Session,
    columns: tuple[Any, Any],
    lines: dict[str, int],
    report: Report,
    known: int,
    noun: str,
) -> None:
    """Each name of this batch already in the store: earlier in this file (an id above
    ``known``, the highest before the import) is a duplicate, else it existed before."""
    name_column, id_column = columns
    for chunk in _chunks(list(lines)):
        taken = session.execute(select(name_column, id_column).where(name_column.in_(chunk)))
        for name, row_id in sorted(taken, key=lambda row: lines[row[0]]):
            if row_id > known:
                report.problem(lines[name], f"{noun} {name} appears twice")
            else:
                report.refuse(lines[name], f"{noun} already exists: {name}")


def _insert_accounts(session: Session, batch: Batch, now: datetime) -> None:
    if batch.accounts:
        session.execute(insert(_ACCOUNTS), [{**row, "created_at": now} for row in batch.accounts])


def _account_ids(session: Session, batch: Batch) -> dict[str, int]:
    named = sorted({email for _, _, roles in batch.services for email in roles.values()})
    ids: dict[str, int] = {}
    for chunk in _chunks(named):
        found = session.execute(select(Account.email, Account.id).where(Account.email.in_(chunk)))
        ids.update((email, account_id) for email, account_id in found)
    return ids


def _insert_services(
    session: Session, batch: Batch, report: Report, known: int, now: datetime
) -> None:
    _check_new(session, (Service.domain, Service.id), batch.service_lines, report, known, "service")
    ids = _account_ids(session, batch)
    rows = []
    for line, domain, roles in batch.services:
        unknown = [email for email in roles.values() if email not in ids]
        if unknown:
            report.refuse(line, f"unknown account {unknown[0]} (accounts come before services)")
        rows.append(
            {"domain": domain, "created_at": now, **{k: ids.get(v) for k, v in roles.items()}}
        )
    if report.writing and rows:
        session.execute(insert(_SERVICES), rows)
