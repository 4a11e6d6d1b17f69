"""The `countersign` command line, and `serve`, which wires the daemon together.

Commands only translate: they parse arguments, call one workflow act and print
its answer (``--json``: one JSON document on stdout).  Exit status: 0 done,
1 refused by a rule or a bad code (one line on stderr), 2 bad usage.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from countersign.gateway.cli import db_cmd, operate
from countersign.gateway.cli.base import (
    App,
    acts,
    emit,
    fail,
    installed_version,
    json_option,
    pass_app,
)
from countersign.gateway.cli.config_cmd import config_group
from countersign.gateway.cli.serve_cmd import serve
from countersign.rules.contacts import ContactType
from countersign.rules.states import Decision, State
from countersign.store.migrate import current_revision, upgrade
from countersign.workflow import directory, importer, requests
from countersign.workflow import inbox_views as inbox

log = logging.getLogger("countersign")
F = TypeVar("F", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", help="TOML configuration file.")
@click.version_option(installed_version(), prog_name="countersign", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Countersign: email-confirmed contact changes for hosted services."""
    ctx.obj = App(config_path)


cli.add_command(config_group)
cli.add_command(serve)
for command in (operate.status, operate.outbox_group, operate.audit, operate.purge):
    cli.add_command(command)


# --- human-readable views --------------------------------------------------------


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
        if v.get("deliveryError"):
            lines.append(f"    mail to {v['account']} failed: {v['deliveryError']}")
    return lines


def summarize_request(r: dict[str, Any]) -> str:
    types = ",".join(r["contactTypes"])
    return (
        f"{r['id']:>6}  {r['state']:<22} {r['serviceDomain']}  {types}  "
        f"{r['fromAccount']} -> {r['toAccount']}"
    )


def describe_account(a: dict[str, Any]) -> str:
    paid = "payment ok" if a["paymentMethodValid"] else "no payment method"
    return (
        f"{a['account']}  zone {a['zone']}  {a['language']}  mail to {a['contactEmail']}  "
        f"{paid}  balance due {a['balanceDue']}"
    )


# --- db ----------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@json_option
@pass_app
@acts
def db_upgrade(app: App, as_json: bool) -> None:
    """Apply the migrations the database does not have yet."""
    engine = app.store(migrate=False).engine
    before = current_revision(engine)
    upgrade(engine)
    after = current_revision(engine)
    done = {"revision": after, "previousRevision": before, "upgraded": before != after}
    emit(as_json, done, lambda: [f"database is up to date (revision {after})"])


db.add_command(db_cmd.db_current)
db.add_command(db_cmd.db_check)


# --- accounts and services ---------------------------------------------------------


def account_options(*, zone_required: bool) -> Callable[[F], F]:
    """The options `account add` and `account update` share; add needs a zone."""

    def decorate(function: F) -> F:
        for option in _account_options(zone_required):
            function = option(function)
        return function

    return decorate


def _account_options(zone_required: bool) -> list[Callable[[F], F]]:
    return list(
        reversed(
            [
                click.option("--zone", required=zone_required, help="EU, CA, US, ..."),
                click.option(
                    "--contact-email", help="Where mail goes (default: the primary email)."
                ),
                click.option("--language", type=click.Choice(directory.LANGUAGES)),
                click.option(
                    "--payment-method/--no-payment-method",
                    "payment_method",
                    default=None,
                    help="Whether the account has a valid payment method.",
                ),
                click.option(
                    "--balance-due", metavar="AMOUNT", help="Outstanding amount, e.g. 12.50."
                ),
                json_option,
            ]
        )
    )


def account_changes(**options: Any) -> directory.AccountChanges:
    balance = options.get("balance_due")
    return directory.AccountChanges(
        zone=options.get("zone"),
        contact_email=options.get("contact_email"),
        language=options.get("language"),
        payment_method_valid=options.get("payment_method"),
        balance_due=directory.parse_balance(balance) if balance is not None else None,
    )


@cli.group()
def account() -> None:
    """Customer accounts."""


@account.command("add")
@click.argument("email")
@account_options(zone_required=True)
@pass_app
@acts
def account_add(app: App, /, email: str, as_json: bool, **options: Any) -> None:
    """Add an account identified by its primary EMAIL."""
    made = directory.add_account(app.store(), email, account_changes(**options))
    emit(as_json, made, lambda: [f"added {describe_account(made)}"])


@account.command("update")
@click.argument("email")
@account_options(zone_required=False)
@pass_app
@acts
def account_update(app: App, /, email: str, as_json: bool, **options: Any) -> None:
    """Change an account's zone, contact email, language or payment status."""
    if all(value is None for value in options.values()):
        raise click.UsageError(
            "Nothing to update: give --zone, --contact-email, --language,"
            " --payment-method/--no-payment-method or --balance-due."
        )
    changed = directory.update_account(app.store(), email, account_changes(**options))
    emit(as_json, changed, lambda: [f"updated {describe_account(changed)}"])


@account.command("list")
@json_option
@pass_app
@acts
def account_list(app: App, as_json: bool) -> None:
    """Every account."""
    accounts = directory.list_accounts(app.store())
    emit(as_json, accounts, lambda: [describe_account(a) for a in accounts])


@cli.group()
def service() -> None:
    """Services and their contacts."""


@service.command("add")
@click.argument("name")
@click.option("--admin", required=True, metavar="EMAIL")
@click.option("--tech", required=True, metavar="EMAIL")
@click.option("--billing", required=True, metavar="EMAIL")
@json_option
@pass_app
@acts
def service_add(app: App, name: str, admin: str, tech: str, billing: str, as_json: bool) -> None:
    """Add a service with its three contacts."""
    made = directory.add_service(app.store(), name, admin, tech, billing)
    emit(as_json, made, lambda: [f"added service {made['serviceDomain']}"])


@cli.command("services")
@click.option("--account", "email", required=True, metavar="EMAIL")
@json_option
@pass_app
@acts
def services(app: App, email: str, as_json: bool) -> None:
    """ "My contacts": the services an account is a contact of."""
    held = directory.services_of(app.store(), email)
    emit(
        as_json,
        held,
        lambda: [f"{s['serviceDomain']}  {', '.join(s['contactTypes'])}" for s in held],
    )


@cli.command("import")
@click.argument("file", type=click.File("rb"))
@json_option
@pass_app
@acts
def import_file(app: App, file: Any, as_json: bool) -> None:
    """Bulk accounts and services from JSON Lines (all or nothing)."""
    # Bytes: the importer decodes each line, so bad UTF-8 is reported with its line number.
    counts = importer.import_lines(app.store(), file)
    emit(
        as_json,
        counts,
        lambda: [f"imported {counts['accounts']} accounts, {counts['services']} services"],
    )


# --- requests ----------------------------------------------------------------------


@cli.command("change")
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


@cli.command("requests")
@click.option("--account", "email", metavar="EMAIL")
@click.option("--state", type=click.Choice([str(s) for s in State]))
@json_option
@pass_app
@acts
def list_requests(app: App, email: str | None, state: str | None, as_json: bool) -> None:
    """ "My requests": every request, or those concerning an account."""
    found = requests.list_requests(app.store(), account=email, state=state)
    emit(as_json, found, lambda: [summarize_request(r) for r in found] or ["no requests"])


@cli.group("request")
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


cli.command("accept", help="Accept request ID with your validation code.")(
    decision_command(Decision.ACCEPT)
)
cli.command("decline", help="Decline request ID with your validation code.")(
    decision_command(Decision.DECLINE)
)


@cli.command("resend")
@click.argument("request_id", metavar="ID", type=int)
@json_option
@pass_app
@acts
def resend(app: App, request_id: int, as_json: bool) -> None:
    """Mail a new code to each validator still to answer (earlier codes stop working)."""
    shown = requests.resend(app.store(), request_id, app.policy)
    emit(as_json, shown, lambda: describe_request(shown))


@cli.command("cancel")
@click.argument("request_id", metavar="ID", type=int)
@click.option("--as", "asking", required=True, metavar="EMAIL", help="The asking account.")
@json_option
@pass_app
@acts
def cancel(app: App, request_id: int, asking: str, as_json: bool) -> None:
    """Withdraw a request (asking account only)."""
    shown = requests.cancel(app.store(), request_id, asking, app.policy)
    emit(as_json, shown, lambda: describe_request(shown))


# --- inbox -------------------------------------------------------------------------


def summarize_inbox(m: dict[str, Any]) -> str:
    outcome = m["outcome"] or ""
    return (
        f"{m['id']:>6}  {m['status']:<11} {m['channel']:<4} {m['received']}  "
        f"tries {m['attempts']}  {m['messageId'][:60]}  {outcome}"
    )


@cli.group("inbox", invoke_without_command=True)
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


# --- entry point -------------------------------------------------------------------


def hoist_config(argv: list[str]) -> list[str]:
    """``--config PATH`` belongs to the group; accept it after the subcommand too.

    ``countersign serve --config prod.toml`` reads as naturally as
    ``countersign --config prod.toml serve``; click only takes the second.
    """
    front: list[str] = []
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--":
            rest += [arg, *args]
        elif arg == "--config":
            value = next(args, None)
            if value is None:
                raise click.UsageError("Option '--config' requires an argument.")
            front += [arg, value]
        elif arg.startswith("--config="):
            front.append(arg)
        else:
            rest.append(arg)
    return front + rest


def main(argv: list[str] | None = None) -> None:
    """Entry point: click's errors become one line on stderr (2 for usage)."""
    # Owner only: the database, its journal, the Maildir and the logs hold personal data.
    os.umask(0o077)
    # A command's answer is its one line on stderr: no log line beside it (without a
    # handler, Python would print the audit log's warnings there). `serve` sets its own.
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        args = hoist_config(sys.argv[1:] if argv is None else argv)
        cli.main(args=args, prog_name="countersign", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as error:
        # A bare `countersign` or `countersign account`: one line, not the help folded into one.
        path = error.ctx.command_path if error.ctx else "countersign"
        fail(f"missing command; see '{path} --help'", 2)
    except click.UsageError as error:
        fail(error.format_message().replace("\n", " "), 2)
    except click.ClickException as error:
        fail(error.format_message().replace("\n", " "), error.exit_code or 1)
    except click.exceptions.Abort:
        fail("aborted", 1)


if __name__ == "__main__":
    main()
