"""Progress of a sweep: a one-line bar on a terminal, a log line every so often elsewhere, and a summary."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

log = logging.getLogger("fediguard.sweep")


EXIT_STATUSES = """\
Exit status (the first that applies): 2 an error (the sweep failed, an object could not be read or an
action failed), 1 objects were flagged, 3 objects were left without a verdict (no scanner, deadline,
undecodable, too large), 0 everything listed has a verdict and none was flagged (130: interrupted)."""


@dataclass
class SweepStats:
    listed: int = 0
    skipped: int = 0  # already scanned and unchanged
    scanned: int = 0
    not_media: int = 0
    unscanned: int = 0  # no verdict (no scanner, deadline, scanner error): tried again next run
    undecodable: int = 0  # media that cannot be decoded: recorded, skipped while unchanged
    too_large: int = 0  # over the size limit: not read, skipped while unchanged
    flagged: int = 0
    actions: int = 0
    errors: int = 0
    gone: int = 0  # vanished between listing and reading
    listing_done: bool = False
    counted: int = 0  # objects counted by a second listing running ahead of the throttled one
    counting_done: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def without_verdict(self) -> int:
        """Objects this sweep left without a verdict: unscanned (tried again next run), undecodable
        or over the size limit."""
        return self.unscanned + self.undecodable + self.too_large

    def exit_status(self) -> int:
        """The sweep's exit status: 2 errors (objects not read, actions that failed), else 1 objects
        flagged, else 3 objects left without a verdict, else 0 (see EXIT_STATUSES)."""
        if self.errors:
            return 2
        if self.flagged:
            return 1
        return 3 if self.without_verdict else 0

    @property
    def processed(self) -> int:
        done = self.scanned + self.not_media + self.unscanned + self.undecodable + self.too_large
        return done + self.skipped + self.errors + self.gone

    def rate(self) -> float:
        """Objects read and scanned per second (skips are not work)."""
        elapsed = time.monotonic() - self.started
        work = self.scanned + self.not_media + self.unscanned + self.undecodable
        return work / elapsed if elapsed > 0 else 0.0

    def total(self) -> int | None:
        """How many objects this sweep goes through, once known: all listed, or all counted ahead
        of the listing (the listing itself waits for the readers, to keep memory flat)."""
        if self.listing_done:
            return self.listed
        if self.counting_done:
            return max(self.counted, self.listed)
        return None

    def eta_s(self) -> float | None:
        total = self.total()
        if total is None:
            return None
        remaining = max(0, total - self.processed)
        if remaining == 0:
            return 0.0
        rate = self.rate()
        return remaining / rate if rate > 0 else None

    def line(self) -> str:
        total = self.total()
        if total is None:
            counting = f" (counting: {self.counted:,} so far)" if self.counted else ""
            head = f"listed {self.listed:,}{counting}  done {self.processed:,}"
            eta_text = "listing…"
        else:
            share = 100.0 * self.processed / total if total else 100.0
            head = f"done {self.processed:,} of {total:,} ({share:.1f}%)"
            eta = self.eta_s()
            eta_text = f"ETA {_duration(eta)}" if eta is not None else "ETA unknown yet"
        return (
            f"{head}  scanned {self.scanned:,}  skipped {self.skipped:,}  flagged {self.flagged:,}  "
            f"unscanned {self.unscanned:,}  errors {self.errors:,}  {self.rate():.1f}/s  {eta_text}"
        )


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Renders :class:`SweepStats`: redrawn at most 10 times a second on a terminal, logged every
    ``log_every`` seconds otherwise (cron, systemd, docker logs)."""

    def __init__(self, stats: SweepStats, stream: TextIO | None = None, log_every: float = 10.0) -> None:
        self.stats = stats
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.log_every = log_every
        self._last = 0.0

    def tick(self) -> None:
        now = time.monotonic()
        if self.tty:
            if now - self._last >= 0.1:
                self._last = now
                self.stream.write("\r\x1b[K" + self.stats.line())
                self.stream.flush()
        elif now - self._last >= self.log_every:
            self._last = now
            log.info("sweep progress: %s", self.stats.line())

    def finish(self, label: str) -> None:
        """Give the summary once: as a log line (stderr), or on the stream when the log level
        hides INFO lines."""
        if self.tty:
            self.stream.write("\r\x1b[K")
        s = self.stats
        elapsed = time.monotonic() - s.started
        summary = (
            f"{label}: {s.listed:,} listed, {s.scanned:,} scanned, {s.skipped:,} skipped (unchanged), "
            f"{s.not_media:,} not media, {s.unscanned:,} unscanned (retried next run), "
            f"{s.undecodable:,} undecodable, {s.too_large:,} too large, {s.flagged:,} flagged, "
            f"{s.actions:,} actions, {s.errors:,} errors, {s.gone:,} vanished, in {_duration(elapsed)}"
        )
        if log.isEnabledFor(logging.INFO):
            log.info("%s", summary)
        else:
            self.stream.write(summary + "\n")
            self.stream.flush()
