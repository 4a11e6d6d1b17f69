"""Mail received: `inbox [--failed]` and `inbox retry ID`."""

from __future__ import annotations

from typing import Any

import click

from countersign.gateway.cli.base import App, acts, emit, json_option, pass_app
from countersign.workflow import inbox_views as inbox


def summarize_inbox(m: dict[str, Any]) -> str:
    outcome = m["outcome"] or ""
    return (
        f"{m['id']:>6}  {m['status']:<11} {m['channel']:<4} {m['received']}  "
        f"tries {m['attempts']}  {m['messageId'][:60]}  {outcome}"
    )


@click.group("inbox", invoke_without_command=True)
@click.option("--failed", is_flag=True, help="Only the quarantined messages.")
@click.option("--limit", default=50, show_default=True, help="How many, newest first.")
@json_option
@click.pass_context
def inbox_group(ctx: click.Context, failed: bool, limit: int, as_json: bool) -> None:
    """Mail received: the latest messages, or those that could not be processed."""
    if ctx.invoked_subcommand is not None:
        return
    app = ctx.find_object(App)
    assert app is not None
    acts(list_inbox)(app, failed, limit, as_json)


def list_inbox(app: App, failed: bool, limit: int, as_json: bool) -> None:
    found = inbox.list_inbox(app.store(), failed=failed, limit=limit)
    emit(as_json, found, lambda: [summarize_inbox(m) for m in found] or ["no messages"])


@inbox_group.command("retry")
@click.argument("inbox_id", metavar="ID", type=int)
@json_option
@pass_app
@acts
def inbox_retry(app: App, inbox_id: int, as_json: bool) -> None:
    """Process a quarantined message again (three fresh attempts)."""
    shown = inbox.retry(app.store(), inbox_id)
    emit(as_json, shown, lambda: [f"inbox message {inbox_id} will be processed again"])
