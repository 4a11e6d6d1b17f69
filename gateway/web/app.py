"""The web server: the link's page, the HTTP API, /healthz and /metrics, in one app
served by uvicorn on the daemon's own asyncio loop.

Every answer carries the same guard headers (no referrer, a strict CSP, no
caching: a page may hold a code), and every error the same JSON shape.  The
access log is ours: method, path and status, never the query string (the link
carries the code in it) and never a body.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy import text
from starlette.exceptions import HTTPException

from countersign.config import Config
from countersign.gateway import metrics
from countersign.gateway.look import look_of
from countersign.gateway.sources import ClientSources
from countersign.gateway.web.account_pages import account_router
from countersign.gateway.web.account_web import AccountSite, loggable_path
from countersign.gateway.web.api import api_router
from countersign.gateway.web.api_shapes import Unauthorized
from countersign.gateway.web.outage import install_outage_handler
from countersign.gateway.web.page import Pages, page_router
from countersign.rules.contacts import Refusal
from countersign.store.db import Store
from countersign.workflow.lifecycle import utcnow
from countersign.workflow.policy import Policy
from countersign.workflow.send_limits import LimitReached, key_limits

log = logging.getLogger("countersign.web")

SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",
    # No script at all; styles only from our own sheet; forms only back to us.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}

# Refusal codes that are conflicts with the state of things, not bad input.
_CONFLICTS = frozenset(
    {
        "already-open",
        "closed",
        "used",
        "expired",
        "account-exists",
        "service-exists",
        "contact-changed",
    }
)
_CLASSES = {
    400: "Client::BadRequest",
    401: "Client::Unauthorized",
    403: "Client::Forbidden",
    404: "Client::NotFound",
    405: "Client::MethodNotAllowed",
    409: "Client::Conflict",
    413: "Client::RequestEntityTooLarge",
    415: "Client::UnsupportedMediaType",
    422: "Client::ValidationError",
    429: "Client::TooManyRequests",
    500: "Server::InternalServerError",
    503: "Server::ServiceUnavailable",
}


def refusal_status(code: str) -> int:
    if code in {"not-found", "unknown-service"}:
        return 404
    if code in {"locked", "limit-reached"}:
        return 429
    return 409 if code in _CONFLICTS else 400


def error_response(
    status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one error shape: OVHcloud's ``class`` and ``message``, and our ``code``."""
    fallback = "Server::Error" if status >= 500 else "Client::Error"
    body = {"class": _CLASSES.get(status, fallback), "message": message, "code": code}
    return JSONResponse(
        body,
        status_code=status,
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def _validation_message(error: RequestValidationError) -> str:
    # Where and what, never the value given: it may be a code.
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    async def on_refusal(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refusal)
        retry = exc.retry_after(utcnow()) if isinstance(exc, LimitReached) else None
        headers = {"Retry-After": str(retry)} if retry else None
        door = "api" if request.url.path.startswith("/v1/") else "web"
        where = {"door": door, "request": request.path_params.get("id"), "event": "refused"}
        log.info("%s %s refused: %s", request.method, request.url.path, exc.code, extra=where)
        return error_response(refusal_status(exc.code), exc.message, exc.code, headers)

    async def on_unauthorized(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Unauthorized)
        return error_response(401, exc.message, "unauthorized", {"WWW-Authenticate": "Bearer"})

    async def on_invalid(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        paths = [
            tuple(i.get("loc", ()))
            for i in exc.errors()
            if tuple(i.get("loc", ()))[:1] == ("path",)
        ]
        if paths:
            # /contactChange/0, /99999999999999999999, /abc: no such thing, not a bad body.
            what = "contact change request" if paths[0][1:] == ("id",) else "such resource"
            return error_response(404, f"no {what}", "not-found")
        return error_response(422, _validation_message(exc), "invalid")

    async def on_http(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = "not-found" if exc.status_code == 404 else f"http-{exc.status_code}"
        return error_response(exc.status_code, str(exc.detail), code, dict(exc.headers or {}))

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, loggable_path(request.url.path), exc_info=exc)
        return error_response(500, "internal error", "internal")

    app.add_exception_handler(Refusal, on_refusal)
    app.add_exception_handler(Unauthorized, on_unauthorized)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)


def install_guard(app: FastAPI) -> None:
    """Guard headers on every answer, and one access-log line without query or body."""

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.monotonic()
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        key = getattr(request.state, "api_key", None)
        log.info(
            "%s %s %d %.0fms%s",
            request.method,
            loggable_path(request.url.path),
            response.status_code,
            (time.monotonic() - started) * 1000,
            f" key={key}" if key else "",
        )
        return response


def store_answers(store: Store) -> bool:
    try:
        with store.read() as session:
            session.execute(text("SELECT 1"))
        store.health.answered()
    except Exception as error:
        if not store.health.failed(error):  # an outage is logged once, by the store's Health
            log.warning("health: the store does not answer", exc_info=True)
        return False
    return True


# What /healthz reports but does not fail on: a relay or an IMAP server that is down
# delays mail, while the page and the API still work (a balancer must keep them).
DEGRADING = frozenset({"relay", "imap"})
Health = Callable[[], bool | Mapping[str, Any]]


def install_operations(
    app: FastAPI, store: Store, health: Health, *, with_metrics: bool = True
) -> None:
    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        reported = health()
        parts = dict(reported) if isinstance(reported, Mapping) else {"loops": bool(reported)}
        checks: dict[str, Any] = {"store": store_answers(store), **parts}
        failing = [k for k, v in checks.items() if k not in DEGRADING and not _ok(v)]
        degraded = [k for k in DEGRADING if k in checks and not _ok(checks[k])]
        word = "failing" if failing else "degraded" if degraded else "ok"
        return JSONResponse({"status": word, **checks}, 503 if failing else 200)

    if with_metrics:
        install_metrics(app, store)


def _ok(check: Any) -> bool:
    return bool(check.get("ok")) if isinstance(check, Mapping) else bool(check)


def install_metrics(app: FastAPI, store: Store) -> None:
    registry = metrics.make_registry(store)

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(metrics.scrape(registry), media_type=metrics.CONTENT_TYPE_LATEST)


def create_metrics_app(store: Store) -> FastAPI:
    """/metrics alone, for a listener of its own (`web.metrics_host`, `web.metrics_port`)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    install_metrics(app, store)
    return app


def create_app(
    store: Store,
    config: Config,
    *,
    health: Health,
    clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    """The whole web face of one daemon: pages, API, health and metrics.

    ``clock`` is for tests: the account pages and the API's limits read it.
    """
    policy = Policy.from_config(config)
    app = FastAPI(
        title="Countersign",
        version="1",
        summary="Email-confirmed contact changes for hosted services",
        description=(
            "Send a key from `api.keys` as `Authorization: Bearer KEY`. With no keys configured "
            "every /v1 call answers 401. Errors: `{class, message, code}`."
        ),
        docs_url=None,  # the interactive docs load scripts from a CDN; the CSP forbids them
        redoc_url=None,
        generate_unique_id_function=lambda route: route.name,
    )
    install_error_handlers(app)
    install_guard(app)
    sources = ClientSources.from_config(config)
    pages = Pages(store, policy, sources, look_of(config))
    install_outage_handler(app, pages, error_response)  # 503 while the store is unreachable
    app.include_router(page_router(pages))
    app.include_router(account_router(AccountSite(store, config, clock)))
    app.include_router(
        api_router(store, policy, config.api.keys, key_limits(config), clock, sources)
    )
    # With a metrics listener of its own, /metrics is not on the public port.
    install_operations(app, store, health, with_metrics=not config.web.metrics_port)
    _check_unique_operations(app)
    return app


def _check_unique_operations(app: FastAPI) -> None:
    names = [r.name for r in app.routes if isinstance(r, APIRoute) and r.include_in_schema]
    assert len(names) == len(set(names)), "two API routes share an operation id"
