"""The records database's schema, kept at the newest revision by Alembic: at start-up (RecordStore) and
by `fediguard db upgrade`. The revisions ship in ``migrations/``; no alembic.ini is needed.

A database made before migrations has tables but no ``alembic_version``: upgrading it runs the
baseline revision (0001) like on an empty database, which creates only what is missing and adds the
columns older releases lacked, then records the revision. One lock is held for the whole upgrade, in
the same transaction: ``pg_advisory_xact_lock`` on PostgreSQL, SQLite's write lock (BEGIN IMMEDIATE)
on SQLite, so gateways starting together on one database upgrade it once, one after the other; a
failed upgrade changes nothing, as both databases roll DDL back.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, text

from fediguard.errors import FediguardError

log = logging.getLogger("fediguard.records")

MIGRATIONS = Path(__file__).parent / "migrations"

LOCK_KEY = int.from_bytes(b"fgschema", "big")
"""The PostgreSQL advisory lock (a bigint) held while the schema is upgraded."""

_upgrading = threading.Lock()
"""Alembic's ``op`` and ``context`` are module globals: one upgrade at a time in a process too."""


class SchemaError(FediguardError):
    """The database's schema revision is one this fediguard does not know (a newer release's)."""


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, made in code: the migrations in the package, and the connection
    env.py runs them with."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this fediguard knows."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None, "no migrations shipped"
    return revision


def current(connection: Connection) -> str | None:
    """The database's revision; None when it has no ``alembic_version`` (empty, or made before
    migrations)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the database to the newest revision, under the migration lock; the revisions before and
    after. A database already there is only read."""
    newest = head()
    with _upgrading, engine.connect() as conn:
        before = current(conn)
        if before == newest:
            return before, newest
        conn.rollback()
        _lock(conn)
        before = current(conn)  # another process may have upgraded it meanwhile
        if before is not None and not known(before):
            raise SchemaError(
                f"the records database is at schema revision {before}, which this fediguard does "
                "not know: a newer release has upgraded it. Run that release (or a newer one)."
            )
        if before != newest:
            command.upgrade(alembic_config(conn), "head")
            log.info("records database schema upgraded from %s to %s", before or "none", newest)
        conn.commit()
    return before, newest


def _lock(conn: Connection) -> None:
    """Begin the upgrade's transaction holding a lock that one upgrader at a time can hold: it ends
    with the transaction."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    elif dialect == "sqlite":
        # pysqlite would begin a transaction only at the first INSERT; this one takes the write lock
        # now (others wait for the busy timeout), and the DDL after it stays inside it.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def known(revision: str) -> bool:
    """Whether this fediguard ships the revision (a newer release's is unknown)."""
    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except CommandError:
        return False
    return True
