"""Progress of a sweep: the total and the ETA are known long before the throttled listing ends."""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path

import pytest

from fediguard.storage import get_layout
from fediguard.storage.local import LocalSource
from fediguard.sweeper.judges import Judgement
from fediguard.sweeper.progress import Progress, SweepStats
from fediguard.sweeper.run import Sweeper, SweepOptions
from fediguard.sweeper.state import SweepState


class WatchingJudge:
    """Passes everything, slowly, and notes what the progress said at each call."""

    def __init__(self, stats: SweepStats) -> None:
        self.stats = stats
        self.seen: list[tuple[bool, int | None, float | None, str]] = []

    async def judge(self, data: bytes, key: str) -> Judgement:
        await asyncio.sleep(0.003)
        s = self.stats
        self.seen.append((s.listing_done, s.total(), s.eta_s(), s.line()))
        return Judgement("pass", None, None)


async def test_the_total_and_eta_are_known_while_the_listing_still_waits(
    tmp_path: Path, state: SweepState, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "store"
    for d in range(6):
        (root / f"d{d}").mkdir(parents=True)
        for i in range(50):
            (root / f"d{d}" / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes([d, i]))
    source = LocalSource(root)
    stats = SweepStats()
    progress = Progress(stats, stream=io.StringIO(), log_every=0.0)  # not a terminal: log lines
    judge = WatchingJudge(stats)
    options = SweepOptions(layout=get_layout("plain"), concurrency=2)  # 8 objects wait at most
    caplog.set_level(logging.INFO, logger="fediguard.sweep")
    sweeper = Sweeper(source, state.source_id(source.url, {}), state, judge, options, progress)
    await sweeper.run()

    assert stats.listed == stats.scanned == 300 and stats.listing_done
    ahead = [seen for seen in judge.seen if not seen[0] and seen[1] is not None]
    assert ahead, "the total was known before the listing ended"
    assert all(total == 300 for _, total, _, _ in ahead)
    assert any(eta is not None for _, _, eta, _ in ahead)
    assert any(" of 300 (" in line and "ETA " in line for _, _, _, line in ahead)
    assert stats.counted == 300 and stats.counting_done
    progress_lines = [r.getMessage() for r in caplog.records if "sweep progress" in r.getMessage()]
    assert any("ETA" in line and "of 300" in line for line in progress_lines), progress_lines
    assert stats.eta_s() == 0.0


def test_progress_lines_before_and_after_the_total_is_known() -> None:
    stats = SweepStats(listed=40, scanned=10, counted=120)
    assert stats.total() is None and stats.eta_s() is None
    assert "listed 40 (counting: 120 so far)" in stats.line() and "listing…" in stats.line()
    stats.counting_done = True
    assert stats.total() == 120 and "done 10 of 120 (8.3%)" in stats.line()
    stats.started -= 10  # 1 object/s
    eta = stats.eta_s()
    assert eta is not None and 105 < eta < 115 and "ETA 1m" in stats.line()
    stats.listing_done, stats.listed = True, 130  # more than were counted: the listing wins
    assert stats.total() == 130
