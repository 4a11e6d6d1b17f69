"""Fixtures of the fault suite: a database of its own per test on the shared PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import migrated_database


@pytest.fixture
def pg_url() -> Iterator[str]:
    """An empty migrated database on COUNTERSIGN_TEST_DATABASE_URL's server, dropped after."""
    yield from migrated_database("countersign_fault")
