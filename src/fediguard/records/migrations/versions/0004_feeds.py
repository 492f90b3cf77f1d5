"""Hash feeds: what a gateway publishes (publications, their signed batches, the set they add up to)
and what it subscribes to (banks/feeds/, docs/feeds.md).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_when = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Only what is missing: a database whose alembic_version was lost is upgraded from the baseline
    # again (tests/banks/test_bank_store.py), and its feed tables must survive that.
    existing = set(sa.inspect(op.get_bind()).get_table_names())

    def create_table(name: str, *columns: Any) -> None:
        if name not in existing:
            op.create_table(name, *columns)

    create_table(
        "feed_publications",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(length=100), nullable=False, unique=True),
        sa.Column("banks", sa.JSON(), nullable=False),
        sa.Column("notes", sa.Boolean(), nullable=False),
        sa.Column("token_sha256", sa.String(length=64)),
        sa.Column("synced_generation", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _when, nullable=False),
    )  # fmt: skip
    create_table(
        "feed_batches",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("publication_id", _id, sa.ForeignKey("feed_publications.id"), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(length=100), nullable=False),
        sa.Column("created_at", _when, nullable=False),
        sa.UniqueConstraint("publication_id", "seq", name="uq_feed_batches_seq"),
    )  # fmt: skip
    create_table(
        "feed_published",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("publication_id", _id, sa.ForeignKey("feed_publications.id"), nullable=False),
        sa.Column("hash_kind", sa.String(length=8), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.UniqueConstraint("publication_id", "hash_kind", "value", name="uq_feed_published_hash"),
    )  # fmt: skip
    create_table(
        "feed_subscriptions",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(length=100), nullable=False, unique=True),
        sa.Column("url", sa.String(length=1000), nullable=False),
        sa.Column("public_key", sa.String(length=100), nullable=False),
        sa.Column("token", sa.Text()),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("bank", sa.String(length=100), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_digest", sa.String(length=64), nullable=False),
        sa.Column("polled_at", _when),
        sa.Column("synced_at", _when),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", _when, nullable=False),
    )  # fmt: skip


def downgrade() -> None:
    for table in ("feed_subscriptions", "feed_published", "feed_batches", "feed_publications"):
        op.drop_table(table)
