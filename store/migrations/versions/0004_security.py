"""security: the wrong-code counts of the guess limits; the inbox's source and code hashes

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "wrong_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=True),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wrong_codes")),
    )
    op.create_index("ix_wrong_codes_source_at", "wrong_codes", ["source", "at"])
    op.create_index("ix_wrong_codes_request_at", "wrong_codes", ["request_id", "at"])
    op.create_index("ix_wrong_codes_at", "wrong_codes", ["at"])
    with op.batch_alter_table("inbox") as batch:
        batch.add_column(sa.Column("source", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("code_hashes", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbox") as batch:
        batch.drop_column("code_hashes")
        batch.drop_column("source")
    op.drop_index("ix_wrong_codes_at", table_name="wrong_codes")
    op.drop_index("ix_wrong_codes_request_at", table_name="wrong_codes")
    op.drop_index("ix_wrong_codes_source_at", table_name="wrong_codes")
    op.drop_table("wrong_codes")
