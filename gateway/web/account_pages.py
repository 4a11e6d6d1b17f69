"""The account pages: sign in by a mailed link, "My contacts", "My requests".

The reference's two pages, for the contacts themselves.  Every act goes through
the workflow act the command line and the API use (change, decide, resend,
cancel), as the signed-in account, with the account pages' send limits.  A GET
never changes anything (mail scanners open links); a session alone never
decides a request: Accept and Decline still need the validation code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from countersign.gateway.comments import without_codes
from countersign.gateway.web.account_web import SESSION_COOKIE, AccountSite, Visit, service_path
from countersign.gateway.web.page import parse_id
from countersign.rules.contacts import CONTACT_TYPES, ContactType
from countersign.rules.states import Decision, State
from countersign.workflow import requests, self_service, sign_in
from countersign.workflow.errors import BadCode, NotFound, Refusal
from countersign.workflow.send_limits import LimitReached

log = logging.getLogger("countersign.web")

STATES = [str(s) for s in State]
NOTES = frozenset(
    {
        "made",
        "accepted-waiting",
        "accepted-done",
        "declined",
        "already-answered",
        "resent",
        "cancelled",
    }
)
_REFUSED_STATUS = {"limit-reached": 429, "locked": 429, "not-found": 404}


def refusal_status(refusal: Refusal) -> int:
    return _REFUSED_STATUS.get(refusal.code, 409 if refusal.code in {"closed", "used"} else 400)


def account_router(site: AccountSite) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    _sign_in_routes(router, site)
    _contact_routes(router, site)
    _request_routes(router, site)
    return router


def _forbidden(site: AccountSite, visit: Visit) -> Response:
    return site.render(visit, "refused.html.j2", 403, reason="csrf")


def _sign_in_routes(router: APIRouter, site: AccountSite) -> None:
    @router.get("/account")
    def start(request: Request) -> Response:
        visit = site.visit(request)
        if visit.account is not None:
            return site.redirect(visit, "account/contacts")
        return site.render(visit, "sign-in.html.j2", email="", problem=None)

    @router.post("/account/sign-in")
    def ask(request: Request, email: str = Form(""), csrf: str = Form("")) -> Response:
        visit = site.visit(request)
        if not visit.csrf_ok(csrf):
            return _forbidden(site, visit)
        client = request.client.host if request.client else None
        try:
            sign_in.ask(site.store, email, client, site.now(), site.settings, site.limits)
        except LimitReached as limit:
            return site.render(visit, "sign-in.html.j2", 429, email=email, problem=limit)
        except Refusal as bad:
            return site.render(visit, "sign-in.html.j2", 400, email=email, problem=bad)
        # The same answer whether the address names an account or not.
        return site.render(visit, "check-mail.html.j2")

    _link_routes(router, site)


def _link_routes(router: APIRouter, site: AccountSite) -> None:
    """The mailed link: its page, using it (a session starts), and signing out."""

    @router.get("/account/sign-in/{token}")
    def link(request: Request, token: str) -> Response:
        visit = site.visit(request)
        state = sign_in.link_state(site.store, token, site.now())
        return site.render(
            visit, "continue.html.j2", 200 if state == "usable" else 410, state=state
        )

    @router.post("/account/sign-in/{token}")
    def redeem(request: Request, token: str, csrf: str = Form("")) -> Response:
        visit = site.visit(request)
        if not visit.csrf_ok(csrf):
            return _forbidden(site, visit)
        outcome = sign_in.redeem(site.store, token, site.now(), site.settings)
        if isinstance(outcome, str):
            return site.render(visit, "continue.html.j2", 410, state=outcome)
        secret, account = outcome
        # A browser holds one session: any earlier one (another account's too) ends.
        sign_in.sign_out(site.store, request.cookies.get(SESSION_COOKIE, ""), site.now())
        log.info("web: %s signed in", account.email)
        response = site.redirect(visit, "account/contacts")
        max_age = int(site.settings.session_valid.total_seconds())
        site.set_cookie(response, SESSION_COOKIE, secret, max_age)
        return response

    @router.post("/account/sign-out")
    def sign_out(request: Request, csrf: str = Form("")) -> Response:
        visit = site.visit(request)
        if visit.account is not None and not visit.csrf_ok(csrf):
            return _forbidden(site, visit)
        sign_in.sign_out(site.store, request.cookies.get(SESSION_COOKIE, ""), site.now())
        visit.account = None
        response = site.render(visit, "signed-out.html.j2")
        response.delete_cookie(SESSION_COOKIE, path="/account", secure=site.secure, httponly=True)
        return response


def _contact_routes(router: APIRouter, site: AccountSite) -> None:
    @router.get("/account/contacts")
    def contacts(request: Request, name: str = "") -> Response:
        visit = site.visit(request)
        if visit.account is None:
            return site.redirect(visit, "account")
        services = self_service.my_services(site.store, visit.account.email, name[:255])
        return site.render(visit, "contacts.html.j2", services=services, name=name[:255])

    @router.get("/account/contacts/{service}")
    def modify_form(request: Request, service: str) -> Response:
        visit = site.visit(request)
        if visit.account is None:
            return site.redirect(visit, "account")
        held = _held(site, visit, service)
        if held is None:
            return site.render(visit, "refused.html.j2", 404, reason="no-service")
        return site.render(visit, "modify.html.j2", service=held, wanted={}, problem=None)

    @router.post("/account/contacts/{service}")
    def modify(
        request: Request,
        service: str,
        csrf: str = Form(""),
        contactAdmin: str = Form(""),
        contactTech: str = Form(""),
        contactBilling: str = Form(""),
    ) -> Response:
        visit = site.visit(request)
        if not visit.csrf_ok(csrf) or visit.account is None:
            return _forbidden(site, visit)
        held = _held(site, visit, service)
        if held is None:
            return site.render(visit, "refused.html.j2", 404, reason="no-service")
        given = {"contactAdmin": contactAdmin, "contactTech": contactTech}
        given["contactBilling"] = contactBilling
        return _ask_change(site, visit, held, given)


def _ask_change(
    site: AccountSite, visit: Visit, held: dict[str, Any], given: dict[str, str]
) -> Response:
    """The change the form asks for, made; or the form again with the reason it was refused."""
    assert visit.account is not None
    wanted = {ContactType(t): e.strip()[:320] for t, e in given.items() if e.strip()}
    try:
        requests.change_contacts(
            site.store,
            held["serviceDomain"],
            visit.account.email,
            {t: wanted[t] for t in CONTACT_TYPES if t in wanted},
            site.policy,
            via="web",
            now=site.now(),
            limits=site.limits,
        )
    except Refusal as refused:
        values = {"service": held, "wanted": given, "problem": refused}
        return site.render(visit, "modify.html.j2", refusal_status(refused), **values)
    return site.redirect(visit, "account/requests?note=made")


def _held(site: AccountSite, visit: Visit, service: str) -> dict[str, Any] | None:
    assert visit.account is not None
    name = service.strip().lower()
    found = self_service.my_services(site.store, visit.account.email, name)
    return next((s for s in found if s["serviceDomain"] == name), None)


def _request_routes(router: APIRouter, site: AccountSite) -> None:
    @router.get("/account/requests")
    def listing(request: Request, state: str = "", note: str = "") -> Response:
        visit = site.visit(request)
        if visit.account is None:
            return site.redirect(visit, "account")
        chosen = state if state in STATES else None
        found = requests.list_requests(site.store, account=visit.account.email, state=chosen)
        found.reverse()  # the newest first
        values: dict[str, Any] = {"found": found, "state": chosen or "", "states": STATES}
        return site.render(visit, "requests.html.j2", note=_note(note), **values)

    @router.get("/account/requests/{request_id}")
    def one(request: Request, request_id: str, note: str = "") -> Response:
        visit = site.visit(request)
        if visit.account is None:
            return site.redirect(visit, "account")
        shown = _concerning(site, visit, request_id)
        if shown is None:
            return site.render(visit, "refused.html.j2", 404, reason="no-request")
        return _request_page(site, visit, shown, note=_note(note))

    @router.post("/account/requests/{request_id}/{act}")
    def act(
        request: Request,
        request_id: str,
        act: str,
        csrf: str = Form(""),
        token: str = Form(""),
        decision: str = Form(""),
        comment: str = Form(""),
    ) -> Response:
        visit = site.visit(request)
        if not visit.csrf_ok(csrf) or visit.account is None:
            return _forbidden(site, visit)
        shown = _concerning(site, visit, request_id)
        if shown is None or act not in {"decide", "resend", "cancel"}:
            return site.render(visit, "refused.html.j2", 404, reason="no-request")
        try:
            answer = Answer(token.strip(), decision, without_codes(comment))
            note = _act(site, visit, shown["id"], act, answer)
        except Refusal as refused:
            current = requests.show(site.store, shown["id"])
            status = refusal_status(refused)
            return _request_page(site, visit, current, status, problem=refused)
        return site.redirect(visit, f"account/requests/{shown['id']}?note={note}")


@dataclass(frozen=True)
class Answer:
    """What the decision form of a request's page carries."""

    token: str
    decision: str
    comment: str


def _act(site: AccountSite, visit: Visit, request_id: int, act: str, answer: Answer) -> str:
    assert visit.account is not None
    token, how = answer.token, answer.decision
    now = site.now()
    if act == "resend":
        requests.resend(site.store, request_id, site.policy, via="web", now=now, limits=site.limits)
        return "resent"
    if act == "cancel":
        requests.cancel(
            site.store, request_id, visit.account.email, site.policy, via="web", now=now
        )
        return "cancelled"
    if not token:
        raise BadCode("missing-code", "enter the validation code from your email")
    if how not in {str(d) for d in Decision}:
        raise BadCode("bad-decision", "press Accept or Decline")
    # The code must be the signed-in account's own: it is the code's owner who decides.
    result = requests.decide(
        site.store,
        token,
        Decision(how),
        site.policy,
        request_id=request_id,
        via="web",
        sender=visit.account.email,
        source=site.sources.of(visit.request),
        now=now,
        comment=answer.comment or None,
    )
    if result.repeated:
        return "already-answered"  # a double click or a second tab: counted as nothing
    if how == Decision.DECLINE:
        return "declined"
    return "accepted-waiting" if result.waiting_for else "accepted-done"


def _concerning(site: AccountSite, visit: Visit, request_id: str) -> dict[str, Any] | None:
    """The request, if it exists and concerns the signed-in account (else None: 404)."""
    assert visit.account is not None
    number = parse_id(request_id)
    if number is None:
        return None
    try:
        shown = requests.show(site.store, number)
    except NotFound:
        return None
    return shown if self_service.concerns(shown, visit.account.email) else None


def _request_page(
    site: AccountSite,
    visit: Visit,
    shown: dict[str, Any],
    status: int = 200,
    *,
    note: str | None = None,
    problem: Refusal | None = None,
) -> Response:
    assert visit.account is not None
    me = visit.account.email
    waiting = self_service.still_to_answer(shown)
    validating = shown["state"] == State.VALIDATING
    values = {
        "r": shown,
        "waiting": waiting,
        "can_decide": validating and me in waiting,
        "can_resend": validating and bool(waiting),
        "can_cancel": validating and shown["askingAccount"] == me,
        "note": note,
        "problem": problem,
    }
    return site.render(visit, "request.html.j2", status, **values)


def _note(note: str) -> str | None:
    return note if note in NOTES else None


__all__ = ["account_router", "service_path"]
