"""What every command shares: the configuration and store made on first use,
one-line failures, and printing a result as text or one JSON document."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import sys
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeVar

import click
from sqlalchemy.exc import SQLAlchemyError

from countersign.config import Config, ConfigError, load_config
from countersign.rules.contacts import Refusal
from countersign.rules.names import printable, unseen
from countersign.store.db import Store
from countersign.store.migrate import SchemaBehind, ensure_schema, is_current
from countersign.workflow import hooks
from countersign.workflow.policy import Policy

F = TypeVar("F", bound=Callable[..., Any])


def installed_version() -> str:
    """The version the installed distribution declares (pyproject.toml's)."""
    try:
        return importlib.metadata.version("countersign")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout never installed
        return "unknown (not installed)"


class App:
    """What a command needs, made on first use (a bad config fails only commands that read it)."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None
        self._store: Store | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    @property
    def policy(self) -> Policy:
        return Policy.from_config(self.config)

    def store(self, *, migrate: bool = True) -> Store:
        if self._store is None:
            self._store = Store(self.config.database_url)
            hooks.attach(self._store, self.config)  # the acts queue events for the endpoints
            # A fresh install works straight away: the schema is made on first use
            # (and upgraded, on SQLite; PostgreSQL's moves only on `db upgrade`).
            if migrate and not is_current(self._store.engine):
                ensure_schema(self._store.engine)
        return self._store


def fail(message: str, status: int = 1) -> NoReturn:
    # One line whatever the message holds (an argument echoed back may carry a newline).
    click.echo(f"countersign: {printable(' '.join(message.split()))}", err=True)
    sys.exit(status)


def acts(function: F) -> F:
    """Turn refusals and store failures into one line on stderr and exit status 1."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Refusal as refusal:
            fail(refusal.message)
        except ConfigError as error:
            fail(f"configuration: {error}", 2)
        except SchemaBehind as error:
            fail(str(error), 2)
        except SQLAlchemyError as error:
            fail(f"database: {str(error).splitlines()[0]}")
        except OverflowError:
            fail("a number given is out of range (no such id)")
        except OSError as error:
            # e.g. a data_dir that cannot be created: a message, not a traceback.
            fail(f"{error.strerror or error}: {error.filename}" if error.filename else str(error))

    return wrapper  # type: ignore[return-value]


def emit(as_json: bool, document: Any, human: Callable[[], Iterable[str]]) -> None:
    # Whatever the store holds, no control character reaches the terminal as itself.
    if as_json:
        click.echo(json_printable(json.dumps(document, indent=2, ensure_ascii=False)))
    else:
        for line in human():
            click.echo(printable(line))


def json_printable(text: str) -> str:
    """JSON text with each character a terminal would not show as itself \\u-escaped.

    json.dumps escapes C0 controls already; DEL, C1, bidi overrides and the like
    can only be inside strings, where an escape means the same.
    """
    if not unseen(text.replace("\n", "")):
        return text
    return "".join(_json_escape(ch) if ch != "\n" and unseen(ch) else ch for ch in text)


def _json_escape(ch: str) -> str:
    units = ch.encode("utf-16-be")
    return "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
pass_app = click.make_pass_decorator(App)
