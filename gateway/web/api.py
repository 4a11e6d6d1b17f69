"""The HTTP API for the systems that drive Countersign (control panel, billing, support).

Shapes and names follow OVHcloud's API (``/service/{serviceName}/changeContact``,
``/contactChange/{id}/accept`` ...), so integrators recognise them.  Each
endpoint only translates: it calls one workflow act, the same the command
line and mail use.  Endpoints are plain ``def``: FastAPI runs them in its
thread pool, so the synchronous store never blocks the event loop.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from countersign.gateway import metrics
from countersign.gateway.comments import without_codes
from countersign.gateway.sources import ClientSources
from countersign.rules.contacts import CONTACT_TYPES, ContactType
from countersign.rules.states import Decision, State
from countersign.store.db import Store
from countersign.workflow import directory, listings, records, requests
from countersign.workflow.errors import BadCode
from countersign.workflow.policy import Policy
from countersign.workflow.send_limits import SendLimits

log = logging.getLogger("countersign.api")

MAX_ID = 2**31 - 1  # the largest id every supported database can compare with
# No control characters anywhere: they have no business in names and addresses,
# and PostgreSQL refuses NUL outright.
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"

# Addresses, service names and zones are judged by rules/names.py, as on the command
# line and in imports, so that a bad one gets the same reason (a 400) at every door;
# the length bound here only keeps absurd bodies out.
Checked = Annotated[str, StringConstraints(max_length=20_000)]
# An account looked up, not created: what no account can be is refused before the store.
Email = Annotated[str, StringConstraints(min_length=3, max_length=320, pattern=_PRINTABLE)]
NewEmail = Checked
ServiceName = Checked
Amount = Annotated[str, StringConstraints(pattern=r"^\d{1,12}(\.\d{1,2})?$")]
Zone = Checked
Token = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=_PRINTABLE)]
Language = Literal["en", "fr"]

TaskId = Annotated[int, Path(ge=1, le=MAX_ID, description="The contact change request id.")]
EmailPath = Annotated[
    str, Path(min_length=3, max_length=320, pattern=_PRINTABLE, description="Primary email.")
]
ServicePath = Annotated[
    str, Path(min_length=1, max_length=255, pattern=_PRINTABLE, description="e.g. example.com")
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- shapes ---------------------------------------------------------------------------


class ApiError(BaseModel):
    """Every error: OVHcloud's ``class`` and ``message``, plus a stable ``code`` for programs."""

    model_config = ConfigDict(populate_by_name=True)
    class_: str = Field(alias="class", examples=["Client::Conflict"])
    message: str
    code: str = Field(examples=["already-open"])


class ValidatorView(BaseModel):
    account: str
    decision: Decision | None
    at: datetime | None
    via: str | None
    deliveryError: str | None = None
    comment: str | None = None


class ContactChange(BaseModel):
    """A contact change request (OVHcloud's "task")."""

    id: int
    serviceDomain: str
    contactTypes: list[ContactType]
    fromAccount: str
    toAccount: str
    askingAccount: str
    state: State
    dateRequest: datetime
    dateDone: datetime | None
    expires: datetime
    error: str | None
    validators: list[ValidatorView]


class ChangeContactBody(Strict):
    contactAdmin: Email | None = None
    contactTech: Email | None = None
    contactBilling: Email | None = None
    askingAccount: Email


class TokenBody(Strict):
    token: Token
    comment: str | None = Field(None, max_length=2000, description="The validator's words")


class CancelBody(Strict):
    askingAccount: Email


class AccountView(BaseModel):
    account: str
    contactEmail: str
    zone: str
    language: str
    paymentMethodValid: bool
    balanceDue: str


class AccountUpdate(Strict):
    zone: Zone | None = None
    contactEmail: NewEmail | None = None
    language: Language | None = None
    paymentMethodValid: bool | None = None
    balanceDue: Amount | None = Field(None, description='Outstanding amount, e.g. "12.50".')


class AccountCreate(AccountUpdate):
    account: NewEmail
    zone: Zone


class ServiceView(BaseModel):
    serviceDomain: str
    contactAdmin: str
    contactTech: str
    contactBilling: str


class ServiceCreate(Strict):
    serviceDomain: ServiceName
    contactAdmin: Email
    contactTech: Email
    contactBilling: Email


class ServiceUpdate(Strict):
    contactAdmin: Email | None = None
    contactTech: Email | None = None
    contactBilling: Email | None = None


class ContactService(BaseModel):
    """ "My contacts": one service and the roles the account holds on it."""

    serviceDomain: str
    contactTypes: list[ContactType]


# --- keys -----------------------------------------------------------------------------


class Unauthorized(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# Module-level: FastAPI reads the (string) annotations against this module's globals.
_BEARER = HTTPBearer(auto_error=False, description="A key from `api.keys`.")


def key_checker(keys: Mapping[str, str]) -> Callable[..., str]:
    """A dependency that names the configured key a call carries, or refuses the call."""

    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> str:
        # Read at each call: the daemon changes ``keys`` in place when SIGHUP reloads them.
        known = [(name, key.encode()) for name, key in keys.items() if key]
        if not known:
            raise Unauthorized("API disabled: no api.keys configured")
        if credentials is None:
            raise Unauthorized("missing API key (Authorization: Bearer ...)")
        given = credentials.credentials.encode()
        # Every key compared, in constant time each: no early exit to time.
        matches = [name for name, key in known if hmac.compare_digest(given, key)]
        if not matches:
            raise Unauthorized("wrong API key")
        request.state.api_key = matches[0]  # the access log names the key, never shows it
        return matches[0]

    return check


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
