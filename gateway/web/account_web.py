"""The account pages' plumbing: cookies, CSRF tokens, language, rendering.

Two cookies, both HttpOnly and SameSite=Lax (Secure when the public URL is
https), both scoped to /account: the session (its value's hash is the store's
key for it) and, before signing in, a form cookie that the sign-in forms' CSRF
tokens derive from.  A form's token is a hash of whichever of the two stands
behind the page; a POST whose token does not match is refused before anything
is read or written.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from countersign.config import Config, parse_duration
from countersign.gateway.look import look_of
from countersign.gateway.sources import ClientSources
from countersign.gateway.web.page import LANGUAGES, page_environment, preferred_language
from countersign.store.db import Store
from countersign.workflow import sign_in
from countersign.workflow.lifecycle import utcnow
from countersign.workflow.policy import Policy
from countersign.workflow.send_limits import SendLimits
from countersign.workflow.sign_in import SignedIn, SignInSettings

SESSION_COOKIE = "countersign_session"
FORM_COOKIE = "countersign_form"
COOKIE_PATH = "/account"


_SIGN_IN_PATH = re.compile(r"(/account/sign-in/)[^/]+")


def loggable_path(path: str) -> str:
    """``path`` with any sign-in token taken out: a log line must not sign anyone in."""
    return _SIGN_IN_PATH.sub(r"\1<token>", path)


def csrf_token(secret: str) -> str:
    return hashlib.sha256(b"countersign-csrf\0" + secret.encode()).hexdigest()


def relative_root(path: str) -> str:
    """From ``path`` back to the site root, relatively: pages work under any proxy prefix."""
    depth = path.rstrip("/").count("/") - 1
    return "../" * depth if depth > 0 else "./"


@dataclass
class Visit:
    """One request to the account pages: who (if signed in), language, CSRF basis."""

    request: Request
    account: SignedIn | None
    secret: str  # the session's or the form cookie's value behind this page's forms
    new_form_cookie: bool
    language: str

    @property
    def root(self) -> str:
        return relative_root(self.request.url.path)

    @property
    def csrf(self) -> str:
        return csrf_token(self.secret)

    def csrf_ok(self, given: str) -> bool:
        return (
            bool(given)
            and not self.new_form_cookie
            and hmac.compare_digest(given.encode(), self.csrf.encode())
        )

    def link(self, path: str) -> str:
        """A link to ``account/...`` relative to this page."""
        return self.root + path


class AccountSite:
    """Store, policy, settings, clock and templates of the account pages."""

    def __init__(
        self, store: Store, config: Config, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.store = store
        self.policy = Policy.from_config(config)
        self.limits = SendLimits.from_config(config)
        self.sources = ClientSources.from_config(config)  # whom wrong codes count against
        self.settings = SignInSettings(
            link_valid=parse_duration(config.web.sign_in_valid),
            session_valid=parse_duration(config.web.session_valid),
            mail_domain=config.mail.domain,
        )
        self.minutes = max(1, int(self.settings.link_valid.total_seconds() // 60))
        self.secure = config.mail.public_url.lower().startswith("https://")
        self.clock = clock or utcnow
        look = look_of(config)  # templates.dir and the brand, as the confirmation page
        self.brand = look.brand
        self.env = page_environment(look.template_dir)

    def now(self) -> datetime:
        return self.clock()

    def visit(self, request: Request) -> Visit:
        session_secret = request.cookies.get(SESSION_COOKIE, "")
        account = sign_in.signed_in(self.store, session_secret, self.now())
        form_secret = request.cookies.get(FORM_COOKIE, "")
        new = False
        if account is None and len(form_secret) < 32:
            form_secret, new = sign_in.new_secret(), True
        secret = session_secret if account is not None else form_secret
        language = (
            account.language
            if account is not None and account.language in LANGUAGES
            else preferred_language(request.headers.get("accept-language"))
        )
        return Visit(request, account, secret, new, language)

    def render(self, visit: Visit, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        words = self.env.get_template(f"account/{visit.language}.j2").module
        html = self.env.get_template(f"account/{template}").render(
            lang=visit.language,
            w=words,
            v=visit,
            root=visit.root,
            minutes=self.minutes,
            brand=self.brand,
            **values,
        )
        response = HTMLResponse(html, status_code=status)
        if visit.new_form_cookie:
            self.set_cookie(response, FORM_COOKIE, visit.secret, None)
        return response

    def set_cookie(self, response: Response, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=COOKIE_PATH,
            secure=self.secure,
            httponly=True,
            samesite="lax",
        )

    def redirect(self, visit: Visit, path: str) -> RedirectResponse:
        # 303: the browser follows with a GET, so reloading never posts again.
        return RedirectResponse(visit.link(path), status_code=303)


def service_path(name: str) -> str:
    return quote(name, safe="")
