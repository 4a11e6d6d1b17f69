"""Who may ask for which contact change, and who must validate it.

Pure: facts in, a plan or a refusal out.  The same checks run when a request
is made and again just before it is applied, against the store as it is then.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class ContactType(StrEnum):
    ADMIN = "contactAdmin"
    TECH = "contactTech"
    BILLING = "contactBilling"


# The order OVHcloud lists them in; every listing uses it.
CONTACT_TYPES: tuple[ContactType, ...] = (ContactType.ADMIN, ContactType.TECH, ContactType.BILLING)


@dataclass(frozen=True)
class AccountFacts:
    email: str  # primary email, lowercased
    zone: str
    payment_method_valid: bool = True
    balance_due: Decimal = Decimal(0)


@dataclass(frozen=True)
class ServiceFacts:
    domain: str
    contacts: Mapping[ContactType, str]  # contact type -> primary email of its account


@dataclass(frozen=True)
class PlannedRequest:
    """One request to make: a distinct (from, to) pair with the types it moves."""

    contact_types: tuple[ContactType, ...]
    from_account: str
    to_account: str
    asking_account: str
    validators: tuple[str, ...]


class Refusal(Exception):
    """A rule says no.  ``code`` is stable for programs, the message is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def plan_change(
    service: ServiceFacts | None,
    service_name: str,
    asking_email: str,
    wanted: Mapping[ContactType, str],
    accounts: Mapping[str, AccountFacts],
    open_types: Set[ContactType],
) -> list[PlannedRequest]:
    """The requests one "modify contacts" action makes, or a Refusal.

    ``wanted`` maps each contact type to change to the new account's primary
    email; ``accounts`` holds every known account among those named (keyed by
    lowercased primary email); ``open_types`` are the types of the service
    that already have an open request.
    """
    if service is None:
        raise Refusal("unknown-service", f"unknown service: {service_name}")
    if not wanted:
        raise Refusal("nothing-to-change", "name at least one new contact (admin, tech or billing)")
    asking = _known(accounts, asking_email)
    groups: dict[tuple[str, str], list[ContactType]] = {}
    for contact_type in CONTACT_TYPES:
        if contact_type not in wanted:
            continue
        new = _known(accounts, wanted[contact_type])
        check_type_change(service, contact_type, asking, new, accounts)
        if contact_type in open_types:
            raise Refusal(
                "already-open",
                f"{service.domain} already has an open request for its {_label(contact_type)}",
            )
        groups.setdefault((service.contacts[contact_type], new.email), []).append(contact_type)
    return [
        PlannedRequest(
            contact_types=tuple(types),
            from_account=from_email,
            to_account=to_email,
            asking_account=asking.email,
            validators=validators_for(asking.email, to_email),
        )
        for (from_email, to_email), types in groups.items()
    ]


def recheck(
    service: ServiceFacts | None,
    service_name: str,
    contact_types: tuple[ContactType, ...],
    from_email: str,
    to_email: str,
    asking_email: str,
    accounts: Mapping[str, AccountFacts],
) -> None:
    """Raise a Refusal if an accepted request can no longer be applied as it stands."""
    if service is None:
        raise Refusal("unknown-service", f"unknown service: {service_name}")
    asking = _known(accounts, asking_email)
    new = _known(accounts, to_email)
    for contact_type in contact_types:
        if service.contacts[contact_type] != from_email:
            raise Refusal(
                "contact-changed",
                f"the {_label(contact_type)} of {service.domain} changed since the request"
                " was made",
            )
        check_type_change(service, contact_type, asking, new, accounts)


def check_type_change(
    service: ServiceFacts,
    contact_type: ContactType,
    asking: AccountFacts,
    new: AccountFacts,
    accounts: Mapping[str, AccountFacts],
) -> None:
    """Every rule for moving one contact type of one service to ``new``."""
    current = _known(accounts, service.contacts[contact_type])
    _check_role(service, contact_type, asking)
    if current.email == new.email:
        raise Refusal(
            "already-contact",
            f"{new.email} is already the {_label(contact_type)} of {service.domain}",
        )
    _check_zones(asking, current, new)
    if contact_type is ContactType.BILLING:
        _check_billing(current, new)


def validators_for(asking_email: str, to_email: str) -> tuple[str, ...]:
    """The asking account and the new contact; one account when they are the same."""
    return (asking_email,) if asking_email == to_email else (asking_email, to_email)


def _check_role(service: ServiceFacts, contact_type: ContactType, asking: AccountFacts) -> None:
    # The administrative contact may change every contact, itself included.
    if service.contacts[ContactType.ADMIN] == asking.email:
        return
    if service.contacts[contact_type] != asking.email:
        if contact_type is ContactType.ADMIN:
            reason = "only the administrative contact can name a new administrative contact"
        else:
            reason = (
                f"only the administrative contact or the current {_label(contact_type)} "
                f"can change the {_label(contact_type)}"
            )
        where = f"{asking.email} on {service.domain}"
        raise Refusal("not-allowed", f"not allowed for {where}: {reason}")


def _check_zones(*parties: AccountFacts) -> None:
    zones = {party.zone for party in parties}
    if len(zones) > 1:
        distinct = {party.email: party.zone for party in parties}
        names = ", ".join(f"{email} ({zone})" for email, zone in distinct.items())
        raise Refusal(
            "zone-mismatch", f"contacts can only be changed within one zone; here: {names}"
        )


def _check_billing(current: AccountFacts, new: AccountFacts) -> None:
    for party, role in ((current, "current"), (new, "new")):
        if party.balance_due > 0:
            raise Refusal(
                "balance-due",
                f"the {role} billing contact {party.email} has {party.balance_due} outstanding",
            )
    if not new.payment_method_valid:
        raise Refusal(
            "no-payment-method",
            f"the new billing contact {new.email} has no valid payment method",
        )


def _known(accounts: Mapping[str, AccountFacts], email: str) -> AccountFacts:
    facts = accounts.get(email.strip().lower())
    if facts is None:
        raise Refusal("unknown-account", f"unknown account: {email}")
    return facts


def _label(contact_type: ContactType) -> str:
    return {
        ContactType.ADMIN: "administrative contact",
        ContactType.TECH: "technical contact",
        ContactType.BILLING: "billing contact",
    }[contact_type]
