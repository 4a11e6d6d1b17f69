"""The HTTP API's shapes (bodies, answers, path and query values) and its keys.

gateway/web/api.py holds the routes; here is what they take and give, each
checked by pydantic before a route runs, and the bearer-key check.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from countersign.rules.contacts import ContactType
from countersign.rules.states import Decision, State

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
