"""Fixtures for the sweeper's tests: its state in a real SQLite database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fediguard.records import RecordStore
from fediguard.sweeper.state import SweepState


@pytest.fixture
def state(tmp_path: Path) -> Iterator[SweepState]:
    records = RecordStore(f"sqlite:///{tmp_path / 'fediguard.sqlite3'}")
    yield SweepState(records.engine)
    records.close()
