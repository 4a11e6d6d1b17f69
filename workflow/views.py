"""The shapes the outside sees, with OVHcloud's field names."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from countersign.rules.contacts import CONTACT_TYPES, ContactType
from countersign.store.models import Account, ChangeRequest, Service, Validator


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, to the second."""
    if moment is None:
        return None
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def validator_json(validator: Validator) -> dict[str, Any]:
    return validator_view(validator, validator.account.email)


def validator_view(validator: Any, account: str) -> dict[str, Any]:
    """A validator as shown, from anything with Validator's columns (a row will do)."""
    view: dict[str, Any] = {
        "account": account,
        "decision": validator.decision,
        "at": iso(validator.decided_at),
        "via": validator.via,
        "comment": validator.comment,
    }
    if validator.delivery_error:
        view["deliveryError"] = validator.delivery_error
    return view


def request_json(request: ChangeRequest) -> dict[str, Any]:
    return request_view(
        request,
        service_domain=request.service.domain,
        accounts=(request.from_account.email, request.to_account.email),
        asking_account=request.asking_account.email,
        validators=[validator_json(v) for v in request.validators],
    )


def request_view(
    request: Any,
    *,
    service_domain: str,
    accounts: tuple[str, str],
    asking_account: str,
    validators: list[dict[str, Any]],
) -> dict[str, Any]:
    """A request as shown, from anything with ChangeRequest's columns (a row will do).

    The outbox reads rows, not ORM objects: loading the objects cost more
    than rendering the notice.  `accounts`: the old contact, then the new.
    """
    return {
        "id": request.id,
        "serviceDomain": service_domain,
        "contactTypes": list(request.contact_types),
        "fromAccount": accounts[0],
        "toAccount": accounts[1],
        "askingAccount": asking_account,
        "state": request.state,
        "dateRequest": iso(request.date_request),
        "dateDone": iso(request.date_done),
        "expires": iso(request.expires_at),
        "error": request.error,
        "validators": validators,
    }


def account_json(account: Account) -> dict[str, Any]:
    return {
        "account": account.email,
        "contactEmail": account.mail_address,
        "zone": account.zone,
        "language": account.language,
        "paymentMethodValid": account.payment_method_valid,
        "balanceDue": str(account.balance_due),
    }


def contact_types_of(service: Service, account: Account) -> list[str]:
    holders = {
        ContactType.ADMIN: service.admin_id,
        ContactType.TECH: service.tech_id,
        ContactType.BILLING: service.billing_id,
    }
    return [str(t) for t in CONTACT_TYPES if holders[t] == account.id]


def service_json(service: Service) -> dict[str, Any]:
    return {
        "serviceDomain": service.domain,
        "contactAdmin": service.admin.email,
        "contactTech": service.tech.email,
        "contactBilling": service.billing.email,
    }
