"""The spool on real files and real SQLite / PostgreSQL: decisions kept while the database cannot
take them reach it exactly once, in order, with the time they were made, whatever crashed between;
a line cut short by a crash is skipped with a log line and holds nothing up."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fediguard.errors import RecordError
from fediguard.records import NewDecision, RecordStore
from fediguard.records.spool import Spool
from fediguard.records.writer import RecordWriter
from support import dbfaults
from support.workers import wait_for

MADE = datetime(2026, 11, 5, 12, 0, tzinfo=UTC)


def decision(n: int) -> NewDecision:
    return NewDecision(
        source="gateway", client="c", media_type="image/png", size=n, sha256=f"{n:064x}", verdict="pass",
        reasons=[f"decision {n}"], created_at=MADE + timedelta(seconds=n),
    )  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> RecordStore:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'records.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    s = RecordStore(url, busy_timeout_s=0.2)
    request.addfinalizer(s.close)
    return s


def in_db(store: RecordStore) -> list[tuple[int, datetime]]:
    return [(r.size, r.created_at) for r in reversed(store.recent(limit=1000))]


def spooled_by_a_process_that_died(folder: Path, *batches: list[NewDecision]) -> None:
    """Segments left behind as a crashed gateway leaves them (its lock gone with it)."""
    spool = Spool(folder)
    spool.open()
    for batch in batches:
        spool.append(batch)
    spool.close()


def drain(store: RecordStore, folder: Path) -> None:
    spool = Spool(folder)
    spool.open()
    writer = RecordWriter(store, spool)
    try:
        wait_for(lambda: writer.spool_depth == 0, what="the spool to drain")
    finally:
        writer.close()


def test_a_dead_process_s_spool_is_written_in_order_with_its_times(
    store: RecordStore, tmp_path: Path
) -> None:
    store.add(decision(0))
    spooled_by_a_process_that_died(tmp_path / "spool", [decision(1), decision(2)], [decision(3)])
    drain(store, tmp_path / "spool")
    assert in_db(store) == [(n, MADE + timedelta(seconds=n)) for n in range(4)]
    assert not list((tmp_path / "spool").glob("*.jsonl"))


def test_a_crash_after_the_commit_never_writes_a_decision_twice(store: RecordStore, tmp_path: Path) -> None:
    """The decisions were committed with their mark, but the process died before removing the
    segment: the next one finds them applied."""
    folder = tmp_path / "spool"
    spooled_by_a_process_that_died(folder, [decision(1), decision(2), decision(3)])
    spool = Spool(folder)
    spool.open()
    (segment,) = spool.segments()
    assert store.apply_spooled(segment.generation, list(spool.entries(segment))[:2]) == 2
    spool.close()  # crash: the segment stays
    drain(store, folder)
    assert [n for n, _ in in_db(store)] == [1, 2, 3]
    drain(store, folder)
    assert [n for n, _ in in_db(store)] == [1, 2, 3]


def test_a_line_cut_short_by_a_crash_is_skipped_and_holds_nothing_up(
    store: RecordStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "spool"
    spooled_by_a_process_that_died(folder, [decision(1), decision(2)])
    (path,) = folder.glob("*.jsonl")
    lines = path.read_bytes().splitlines(keepends=True)
    # A damaged line in the middle, a good one after it, and the last one cut short mid-append.
    path.write_bytes(lines[0] + b'{"seq": 2, "decision": {"sour\x00\n' + lines[1] + lines[1][:30])
    caplog.set_level(logging.WARNING, "fediguard.records")
    drain(store, folder)
    assert [n for n, _ in in_db(store)] == [1, 2]
    skipped = [r.getMessage() for r in caplog.records if "skipping line" in r.getMessage()]
    assert len(skipped) == 2 and "cut short by a crash" in skipped[1], skipped


async def test_the_writer_spools_while_the_database_is_locked_and_writes_in_order_after(
    store: RecordStore, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.open()
    writer = RecordWriter(store, spool)
    url = store.engine.url.render_as_string(hide_password=False)
    try:
        assert await writer.add(decision(0)) is not None
        with dbfaults.locked(url):
            assert [await writer.add(decision(n)) for n in (1, 2, 3)] == [None, None, None]
            assert writer.spool_depth == 3 and writer.unwritable is not None
        await asyncio.to_thread(wait_for, lambda: writer.spool_depth == 0, what="the spool to drain")
        assert writer.unwritable is None
        assert await writer.add(decision(4)) is not None
    finally:
        await asyncio.to_thread(writer.close)
    assert in_db(store) == [(n, MADE + timedelta(seconds=n)) for n in range(5)]


async def test_a_caller_waits_no_longer_than_it_said(store: RecordStore, tmp_path: Path) -> None:
    """A record not written within the caller's time is answered as not yet written, and is
    written (or spooled) all the same."""
    spool = Spool(tmp_path / "spool")
    spool.open()
    writer = RecordWriter(store, spool)
    url = store.engine.url.render_as_string(hide_password=False)
    try:
        with dbfaults.locked(url) as lock:
            assert await writer.add(decision(1), timeout=0.0) is None
            assert lock.process.poll() is None
        await asyncio.to_thread(wait_for, lambda: store.count() == 1, what="the record")
    finally:
        await asyncio.to_thread(writer.close)


def test_a_spool_folder_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    (tmp_path / "spool").write_text("not a folder")
    with pytest.raises(RecordError, match="data_dir"):
        Spool(tmp_path / "spool").open()


def refused_by_the_database(n: int) -> NewDecision:
    """A decision no database takes (a NOT NULL column left empty): no retry can write it."""
    return replace(decision(n), source=None)  # type: ignore[arg-type]


async def test_a_decision_the_database_refuses_does_not_take_its_batch_with_it(
    store: RecordStore, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.open()
    writer = RecordWriter(store, spool)
    try:
        results = await asyncio.gather(
            writer.add(decision(1)), writer.add(refused_by_the_database(2)), writer.add(decision(3)),
            return_exceptions=True,
        )  # fmt: skip
    finally:
        await asyncio.to_thread(writer.close)
    assert isinstance(results[1], Exception) and all(isinstance(r, int) for r in (results[0], results[2]))
    assert [n for n, _ in in_db(store)] == [1, 3]
    assert writer.spool_depth == 0, "a refused decision is not spooled: retrying cannot help"


def test_a_spooled_decision_the_database_refuses_is_logged_and_passed_over(
    store: RecordStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "spool"
    spooled_by_a_process_that_died(folder, [decision(1), refused_by_the_database(2), decision(3)])
    caplog.set_level(logging.ERROR, "fediguard.records")
    drain(store, folder)
    assert [n for n, _ in in_db(store)] == [1, 3]
    (logged,) = [r.getMessage() for r in caplog.records if "passed over" in r.getMessage()]
    assert "'size': 2" in logged, "the whole decision is in the log"
