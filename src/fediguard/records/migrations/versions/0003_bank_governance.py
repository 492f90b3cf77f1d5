"""Bank governance and retroactive matching: per-bank switch, match radius and flood limit; each
entry's provenance kind, status, match count and when it was last matched against the records;
the flood guard's window (``bank_matches``) and alerts (``bank_alerts``); retroactive matches
(``rematches``) and the sweep's marks for them (``sweep_objects.rematched_at``,
``sweep_sources.action``).

Entries that exist already get their provenance kind from their ``source`` text and count as matched
against the records (an upgrade does not flag old decisions all at once).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_when = sa.DateTime(timezone=True)


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def _add_column(table: str, column: sa.Column[object]) -> None:
    """Added unless there (a database made without migrations by this release's schema has it)."""
    if column.name not in _columns(table):
        op.add_column(table, column)


def _create_index(name: str, table: str, columns: list[str]) -> None:
    if name not in {i["name"] for i in sa.inspect(op.get_bind()).get_indexes(table)}:
        op.create_index(name, table, columns)


def _create_table(name: str, *items: sa.schema.SchemaItem) -> bool:
    if name in sa.inspect(op.get_bind()).get_table_names():
        return False
    op.create_table(name, *items)
    return True


def upgrade() -> None:
    _add_column("banks", sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()))
    for name in ("max_distance", "flood_limit", "flood_window_s"):
        _add_column("banks", sa.Column(name, sa.Integer(), nullable=True))

    _add_column("bank_entries", sa.Column("source_kind", sa.String(16), nullable=False, server_default=""))
    _add_column("bank_entries", sa.Column("status", sa.String(16), nullable=False, server_default="active"))
    _add_column("bank_entries", sa.Column("status_note", sa.Text(), nullable=True))
    _add_column("bank_entries", sa.Column("status_at", _when, nullable=True))
    _add_column("bank_entries", sa.Column("match_count", sa.BigInteger(), nullable=False, server_default="0"))
    _add_column("bank_entries", sa.Column("last_matched_at", _when, nullable=True))
    _add_column("bank_entries", sa.Column("rematched_at", _when, nullable=True))
    _create_index("ix_bank_entries_rematched_at", "bank_entries", ["rematched_at"])
    entries = sa.table(
        "bank_entries", sa.column("source", sa.String), sa.column("source_kind", sa.String),
        sa.column("rematched_at", _when),
    )  # fmt: skip
    for kind, condition in (
        ("record", entries.c.source.like("record %")),
        ("import", entries.c.source.like("import %")),
        ("feed", entries.c.source.like("feed%")),
        ("hash", entries.c.source == "cli add --hash"),
        ("file", entries.c.source.like("cli add %")),
    ):
        op.execute(entries.update().where(entries.c.source_kind == "", condition).values(source_kind=kind))
    op.execute(entries.update().where(entries.c.source_kind == "").values(source_kind="other"))
    op.execute(entries.update().values(rematched_at=sa.func.current_timestamp()))

    _create_table(
        "bank_matches",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("matched_at", _when, nullable=False),
    )
    _create_index("ix_bank_matches_entry", "bank_matches", ["entry_id", "matched_at"])
    _create_table(
        "bank_alerts",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("created_at", _when, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("bank", sa.String(100), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("resolved_at", _when, nullable=True),
        sa.Column("resolved_by", sa.String(200), nullable=True),
    )
    _create_index("ix_bank_alerts_resolved_at", "bank_alerts", ["resolved_at"])
    _create_table(
        "rematches",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("found_at", _when, nullable=False),
        sa.Column("decision_id", sa.BigInteger(), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("bank", sa.String(100), nullable=False),
        sa.Column("hash_kind", sa.String(8), nullable=False),
        sa.Column("distance", sa.Integer(), nullable=False),
        sa.Column("frame", sa.Integer(), nullable=True),
        sa.UniqueConstraint("decision_id", "entry_id", name="uq_rematches_decision_entry"),
    )
    _create_index("ix_rematches_found_at", "rematches", ["found_at"])

    _add_column("sweep_sources", sa.Column("action", sa.String(16), nullable=True))
    _add_column("sweep_objects", sa.Column("rematched_at", _when, nullable=True))
    _create_index("ix_sweep_objects_rematched_at", "sweep_objects", ["rematched_at"])


def downgrade() -> None:
    op.drop_index("ix_sweep_objects_rematched_at", "sweep_objects")
    with op.batch_alter_table("sweep_objects") as batch:
        batch.drop_column("rematched_at")
    with op.batch_alter_table("sweep_sources") as batch:
        batch.drop_column("action")
    for table in ("rematches", "bank_alerts", "bank_matches"):
        op.drop_table(table)
    op.drop_index("ix_bank_entries_rematched_at", "bank_entries")
    with op.batch_alter_table("bank_entries") as batch:
        for name in ("rematched_at", "last_matched_at", "match_count", "status_at", "status_note",
                     "status", "source_kind"):  # fmt: skip
            batch.drop_column(name)
    with op.batch_alter_table("banks") as batch:
        for name in ("flood_window_s", "flood_limit", "max_distance", "enabled"):
            batch.drop_column(name)
