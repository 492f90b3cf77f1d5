"""The moderators' review desk: accounts, the audit log, claims and reports (fediguard.desk), and
``decision_flags``, the review queue's index of flagged decisions, filled in for existing decisions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 06:16:23.539046
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


_BATCH = 5000


def _flags(verdict: str, labels: list[str] | None) -> list[str]:
    # Frozen here (records/store.py flags_of is the live rule): a revision never changes meaning.
    flags = [str(label)[:32] for label in dict.fromkeys(labels or []) if label != "allowlisted"]
    if verdict == "unscanned":
        flags.append("unscanned")
    return [*flags, "*"] if flags else []


def _fill_flags(flags_table: sa.Table) -> None:
    decisions = sa.table(
        "decisions",
        sa.column("id", sa.BigInteger),
        sa.column("verdict", sa.String),
        sa.column("labels", sa.JSON),
    )
    conn = op.get_bind()
    last = 0
    while True:
        rows = conn.execute(
            sa.select(decisions.c.id, decisions.c.verdict, decisions.c.labels)
            .where(decisions.c.id > last)
            .order_by(decisions.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        marks = [
            {"flag": flag, "decision_id": row.id} for row in rows for flag in _flags(row.verdict, row.labels)
        ]
        if marks:
            conn.execute(flags_table.insert(), marks)
        last = rows[-1].id


def upgrade() -> None:
    # Only what is missing: a database whose alembic_version was lost may hold these tables already.
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "decision_flags" not in existing:
        flags_table = op.create_table(
            "decision_flags",
            sa.Column("flag", sa.String(length=32), nullable=False),
            sa.Column("decision_id", sa.BigInteger(), autoincrement=False, nullable=False),
            sa.PrimaryKeyConstraint("flag", "decision_id"),
        )
        _fill_flags(flags_table)
    if "desk_accounts" not in existing:
        _desk_accounts()
    if "desk_audit" not in existing:
        _desk_audit()
    if "desk_items" not in existing:
        _desk_items()


def _desk_accounts() -> None:
    op.create_table(
        "desk_accounts",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("blur", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )


def _desk_audit() -> None:
    op.create_table(
        "desk_audit",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("decision_id", sa.BigInteger(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("desk_audit", schema=None) as batch_op:
        batch_op.create_index("ix_desk_audit_at", ["at"], unique=False)


def _desk_items() -> None:
    op.create_table(
        "desk_items",
        sa.Column("decision_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("report_ref", sa.String(length=200), nullable=True),
        sa.Column("reported_by", sa.String(length=100), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("decision_id"),
    )


def downgrade() -> None:
    op.drop_table("decision_flags")

    op.drop_table("desk_items")
    with op.batch_alter_table("desk_audit", schema=None) as batch_op:
        batch_op.drop_index("ix_desk_audit_at")

    op.drop_table("desk_audit")
    op.drop_table("desk_accounts")
