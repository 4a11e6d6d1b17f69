"""costs flat in the size of history: claim-order indexes, tallies of requests by state

The sweeps' claims read due rows in index order (due time, then id) instead of
sorting the whole backlog for each batch; the id listings and apply's claim
read (state, id); /metrics reads tallies by state, kept as requests move,
instead of counting every request ever made.  The tallies start from a count
of the requests already there.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# (table, old index, old columns, new index, new columns)
_REPLACED = (
    ("requests", "ix_requests_state_expires", ["state", "expires_at"],
     "ix_requests_due_expiry", ["state", "expires_at", "id"]),
    ("requests", "ix_requests_state_remind", ["state", "next_reminder_at"],
     "ix_requests_due_reminder", ["state", "next_reminder_at", "id"]),
    ("outbox", "ix_outbox_status_due", ["status", "next_attempt_at"],
     "ix_outbox_status_due_id", ["status", "next_attempt_at", "id"]),
    ("inbox", "ix_inbox_status_due", ["status", "next_attempt_at"],
     "ix_inbox_status_due_id", ["status", "next_attempt_at", "id"]),
)  # fmt: skip


def upgrade() -> None:
    for table, old, _, new, columns in _REPLACED:
        op.create_index(new, table, columns)
        op.drop_index(old, table_name=table)
    op.create_index("ix_requests_state_id", "requests", ["state", "id"])
    tallies = op.create_table(
        "request_tallies",
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("state", "shard", name=op.f("pk_request_tallies")),
    )
    assert tallies is not None
    requests = sa.table("requests", sa.column("state", sa.String()))
    op.execute(
        tallies.insert().from_select(
            ["state", "shard", "count"],
            sa.select(requests.c.state, sa.literal(0), sa.func.count()).group_by(
                requests.c.state
            ),
        )
    )


def downgrade() -> None:
    op.drop_table("request_tallies")
    op.drop_index("ix_requests_state_id", table_name="requests")
    for table, old, columns, new, _ in _REPLACED:
        op.create_index(old, table, columns)
        op.drop_index(new, table_name=table)
