"""Shared fixtures: a migrated store on SQLite and, when named, on PostgreSQL.

PostgreSQL comes from COUNTERSIGN_TEST_DATABASE_URL (CI sets it).  The suite
makes a database of its own there for the session and drops it at the end.
Without the variable the PostgreSQL cases skip locally; under CI=true a
missing or unreachable PostgreSQL fails the run instead.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from countersign.rules.contacts import ContactType
from countersign.store.db import Store
from countersign.store.migrate import upgrade
from countersign.store.models import Base
from countersign.workflow.directory import AccountChanges, add_account, add_service
from countersign.workflow.policy import Policy
from tests.servers.fixtures import dovecot, dovecot_factory, smtp_sink

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_URL = os.environ.get("COUNTERSIGN_TEST_DATABASE_URL")


def missing_server(reason: str) -> None:
    """Skip locally; fail under CI, where every server the tests need must be there."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _process_umask_kept() -> Iterator[None]:
    """countersign's main() sets umask 077 for its process (owner-only files); a test
    that runs it in-process must not leave that to the servers later tests start
    (Dovecot, as root, reads its mail folders as another user)."""
    mask = os.umask(0o022)
    os.umask(mask)
    yield
    os.umask(mask)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file, copied for each test: migrating per test is slow."""
    path = tmp_path_factory.mktemp("template") / "countersign.db"
    store = Store(f"sqlite:///{path}")
    upgrade(store.engine)
    store.dispose()
    return path


def migrated_database(prefix: str) -> Iterator[str]:
    """A new migrated database on COUNTERSIGN_TEST_DATABASE_URL's server, dropped after."""
    if not PG_URL:
        missing_server("COUNTERSIGN_TEST_DATABASE_URL is not set (no PostgreSQL)")
    admin_url = make_url(PG_URL)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as error:  # any failure to reach the server
        admin.dispose()
        missing_server(f"PostgreSQL at {admin_url.render_as_string()} unusable: {error}")
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    store = Store(url)
    upgrade(store.engine)
    store.dispose()
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    yield from migrated_database("countersign_test")


def _truncate(store: Store) -> None:
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with store.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        path = tmp_path / "countersign.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        made = Store(f"sqlite:///{path}")
    else:
        made = Store(request.getfixturevalue("pg_database"))
        _truncate(made)
    yield made
    made.dispose()


@pytest.fixture
def policy() -> Policy:
    return Policy(
        expire_after=timedelta(days=7),
        remind_after=(timedelta(days=2), timedelta(days=5)),
        mail_domain="countersign.localhost",
    )


T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def t0() -> datetime:
    """A fixed "now": acts take their clock as an argument."""
    return T0


def add(store: Store, email: str, zone: str = "EU", **changes: object) -> None:
    add_account(store, email, AccountChanges(zone=zone, **changes))  # type: ignore[arg-type]


@pytest.fixture
def world(store: Store) -> Store:
    """admin@ holds every contact of example.com; tech@, bill@, new@ wait in EU; ca@ in CA."""
    for email in ("admin@example.com", "tech@example.com", "bill@example.com", "new@example.com"):
        add(store, email)
    add(store, "ca@example.ca", zone="CA")
    add_service(store, "example.com", "admin@example.com", "admin@example.com", "admin@example.com")
    add_service(store, "split.com", "admin@example.com", "tech@example.com", "bill@example.com")
    return store


__all__ = ["T0", "ContactType", "add", "dovecot", "dovecot_factory", "missing_server", "smtp_sink"]
