"""events handed on: webhook and applier deliveries, one row per event and target;
a validator's comment

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("target", sa.String(length=2000), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["requests.id"],
            name=op.f("fk_hook_deliveries_request_id_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hook_deliveries")),
    )
    op.create_index(op.f("ix_hook_deliveries_event_id"), "hook_deliveries", ["event_id"])
    op.create_index(
        "ix_hook_deliveries_status_due", "hook_deliveries", ["status", "next_attempt_at"]
    )
    op.create_index(
        "ix_hook_deliveries_chain", "hook_deliveries", ["target", "request_id", "id"]
    )
    # Plain ADD COLUMN (no table copy on SQLite): a validator's words with its decision.
    op.add_column("validators", sa.Column("comment", sa.String(length=500), nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite 3.35 and later): a batch copy of validators would
    # drop a table that outbox rows point at, which SQLite's foreign keys refuse.
    op.drop_column("validators", "comment")
    op.drop_index("ix_hook_deliveries_chain", table_name="hook_deliveries")
    op.drop_index("ix_hook_deliveries_status_due", table_name="hook_deliveries")
    op.drop_index(op.f("ix_hook_deliveries_event_id"), table_name="hook_deliveries")
    op.drop_table("hook_deliveries")
