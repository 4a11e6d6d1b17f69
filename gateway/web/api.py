"""The HTTP API for the systems that drive Countersign (control panel, billing, support).

Shapes and names follow OVHcloud's API (``/service/{serviceName}/changeContact``,
``/contactChange/{id}/accept`` ...), so integrators recognise them.  Each
endpoint only translates: it calls one workflow act, the same the command
line and mail use.  Endpoints are plain ``def``: FastAPI runs them in its
thread pool, so the synchronous store never blocks the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from countersign.gateway import metrics
from countersign.gateway.comments import without_codes
from countersign.gateway.sources import ClientSources
from countersign.gateway.web.api_shapes import (
    AccountCreate,
    AccountUpdate,
    AccountView,
    ApiError,
    CancelBody,
    ChangeContactBody,
    ContactChange,
    ContactService,
    Email,
    EmailPath,
    ServiceCreate,
    ServicePath,
    ServiceUpdate,
    ServiceView,
    TaskId,
    TokenBody,
    key_checker,
)
from countersign.rules.contacts import CONTACT_TYPES
from countersign.rules.states import Decision, State
from countersign.store.db import Store
from countersign.workflow import directory, listings, records, requests
from countersign.workflow.errors import BadCode
from countersign.workflow.policy import Policy
from countersign.workflow.send_limits import SendLimits

log = logging.getLogger("countersign.api")

# --- routes ---------------------------------------------------------------------------


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ApiError} for status in (401, 422, *statuses)}


def api_router(
    store: Store,
    policy: Policy,
    keys: Mapping[str, str],
    key_limits: Mapping[str, SendLimits] | None = None,
    clock: Callable[[], datetime] | None = None,
    sources: ClientSources | None = None,
) -> APIRouter:
    """``key_limits``: the send limits of the keys that have some (workflow/send_limits);
    ``sources``: who a client is, for the wrong-code limits (gateway/sources)."""
    router = APIRouter(prefix="/v1", dependencies=[Depends(key_checker(keys))])
    limited = _Limited(key_limits or {}, clock)
    _request_routes(router, store, policy, limited, sources or ClientSources())
    _record_routes(router, store)
    return router


class _Limited:
    """Each key's own send limits (none unless configured) and the clock they count by."""

    def __init__(
        self, limits: Mapping[str, SendLimits], clock: Callable[[], datetime] | None
    ) -> None:
        self.limits = limits
        self.clock = clock

    def of(self, request: Request) -> SendLimits | None:
        return self.limits.get(getattr(request.state, "api_key", None) or "")

    def now(self) -> datetime | None:
        return self.clock() if self.clock is not None else None


def _request_routes(
    router: APIRouter, store: Store, policy: Policy, limited: _Limited, sources: ClientSources
) -> None:
    _change_route(router, store, policy, limited)

    @router.get(
        "/contactChange",
        response_model=list[int],
        responses=_errors(),
        tags=["contactChange"],
        summary="Task ids, filtered",
    )
    def list_tasks(
        askingAccount: Annotated[Email | None, Query()] = None,
        toAccount: Annotated[Email | None, Query()] = None,
        account: Annotated[Email | None, Query(description="asking, from, to or validator")] = None,
        state: Annotated[State | None, Query()] = None,
    ) -> list[int]:
        return _task_ids(store, askingAccount, toAccount, account, state)

    @router.get(
        "/contactChange/{id}",
        response_model=ContactChange,
        responses=_errors(404),
        tags=["contactChange"],
        summary="One task",
    )
    def get_task(id: TaskId) -> dict[str, Any]:
        return requests.show(store, id)

    _decision_route(router, store, policy, sources, "accept", Decision.ACCEPT)
    _decision_route(router, store, policy, sources, "refuse", Decision.DECLINE)
    _task_routes(router, store, policy, limited)


def _change_route(router: APIRouter, store: Store, policy: Policy, limited: _Limited) -> None:
    @router.post(
        "/service/{serviceName}/changeContact",
        response_model=list[int],
        responses=_errors(400, 404, 409, 429),
        tags=["contactChange"],
        summary="Ask for a change of contacts; returns the new task ids",
    )
    def change_contact(
        request: Request, serviceName: ServicePath, body: ChangeContactBody
    ) -> list[int]:
        wanted = {t: email for t in CONTACT_TYPES if (email := getattr(body, str(t))) is not None}
        made = requests.change_contacts(
            store,
            serviceName,
            body.askingAccount,
            wanted,
            policy,
            via="api",
            now=limited.now(),
            limits=limited.of(request),
        )
        return [r["id"] for r in made]


def _task_routes(router: APIRouter, store: Store, policy: Policy, limited: _Limited) -> None:
    """What the asking side does to a task once made: mail the codes again, withdraw it."""

    @router.post(
        "/contactChange/{id}/resendEmail",
        response_model=ContactChange,
        responses=_errors(404, 409, 429),
        tags=["contactChange"],
        summary="A new code to every validator still to answer",
    )
    def resend_email(request: Request, id: TaskId) -> dict[str, Any]:
        return requests.resend(
            store, id, policy, via="api", now=limited.now(), limits=limited.of(request)
        )

    @router.post(
        "/contactChange/{id}/cancel",
        response_model=ContactChange,
        responses=_errors(400, 404, 409),
        tags=["contactChange"],
        summary="Withdraw a task (asking account only)",
    )
    def cancel_task(id: TaskId, body: CancelBody) -> dict[str, Any]:
        return requests.cancel(store, id, body.askingAccount, policy, via="api")


def _decision_route(
    router: APIRouter,
    store: Store,
    policy: Policy,
    sources: ClientSources,
    verb: str,
    decision: Decision,
) -> None:
    def decide(id: TaskId, body: TokenBody, request: Request) -> dict[str, Any]:
        # Wrong codes count against the calling system's client address (or the
        # forwarded one behind a trusted proxy), like the page's.
        try:
            result = requests.decide(
                store,
                body.token,
                decision,
                policy,
                request_id=id,
                via="api",
                source=sources.of(request),
                comment=without_codes(body.comment) if body.comment else None,
            )
        except BadCode:
            metrics.count_command("invalid", "api")
            raise
        if not result.repeated:  # the same answer twice is answered, not counted again
            metrics.count_command(str(decision), "api")
        return result.request

    router.post(
        f"/contactChange/{{id}}/{verb}",
        response_model=ContactChange,
        responses=_errors(400, 404, 409, 429),
        tags=["contactChange"],
        summary=f"{verb.capitalize()} a task with a validator's code",
        operation_id=f"{verb}_task",
        name=f"{verb}_task",
    )(decide)


def _task_ids(
    store: Store,
    asking: str | None,
    to: str | None,
    account: str | None,
    state: State | None,
) -> list[int]:
    return listings.request_ids(
        store,
        account=account,
        asking=asking,
        to=to,
        state=str(state) if state is not None else None,
    )


def _record_routes(router: APIRouter, store: Store) -> None:
    @router.get(
        "/account/{email}/services",
        response_model=list[ContactService],
        responses=_errors(404),
        tags=["account"],
        summary='"My contacts": the services an account is a contact of',
    )
    def account_services(email: EmailPath) -> list[dict[str, Any]]:
        return directory.services_of(store, email)

    @router.post(
        "/account",
        response_model=AccountView,
        status_code=201,
        responses=_errors(400, 409),
        tags=["account"],
        summary="Create an account (system of record)",
    )
    def create_account(body: AccountCreate) -> dict[str, Any]:
        return directory.add_account(store, body.account, _account_changes(body))

    @router.get(
        "/account/{email}",
        response_model=AccountView,
        responses=_errors(404),
        tags=["account"],
        summary="One account",
    )
    def get_account(email: EmailPath) -> dict[str, Any]:
        return records.get_account(store, email)

    @router.put(
        "/account/{email}",
        response_model=AccountView,
        responses=_errors(400, 404),
        tags=["account"],
        summary="Update an account (fields left out stay as they are)",
    )
    def update_account(email: EmailPath, body: AccountUpdate) -> dict[str, Any]:
        return directory.update_account(store, email, _account_changes(body))

    _service_routes(router, store)


def _service_routes(router: APIRouter, store: Store) -> None:
    @router.post(
        "/service",
        response_model=ServiceView,
        status_code=201,
        responses=_errors(400, 404, 409),
        tags=["service"],
        summary="Create a service with its three contacts (system of record)",
    )
    def create_service(body: ServiceCreate) -> dict[str, Any]:
        return directory.add_service(
            store, body.serviceDomain, body.contactAdmin, body.contactTech, body.contactBilling
        )

    @router.get(
        "/service/{serviceName}",
        response_model=ServiceView,
        responses=_errors(404),
        tags=["service"],
        summary="One service and its contacts",
    )
    def get_service(serviceName: ServicePath) -> dict[str, Any]:
        return records.get_service(store, serviceName)

    @router.put(
        "/service/{serviceName}",
        response_model=ServiceView,
        responses=_errors(400, 404, 409),
        tags=["service"],
        summary="Set contacts directly, without validation (system of record)",
    )
    def update_service(serviceName: ServicePath, body: ServiceUpdate) -> dict[str, Any]:
        contacts = {t: email for t in CONTACT_TYPES if (email := getattr(body, str(t))) is not None}
        return records.set_contacts(store, serviceName, contacts, via="api")


def _account_changes(body: AccountUpdate) -> directory.AccountChanges:
    return directory.AccountChanges(
        zone=body.zone,
        contact_email=body.contactEmail,
        language=body.language,
        payment_method_valid=body.paymentMethodValid,
        balance_due=Decimal(body.balanceDue) if body.balanceDue is not None else None,
    )
