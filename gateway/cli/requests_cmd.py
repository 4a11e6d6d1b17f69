"""Change requests: `change`, `requests`, `request show`, `accept|decline`, `resend`, `cancel`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from countersign.gateway.cli.base import App, acts, emit, json_option, pass_app
from countersign.rules.contacts import ContactType
from countersign.rules.states import Decision, State
from countersign.workflow import requests


def describe_request(r: dict[str, Any]) -> list[str]:
    types = ", ".join(r["contactTypes"])
    lines = [
        f"request {r['id']}: {r['serviceDomain']} [{types}] {r['fromAccount']} -> {r['toAccount']}",
        f"  state: {r['state']}  asked by {r['askingAccount']} at {r['dateRequest']}",
        f"  expires: {r['expires']}" + (f"  done: {r['dateDone']}" if r["dateDone"] else ""),
    ]
    if r["error"]:
        lines.append(f"  error: {r['error']}")
    for v in r["validators"]:
        answer = f"{v['decision']} via {v['via']} at {v['at']}" if v["decision"] else "to answer"
        lines.append(f"  validator {v['account']}: {answer}")
        if v.get("comment"):
            lines.append(f"    wrote: {v['comment']!r}")
        if v.get("deliveryError"):
            lines.append(f"    mail to {v['account']} failed: {v['deliveryError']}")
    return lines


def summarize_request(r: dict[str, Any]) -> str:
    types = ",".join(r["contactTypes"])
    return (
        f"{r['id']:>6}  {r['state']:<22} {r['serviceDomain']}  {types}  "
        f"{r['fromAccount']} -> {r['toAccount']}"
    )


@click.command("change")
@click.argument("service_name", metavar="SERVICE")
@click.option("--as", "asking", required=True, metavar="EMAIL", help="The asking account.")
@click.option("--admin", metavar="EMAIL", help="New administrative contact.")
@click.option("--tech", metavar="EMAIL", help="New technical contact.")
@click.option("--billing", metavar="EMAIL", help="New billing contact.")
@json_option
@pass_app
@acts
def change(
    app: App,
    service_name: str,
    asking: str,
    admin: str | None,
    tech: str | None,
    billing: str | None,
    as_json: bool,
) -> None:
    """Modify the contacts of SERVICE: mails each validator a code."""
    wanted = {
        contact_type: email
        for contact_type, email in (
            (ContactType.ADMIN, admin),
            (ContactType.TECH, tech),
            (ContactType.BILLING, billing),
        )
        if email
    }
    if not wanted:
        raise click.UsageError("Name at least one of --admin, --tech, --billing.")
    made = requests.change_contacts(app.store(), service_name, asking, wanted, app.policy)

    def human() -> list[str]:
        lines = []
        for r in made:
            who = ", ".join(v["account"] for v in r["validators"])
            lines.append(f"{summarize_request(r).strip()}\n  waiting for: {who}")
        return lines

    emit(as_json, made, human)


@click.command("requests")
@click.option("--account", "email", metavar="EMAIL")
@click.option("--state", type=click.Choice([str(s) for s in State]))
@json_option
@pass_app
@acts
def list_requests(app: App, email: str | None, state: str | None, as_json: bool) -> None:
    """ "My requests": every request, or those concerning an account."""
    found = requests.list_requests(app.store(), account=email, state=state)
    emit(as_json, found, lambda: [summarize_request(r) for r in found] or ["no requests"])


@click.group("request")
def request_group() -> None:
    """One request."""


@request_group.command("show")
@click.argument("request_id", metavar="ID", type=int)
@json_option
@pass_app
@acts
def request_show(app: App, request_id: int, as_json: bool) -> None:
    """A request, its validators and their answers."""
    shown = requests.show(app.store(), request_id)
    emit(as_json, shown, lambda: describe_request(shown))


def decision_command(decision: Decision) -> Callable[..., None]:
    @click.argument("request_id", metavar="ID", type=int)
    @click.argument("token", metavar="TOKEN")
    @json_option
    @pass_app
    @acts
    def command(app: App, request_id: int, token: str, as_json: bool) -> None:
        result = requests.decide(
            app.store(), token, decision, app.policy, request_id=request_id, via="cli"
        )

        def human() -> list[str]:
            verb = "accepted" if decision is Decision.ACCEPT else "declined"
            if result.repeated:
                return [f"already {verb} by {result.account}; nothing changed"]
            if result.waiting_for:
                return [f"{verb} by {result.account}; waiting for {', '.join(result.waiting_for)}"]
            return [f"{verb} by {result.account}; request is now {result.request['state']}"]

        emit(as_json, result.request, human)

    return command


accept = click.command("accept", help="Accept request ID with your validation code.")(
    decision_command(Decision.ACCEPT)
)
decline = click.command("decline", help="Decline request ID with your validation code.")(
    decision_command(Decision.DECLINE)
)


@click.command("resend")
@click.argument("request_id", metavar="ID", type=int)
@json_option
@pass_app
@acts
def resend(app: App, request_id: int, as_json: bool) -> None:
    """Mail a new code to each validator still to answer (earlier codes stop working)."""
    shown = requests.resend(app.store(), request_id, app.policy)
    emit(as_json, shown, lambda: describe_request(shown))


@click.command("cancel")
@click.argument("request_id", metavar="ID", type=int)
@click.option("--as", "asking", required=True, metavar="EMAIL", help="The asking account.")
@json_option
@pass_app
@acts
def cancel(app: App, request_id: int, asking: str, as_json: bool) -> None:
    """Withdraw a request (asking account only)."""
    shown = requests.cancel(app.store(), request_id, asking, app.policy)
    emit(as_json, shown, lambda: describe_request(shown))
