"""The `countersign` command line: its group, its commands (in gateway/cli/) and main().

Commands only translate: they parse arguments, call one workflow act and print
its answer (``--json``: one JSON document on stdout).  Exit status: 0 done,
1 refused by a rule or a bad code (one line on stderr), 2 bad usage.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from countersign.gateway.cli import directory_cmd, inbox_cmd, operate, requests_cmd
from countersign.gateway.cli.base import App, fail, installed_version
from countersign.gateway.cli.config_cmd import config_group
from countersign.gateway.cli.db_cmd import db
from countersign.gateway.cli.hooks_cmd import hooks_group
from countersign.gateway.cli.serve_cmd import serve

log = logging.getLogger("countersign")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", help="TOML configuration file.")
@click.version_option(installed_version(), prog_name="countersign", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Countersign: email-confirmed contact changes for hosted services."""
    ctx.obj = App(config_path)


COMMANDS = (
    config_group,
    serve,
    db,
    directory_cmd.account,
    directory_cmd.service,
    directory_cmd.services,
    directory_cmd.import_file,
    requests_cmd.change,
    requests_cmd.list_requests,
    requests_cmd.request_group,
    requests_cmd.accept,
    requests_cmd.decline,
    requests_cmd.resend,
    requests_cmd.cancel,
    inbox_cmd.inbox_group,
    operate.status,
    operate.outbox_group,
    operate.audit,
    operate.purge,
    hooks_group,
)
for command in COMMANDS:
    cli.add_command(command)


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
