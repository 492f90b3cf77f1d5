"""The spool: decisions the database cannot take right now (locked, full, read-only, down), kept on
local disk until it can.

A spool is a folder (``data_dir/spool``) of segment files, ``<generation>.jsonl``, each line one
decision with its sequence number in the segment: ``{"seq": 7, "decision": {...}}``. Lines are only
ever appended, and every append is fsynced before the decisions in it count as kept. A segment's
generation (the time it was begun and a random part) names it in the database's ``spool_marks``
table, whose ``applied_seq`` is raised in the same transaction as the decisions it covers
(:meth:`~fediguard.records.store.RecordStore.apply_spooled`): a segment is written to the database
exactly once, whatever crashes between that commit and the segment's removal. Generations sort by
time, so segments drain oldest first.

Each segment is held under an exclusive ``flock`` by the process writing or draining it; a segment
left by a process that died (a crash, a restart) is taken over by the next one that opens the spool.
A line cut short by a crash mid-append cannot be read: it is logged and skipped, and never stops the
lines after it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fediguard.errors import RecordError
from fediguard.logs import shown
from fediguard.records.store import NewDecision

log = logging.getLogger("fediguard.records")

SUFFIX = ".jsonl"


@dataclass
class Segment:
    """One segment file this process holds (under its ``flock``)."""

    path: Path
    fd: int
    lines: int = 0
    """Decisions in it not yet known to be in the database."""
    next_seq: int = 1
    size: int = 0
    """Bytes of whole lines: an append that fails is cut back to this."""
    open_for_append: bool = False
    """This process's own segment, still taking decisions (a taken-over one never does)."""
    damaged: set[int] = field(default_factory=set)
    """Line numbers already reported as unreadable (each is logged once)."""

    @property
    def generation(self) -> str:
        return self.path.name.removesuffix(SUFFIX)


def to_json(decision: NewDecision) -> dict[str, Any]:
    data = dataclasses.asdict(decision)
    if decision.created_at is not None:
        data["created_at"] = decision.created_at.isoformat()
    return data


def from_json(data: dict[str, Any]) -> NewDecision:
    known = {name: value for name, value in data.items() if name in NewDecision.__dataclass_fields__}
    if isinstance(known.get("created_at"), str):
        known["created_at"] = datetime.fromisoformat(known["created_at"])
    return NewDecision(**known)


class Spool:
    """Segments of decisions waiting for the database. Not thread-safe: one thread (the record
    writer) appends and drains."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._segments: list[Segment] = []
        self._own: Segment | None = None

    def open(self) -> None:
        """Create the folder, check that it takes fsynced writes, and take over the segments of
        processes that are gone. Raises RecordError naming ``data_dir``."""
        self.probe()
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            segment = self._take(path)
            if segment is not None:
                self._segments.append(segment)
                log.warning(
                    "spool: taking over %s, %d decision(s) not yet known to be in the database",
                    shown(str(path)),
                    segment.lines,
                )

    def probe(self) -> None:
        """Create the folder and check that it takes fsynced writes; raises RecordError naming
        ``data_dir`` when it does not."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / f".probe-{os.getpid()}"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"probe\n")
                os.fsync(fd)
            finally:
                os.close(fd)
                probe.unlink()
        except OSError as exc:
            raise RecordError(
                f"the spool folder {self.folder} (in data_dir) cannot be written: {exc.strerror or exc}; "
                "decisions the database cannot take would be lost. Fix data_dir's permissions or space."
            ) from exc

    def _take(self, path: Path) -> Segment | None:
        """The segment at ``path`` if no live process holds it."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        segment = Segment(path, fd, size=os.fstat(fd).st_size)
        for seq, _ in self.entries(segment):
            segment.lines += 1
            segment.next_seq = seq + 1
        return segment

    @property
    def depth(self) -> int:
        """Decisions in the spool not yet known to be in the database."""
        return sum(s.lines for s in self._segments)

    def segments(self) -> list[Segment]:
        """The segments this process holds, oldest first."""
        return sorted(self._segments, key=lambda s: s.generation)

    def append(self, batch: Sequence[NewDecision]) -> None:
        """Append decisions to this process's segment and fsync it; raises OSError if they could not
        all be kept (the segment is then cut back to its last whole line)."""
        segment = self._own or self._begin()
        first = segment.next_seq
        lines = b"".join(
            json.dumps({"seq": first + i, "decision": to_json(d)}, separators=(",", ":")).encode() + b"\n"
            for i, d in enumerate(batch)
        )
        try:
            written = 0
            while written < len(lines):
                written += os.write(segment.fd, lines[written:])
            os.fsync(segment.fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(segment.fd, segment.size)
            raise
        segment.size += len(lines)
        segment.lines += len(batch)
        segment.next_seq = first + len(batch)

    def _begin(self) -> Segment:
        generation = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"
        path = self.folder / f"{generation}{SUFFIX}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        _fsync_folder(self.folder)
        segment = Segment(path, fd, open_for_append=True)
        self._own = segment
        self._segments.append(segment)
        return segment

    def entries(self, segment: Segment) -> Iterator[tuple[int, NewDecision]]:
        """The segment's decisions with their sequence numbers, in order; unreadable lines (a crash
        cut one short) are logged once and skipped."""
        with open(segment.fd, "rb", closefd=False) as file:
            file.seek(0)
            for number, line in enumerate(file, start=1):
                try:
                    item = json.loads(line)
                    entry = int(item["seq"]), from_json(item["decision"])
                except (ValueError, KeyError, TypeError) as exc:
                    if number not in segment.damaged:
                        segment.damaged.add(number)
                        log.warning(
                            "spool: skipping line %d of %s, which cannot be read (%s): %d bytes, %s",
                            number, shown(str(segment.path)), type(exc).__name__, len(line),
                            "cut short by a crash mid-append" if not line.endswith(b"\n") else "damaged",
                        )  # fmt: skip
                    continue
                yield entry

    def applied(self, segment: Segment, count: int) -> None:
        """``count`` more of the segment's decisions are now in the database."""
        segment.lines = max(0, segment.lines - count)

    def remove(self, segment: Segment) -> None:
        """Delete a segment whose every decision is in the database."""
        segment.path.unlink(missing_ok=True)
        _fsync_folder(self.folder)
        os.close(segment.fd)
        self._segments.remove(segment)
        if segment is self._own:
            self._own = None

    def close(self) -> None:
        """Let go of the segments (they stay on disk for the next process)."""
        for segment in self._segments:
            os.close(segment.fd)
        self._segments.clear()
        self._own = None


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
