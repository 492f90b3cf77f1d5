"""`fediguard db upgrade` and `fediguard db current`: the records database's schema revision."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect
from sqlalchemy.engine import make_url

from fediguard.cli.common import add_command, add_config_option, settings_from
from fediguard.records import migrate
from fediguard.records.store import create_db_engine

HELP = """\
The records database (database_url; SQLite in data_dir by default) changes its schema with fediguard
releases. Every command that opens it upgrades it first, so `fediguard serve` after an update is
enough; `db upgrade` does it on its own, say before starting several gateways on one PostgreSQL
database, and does nothing when there is nothing to do. Upgrades are Alembic revisions shipped with
fediguard; a database made by a release from before them is taken as it is (missing tables and
columns are added, nothing is removed). Concurrent upgrades wait for each other.

`db current` prints the database's revision; it exits 0 when that is the newest, 1 when an upgrade
is due.
"""


def add_parser(sub: Any) -> None:
    db = add_command(sub, "db", "upgrade the records database, or show its schema revision", HELP)
    verbs = db.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name, run, what in [
        ("upgrade", _upgrade, "bring the schema to the newest revision (a no-op when it is)"),
        ("current", _current, "print the schema revision (exit 1 when an upgrade is due)"),
    ]:
        verb = verbs.add_parser(name, help=what)
        add_config_option(verb)
        verb.set_defaults(func=run)


def _upgrade(args: argparse.Namespace) -> int:
    engine = create_db_engine(settings_from(args).effective_database_url)
    try:
        before, after = migrate.upgrade(engine)
    finally:
        engine.dispose()
    where = _where(engine)
    if before == after:
        print(f"{where}: at revision {after} (head), nothing to do")
    else:
        print(f"{where}: upgraded from {before or 'no revision'} to {after} (head)")
    return 0


def _current(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    path = _sqlite_file(settings.effective_database_url)
    if path is not None and not path.exists():  # opening it would create it
        print(f"{path}: no database yet (the first command that opens it creates it)")
        return 1
    engine = create_db_engine(settings.effective_database_url)
    try:
        with engine.connect() as conn:
            revision = migrate.current(conn)
            empty = not inspect(conn).get_table_names()
    finally:
        engine.dispose()
    newest = migrate.head()
    if revision == newest:
        print(f"{_where(engine)}: {revision} (head)")
        return 0
    if revision is not None and not migrate.known(revision):
        print(f"{_where(engine)}: {revision}, a revision this fediguard does not know (a newer release's)")
    elif revision is None:
        state = "empty" if empty else "made before migrations"
        print(f"{_where(engine)}: no revision ({state}); `fediguard db upgrade` brings it to {newest}")
    else:
        print(f"{_where(engine)}: {revision}; `fediguard db upgrade` brings it to {newest} (head)")
    return 1


def _where(engine: Engine) -> str:
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    return url.render_as_string(hide_password=True)


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(str(parsed.database))
