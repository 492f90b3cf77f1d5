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

    def to_json(self) -> dict[str, Any]:
        """The form a remote worker posts back (without ``scanner``: the gateway knows who sent it)."""
        return {
            "results": [r.to_json() for r in self.results],
            "detected_type": self.detected_type,
            "timings": self.timings,
            "pdq": self.pdq,
            "error": self.error.value if self.error else None,
            "error_detail": self.error_detail,
        }

    @classmethod
    def from_json(cls, data: Any, scanner: str) -> ScanOutcome:
        """Parse a worker's untrusted answer; ValueError when malformed."""
        if not isinstance(data, dict):
            raise ValueError("result must be a JSON object")
        try:
            error = FailReason(data["error"]) if data.get("error") else None
            if error not in (None, FailReason.UNDECODABLE, FailReason.SCANNER_ERROR):
                raise ValueError(f"a worker cannot report {error}")
            results = data.get("results", [])
            if not isinstance(results, list):
                raise ValueError("results must be a list")
            timings = {str(k): float(v) for k, v in dict(data.get("timings") or {}).items()}
            pdq = data.get("pdq")
            if pdq is not None and not isinstance(pdq, list):
                raise ValueError("pdq must be a list")
            detected = data.get("detected_type")
            return cls(
                results=[DetectorResult.from_json(r) for r in results],
                detected_type=str(detected)[:100] if detected else None,
                timings={f"remote:{k}"[:64]: v for k, v in list(timings.items())[:50]},
                pdq=pdq,
                error=error,
                error_detail=str(data.get("error_detail", ""))[:2000],
                scanner=scanner,
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed result: {exc!r}") from exc


LEGACY_DETECTOR = "fedi-safety"
"""The detector name given to a fedi-safety worker's boolean answer, which no configured detector
produced: such outcomes are recorded but never reused as cached verdicts."""


@dataclass(eq=False)
class ScanJob:
    """One upload waiting for a scanner. ``deadline`` is on the event loop's clock."""

    # Never in a repr: deque.remove() puts the repr of what it misses in its ValueError, and asyncio
    # reprs futures (whose results hold jobs) as it goes; that once cost 10 % of the gateway's CPU
    # for 3 KB uploads, and would build a string of ~4x the upload's size for a 40 MB one.
    data: bytes = field(repr=False)
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
