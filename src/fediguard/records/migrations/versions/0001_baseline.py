"""Baseline: the schema of the releases made before migrations (0.1.0).

A database made by one of them has these tables, or some of them, without an ``alembic_version``
table; upgrading it runs this revision too, which keeps what is there: it creates the tables that are
missing and adds the nullable columns that older releases lacked (``bank_entries.variant`` and
``variant_of``, the only columns ever added after their table). An empty database gets all of them.
Either way the result is the same. These definitions are frozen: later changes to schema.py come
with a revision of their own.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_when = sa.DateTime(timezone=True)

baseline = sa.MetaData()

sa.Table(
    "decisions", baseline,
    sa.Column("id", _id, primary_key=True, autoincrement=True),
    sa.Column("created_at", _when, nullable=False),
    sa.Column("source", sa.String(length=32), nullable=False),
    sa.Column("client", sa.String(length=200), nullable=False),
    sa.Column("media_type", sa.String(length=200)),
    sa.Column("detected_type", sa.String(length=100)),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("sha256", sa.String(length=64), nullable=False),
    sa.Column("pdq", sa.JSON()),
    sa.Column("verdict", sa.String(length=16), nullable=False),
    *(sa.Column(name, sa.JSON(), nullable=False) for name in ("labels", "reasons", "results", "timings")),
    sa.Column("fail_reason", sa.String(length=32)),
    sa.Column("fail_policy", sa.String(length=16)),
    sa.Column("scanner", sa.String(length=200)),
    sa.Column("fingerprint", sa.Text()),
    sa.Column("review", sa.String(length=16)),
    sa.Column("review_note", sa.Text()),
    sa.Column("reviewed_at", _when),
    sa.Column("reviewed_by", sa.String(length=200)),
    sa.Index("ix_decisions_sha256", "sha256"),
    sa.Index("ix_decisions_created_at", "created_at"),
    sa.Index("ix_decisions_verdict", "verdict"),
)  # fmt: skip

sa.Table(
    "banks", baseline,
    sa.Column("id", _id, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(length=100), nullable=False, unique=True),
    sa.Column("kind", sa.String(length=8), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("created_at", _when, nullable=False),
)  # fmt: skip

sa.Table(
    "bank_entries", baseline,
    sa.Column("id", _id, primary_key=True, autoincrement=True),
    sa.Column("bank_id", _id, sa.ForeignKey("banks.id"), nullable=False),
    sa.Column("hash_kind", sa.String(length=8), nullable=False),
    sa.Column("value", sa.String(length=64), nullable=False),
    sa.Column("note", sa.Text(), nullable=False),
    sa.Column("source", sa.String(length=300), nullable=False),
    sa.Column("added_by", sa.String(length=200), nullable=False),
    sa.Column("added_at", _when, nullable=False),
    sa.Column("variant", sa.String(length=32)),
    sa.Column("variant_of", _id),
    sa.UniqueConstraint("bank_id", "hash_kind", "value", name="uq_bank_entries_hash"),
    sa.Index("ix_bank_entries_value", "hash_kind", "value"),
)  # fmt: skip

bank_generation = sa.Table(
    "bank_generation", baseline,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("generation", sa.BigInteger(), nullable=False),
)  # fmt: skip

sa.Table(
    "sweep_sources", baseline,
    sa.Column("id", _id, primary_key=True, autoincrement=True),
    sa.Column("url", sa.String(length=1000), nullable=False, unique=True),
    sa.Column("options", sa.JSON(), nullable=False),
    sa.Column("updated_at", _when, nullable=False),
)  # fmt: skip

sa.Table(
    "sweep_objects", baseline,
    sa.Column("id", _id, primary_key=True, autoincrement=True),
    sa.Column("source_id", _id, sa.ForeignKey("sweep_sources.id"), nullable=False),
    sa.Column("key", sa.String(length=1024), nullable=False),
    sa.Column("size", sa.BigInteger(), nullable=False),
    sa.Column("modified", _when, nullable=False),
    sa.Column("etag", sa.String(length=200)),
    sa.Column("sha256", sa.String(length=64)),
    sa.Column("status", sa.String(length=16), nullable=False),
    sa.Column("verdict", sa.String(length=16)),
    sa.Column("decision_id", sa.BigInteger()),
    sa.Column("error", sa.Text()),
    sa.Column("action", sa.String(length=16)),
    sa.Column("action_state", sa.String(length=16)),
    sa.Column("quarantine_key", sa.String(length=1100)),
    sa.Column("scanned_at", _when, nullable=False),
    sa.UniqueConstraint("source_id", "key", name="uq_sweep_objects_key"),
    sa.Index("ix_sweep_objects_action_state", "action_state"),
)  # fmt: skip


def upgrade() -> None:
    bind = op.get_bind()
    present = set(sa.inspect(bind).get_table_names())
    for table in baseline.sorted_tables:
        if table.name not in present:
            table.create(bind)
            continue
        columns = {c["name"] for c in sa.inspect(bind).get_columns(table.name)}
        for column in table.columns:
            if column.name not in columns:
                if not column.nullable:
                    raise RuntimeError(f"cannot add NOT NULL column {table.name}.{column.name} to a table")
                op.add_column(table.name, sa.Column(column.name, column.type, nullable=True))
    # The one row gateways poll for bank changes (schema.py bank_generation).
    if bind.execute(sa.select(bank_generation.c.id).where(bank_generation.c.id == 1)).first() is None:
        bind.execute(bank_generation.insert().values(id=1, generation=0))


def downgrade() -> None:
    for table in reversed(baseline.sorted_tables):
        op.drop_table(table.name)
