"""Reading the store into the plain facts that rules/ decides on."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from countersign.rules.contacts import AccountFacts, ContactType, ServiceFacts
from countersign.rules.states import OPEN_STATES
from countersign.store.models import Account, ChangeRequest, Service


def normalize_email(email: str) -> str:
    return email.strip().lower()


def owner_addresses(account: Account) -> frozenset[str]:
    """The addresses a mail from ``account`` may come from (rules/replies.sender_matches)."""
    return frozenset({account.email, normalize_email(account.mail_address)})


def account_facts(account: Account) -> AccountFacts:
    return AccountFacts(
        email=account.email,
        zone=account.zone,
        payment_method_valid=account.payment_method_valid,
        balance_due=account.balance_due,
    )


def service_facts(service: Service) -> ServiceFacts:
    return ServiceFacts(
        domain=service.domain,
        contacts={
            ContactType.ADMIN: service.admin.email,
            ContactType.TECH: service.tech.email,
            ContactType.BILLING: service.billing.email,
        },
    )


def accounts_by_email(session: Session, emails: Iterable[str]) -> dict[str, Account]:
    wanted = {normalize_email(email) for email in emails}
    rows = session.scalars(select(Account).where(Account.email.in_(wanted)))
    return {account.email: account for account in rows}


def find_account(session: Session, email: str) -> Account | None:
    return session.scalar(select(Account).where(Account.email == normalize_email(email)))


def find_service(session: Session, domain: str, *, lock: bool = False) -> Service | None:
    query = select(Service).where(Service.domain == domain.strip().lower())
    if lock:
        # Serialises changes of one service across daemons (PostgreSQL); a no-op on SQLite,
        # where BEGIN IMMEDIATE already serialises writers.
        query = query.with_for_update()
    return session.scalar(query)


def open_contact_types(session: Session, service: Service) -> set[ContactType]:
    rows = session.scalars(
        select(ChangeRequest.contact_types).where(
            ChangeRequest.service_id == service.id,
            ChangeRequest.state.in_([str(state) for state in OPEN_STATES]),
        )
    )
    return {ContactType(t) for types in rows for t in types}
