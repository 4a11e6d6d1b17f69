"""owned leases: workers with heartbeats, claims that name their owner, named leases

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
        sqlite_autoincrement=True,  # a new life never gets the id of the last one
    )
    op.create_index(op.f("ix_workers_instance"), "workers", ["instance"])
    op.create_index(op.f("ix_workers_heartbeat_at"), "workers", ["heartbeat_at"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("owner", sa.Integer(), nullable=True),
        sa.Column("held_since", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    # Plain ADD COLUMN (no table copy on SQLite): rows claimed before it have no owner,
    # so the first release after the upgrade frees them.
    op.add_column("outbox", sa.Column("claimed_by", sa.Integer(), nullable=True))
    op.add_column("inbox", sa.Column("claimed_by", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbox") as batch_op:
        batch_op.drop_column("claimed_by")
    with op.batch_alter_table("outbox") as batch_op:
        batch_op.drop_column("claimed_by")
    op.drop_table("leases")
    op.drop_index(op.f("ix_workers_heartbeat_at"), table_name="workers")
    op.drop_index(op.f("ix_workers_instance"), table_name="workers")
    op.drop_table("workers")
