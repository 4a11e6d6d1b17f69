"""Alembic environment: runs on the engine the caller hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from countersign.store.models import Base

# Two daemons sharing PostgreSQL may start together: one migrates, the other waits.
_ADVISORY_LOCK = 0x436F756E  # "Coun"

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _ADVISORY_LOCK})
        connection.commit()
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _ADVISORY_LOCK})
        connection.commit()
