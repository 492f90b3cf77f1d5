"""The spool's marks: how far each spool segment of decisions has been written to the database.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A database whose alembic_version was lost is upgraded from the start again: keep what is there.
    if "spool_marks" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "spool_marks",
        sa.Column("generation", sa.String(length=100), nullable=False),
        sa.Column("applied_seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("generation"),
    )


def downgrade() -> None:
    op.drop_table("spool_marks")
