"""What the account pages read: "My contacts" and whether a request concerns an account."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import joinedload

from countersign.store.db import Store
from countersign.store.models import Service
from countersign.workflow.facts import find_account
from countersign.workflow.views import contact_types_of


def my_services(store: Store, email: str, name: str = "") -> list[dict[str, Any]]:
    """The services ``email`` is a contact of, with its roles and all three contacts,
    those whose name holds ``name`` (any case) when given."""
    with store.read() as session:
        account = find_account(session, email)
        if account is None:
            return []
        query = (
            select(Service)
            .where(
                or_(
                    Service.admin_id == account.id,
                    Service.tech_id == account.id,
                    Service.billing_id == account.id,
                )
            )
            .options(
                joinedload(Service.admin), joinedload(Service.tech), joinedload(Service.billing)
            )
            .order_by(Service.domain)
        )
        wanted = name.strip().lower()
        if wanted:
            # Domains are stored lowercased; the pattern's own wildcards are taken literally.
            escaped = wanted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(Service.domain.like(f"%{escaped}%", escape="\\"))
        return [
            {
                "serviceDomain": s.domain,
                "contactTypes": contact_types_of(s, account),
                "contactAdmin": s.admin.email,
                "contactTech": s.tech.email,
                "contactBilling": s.billing.email,
            }
            for s in session.scalars(query).unique()
        ]


def concerns(request: dict[str, Any], email: str) -> bool:
    """Whether ``email`` asks, validates, or is the old or new contact of ``request``."""
    named = {request["askingAccount"], request["fromAccount"], request["toAccount"]}
    named |= {v["account"] for v in request["validators"]}
    return email in named


def still_to_answer(request: dict[str, Any]) -> list[str]:
    return [v["account"] for v in request["validators"] if v["decision"] is None]
