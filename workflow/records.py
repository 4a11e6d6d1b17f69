"""What the systems of record need beyond workflow/directory.py: read one
account or service, and set a service's contacts directly.

Setting contacts directly is the system of record speaking (a transfer,
a correction), not a customer asking: no codes, no validators.  It is
refused while an open request covers a type it would change, because that
request would then apply a change decided on facts that no longer hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from countersign.rules.contacts import CONTACT_TYPES, ContactType, Refusal
from countersign.store.db import Store
from countersign.store.models import Account
from countersign.workflow.errors import NotFound
from countersign.workflow.facts import find_account, find_service, open_contact_types
from countersign.workflow.lifecycle import record, utcnow
from countersign.workflow.views import account_json, service_json

_ROLE = {ContactType.ADMIN: "admin", ContactType.TECH: "tech", ContactType.BILLING: "billing"}


def get_account(store: Store, email: str) -> dict[str, Any]:
    with store.read() as session:
        account = find_account(session, email)
        if account is None:
            raise NotFound("account", email)
        return account_json(account)


def get_service(store: Store, domain: str) -> dict[str, Any]:
    with store.read() as session:
        service = find_service(session, domain)
        if service is None:
            raise NotFound("service", domain)
        return service_json(service)


def set_contacts(
    store: Store, domain: str, contacts: Mapping[ContactType, str], *, via: str = "api"
) -> dict[str, Any]:
    """Make the named accounts the service's contacts of those types, at once."""
    now = utcnow()
    with store.write() as session:
        service = find_service(session, domain, lock=True)
        if service is None:
            raise NotFound("service", domain)
        busy = open_contact_types(session, service) & set(contacts)
        if busy:
            names = ", ".join(str(t) for t in CONTACT_TYPES if t in busy)
            raise Refusal("already-open", f"{service.domain} has an open request for {names}")
        before = service_json(service)
        for contact_type, email in contacts.items():
            account: Account | None = find_account(session, email)
            if account is None:
                raise Refusal("unknown-account", f"unknown account: {email}")
            setattr(service, _ROLE[contact_type], account)
        after = service_json(service)
        record(session, "service-updated", now, via=via, before=before, after=after)
        return after
