"""Sweep passes: one, or (as a daemon) one every interval until stopped.

A daemon's pass lists only what was modified since the previous pass began, and every
``full_every`` a pass lists everything (or the whole ``since`` window): files copied in with old
modification times are found, and errors and objects with no verdict are retried. A pass that fails
(storage unreachable, folder gone, database restarting) is logged and tried again after 1 s, 2 s,
4 s… and never later than the interval; a single sweep raises instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import OperationalError

from fediguard.storage import Source, SourceError
from fediguard.sweeper.judges import Judge
from fediguard.sweeper.progress import Progress, SweepStats
from fediguard.sweeper.run import Sweeper, SweepOptions
from fediguard.sweeper.state import SweepState

log = logging.getLogger("fediguard.sweep")

RETRY_FIRST_S = 1.0
"""A daemon's wait after a failed pass; it doubles with each failure in a row, up to the interval."""


@dataclass(frozen=True)
class Schedule:
    """When passes run, and how far back a full pass lists."""

    daemon: bool = False
    """Keep sweeping, a pass every ``interval``, until stopped; otherwise one pass."""
    interval: float = 30.0
    full_every: float = 86400.0
    """A daemon lists everything this often (seconds); the passes between list only changes."""
    since: float | None = None
    """A full pass lists only objects modified in the last this many seconds (None: everything)."""


@dataclass(frozen=True)
class Ended:
    """How the passes ended."""

    interrupted: bool
    """Stopped in the middle of a pass."""
    stats: SweepStats | None
    """The pass of a single sweep that went through; None for a daemon (it ends only when stopped)."""


async def run_passes(
    source: Source,
    source_id: int,
    state: SweepState,
    judge: Judge,
    options: SweepOptions,
    schedule: Schedule,
    stop: asyncio.Event,
) -> Ended:
    """Sweep ``source`` with ``options`` (its ``since`` is set for each pass), as ``schedule`` says,
    until the single pass ends or ``stop`` is set. Each pass ends with its summary (:class:`Progress`).

    A single sweep raises the storage or database error a pass fails with; a daemon logs it and
    tries again."""
    passes = failures = 0
    full_due = time.monotonic()
    changed_since: datetime | None = None  # where the next incremental pass starts listing
    while True:
        started = datetime.now(UTC)
        full = time.monotonic() >= full_due
        since = changed_since
        if full:  # everything (or the since window): also what an incremental pass cannot see
            full_due = time.monotonic() + schedule.full_every
            since = started - timedelta(seconds=schedule.since) if schedule.since else None
        progress = Progress(SweepStats())
        pass_options = dataclasses.replace(options, since=since)
        sweeper = Sweeper(source, source_id, state, judge, pass_options, progress)
        task = asyncio.create_task(sweeper.run())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            progress.finish("sweep interrupted")
            return Ended(interrupted=True, stats=None)
        try:
            task.result()
        except (SourceError, OperationalError) as exc:
            if not schedule.daemon:
                raise
            # A daemon outlives an unreachable endpoint, an unmounted folder, a database
            # restart: it says so and tries again, sooner at first, never later than the interval.
            failures += 1
            if full:
                full_due = time.monotonic()  # the next pass lists everything again
            delay = min(schedule.interval, RETRY_FIRST_S * 2 ** min(failures - 1, 20))
            progress.finish(f"sweep of {source.url} (pass failed, {failures} in a row)")
            log.error("sweep pass failed (%d in a row): %s; retrying in %.3gs", failures, exc, delay)
        else:
            failures = 0
            passes += 1
            kind = "full" if full else "changes only"
            label = f"sweep of {source.url}" + (f" (pass {passes}, {kind})" if schedule.daemon else "")
            progress.finish(label)
            if not schedule.daemon:
                return Ended(interrupted=False, stats=progress.stats)
            # Next: what changed since this pass began (listing is inclusive, skips dedupe overlap).
            changed_since = started - timedelta(seconds=1)
            delay = schedule.interval
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return Ended(interrupted=False, stats=None)
        except TimeoutError:
            pass
