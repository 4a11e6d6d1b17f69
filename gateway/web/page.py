"""The link's web page: ``GET /confirm/{ID}`` shows, ``POST /confirm/{ID}`` acts.

A GET (or HEAD) only reads: mail security scanners open every link, some
run its scripts, so the page has no script and nothing happens until a
person presses Accept or Decline.  The POST goes through the same
`workflow.requests.decide` as mail, so the same rules and the same limits on
wrong codes hold (counted by the client's address, gateway/sources.py).  An id
that names no request answers exactly as a request does to someone without its
code.  The code itself is never logged nor echoed after use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from countersign.gateway import metrics
from countersign.gateway.comments import without_codes
from countersign.gateway.look import BUILT_IN, Look
from countersign.gateway.mail_out.render import utc_datetime
from countersign.gateway.sources import ClientSources
from countersign.rules.states import Decision
from countersign.store.db import Store
from countersign.templates import TEMPLATE_DIR
from countersign.workflow import guess_limits, requests
from countersign.workflow.deciding import find_code
from countersign.workflow.errors import BadCode, NotFound
from countersign.workflow.lifecycle import utcnow
from countersign.workflow.policy import Policy
from countersign.workflow.views import request_json

log = logging.getLogger("countersign.web")

PAGE_DIR = TEMPLATE_DIR / "web"
LANGUAGES = ("en", "fr")
DEFAULT_LANGUAGE = "en"
MAX_ID = 2**31 - 1  # the largest id every supported database can compare with

# Why nothing happened -> HTTP status of the page that says so.
_FAILURE_STATUS = {"closed": 409, "expired": 409, "used": 409, "locked": 429}
_HOLDER_ANSWERS = frozenset({"closed", "expired", "used"})
_ALREADY = {Decision.ACCEPT: "already-accepted", Decision.DECLINE: "already-declined"}


def page_environment(template_dir: str = "") -> jinja2.Environment:
    """Pages only: autoescaped, and a missing value is an error, not a blank.

    ``template_dir``'s ``web/`` files override the built-in pages of the same name.
    """
    search: list[Path] = [Path(template_dir) / "web", PAGE_DIR] if template_dir else [PAGE_DIR]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters["utc"] = utc_datetime
    return env


def preferred_language(header: str | None) -> str:
    """The supported language an ``Accept-Language`` header likes best."""
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for part in (header or "").split(","):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip() == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
        base = tag.strip().lower().split("-")[0]
        if base in LANGUAGES and q > best_q:
            best, best_q = base, q
    return best


def parse_id(text: str) -> int | None:
    """A request id from the path, or None when it cannot name one."""
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        return None
    value = int(text)
    return value if 0 < value <= MAX_ID else None


@dataclass(frozen=True)
class Sight:
    """What one look at a request with one code finds (a read, nothing written)."""

    exists: bool
    state: str | None = None
    holder_language: str | None = None  # set when the code is usable on this request
    request: dict[str, Any] | None = None  # shown only to a code holder
    real_code: bool = False  # the code is this request's, usable or not (used, closed)


def look(store: Store, request_id: int, token: str) -> Sight:
    with store.read() as session:
        try:
            request = requests.load_request(session, request_id)
        except NotFound:
            return Sight(exists=False)
        found = find_code(session, token) if token else None
        real = found is not None and found.request_id == request_id
        if found is None or not real or found.decision is not None:
            return Sight(exists=True, state=request.state, real_code=real)
        return Sight(
            exists=True,
            state=request.state,
            holder_language=found.account.language,
            request=request_json(request),
            real_code=True,
        )


class Pages:
    """Renders the pages; one per app, holding its store and policy."""

    def __init__(
        self,
        store: Store,
        policy: Policy,
        sources: ClientSources | None = None,
        look: Look = BUILT_IN,
    ) -> None:
        self.store = store
        self.policy = policy
        self.sources = sources or ClientSources()
        self.brand = look.brand
        self.env = page_environment(look.template_dir)

    def render(self, name: str, language: str, status: int, **values: Any) -> HTMLResponse:
        lang = language if language in LANGUAGES else DEFAULT_LANGUAGE
        words = self.env.get_template(f"{lang}.j2").module
        # "root" leads back from /confirm/{id} to the site root, keeping any proxy prefix.
        html = self.env.get_template(name).render(
            lang=lang, w=words, root="../", brand=self.brand, **values
        )
        return HTMLResponse(html, status_code=status)

    def missing(self, request_id: object, language: str) -> HTMLResponse:
        return self.render("missing.html.j2", language, 404, request_id=request_id)

    def wrong_link(self, request_id: int, source: str) -> bool:
        """A link with a wrong code was opened: counted like a wrong POST; True when limited.

        Counted, not acted on: nothing the request, its validators or the audit
        trail hold changes (mail scanners open links, but with the right code).
        """
        now = utcnow()
        with self.store.write() as session:
            if guess_limits.source_limited(session, source, now, self.policy):
                return True
            guess_limits.count(session, source, request_id, "web", now, self.policy)
        return False

    def show(
        self, request_id: int, token: str, accept_language: str | None, source: str
    ) -> HTMLResponse:
        sight = look(self.store, request_id, token)
        language = sight.holder_language or preferred_language(accept_language)
        usable = sight.request is not None
        # Whether the id names a request or not, without its code the page is the same.
        # A holder reopening a used link is no guesser: only wrong codes count.
        wrong = bool(token) and not sight.real_code
        limited = wrong and self.wrong_link(request_id, source)
        note = None if usable or not token else "invalid-link"
        return self.render(
            "confirm.html.j2",
            language,
            429 if limited else 200,
            request_id=request_id,
            request=sight.request,
            token=token if usable else "",
            note="locked" if limited else note,
        )

    def act(
        self,
        request_id: int,
        token: str,
        decision: str,
        accept_language: str | None,
        source: str,
        comment: str = "",
    ) -> HTMLResponse:
        # Looked up before deciding: once used, the code no longer names its holder.
        sight = look(self.store, request_id, token)
        language = sight.holder_language or preferred_language(accept_language)
        if not token:
            return self.failure(request_id, language, "missing-code", None, 400)
        if decision not in {str(d) for d in Decision}:
            return self.failure(request_id, language, "bad-decision", None, 400)
        return self.decide(request_id, token, Decision(decision), language, source, comment)

    def decide(
        self,
        request_id: int,
        token: str,
        decision: Decision,
        language: str,
        source: str,
        comment: str = "",
    ) -> HTMLResponse:
        """The act itself, through the workflow mail uses, and its outcome page."""
        try:
            result = requests.decide(
                self.store,
                token,
                decision,
                self.policy,
                request_id=request_id,
                via="web",
                source=source,
                comment=without_codes(comment),  # a code pasted in never travels with it
            )
        except BadCode as bad:
            metrics.count_command("invalid", "web")
            log.info("web answer to request %s changed nothing: %s", request_id, bad.code)
            return self.failure(request_id, language, *self._why(request_id, bad.code))
        if result.repeated:
            # A double click, a second tab: the first one did it; say so, count nothing.
            return self.failure(request_id, language, _ALREADY[decision], None, 200)
        metrics.count_command(str(decision), "web")
        log.info("web: %s answered %s to request %s", result.account, decision, request_id)
        return self.render(
            "outcome.html.j2",
            language,
            200,
            request_id=request_id,
            success=True,
            outcome=_outcome(decision, result.waiting_for),
            request=result.request,
            waiting=list(result.waiting_for),
            state=result.request["state"],
        )

    def _why(self, request_id: int, code: str) -> tuple[str, str | None, int]:
        """The reason to show, the request's state now, and the page's status.

        The state only to the holder of a real code ("closed", "expired", "used"):
        to anyone else a known request and an unknown id look the same.
        """
        state = look(self.store, request_id, "").state if code in _HOLDER_ANSWERS else None
        return code, state, _FAILURE_STATUS.get(code, 400)

    def failure(
        self, request_id: int, language: str, outcome: str, state: str | None, status: int
    ) -> HTMLResponse:
        return self.render(
            "outcome.html.j2",
            language,
            status,
            request_id=request_id,
            success=False,
            outcome=outcome,
            request=None,
            waiting=[],
            state=state,
        )


def _outcome(decision: Decision, waiting_for: tuple[str, ...]) -> str:
    if decision is Decision.DECLINE:
        return "declined"
    return "accepted-waiting" if waiting_for else "accepted-done"


def page_router(pages: Pages) -> APIRouter:
    """The routes of the page, left out of the API's OpenAPI document."""
    router = APIRouter(include_in_schema=False)

    @router.api_route("/confirm/{request_id}", methods=["GET", "HEAD"])
    def confirm_page(request: Request, request_id: str, token: str = "") -> Response:
        number = parse_id(request_id)
        language = request.headers.get("accept-language")
        if number is None:
            return pages.missing(request_id, preferred_language(language))
        return pages.show(number, token.strip(), language, pages.sources.of(request))

    @router.post("/confirm/{request_id}")
    def confirm_act(
        request: Request,
        request_id: str,
        token: str = Form(""),
        decision: str = Form(""),
        comment: str = Form(""),
    ) -> Response:
        number = parse_id(request_id)
        language = request.headers.get("accept-language")
        if number is None:
            return pages.missing(request_id, preferred_language(language))
        source = pages.sources.of(request)
        return pages.act(number, token.strip(), decision, language, source, comment)

    @router.get("/static/countersign.css")
    def stylesheet() -> FileResponse:
        return FileResponse(PAGE_DIR / "countersign.css", media_type="text/css")

    return router
