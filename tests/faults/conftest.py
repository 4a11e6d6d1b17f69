"""Fixtures of the fault suite: a database of its own per test on the shared PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from countersign.store.db import Store
from countersign.store.migrate import upgrade
from tests.conftest import PG_URL, missing_server


@pytest.fixture
def pg_url() -> Iterator[str]:
    """An empty migrated database on COUNTERSIGN_TEST_DATABASE_URL's server, dropped after."""
    if not PG_URL:
        missing_server("COUNTERSIGN_TEST_DATABASE_URL is not set (no PostgreSQL)")
    admin_url = make_url(PG_URL)
    name = f"countersign_fault_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as error:
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
