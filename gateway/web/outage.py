"""The web while the store cannot be reached: 503, in each face's own format.

The link's page answers an HTML page that says nothing was done; the API its
JSON error shape; both with ``Retry-After``.  The outage itself is logged
once, by the store's Health, not once per request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response
from sqlalchemy.exc import SQLAlchemyError

from countersign.gateway.web.page import Pages, preferred_language

log = logging.getLogger("countersign.web")
RETRY_AFTER = "30"  # seconds: about how long a database failover takes


ErrorResponse = Callable[..., Response]  # gateway.web.app.error_response: the API's error shape


def install_outage_handler(app: FastAPI, pages: Pages, error_response: ErrorResponse) -> None:
    async def on_store_error(request: Request, exc: Exception) -> Response:
        if not pages.store.health.failed(exc):
            log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
            return error_response(500, "internal error", "internal")
        headers = {"Retry-After": RETRY_AFTER}
        if request.url.path.startswith("/confirm/"):
            language = preferred_language(request.headers.get("accept-language"))
            number = str(request.path_params.get("request_id", ""))[:20]
            page = pages.render("unavailable.html.j2", language, 503, request_id=number)
            page.headers.update(headers)
            return page
        return error_response(503, "the store is unavailable; try again", "unavailable", headers)

    app.add_exception_handler(SQLAlchemyError, on_store_error)
