"""Runs the configured detectors over one upload, cheapest first, in the calling thread.

Used by every scanner: the in-process slots and remote workers. It never decides: it returns the
detectors' results (or why there are none) for the gateway's policy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from fediguard.banks.pdq import FrameHash, frame_hashes
from fediguard.config import Settings
from fediguard.detectors.base import Detector, DetectorResult, Subject
from fediguard.detectors.registry import build_detectors, fingerprint
from fediguard.errors import MediaError
from fediguard.media.decode import MediaLimits, decode
from fediguard.media.frames import DecodedMedia
from fediguard.media.sandbox import Decoder, SandboxLimits
from fediguard.scanning.job import ScanOutcome
from fediguard.verdicts import FailReason

log = logging.getLogger(__name__)


PDQ_STAGE = "pdq@1"
"""Named in a pipeline's fingerprint when it hashes frames, so gateway and workers agree on it."""


class BankCheck(Protocol):
    """Matches frame hashes against the hash banks: the gateway's BankMatcher in-process, or a
    remote worker asking its gateway. Returns the ``banks`` result (None when nothing matched)."""

    def check(self, hashes: Sequence[FrameHash]) -> DetectorResult | None: ...


class Pipeline:
    """One detector set plus the media limits. Not thread-safe: one Pipeline per scanner thread.

    ``decoder`` decodes uploads: :func:`~fediguard.media.decode.decode` in this thread, or a
    :class:`~fediguard.media.sandbox.DecoderPool`'s, in a child process under OS limits. With
    ``hash_frames`` every decoded frame gets a PDQ hash (recorded, and matched against the banks
    by the gateway); with a ``matcher`` (in-process scanners) the banks are checked right after
    hashing, so an allow or deny hit runs no model at all.
    """

    def __init__(
        self,
        detectors: Sequence[Detector],
        limits: MediaLimits,
        scanner: str = "local",
        hash_frames: bool = False,
        matcher: BankCheck | None = None,
        decoder: Decoder = decode,
    ) -> None:
        self.detectors = sorted(detectors, key=lambda d: d.cost)
        self.decoder = decoder
        self.limits = limits
        self.scanner = scanner
        self.hash_frames = hash_frames
        self.matcher = matcher

    @property
    def fingerprint(self) -> str:
        detectors = fingerprint(self.detectors)
        return f"{detectors},{PDQ_STAGE}" if self.hash_frames else detectors

    def warm_up(self) -> None:
        for detector in self.detectors:
            detector.warm_up()

    def run(
        self, data: bytes, sha256: str, media_type: str | None, banks: BankCheck | None = None
    ) -> ScanOutcome:
        """Scan one upload. ``banks`` checks the frames' hashes for this run instead of the
        pipeline's own matcher (a remote worker asks the gateway that leased it the job)."""
        matcher = banks or self.matcher
        timings: dict[str, float] = {}

        def _decode() -> DecodedMedia:
            started = time.perf_counter()
            try:
                return self.decoder(data, declared_type=media_type, limits=self.limits)
            finally:
                timings["decode"] = time.perf_counter() - started

        subject = Subject(data, sha256, media_type, _decode)
        results: list[DetectorResult] = []
        pdq: list[FrameHash] | None = None
        try:
            for detector in self.detectors:
                if detector.cost > 0 and self.hash_frames and pdq is None:
                    pdq, hit = self._hash(subject, timings, matcher)
                    if hit is not None:
                        results.append(hit)
                        if hit.decisive:  # not only suspended entries' matches: the models run
                            break
                result = self._detect(detector, subject, timings)
                results.append(result)
                if result.decisive:
                    if self.hash_frames and pdq is None:
                        # A list hit decides without models, but the frames are still hashed: the
                        # record keeps them (for `fediguard confirm`), and an exact allow still meets
                        # the deny banks' PDQ hashes (an equally close deny entry wins the tie).
                        try:
                            pdq, hit = self._hash(subject, timings, matcher)
                        except MediaError:
                            pdq, hit = None, None  # undecodable: the list's verdict stands alone
                        if hit is not None:
                            results.append(hit)
                    break
            else:
                if self.hash_frames and pdq is None:
                    pdq, hit = self._hash(subject, timings, matcher)
                    if hit is not None:
                        results.append(hit)
        except MediaError as exc:
            return ScanOutcome(
                timings=timings, error=FailReason.UNDECODABLE, error_detail=str(exc), scanner=self.scanner
            )
        except _DetectorFailed as exc:
            return ScanOutcome(
                timings=timings, error=FailReason.SCANNER_ERROR, error_detail=str(exc), scanner=self.scanner
            )
        detected = subject.media.media_type if "media" in subject.__dict__ else None
        return ScanOutcome(
            results=results, detected_type=detected, timings=timings, pdq=pdq, scanner=self.scanner
        )

    def _detect(self, detector: Detector, subject: Subject, timings: dict[str, float]) -> DetectorResult:
        started = time.perf_counter()
        decode_before = timings.get("decode", 0.0)
        try:
            result = detector.detect(subject)
        except MediaError:
            raise
        except Exception as exc:
            log.exception("detector %s failed on %s", detector.name, subject.sha256[:12])
            raise _DetectorFailed(f"detector {detector.name} failed: {type(exc).__name__}: {exc}") from exc
        # Decoding happens inside the first detector that needs frames; it is timed on its own.
        seconds = time.perf_counter() - started - (timings.get("decode", 0.0) - decode_before)
        timings[f"detector:{detector.name}"] = seconds
        return replace(result, seconds=seconds)

    def _hash(
        self, subject: Subject, timings: dict[str, float], matcher: BankCheck | None
    ) -> tuple[list[FrameHash], DetectorResult | None]:
        frames = subject.media.frames
        started = time.perf_counter()
        hashes = frame_hashes(frames)
        timings["pdq"] = time.perf_counter() - started
        if matcher is None:
            return hashes, None
        started = time.perf_counter()
        hit = matcher.check(hashes)
        timings["banks"] = time.perf_counter() - started
        return hashes, hit


class _DetectorFailed(Exception):
    pass


PipelineFactory = Callable[[str], Pipeline]
"""Makes the pipeline of one scanner slot, given the slot's name."""


def media_limits(settings: Settings) -> MediaLimits:
    return MediaLimits(
        max_pixels=settings.max_pixels,
        max_frame_side=settings.max_frame_side,
        sample_frames=settings.sample_frames,
        max_bytes=settings.max_body_bytes,
    )


def sandbox_limits(settings: Settings) -> SandboxLimits:
    return SandboxLimits(
        memory_mb=settings.decode_memory_mb, cpu_s=settings.decode_cpu_s, timeout_s=settings.decode_timeout_s
    )


def make_pipeline_factory(
    settings: Settings, matcher: BankCheck | None = None, decoder: Decoder = decode
) -> PipelineFactory:
    """Pipelines with the configured detectors; ``matcher`` checks banks in-process (None in workers);
    ``decoder`` is the decoder sandbox's when it is on."""
    limits = media_limits(settings)

    def _make(scanner: str) -> Pipeline:
        detectors = build_detectors(settings)
        return Pipeline(
            detectors, limits, scanner=scanner, hash_frames=settings.banks, matcher=matcher, decoder=decoder
        )

    return _make
