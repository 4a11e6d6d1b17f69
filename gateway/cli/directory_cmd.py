"""Accounts and services: `account add|update|list`, `service add`, `services`, `import`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from countersign.gateway.cli.base import App, acts, emit, json_option, pass_app
from countersign.workflow import directory, importer

F = TypeVar("F", bound=Callable[..., Any])


def describe_account(a: dict[str, Any]) -> str:
    paid = "payment ok" if a["paymentMethodValid"] else "no payment method"
    return (
        f"{a['account']}  zone {a['zone']}  {a['language']}  mail to {a['contactEmail']}  "
        f"{paid}  balance due {a['balanceDue']}"
    )


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


@click.group()
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


@click.group()
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


@click.command("services")
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


@click.command("import")
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
