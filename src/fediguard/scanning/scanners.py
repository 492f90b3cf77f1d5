"""Who can scan: every scanner the gateway knows (in-process slots and remote workers), what each
takes, whether it is alive, and the figures `fediguard workers` and `/metrics` show of it.

A remote worker polls again the moment it posts a result, so one that has neither waited nor held a
lease for :data:`REMOTE_STALE_S` is gone, and one that said it is leaving is gone at once (the leases
it holds it still completes); in-process slots are alive while registered.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from fediguard.metrics import Metrics
from fediguard.scanning.job import ScanJob

REMOTE_STALE_S = 1.0
"""A remote worker polls again the moment it posts a result, so one that has neither waited nor
held a lease for this long is gone: uploads then get the fail policy at once, not at their deadline.
It covers the round trip between a worker's result and its next poll over a slow link."""

MediaFilter = Callable[[str | None], bool]
"""Whether a scanner takes an upload of this media type (sniffed from its bytes)."""


@dataclass
class ScannerState:
    """What the gateway knows of one scanner, for readiness and the `workers` listing."""

    name: str
    remote: bool
    last_seen: float = 0.0  # wall clock
    waiting: int = 0
    busy: int = 0
    completed: int = 0
    failed: int = 0
    detectors: str = ""
    left: bool = False
    """It said it is leaving (a worker stopped by SIGTERM): not alive for new jobs until it polls again."""
    takes: MediaFilter | None = field(default=None, repr=False)
    """Which media types it scans (None: all)."""
    stills_only: bool = False
    """It opens only stills the gateway decoded first (a fedi-safety worker): it takes uploads the
    gateway decoded (``ScanJob.decoded``) and the frames it rendered, nothing else."""
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=100_000), repr=False)
    """Monotonic times of recent completions, for the jobs-per-minute figure."""

    def per_minute(self, now: float | None = None) -> int:
        """Jobs completed in the last 60 seconds."""
        cutoff = (time.monotonic() if now is None else now) - 60.0
        while self.recent and self.recent[0] < cutoff:
            self.recent.popleft()
        return len(self.recent)

    def completed_one(self) -> None:
        self.completed += 1
        self.recent.append(time.monotonic())
        self.last_seen = time.time()

    def scans(self, job: ScanJob) -> bool:
        """Whether it takes this job: a rendered frame only if it opens stills only; an upload by its
        sniffed type, and only once decoded if it opens stills only."""
        if job.frame is not None:
            return self.stills_only
        return self.takes_type(job.detected_type, decoded=job.decoded)

    def takes_type(self, media_type: str | None, decoded: bool = False) -> bool:
        if self.stills_only and not decoded:
            return False
        return self.takes is None or self.takes(media_type)

    def seen(self) -> None:
        self.last_seen = time.time()


class ScannerRegistry:
    """Every scanner by name. Runs on the gateway's event loop, like the queue that consults it."""

    def __init__(self, remote_stale_s: float = REMOTE_STALE_S) -> None:
        self.remote_stale_s = remote_stale_s
        self._states: dict[str, ScannerState] = {}
        self.remote_closed = False
        """The gateway is shutting down: remote workers no longer count as alive."""

    def register(
        self,
        name: str,
        remote: bool,
        detectors: str = "",
        takes: MediaFilter | None = None,
        stills_only: bool = False,
    ) -> ScannerState:
        state = self.state(name, remote)
        state.detectors = detectors or state.detectors
        state.takes = takes
        state.stills_only = stills_only
        state.seen()
        return state

    def unregister(self, name: str) -> None:
        self._states.pop(name, None)

    def state(self, name: str, remote: bool = False) -> ScannerState:
        """The scanner's state, made on first sight."""
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = ScannerState(name=name, remote=remote)
        return state

    def get(self, name: str) -> ScannerState | None:
        return self._states.get(name)

    def __getitem__(self, name: str) -> ScannerState:
        return self._states[name]

    def __len__(self) -> int:
        return len(self._states)

    def __iter__(self) -> Iterator[ScannerState]:
        return iter(list(self._states.values()))

    def values(self) -> list[ScannerState]:
        return list(self._states.values())

    def alive(self) -> list[ScannerState]:
        """In-process slots, and remote workers that are waiting, or busy or seen recently enough to
        come back for a job unless they said they are leaving."""
        if self.remote_closed:
            return [s for s in self._states.values() if not s.remote]
        now = time.time()
        return [
            s
            for s in self._states.values()
            if not s.remote
            or s.waiting > 0
            or (not s.left and (s.busy > 0 or now - s.last_seen < self.remote_stale_s))
        ]

    def able_to_scan(self) -> bool:
        """Whether any scanner is alive now."""
        return bool(self.alive())

    def able_to_take(self, media_type: str | None, decoded: bool = False) -> bool:
        """Whether a scanner alive now takes an upload of this media type (an unknown one, None: one
        that takes any), not decoded by the gateway first unless ``decoded``."""
        return any(s.takes_type(media_type, decoded) for s in self.alive())

    def able_to_take_job(self, job: ScanJob) -> bool:
        """Whether a scanner alive now takes this job."""
        return any(s.scans(job) for s in self.alive())

    def stills_only_alive(self) -> bool:
        """Whether a scanner that opens stills only (a fedi-safety worker) is alive now: uploads are
        then decoded first, for it (:mod:`fediguard.scanning.stills`)."""
        return any(s.stills_only for s in self.alive())


class ScannerGauges:
    """Copies the registry's figures into the Prometheus metrics each time they are collected."""

    def __init__(self, registry: ScannerRegistry, metrics: Metrics) -> None:
        self.registry = registry
        self.metrics = metrics
        self._reported: dict[tuple[str, str], int] = {}

    def refresh(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        for state in self.registry:
            kind = "remote" if state.remote else "local"
            key = (kind, "busy" if state.busy > 0 else "idle")
            counts[key] = counts.get(key, 0) + 1
            for outcome, total in (("completed", state.completed), ("expired", state.failed)):
                # Counters follow the registry's totals; a scanner that re-registers starts again at 0.
                reported = self._reported.get((state.name, outcome), 0)
                if total > reported:
                    self.metrics.worker_jobs.labels(state.name, outcome).inc(total - reported)
                self._reported[(state.name, outcome)] = total
            self.metrics.worker_last_seen.labels(state.name).set(state.last_seen)
        for kind in ("local", "remote"):
            for st in ("busy", "idle"):
                self.metrics.scanners.labels(kind, st).set(counts.get((kind, st), 0))
