"""operations: when IMAP last answered, for `countersign status`

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("imap_cursors") as batch:
        batch.add_column(sa.Column("contacted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("imap_cursors") as batch:
        batch.drop_column("contacted_at")
