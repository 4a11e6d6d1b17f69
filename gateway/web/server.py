"""Serving the web app: uvicorn on the daemon's own loop, without its access log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

log = logging.getLogger("countersign.web")

log = logging.getLogger("countersign.web")


class WebServerError(RuntimeError):
    """The web server could not start or stopped by itself."""


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the daemon owns SIGINT and SIGTERM."""

    listening: asyncio.Event | None = None  # set once the socket is bound (systemd's READY)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.listening is not None:
            self.listening.set()


class _NoAccessLog(logging.Filter):
    """uvicorn's access line holds the query string, i.e. the code of a link.

    ``access_log=False`` only unhooks the logger's handlers and propagation, which
    any later logging configuration can undo; a filter on the logger stays.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return False


_NO_ACCESS_LOG = _NoAccessLog()


def make_server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    logging.getLogger("uvicorn.access").addFilter(_NO_ACCESS_LOG)  # once: same instance
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # the daemon's logging, not uvicorn's
        access_log=False,  # uvicorn's would print the query string, i.e. the code
        server_header=False,
        lifespan="off",
    )
    return _Server(config)


async def serve_web(
    app: FastAPI,
    host: str,
    port: int,
    stop: asyncio.Event,
    listening: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set; WebServerError if it cannot listen or dies early."""
    server = make_server(app, host, port)
    if isinstance(server, _Server):
        server.listening = listening
    serving = asyncio.create_task(_serve(server, host, port), name="web")
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True  # finishes the requests in flight, then returns
        stopping.cancel()
    await serving
    if not stop.is_set():
        raise WebServerError(f"web server on {host}:{port} stopped by itself")


async def _serve(server: uvicorn.Server, host: str, port: int) -> None:
    try:
        await server.serve()
    except SystemExit:
        # uvicorn exits the process when it cannot bind; the daemon decides instead.
        raise WebServerError(f"web server cannot listen on {host}:{port}") from None


__all__ = ["WebServerError", "make_server", "serve_web"]
