"""A scan job and what scanning it produced."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from fediguard.detectors.base import DetectorResult
from fediguard.policy import FailReason


@dataclass(frozen=True)
class ScanOutcome:
    """What a scanner (local or remote) found. ``error`` set means no verdict: the fail policy decides."""

    results: list[DetectorResult] = field(default_factory=list)
    detected_type: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    pdq: list[dict[str, Any]] | None = None
    error: FailReason | None = None
    error_detail: str = ""
    scanner: str = "local"


@dataclass(eq=False)
class ScanJob:
    """One upload waiting for a scanner. ``deadline`` is on the event loop's clock."""

    data: bytes
    sha256: str
    media_type: str | None
    deadline: float
    future: asyncio.Future[ScanOutcome]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    attempts: int = 0
    enqueued_at: float = 0.0

    @property
    def settled(self) -> bool:
        return self.future.done()
