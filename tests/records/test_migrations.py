"""Schema migrations on real SQLite files and real PostgreSQL: databases made by older releases (no
``alembic_version``) are upgraded in place, fresh ones get the newest revision, `fediguard db` does
both, and the revisions build exactly the tables schema.py describes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select

import fediguard
from fediguard.banks.formats import BankEntry
from fediguard.banks.rematch import Rematcher
from fediguard.banks.store import BankStore
from fediguard.records import RecordStore, migrate, schema
from fediguard.records.schema import bank_entries, decisions, metadata
from fediguard.records.store import create_db_engine

BEFORE_MIGRATIONS = Path(__file__).parent / "before_migrations.sql"
TYPES = {
    "sqlite": {"id": "INTEGER", "ref": "INTEGER", "timestamp": "DATETIME"},
    "postgresql": {"id": "BIGSERIAL", "ref": "BIGINT", "timestamp": "TIMESTAMP WITH TIME ZONE"},
}
WHEN = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'fediguard.sqlite3'}"
    return str(request.getfixturevalue("postgres_url"))


def make_old_database(url: str, release: str) -> None:
    """The tables ``release`` made (before_migrations.sql), with a few rows in each."""
    engine = create_db_engine(url)
    ddl = BEFORE_MIGRATIONS.read_text().format(**TYPES[engine.dialect.name])
    statements = "\n".join(line for line in ddl.splitlines() if not line.startswith("--")).split(";")
    if release == "ebb0938":  # the first release: decisions only
        statements = [s for s in statements if re.search(r"(TABLE|ON) decisions\b", s)]
    with engine.begin() as conn:
        for statement in filter(str.strip, statements):
            conn.exec_driver_sql(statement)
        conn.execute(decisions.insert(), [
            dict(created_at=WHEN, source="gateway", client="lemmy", size=10 + i, sha256=f"{i:064x}",
                 verdict=verdict, labels=[], reasons=[f"reason {i}"], results=[], timings={})
            for i, verdict in enumerate(["pass", "reject"], start=1)
        ])  # fmt: skip
        if release == "bce40c1":
            for table, row in [
                (schema.banks, dict(id=1, name="old", kind="deny", created_at=WHEN)),
                (bank_entries, dict(bank_id=1, hash_kind="pdq", value="cd" * 32, note="kept", added_at=WHEN)),
                (schema.bank_generation, dict(id=1, generation=7)),
                (schema.sweep_sources, dict(id=1, url="file:///srv", options={}, updated_at=WHEN)),
                (schema.sweep_objects, dict(source_id=1, key="a/b.png", size=1, modified=WHEN,
                                            status="scanned", scanned_at=WHEN)),
            ]:  # fmt: skip
                conn.execute(table.insert().values(**row))
    engine.dispose()


def revision_of(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return migrate.current(conn)


def differences(engine: Engine) -> list[Any]:
    """What autogenerate would change to make the database match schema.py: nothing, when every
    schema change came with its revision."""
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


def schema_dump(engine: Engine) -> dict[str, Any]:
    """Every table as the database describes it: columns in order, keys, indexes, constraints."""
    seen = inspect(engine)
    return {
        name: (
            [(c["name"], str(c["type"]), c["nullable"], c.get("default")) for c in seen.get_columns(name)],
            seen.get_pk_constraint(name)["constrained_columns"],
            sorted((i["name"], tuple(i["column_names"]), i["unique"]) for i in seen.get_indexes(name)),
            sorted((u["name"] or "", tuple(u["column_names"])) for u in seen.get_unique_constraints(name)),
            sorted((k["constrained_columns"], k["referred_table"]) for k in seen.get_foreign_keys(name)),
        )
        for name in sorted(seen.get_table_names())
    }


@pytest.mark.parametrize("release", ["bce40c1", "ebb0938"])
def test_a_database_of_an_older_release_is_upgraded_in_place(url: str, release: str) -> None:
    """bce40c1: every table but bank_entries.variant/variant_of; ebb0938: decisions only."""
    make_old_database(url, release)
    store = RecordStore(url)
    try:
        assert revision_of(store.engine) == migrate.head()
        kept = [(r.id, r.verdict, r.reasons) for r in store.recent()]
        assert kept == [(2, "reject", ("reason 2",)), (1, "pass", ("reason 1",))]
        columns = {c["name"] for c in inspect(store.engine).get_columns("bank_entries")}
        assert {"variant", "variant_of"} <= columns
        assert differences(store.engine) == []
        bank_store = BankStore(store.engine)
        if release == "bce40c1":
            assert list(bank_store.entries("old")) == [BankEntry("pdq", "cd" * 32, "kept")]
            assert bank_store.state() == 7, "the bank generation is kept"
            (old,) = bank_store.stored_entries("old")
            assert (old.status, old.source_kind, old.match_count) == ("active", "other", 0)
            assert bank_store.get("old").enabled and bank_store.get("old").max_distance is None
            assert Rematcher(store.engine).pending() == 0, "an upgrade flags no old decision at once"
            with store.engine.connect() as conn:
                assert conn.execute(select(func.count()).select_from(schema.sweep_objects)).scalar() == 1
        else:
            bank_store.create("old", "deny")
            bank_store.add("old", [BankEntry("pdq", "cd" * 32, "kept")], "test", "me")
        bank_store.add("old", [BankEntry("pdq", "ef" * 32, "", "top 5%", "cd" * 32)], "test", "me")
        assert bank_store.get("old").crop_variants == 1
        record = store.get(1)
        assert record is not None and store.add(record) == 3, "new rows take ids after the old ones"

        # The same tables as a fresh database's, to the column: tear down, build again from nothing.
        upgraded = schema_dump(store.engine)
        with store.engine.begin() as conn:
            command.downgrade(migrate.alembic_config(conn), "base")
        assert set(schema_dump(store.engine)) == {"alembic_version"}
        migrate.upgrade(store.engine)
        assert schema_dump(store.engine) == upgraded
    finally:
        store.close()


def test_a_fresh_database_gets_the_newest_revision(url: str) -> None:
    store = RecordStore(url)
    try:
        assert revision_of(store.engine) == migrate.head()
        assert set(inspect(store.engine).get_table_names()) == {*metadata.tables, "alembic_version"}
        assert BankStore(store.engine).state() == 0
        assert migrate.upgrade(store.engine) == (migrate.head(), migrate.head()), "nothing left to do"
    finally:
        store.close()


def test_the_migrations_build_exactly_schema_py(url: str) -> None:
    """A change to schema.py needs a revision in records/migrations/versions/ that makes it:
    `scripts/new-migration "what changed"` writes one from the difference, to be checked by hand."""
    engine = create_db_engine(url)
    try:
        assert migrate.upgrade(engine) == (None, migrate.head())
        assert differences(engine) == [], "schema.py changed without a revision: scripts/new-migration"
    finally:
        engine.dispose()


START = """
import sys, time
from pathlib import Path
from fediguard.records import RecordStore
url, folder = sys.argv[1], Path(sys.argv[2])
(folder / f"ready-{sys.argv[3]}").touch()
while not (folder / "go").exists():
    time.sleep(0.005)
RecordStore(url).close()
"""


def test_gateways_starting_together_upgrade_the_database_once(url: str, tmp_path: Path) -> None:
    """Four processes open an old database at the same moment: one upgrades it, the others wait."""
    make_old_database(url, "bce40c1")
    command_line = [sys.executable, "-c", START, url, str(tmp_path)]
    starting = [
        subprocess.Popen([*command_line, str(i)], env=child_env(url), stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    while len(list(tmp_path.glob("ready-*"))) < 4 and all(p.poll() is None for p in starting):
        time.sleep(0.005)
    (tmp_path / "go").touch()
    errors = [p.communicate(timeout=120)[1] for p in starting]
    assert [p.returncode for p in starting] == [0] * 4, errors
    engine = create_db_engine(url)
    try:
        assert revision_of(engine) == migrate.head() and differences(engine) == []
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(decisions)).scalar() == 2
    finally:
        engine.dispose()


def child_env(url: str) -> dict[str, str]:
    """The environment of a fediguard process of this checkout on the database at ``url``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FEDIGUARD_")}
    environ.update(FEDIGUARD_DATABASE_URL=url, FEDIGUARD_LOG_LEVEL="WARNING",
                   PYTHONPATH=str(Path(fediguard.__file__).parents[1]))  # fmt: skip
    return environ


def fediguard_db(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fediguard", "db", *args],
                          env=child_env(url), capture_output=True, text=True, timeout=120)  # fmt: skip


def test_db_upgrade_on_an_old_database_and_again(url: str) -> None:
    make_old_database(url, "bce40c1")
    head = migrate.head()

    before = fediguard_db(url, "current")
    assert before.returncode == 1 and "no revision (made before migrations)" in before.stdout, before

    first = fediguard_db(url, "upgrade")
    assert first.returncode == 0 and f"upgraded from no revision to {head} (head)" in first.stdout, first
    again = fediguard_db(url, "upgrade")
    assert again.returncode == 0 and "nothing to do" in again.stdout, again

    after = fediguard_db(url, "current")
    assert after.returncode == 0 and after.stdout.strip().endswith(f": {head} (head)"), after
    engine = create_db_engine(url)
    try:
        assert differences(engine) == []
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(decisions)).scalar() == 2
            assert conn.execute(select(bank_entries.c.note, bank_entries.c.variant)).all() == [("kept", None)]
    finally:
        engine.dispose()


def test_db_on_a_missing_database_or_a_newer_releases(url: str) -> None:
    if url.startswith("sqlite"):
        missing = fediguard_db(url, "current")
        assert missing.returncode == 1 and "no database yet" in missing.stdout, missing
        assert not Path(url.removeprefix("sqlite:///")).exists(), "looking does not create it"
    engine = create_db_engine(url)
    try:
        migrate.upgrade(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
        with pytest.raises(migrate.SchemaError, match="revision 9999, which this fediguard does not know"):
            RecordStore(url)
        newer = fediguard_db(url, "current")
        assert newer.returncode == 1 and "9999, a revision this fediguard does not know" in newer.stdout
        refused = fediguard_db(url, "upgrade")
        assert refused.returncode == 2 and "a newer release has upgraded it" in refused.stderr, refused
    finally:
        engine.dispose()
