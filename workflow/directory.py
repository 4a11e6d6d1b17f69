"""Accounts and services: what the systems of record tell Countersign."""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from countersign.rules import names
from countersign.rules.contacts import Refusal
from countersign.store.db import Store
from countersign.store.models import Account, Service
from countersign.workflow.errors import NotFound
from countersign.workflow.facts import find_account, find_service
from countersign.workflow.lifecycle import record, utcnow
from countersign.workflow.views import account_json, contact_types_of, service_json

LANGUAGES = ("en", "fr")
CENT = Decimal("0.01")  # balances are kept to the cent (the column is NUMERIC(14, 2))


@dataclass(frozen=True)
class AccountChanges:
    """What `account add` / `account update` may set; None leaves a value as it is."""

    zone: str | None = None
    contact_email: str | None = None
    language: str | None = None
    payment_method_valid: bool | None = None
    balance_due: Decimal | None = None


def valid_email(email: str, what: str = "email") -> str:
    """The one check of an address, whichever door it comes through (rules/names.py)."""
    return names.check_email(email, what)


def valid_changes(changes: AccountChanges) -> AccountChanges:
    """The same changes, checked and normalised, or a Refusal naming the bad value."""
    zone = names.check_zone(changes.zone) if changes.zone is not None else None
    if changes.language is not None and changes.language not in LANGUAGES:
        raise Refusal("bad-language", f"language must be one of {', '.join(LANGUAGES)}")
    balance = changes.balance_due
    if balance is not None:
        if balance < 0:
            raise Refusal("bad-balance", "balance due cannot be negative")
        if balance >= 10**12:
            raise Refusal("bad-balance", f"balance due is too large: {balance}")
        if balance != balance.quantize(CENT):
            raise Refusal("bad-balance", f"balance due has more than two decimals: {balance}")
        # As the store gives it back, so `account add` and `account list` say the same.
        balance = balance.quantize(CENT)
    contact = changes.contact_email
    if contact is not None:
        contact = valid_email(contact, "contact email")
    return AccountChanges(
        zone=zone,
        contact_email=contact,
        language=changes.language,
        payment_method_valid=changes.payment_method_valid,
        balance_due=balance,
    )


def parse_balance(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise Refusal("bad-balance", f"not an amount: {text!r}") from None
    if not value.is_finite():
        raise Refusal("bad-balance", f"not an amount: {text!r}")
    return value


def _apply_changes(account: Account, changes: AccountChanges) -> None:
    for field in fields(changes):
        value = getattr(changes, field.name)
        if value is not None:
            setattr(account, field.name, value)


def add_account(store: Store, email: str, changes: AccountChanges) -> dict[str, Any]:
    email = valid_email(email)
    changes = valid_changes(changes)
    if changes.zone is None:
        raise Refusal("bad-zone", "an account needs a zone")
    now = utcnow()
    with store.write() as session:
        if find_account(session, email) is not None:
            raise Refusal("account-exists", f"account already exists: {email}")
        account = Account(
            email=email,
            zone=changes.zone,
            language="en",
            payment_method_valid=True,
            balance_due=Decimal("0.00"),
            created_at=now,
        )
        _apply_changes(account, changes)
        session.add(account)
        record(session, "account-added", now, actor=email)
        return account_json(account)


def update_account(store: Store, email: str, changes: AccountChanges) -> dict[str, Any]:
    changes = valid_changes(changes)
    with store.write() as session:
        account = find_account(session, email)
        if account is None:
            raise NotFound("account", email)
        _apply_changes(account, changes)
        record(session, "account-updated", utcnow(), actor=account.email)
        return account_json(account)


def list_accounts(store: Store) -> list[dict[str, Any]]:
    with store.read() as session:
        return [account_json(a) for a in session.scalars(select(Account).order_by(Account.email))]


def add_service(store: Store, domain: str, admin: str, tech: str, billing: str) -> dict[str, Any]:
    domain = names.check_service(domain)
    with store.write() as session:
        if find_service(session, domain) is not None:
            raise Refusal("service-exists", f"service already exists: {domain}")
        holders = {
            role: _holder(session, email)
            for role, email in (("admin", admin), ("tech", tech), ("billing", billing))
        }
        service = Service(domain=domain, created_at=utcnow(), **holders)
        session.add(service)
        record(session, "service-added", utcnow(), detail_domain=domain)
        return service_json(service)


def _holder(session: Session, email: str) -> Account:
    account = find_account(session, email)
    if account is None:
        raise NotFound("account", email)
    return account


def services_of(store: Store, email: str) -> list[dict[str, Any]]:
    """ "My contacts": the services an account is a contact of, with its roles."""
    with store.read() as session:
        account = find_account(session, email)
        if account is None:
            raise NotFound("account", email)
        held = or_(
            Service.admin_id == account.id,
            Service.tech_id == account.id,
            Service.billing_id == account.id,
        )
        services = session.scalars(select(Service).where(held).order_by(Service.domain))
        return [
            {"serviceDomain": s.domain, "contactTypes": contact_types_of(s, account)}
            for s in services
        ]
