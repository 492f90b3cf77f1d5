"""What the job queue hands a scanner: a lease on one job, how it was handed out (the protocol only
it may renew or complete it through), and a scanner waiting for one (:mod:`~fediguard.scanning.queue`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum

from fediguard.scanning.job import ScanJob


class LeaseProtocol(StrEnum):
    """How a lease was handed out: only the same protocol may renew or complete it, so a worker key
    cannot settle through one protocol a job leased through another (whose checks differ)."""

    LOCAL = "local"
    NATIVE = "native"
    LEGACY = "legacy"


HOLDER_KIND = {
    LeaseProtocol.LOCAL: "in-process",
    LeaseProtocol.NATIVE: "remote",
    LeaseProtocol.LEGACY: "fedi-safety",
}
"""How a lease's holder is named in logs and reasons, by the protocol it was handed out through."""


@dataclass
class Lease:
    id: str
    job: ScanJob
    scanner: str
    expires: float
    started: float = 0.0
    protocol: LeaseProtocol = LeaseProtocol.LOCAL
    to_deadline: bool = False
    """Held until the job's deadline minus a margin (a protocol that cannot renew a lease): when it
    runs out nobody else could scan the job in time, so the job gets no verdict instead of going back."""
    ended: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    """Set when the lease ends, however (a result, expiry, withdrawal, abandonment, shutdown)."""
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)


@dataclass(eq=False)
class Waiter:
    """A scanner waiting in :meth:`~fediguard.scanning.queue.JobQueue.lease`, and how the lease it
    gets is to be made."""

    future: asyncio.Future[Lease | None]
    scanner: str
    lease_s: float
    protocol: LeaseProtocol
    margin: float | None
    """None: a lease of ``lease_s``; else one until the job's deadline minus this margin."""
