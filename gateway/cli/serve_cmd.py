"""`countersign serve`: the daemon, with its logging chosen on the command line."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import click

from countersign.config import Config
from countersign.gateway.cli.base import App, acts, fail, pass_app
from countersign.gateway.logs import FORMATS, LEVELS, REDACT, LogSettings, configure

DOORS = ("smtp", "imap", "web", "sweeps")


def config_secrets(config: Config) -> Iterator[str | None]:
    """What the log must never show, literally: passwords, API keys, the signing secrets."""
    from sqlalchemy.engine import make_url

    yield config.inbound.imap_password
    yield config.outbound.smtp_password
    yield from config.api.keys.values()
    yield config.apply.secret
    yield from (endpoint.secret for endpoint in config.hooks.endpoints)
    yield make_url(config.database_url).password


def parse_doors(text: str | None) -> frozenset[str]:
    if not text:
        return frozenset(DOORS)
    doors = {part.strip() for part in text.split(",") if part.strip()}
    unknown = doors - set(DOORS)
    if unknown or not doors:
        raise click.UsageError(
            f"--only: {', '.join(sorted(unknown)) or 'nothing'} is not one of {', '.join(DOORS)}"
        )
    return frozenset(doors)


@click.command("serve")
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level (--log-level debug).")
@click.option("--log-level", type=click.Choice(LEVELS), default=None, help="Default: info.")
@click.option("--log-format", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option("--log-file", metavar="PATH", help="Log to this file (0600; SIGHUP reopens it).")
@click.option("--only", metavar="DOORS", help="Run only some of smtp,imap,web,sweeps.")
@click.option("--migrate", is_flag=True, help="Upgrade a PostgreSQL schema before serving.")
@pass_app
@acts
def serve(
    app: App,
    verbose: bool,
    log_level: str | None,
    log_format: str,
    log_file: str | None,
    only: str | None,
    migrate: bool,
) -> None:
    """Run the daemon (SIGTERM or Ctrl-C stops it cleanly, SIGHUP reloads)."""
    doors = parse_doors(only)
    config = app.config  # a bad configuration stops here, before any logging is set up
    # Imported here: the servers and their libraries cost every other command ~0.7 s.
    from countersign.gateway.cli.service import ServeOptions
    from countersign.runtime import StartupError, serve_until_signalled

    chosen = log_level or ("debug" if verbose else None)
    configure(LogSettings(chosen or config.log_level, log_format, log_file))
    REDACT.know(config_secrets(config))
    options = ServeOptions(app.config_path, doors, migrate, chosen)
    try:
        asyncio.run(serve_until_signalled(config, options, config_secrets))
    except StartupError as error:
        fail(str(error), error.status)
