"""The operator's commands: `status`, `outbox list|retry`, `audit ID`, `purge --older-than`."""

from __future__ import annotations

import socket
from typing import Any

import click

from countersign.config import Config, ConfigError, parse_duration
from countersign.gateway.cli.base import App, acts, emit, json_option, pass_app
from countersign.gateway.retention import purge_all
from countersign.workflow import operations


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def doors(config: Config) -> dict[str, Any]:
    """Whether each door of the daemon this configuration describes answers right now."""
    smtp = (config.inbound.smtp_host, config.inbound.smtp_port)
    web = (config.web.host, config.web.port)
    found: dict[str, Any] = {
        "smtp": {"address": f"{smtp[0]}:{smtp[1]}", "listening": _listening(*smtp)},
        "web": {"address": f"{web[0]}:{web[1]}", "listening": _listening(*web)},
        "imap": {"configured": config.inbound.imap_host is not None},
    }
    if config.web.metrics_port:
        metrics = (config.web.metrics_host or config.web.host, config.web.metrics_port)
        found["metrics"] = {"address": f"{metrics[0]}:{metrics[1]}"}
        found["metrics"]["listening"] = _listening(*metrics)
    return found


def describe_status(shown: dict[str, Any]) -> list[str]:
    lines = []
    for name, door in shown["doors"].items():
        state = "listening" if door.get("listening") else "not answering"
        if "configured" in door:
            state = "configured" if door["configured"] else "off"
        lines.append(f"door {name}: {door.get('address', '')} {state}".replace("  ", " "))
    for name, queue in shown["queues"].items():
        stuck = "failed" if "failed" in queue else "quarantined"
        lines.append(
            f"{name}: {queue['waiting']} waiting, {queue[stuck]} {stuck}, oldest due "
            f"{queue['oldestDue'] or '-'} ({queue['oldestDueAgeSeconds']:.0f}s)"
        )
    for cursor in shown["imap"]:
        lines.append(f"imap {cursor['mailbox']}: last contact {cursor['lastContact'] or '-'}")
    open_ = {k: v for k, v in shown["requests"].items() if v}
    lines.append("requests: " + (", ".join(f"{k} {v}" for k, v in open_.items()) or "none"))
    for failing in shown["failingRecipients"]:
        lines.append(f"failing recipient {failing['account']}: {failing['failed']} notice(s)")
    return lines


@click.command("status")
@json_option
@pass_app
@acts
def status(app: App, as_json: bool) -> None:
    """Doors, queues (depth and oldest due), IMAP contact, quarantine, failing recipients."""
    shown = {"doors": doors(app.config), **operations.status(app.store())}
    emit(as_json, shown, lambda: describe_status(shown))


def summarize_outbox(m: dict[str, Any]) -> str:
    error = f"  {m['lastError']}" if m["lastError"] else ""
    return (
        f"{m['id']:>6}  {m['status']:<8} {m['kind']:<24} request {m['request'] or '-'}  "
        f"{m['account']}  tries {m['attempts']}{error}"
    )


@click.group("outbox", invoke_without_command=True)
@click.pass_context
def outbox_group(ctx: click.Context) -> None:
    """Notices queued, sent or given up on."""
    if ctx.invoked_subcommand is None:
        raise click.UsageError("missing command: 'outbox list' or 'outbox retry ID'")


@outbox_group.command("list")
@click.option("--failed", is_flag=True, help="Only the notices given up on.")
@click.option("--limit", default=50, show_default=True, help="How many, newest first.")
@json_option
@pass_app
@acts
def outbox_list(app: App, failed: bool, limit: int, as_json: bool) -> None:
    """The latest notices (never their codes)."""
    found = operations.outbox_list(app.store(), failed=failed, limit=limit)
    emit(as_json, found, lambda: [summarize_outbox(m) for m in found] or ["no notices"])


@outbox_group.command("retry")
@click.argument("outbox_id", metavar="ID", type=int)
@json_option
@pass_app
@acts
def outbox_retry(app: App, outbox_id: int, as_json: bool) -> None:
    """Send a failed notice again (a confirm-request or reminder with a fresh code)."""
    shown = operations.outbox_retry(app.store(), outbox_id)
    emit(as_json, shown, lambda: [f"outbox message {outbox_id} will be sent again"])


@click.command("audit")
@click.argument("request_id", metavar="ID", type=int)
@json_option
@pass_app
@acts
def audit(app: App, request_id: int, as_json: bool) -> None:
    """Every event of a request: when, what, through which door, by whom."""
    events = operations.audit(app.store(), request_id)
    emit(
        as_json,
        events,
        lambda: [
            f"{e['at']}  {e['event']:<16} {e['door'] or '-':<5} {e['actor'] or '-'}" for e in events
        ],
    )


@click.command("purge")
@click.option("--older-than", "older_than", required=True, metavar="DURATION", help="e.g. 90d")
@json_option
@pass_app
@acts
def purge(app: App, older_than: str, as_json: bool) -> None:
    """Forget the mail of requests finished before then; the audit trail stays."""
    try:
        length = parse_duration(older_than)
    except ConfigError as error:
        raise click.UsageError(f"--older-than: {error}") from None
    if length.total_seconds() <= 0:
        raise click.UsageError("--older-than: must be longer than 0s")
    counts = purge_all(app.store(), app.config, length)
    emit(
        as_json,
        counts,
        lambda: [
            f"purged {counts['requests']} request(s): {counts['mail']} mail, "
            f"{counts['notices']} notices, {counts['codes']} codes, {counts['files']} files"
        ],
    )
