"""Runs the configured detectors over one upload, cheapest first, in the calling thread.

Used by every scanner: the in-process slots and remote workers. It never decides: it returns the
detectors' results (or why there are none) for the gateway's policy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace

from fediguard.detectors.base import Detector, Subject
from fediguard.errors import MediaError
from fediguard.media.decode import MediaLimits, decode
from fediguard.media.frames import DecodedMedia
from fediguard.policy import FailReason
from fediguard.scanning.job import ScanOutcome

log = logging.getLogger(__name__)


class Pipeline:
    """One detector set plus the media limits. Not thread-safe: one Pipeline per scanner thread."""

    def __init__(self, detectors: Sequence[Detector], limits: MediaLimits, scanner: str = "local") -> None:
        self.detectors = sorted(detectors, key=lambda d: d.cost)
        self.limits = limits
        self.scanner = scanner

    def warm_up(self) -> None:
        for detector in self.detectors:
            detector.warm_up()

    def run(self, data: bytes, sha256: str, media_type: str | None) -> ScanOutcome:
        timings: dict[str, float] = {}

        def _decode() -> DecodedMedia:
            started = time.perf_counter()
            try:
                return decode(data, declared_type=media_type, limits=self.limits)
            finally:
                timings["decode"] = time.perf_counter() - started

        subject = Subject(data, sha256, media_type, _decode)
        results = []
        for detector in self.detectors:
            started = time.perf_counter()
            decode_before = timings.get("decode", 0.0)
            try:
                result = detector.detect(subject)
            except MediaError as exc:
                return ScanOutcome(
                    timings=timings, error=FailReason.UNDECODABLE, error_detail=str(exc), scanner=self.scanner
                )
            except Exception as exc:
                log.exception("detector %s failed on %s", detector.name, sha256[:12])
                return ScanOutcome(
                    timings=timings,
                    error=FailReason.SCANNER_ERROR,
                    error_detail=f"detector {detector.name} failed: {type(exc).__name__}: {exc}",
                    scanner=self.scanner,
                )
            # Decoding happens inside the first detector that needs frames; it is timed on its own.
            decode_spent = timings.get("decode", 0.0) - decode_before
            seconds = time.perf_counter() - started - decode_spent
            timings[f"detector:{detector.name}"] = seconds
            results.append(replace(result, seconds=seconds))
            if result.decisive:
                break
        detected = subject.media.media_type if "media" in subject.__dict__ else None
        return ScanOutcome(results=results, detected_type=detected, timings=timings, scanner=self.scanner)
