"""The acts on contact change requests: change, resend, cancel, show, list; and
decide (workflow/deciding.py), which every door calls as ``requests.decide``.

Each act is one transaction over the store that asks rules/ for the verdict
and writes the new state, the decision, the notices (outbox rows) and an
audit event together.  Every edge (command line, mail, web, API) calls these.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload, selectinload

from countersign.rules.contacts import ContactType, PlannedRequest, plan_change
from countersign.rules.states import NoticeKind, State
from countersign.store import tallies
from countersign.store.db import Store
from countersign.store.models import Account, ChangeRequest, Service, Validator
from countersign.workflow import send_limits
from countersign.workflow.deciding import DecisionResult, decide, decide_in
from countersign.workflow.errors import NotFound, Refusal
from countersign.workflow.facts import (
    account_facts,
    accounts_by_email,
    find_account,
    find_service,
    normalize_email,
    open_contact_types,
    service_facts,
)
from countersign.workflow.lifecycle import finish, issue_code, load_request, move, record, utcnow
from countersign.workflow.policy import Policy
from countersign.workflow.views import request_json

# --- change -----------------------------------------------------------------


def change_contacts(
    store: Store,
    service_name: str,
    asking_email: str,
    wanted: dict[ContactType, str],
    policy: Policy,
    *,
    via: str = "cli",
    now: datetime | None = None,
    limits: send_limits.SendLimits | None = None,
) -> list[dict[str, Any]]:
    """Modify contacts: one request per distinct (from, to) pair, each asking its validators.

    With ``limits`` (the account pages, a limited API key) a change that would pass
    one of them is refused before anything is written (workflow/send_limits.py).
    """
    now = now or utcnow()
    with store.write() as session:
        service = find_service(session, service_name, lock=True)
        named = [asking_email, *wanted.values()]
        if service is not None:
            named += [service.admin.email, service.tech.email, service.billing.email]
        accounts = accounts_by_email(session, named)
        plans = plan_change(
            service_facts(service) if service is not None else None,
            service_name,
            asking_email,
            {t: normalize_email(e) for t, e in wanted.items()},
            {email: account_facts(a) for email, a in accounts.items()},
            open_contact_types(session, service) if service is not None else set(),
        )
        assert service is not None  # plan_change refuses an unknown service
        if limits is not None:
            recipients = [accounts[email] for plan in plans for email in plan.validators]
            asking = accounts[plans[0].asking_account]
            send_limits.check_change(session, asking, recipients, len(plans), now, limits)
        made = [_open(session, service, plan, accounts, now, policy, via) for plan in plans]
        return [request_json(request) for request in made]


def _open(
    session: Session,
    service: Service,
    plan: PlannedRequest,
    accounts: Mapping[str, Account],
    now: datetime,
    policy: Policy,
    via: str,
) -> ChangeRequest:
    """One planned request, written and sent to its validators."""
    request = ChangeRequest(
        service=service,
        contact_types=[str(t) for t in plan.contact_types],
        from_account=accounts[plan.from_account],
        to_account=accounts[plan.to_account],
        asking_account=accounts[plan.asking_account],
        state=str(State.TODO),
        date_request=now,
        expires_at=now + policy.expire_after,
        next_reminder_at=now + policy.remind_after[0] if policy.remind_after else None,
        reminders_sent=0,
        validators=[Validator(account=accounts[email]) for email in plan.validators],
    )
    session.add(request)
    session.flush()
    tallies.count(session, request.state)
    record(session, "created", now, request=request, actor=plan.asking_account, via=via)
    move(session, request, State.VALIDATING, now)
    for validator in request.validators:
        issue_code(session, request, validator, NoticeKind.CONFIRM_REQUEST, now, policy)
    return request


# --- resend / cancel ----------------------------------------------------------


def resend(
    store: Store,
    request_id: int,
    policy: Policy,
    *,
    via: str = "cli",
    now: datetime | None = None,
    limits: send_limits.SendLimits | None = None,
) -> dict[str, Any]:
    """A new code to each validator still to answer; their earlier codes die."""
    now = now or utcnow()
    with store.write() as session:
        request = load_request(session, request_id, lock=True)
        if request.state != State.VALIDATING:
            raise Refusal("closed", f"request {request.id} is already {request.state}")
        pending = [v for v in request.validators if v.decision is None]
        if limits is not None:
            send_limits.check_resend(session, [v.account for v in pending], now, limits)
        for validator in pending:
            issue_code(session, request, validator, NoticeKind.CONFIRM_REQUEST, now, policy)
            validator.delivery_error = None
        record(
            session, "resent", now, request=request, via=via, to=[v.account.email for v in pending]
        )
        return request_json(request)


def cancel(
    store: Store,
    request_id: int,
    asking_email: str,
    policy: Policy,
    *,
    via: str = "cli",
    now: datetime | None = None,
) -> dict[str, Any]:
    """The asking account withdraws its request."""
    now = now or utcnow()
    with store.write() as session:
        request = load_request(session, request_id, lock=True)
        if request.asking_account.email != normalize_email(asking_email):
            raise Refusal(
                "not-allowed",
                f"only the asking account ({request.asking_account.email}) can cancel",
            )
        if request.state != State.VALIDATING:
            raise Refusal("closed", f"request {request.id} is already {request.state}")
        record(
            session, "cancelled", now, request=request, actor=request.asking_account.email, via=via
        )
        finish(session, request, State.ABORTED, now, policy)
        return request_json(request)


def show(store: Store, request_id: int) -> dict[str, Any]:
    with store.read() as session:
        return request_json(load_request(session, request_id))


def list_requests(
    store: Store, *, account: str | None = None, state: str | None = None
) -> list[dict[str, Any]]:
    """ "My requests": those an account asked, is the subject of, or must validate."""
    with store.read() as session:
        query = select(ChangeRequest).order_by(ChangeRequest.id)
        if state is not None:
            query = query.where(ChangeRequest.state == state)
        if account is not None:
            found: Account | None = find_account(session, account)
            if found is None:
                raise NotFound("account", account)
            validating = select(Validator.request_id).where(Validator.account_id == found.id)
            query = query.where(
                (ChangeRequest.asking_account_id == found.id)
                | (ChangeRequest.from_account_id == found.id)
                | (ChangeRequest.to_account_id == found.id)
                | ChangeRequest.id.in_(validating)
            )
        # Every view's related rows in a few queries for the whole list, not a few per row.
        query = query.options(
            selectinload(ChangeRequest.validators).joinedload(Validator.account),
            joinedload(ChangeRequest.service, innerjoin=True),
            *(
                joinedload(relation, innerjoin=True)
                for relation in (
                    ChangeRequest.from_account,
                    ChangeRequest.to_account,
                    ChangeRequest.asking_account,
                )
            ),
        )
        return [request_json(r) for r in session.scalars(query)]


__all__ = [
    "DecisionResult",
    "cancel",
    "change_contacts",
    "decide",
    "decide_in",
    "list_requests",
    "load_request",
    "resend",
    "show",
]
