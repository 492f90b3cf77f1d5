"""The batching record writer: each caller gets its own record's id, or the error that stopped it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fediguard.records import RecordStore
from fediguard.records.store import NewDecision
from fediguard.records.writer import RecordWriter


def decision(n: int) -> NewDecision:
    return NewDecision(
        source="test", client="c", media_type="image/png", size=n, sha256=f"{n:064x}", verdict="pass"
    )


async def test_concurrent_callers_each_get_their_own_record(tmp_path: Path) -> None:
    store = RecordStore(f"sqlite:///{tmp_path / 'r.sqlite3'}")
    writer = RecordWriter(store)
    try:
        ids = await asyncio.gather(*(writer.add(decision(n)) for n in range(300)))
    finally:
        await asyncio.to_thread(writer.close)
    assert len(set(ids)) == 300
    for n, record_id in enumerate(ids):
        record = store.get(record_id)
        assert record is not None and record.size == n
    store.close()


async def test_a_failed_write_reaches_every_caller_of_its_batch(tmp_path: Path) -> None:
    store = RecordStore(f"sqlite:///{tmp_path / 'r.sqlite3'}")
    store.engine.dispose()
    (tmp_path / "r.sqlite3").unlink()
    (tmp_path / "r.sqlite3").mkdir()  # the database is now a folder: every write fails
    writer = RecordWriter(store)
    try:
        results = await asyncio.gather(*(writer.add(decision(n)) for n in range(5)), return_exceptions=True)
    finally:
        await asyncio.to_thread(writer.close)
    assert all(isinstance(r, Exception) for r in results), results


async def test_a_caller_that_gave_up_does_not_stop_the_others(tmp_path: Path) -> None:
    store = RecordStore(f"sqlite:///{tmp_path / 'r.sqlite3'}")
    writer = RecordWriter(store)
    try:
        impatient = asyncio.ensure_future(writer.add(decision(1)))
        impatient.cancel()
        assert await writer.add(decision(2)) > 0
        with pytest.raises(asyncio.CancelledError):
            await impatient
    finally:
        await asyncio.to_thread(writer.close)
    store.close()
