"""A scan job and what scanning it produced."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from fediguard.banks.pdq import FrameHash
from fediguard.detectors.base import DetectorResult
from fediguard.verdicts import FailReason


@dataclass(frozen=True)
class ScanOutcome:
    """What a scanner (local or remote) found. ``error`` set means no verdict: the fail policy decides."""

    results: list[DetectorResult] = field(default_factory=list)
    detected_type: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    pdq: list[FrameHash] | None = None
    """Every frame's PDQ hash, as the gateway keeps it (None: the frames were not hashed)."""
    error: FailReason | None = None
    error_detail: str = ""
    scanner: str = "local"
    cacheable: bool = True
    """Whether its verdict may be reused for the same bytes: only if the gateway's own detectors
    reached it (not a fedi-safety worker's yes/no), and not a reuse itself."""
    remote: bool = False
    """Sent by a remote worker (set by the gateway's routes, never by the worker): the gateway keeps
    none of its hashes, type or timings as sent."""


@dataclass(eq=False)
class ScanJob:
    """One upload waiting for a scanner. ``deadline`` is on the event loop's clock."""

    # Never in a repr: deque.remove() puts the repr of what it misses in its ValueError, and asyncio
    # reprs futures (whose results hold jobs) as it goes; that once cost 10 % of the gateway's CPU
    # for 3 KB uploads, and would build a string of ~4x the upload's size for a 40 MB one.
    data: bytes = field(repr=False)
    sha256: str
    media_type: str | None
    """As the caller declared it (a Content-Type): quoted, never trusted."""
    deadline: float
    future: asyncio.Future[ScanOutcome]
    detected_type: str | None = None
    """As sniffed from the bytes by the gateway: what decides which scanners may take the job."""
    decoded: bool = False
    """The gateway decoded the upload before queuing it: only then may a scanner that opens nothing
    else (a fedi-safety worker) take it (:mod:`fediguard.scanning.stills`)."""
    frame: int | None = None
    """Set when the job is not the upload but one of its frames the gateway rendered as a still
    (that frame's index): only scanners that open stills only take it."""
    pdq: list[FrameHash] | None = field(default=None, repr=False)
    """The frames' hashes the gateway made when it decoded the upload first (so a remote result
    needs no second decode to be rechecked against the banks)."""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    attempts: int = 0
    enqueued_at: float = 0.0

    @property
    def settled(self) -> bool:
        return self.future.done()
