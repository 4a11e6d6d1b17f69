"""Alembic, driven from code: `countersign db upgrade` and `serve` call upgrade()."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger("countersign.store")


def alembic_config(engine: Engine) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (a no-op when it is there)."""
    command.upgrade(alembic_config(engine), "head")


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision(engine)


class SchemaBehind(Exception):
    """A PostgreSQL schema older than this version's: only an explicit upgrade moves it."""


def ensure_schema(engine: Engine, *, migrate: bool = False) -> None:
    """Make the schema usable, as far as this process may.

    SQLite is the embedded default: it creates and upgrades its own schema, on
    `serve` and on every command.  A PostgreSQL database is shared by daemons
    of possibly different versions, so its schema moves only on `db upgrade` or
    `serve --migrate`; an empty one is given its schema (nothing to upgrade),
    an older one is refused.
    """
    current, head = current_revision(engine), head_revision(engine)
    if current == head:
        return
    if migrate or engine.dialect.name == "sqlite" or current is None:
        upgrade(engine)
        log.info("database schema upgraded from revision %s to %s", current or "none", head)
    else:
        raise SchemaBehind(
            f"the database schema is at revision {current}, this version needs {head}:"
            " run 'countersign db upgrade' (or 'countersign serve --migrate')"
        )
