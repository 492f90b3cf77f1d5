"""Sweep passes, called directly: one pass, a daemon's retries with backoff, and stopping.
Real folders, real SQLite; the judge passes everything."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fediguard.storage import SourceError, get_layout
from fediguard.storage.local import LocalSource
from fediguard.sweeper import daemon
from fediguard.sweeper.daemon import Schedule, run_passes
from fediguard.sweeper.judges import Judgement
from fediguard.sweeper.run import SweepOptions
from fediguard.sweeper.state import SweepState

OPTIONS = SweepOptions(layout=get_layout("plain"))
PNG = b"\x89PNG\r\n\x1a\n"


class PassJudge:
    def __init__(self) -> None:
        self.keys: list[str] = []

    async def judge(self, data: bytes, key: str) -> Judgement:
        self.keys.append(key)
        return Judgement("pass", None, None)


class HeldJudge:
    """Holds every object until released: a pass that is still running."""

    def __init__(self) -> None:
        self.called = asyncio.Event()
        self.release = asyncio.Event()

    async def judge(self, data: bytes, key: str) -> Judgement:
        self.called.set()
        await self.release.wait()
        return Judgement("pass", None, None)


async def until(condition: Callable[[], object], task: asyncio.Task[object], timeout: float = 30) -> None:
    """Poll ``condition`` until it holds; fail if ``task`` ends first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if task.done():
            task.result()
            raise AssertionError("the passes ended")
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_single_sweep_makes_one_pass(tmp_path: Path, state: SweepState) -> None:
    root = tmp_path / "store"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.png").write_bytes(PNG + bytes([i]))
    source = LocalSource(root)
    judge = PassJudge()
    ended = await run_passes(
        source, state.source_id(source.url, {}), state, judge, OPTIONS, Schedule(), asyncio.Event()
    )
    assert not ended.interrupted and ended.stats is not None
    assert ended.stats.listed == ended.stats.scanned == 3
    assert sorted(judge.keys) == ["0.png", "1.png", "2.png"]


async def test_a_single_sweep_raises_what_its_pass_failed_with(tmp_path: Path, state: SweepState) -> None:
    root = tmp_path / "store"
    root.mkdir()
    source = LocalSource(root)
    root.rename(tmp_path / "away")
    with pytest.raises(SourceError, match="is gone"):
        await run_passes(
            source, state.source_id(source.url, {}), state, PassJudge(), OPTIONS, Schedule(), asyncio.Event()
        )


async def test_a_daemon_retries_sooner_at_first_then_at_the_interval(
    tmp_path: Path, state: SweepState, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, away = tmp_path / "store", tmp_path / "away"
    root.mkdir()
    source = LocalSource(root)
    root.rename(away)
    monkeypatch.setattr(daemon, "RETRY_FIRST_S", 0.01)
    caplog.set_level(logging.INFO, logger="fediguard.sweep")
    stop = asyncio.Event()
    judge = PassJudge()
    schedule = Schedule(daemon=True, interval=0.05)
    source_id = state.source_id(source.url, {})
    task = asyncio.create_task(run_passes(source, source_id, state, judge, OPTIONS, schedule, stop))
    try:
        await until(lambda: "pass failed (4 in a row)" in caplog.text, task)
        (away / "new.png").write_bytes(PNG)
        away.rename(root)
        await until(lambda: judge.keys == ["new.png"], task)
        await until(lambda: "(pass 1, full)" in caplog.text, task)
    finally:
        stop.set()
        ended = await task
    assert not ended.interrupted and ended.stats is None
    waits = [f"retrying in {s}s" for s in ("0.01", "0.02", "0.04", "0.05")]
    assert all(wait in caplog.text for wait in waits), caplog.text
    assert f"the storage root {root} is gone" in caplog.text
    assert "(pass 1, full)" in caplog.text, "a failed full pass is followed by a full one"


async def test_a_stop_in_the_middle_of_a_pass_interrupts_it(tmp_path: Path, state: SweepState) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / "held.png").write_bytes(PNG)
    source = LocalSource(root)
    judge = HeldJudge()
    stop = asyncio.Event()
    schedule = Schedule(daemon=True, interval=0.05)
    source_id = state.source_id(source.url, {})
    task = asyncio.create_task(run_passes(source, source_id, state, judge, OPTIONS, schedule, stop))
    await until(judge.called.is_set, task)
    stop.set()
    ended = await task
    assert ended.interrupted and ended.stats is None
    (record,) = state.known(source_id, ["held.png"]).values()
    assert record.status == "scanning", "claimed, not finished: the next run takes it up"
