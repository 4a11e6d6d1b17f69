"""`countersign db upgrade|current|check`: where the schema stands against this version."""

from __future__ import annotations

import sys

import click

from countersign.gateway.cli.base import App, acts, emit, json_option, pass_app
from countersign.store.migrate import current_revision, head_revision, upgrade


def _revisions(app: App) -> dict[str, object]:
    engine = app.store(migrate=False).engine
    current, head = current_revision(engine), head_revision(engine)
    return {"revision": current, "head": head, "pending": current != head}


@click.command("current")
@json_option
@pass_app
@acts
def db_current(app: App, as_json: bool) -> None:
    """The schema's revision, and this version's newest."""
    shown = _revisions(app)
    emit(as_json, shown, lambda: [f"revision {shown['revision'] or 'none'} (head {shown['head']})"])


@click.command("check")
@json_option
@pass_app
@acts
def db_check(app: App, as_json: bool) -> None:
    """Exit status 1 when a migration is pending ('db upgrade' applies it)."""
    shown = _revisions(app)
    emit(
        as_json,
        shown,
        lambda: [
            f"migration pending: revision {shown['revision'] or 'none'} -> {shown['head']}"
            if shown["pending"]
            else f"database is up to date (revision {shown['head']})"
        ],
    )
    if shown["pending"]:
        sys.exit(1)


@click.group()
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


db.add_command(db_current)
db.add_command(db_check)
