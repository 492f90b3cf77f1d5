"""Opening the records database from a command: the same one wherever the command is run, and a
clear answer when it is not there."""

from __future__ import annotations

import os
import sys

from fediguard.config import CONFIG_SEARCH_PATH, Settings
from fediguard.errors import ConfigError
from fediguard.records.store import RecordStore, sqlite_file


def records_origin(settings: Settings) -> str:
    """Why the records database is where it is, for messages about it."""
    for name in ("FEDIGUARD_DATABASE_URL", "FEDIGUARD_DATA_DIR"):
        if os.environ.get(name):
            return f"set by {name}"
    if settings.config_file is not None:
        return f"settings from {settings.config_file}"
    return (
        "data_dir relative to the current folder; no settings file given with --config or "
        f"FEDIGUARD_CONFIG, none found in {CONFIG_SEARCH_PATH}"
    )


def open_records(settings: Settings, *, create: bool) -> RecordStore:
    """The records database. A SQLite file that does not exist yet is refused when ``create`` is
    false (a command that only reads it, run where no database is), and otherwise created with a
    note naming it, so a command run from the wrong folder never works on an empty database unseen."""
    path = sqlite_file(settings.effective_database_url)
    if path is not None and not path.exists():
        if not create:
            raise ConfigError(
                f"no records database at {path.resolve()} ({records_origin(settings)}). Run this "
                "with the settings `fediguard serve` uses: --config FILE, FEDIGUARD_CONFIG or "
                "FEDIGUARD_DATA_DIR"
            )
        print(
            f"fediguard: creating a new records database at {path.resolve()} ({records_origin(settings)})",
            file=sys.stderr,
        )
    return RecordStore(settings.effective_database_url)
