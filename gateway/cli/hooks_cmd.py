"""`countersign hooks list [--failed] | retry ID | send-test URL`: the deliveries, by hand."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import click

from countersign.config import Config, parse_duration
from countersign.gateway.cli.base import App, acts, emit, json_option, pass_app
from countersign.rules.contacts import Refusal
from countersign.workflow import hook_queue
from countersign.workflow.hooks import new_event_id
from countersign.workflow.views import iso


def summarize(row: dict[str, Any]) -> str:
    where = "applier" if row["target"] == "apply" else row["target"]
    line = f"{row['id']:>6}  {row['status']:<8} {row['type']:<22} request {row['request']}  {where}"
    if row["attempts"]:
        line += f"  attempts {row['attempts']}"
    if row["lastError"]:
        line += f"  last: {row['lastError']}"
    return line


def send_test(config: Config, url: str, secret: str | None) -> dict[str, Any]:
    """POST a signed `ping` event to ``url``; what it answered, and how fast."""
    known = {e.url: e.secret for e in config.hooks.endpoints}
    key = secret or known.get(url) or (config.apply.secret if url == config.apply.url else None)
    if not key:
        raise Refusal("no-secret", f"no secret for {url}: give --secret or configure the endpoint")
    # Imported here: httpx and the sender are not worth loading for every command.
    import httpx

    from countersign.gateway.hooks.sender import post

    body: dict[str, Any] = {"id": new_event_id(), "type": "ping"}
    body |= {"created": iso(datetime.now(UTC)), "request": None, "data": {}}
    started = time.monotonic()

    async def once() -> Any:
        async with httpx.AsyncClient(
            timeout=parse_duration(config.hooks.timeout).total_seconds()
        ) as client:
            return await post(client, url, key, body)

    answer = asyncio.run(once())
    return {
        "url": url,
        "event": body["id"],
        "status": answer.status,
        "ok": answer.error is None,
        "error": answer.error,
        "seconds": round(time.monotonic() - started, 3),
    }


@click.group("hooks")
def hooks_group() -> None:
    """Webhook and applier deliveries: list, retry, test an endpoint."""


@hooks_group.command("list")
@click.option("--failed", is_flag=True, help="Only the deliveries given up.")
@json_option
@pass_app
@acts
def hooks_list(app: App, failed: bool, as_json: bool) -> None:
    """Every delivery, oldest first, or those given up."""
    rows = hook_queue.listing(app.store(), failed_only=failed)
    emit(as_json, rows, lambda: [summarize(r) for r in rows] or ["no deliveries"])


@hooks_group.command("retry")
@click.argument("delivery_id", metavar="ID", type=int)
@json_option
@pass_app
@acts
def hooks_retry(app: App, delivery_id: int, as_json: bool) -> None:
    """Send a delivery that was given up again (the daemon does it on its next pass)."""
    row = hook_queue.retry(app.store(), delivery_id, datetime.now(UTC))
    emit(as_json, row, lambda: [f"delivery {delivery_id}: {row['status']}"])


@hooks_group.command("send-test")
@click.argument("url")
@click.option("--secret", help="Sign with this (default: the configured endpoint's).")
@json_option
@pass_app
@acts
def hooks_send_test(app: App, url: str, secret: str | None, as_json: bool) -> None:
    """POST a signed `ping` event to URL and say what it answered."""
    result = send_test(app.config, url, secret)
    said = f"HTTP {result['status']}" if result["status"] else result["error"]
    emit(as_json, result, lambda: [f"{url} answered {said} in {result['seconds']}s"])
    if not result["ok"]:
        raise Refusal("not-delivered", f"{url}: {result['error']}")
