"""Runs the configured detectors over one upload, cheapest first, in the calling thread.

Used by every scanner: the in-process slots and remote workers. It never decides: it returns the
detectors' results (or why there are none) for the gateway's policy.

A cascade: ``screened`` detectors (the age estimator) run last and only on the frames an earlier
detector found explicit at or above ``screening`` (the ``screening_threshold`` setting, never above
any ``explicit_threshold``), since the policy reads faces only in frames explicit at
``explicit_threshold``: the verdicts are those of running everything, and a frame with no explicit
finding costs decode, PDQ and the nudity model only. ``screening`` 0 runs every detector on every frame.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from fediguard.banks.pdq import FrameHash, frame_hashes
from fediguard.config import Settings
from fediguard.detectors.base import Detector, DetectorResult, Explicit, Subject
from fediguard.detectors.registry import build_detectors, fingerprint
from fediguard.errors import MediaError, RecordError
from fediguard.media.decode import MediaLimits, decode
from fediguard.media.frames import DecodedMedia
from fediguard.media.sandbox import Decoder, SandboxLimits
from fediguard.scanning.job import ScanOutcome
from fediguard.verdicts import FailReason

log = logging.getLogger(__name__)


PDQ_STAGE = "pdq@1"
"""Named in a pipeline's fingerprint when it hashes frames, so gateway and workers agree on it."""
SCREEN_STAGE = "screen@"
"""``screen@THRESHOLD`` in a pipeline's fingerprint when screened detectors skip frames."""


def is_stage(part: str) -> bool:
    """Whether a part of a pipeline fingerprint names a stage (PDQ, screening), not a detector."""
    return part == PDQ_STAGE or part.startswith(SCREEN_STAGE)


def screened(detector: Detector) -> bool:
    """Whether a detector runs only on the frames that passed screening (its ``screened`` attribute)."""
    return bool(getattr(detector, "screened", False))


class BankCheck(Protocol):
    """Matches frame hashes against the hash banks: the gateway's BankMatcher in-process, or a
    remote worker asking its gateway. Returns the ``banks`` result (None when nothing matched)."""

    def check(self, hashes: Sequence[FrameHash]) -> DetectorResult | None: ...


class Pipeline:
    """One detector set plus the media limits. Not thread-safe: one Pipeline per scanner thread.

    ``decoder`` decodes uploads: :func:`~fediguard.media.decode.decode` in this thread, or a
    :class:`~fediguard.media.sandbox.DecoderPool`'s, in a child process under OS limits. With
    ``hash_frames`` every decoded frame gets a PDQ hash (recorded, and matched against the banks
    by the gateway; with ``dihedral`` their flipped and rotated copies too); with a ``matcher``
    (in-process scanners) the banks are checked right after hashing, so an allow or deny hit runs no
    model at all.
    """

    def __init__(
        self,
        detectors: Sequence[Detector],
        limits: MediaLimits,
        scanner: str = "local",
        hash_frames: bool = False,
        matcher: BankCheck | None = None,
        decoder: Decoder = decode,
        screening: float = 0.0,
        dihedral: bool = False,
    ) -> None:
        if not 0.0 <= screening <= 1.0:
            raise ValueError(f"screening must be within 0..1, got {screening}")
        self.detectors = sorted(detectors, key=lambda d: (screened(d), d.cost))
        self.screening = screening
        self.dihedral = dihedral
        self.decoder = decoder
        self.limits = limits
        self.scanner = scanner
        self.hash_frames = hash_frames
        self.matcher = matcher

    @property
    def fingerprint(self) -> str:
        parts = [fingerprint(self.detectors)]
        if self.hash_frames:
            parts.append(PDQ_STAGE)
        if self.screening > 0 and any(screened(d) for d in self.detectors):
            parts.append(f"{SCREEN_STAGE}{self.screening:g}")
        return ",".join(parts)

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
                        if hit.decisive:  # a match that only flags for review lets the models run
                            break
                result = self._screen(detector, subject, results)
                if result is None:
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
        except RecordError as exc:  # the banks' database failed (in-process bank check)
            return ScanOutcome(
                timings=timings, error=FailReason.RECORD_ERROR, error_detail=str(exc), scanner=self.scanner
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

    def _screen(
        self, detector: Detector, subject: Subject, results: list[DetectorResult]
    ) -> DetectorResult | None:
        """For a screened detector: sets the frames it may look at, and returns its empty result
        when there are none (it is not run). None: run it."""
        if self.screening <= 0 or not screened(detector):
            subject.screen = None
            return None
        frames = frozenset(
            f.frame
            for r in results
            for f in r.findings
            if isinstance(f, Explicit) and not f.flat and f.score >= self.screening
        )
        subject.screen = frames
        if frames:
            return None
        note = f"not run: no frame explicit at or above the screening threshold {self.screening:g}"
        return DetectorResult(detector.name, detector.version, notes=[note])

    def _hash(
        self, subject: Subject, timings: dict[str, float], matcher: BankCheck | None
    ) -> tuple[list[FrameHash], DetectorResult | None]:
        frames = subject.media.frames
        started = time.perf_counter()
        hashes = frame_hashes(frames, dihedral=self.dihedral)
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
            detectors, limits, scanner=scanner, hash_frames=settings.banks, matcher=matcher, decoder=decoder,
            screening=settings.screening_threshold,
            dihedral=settings.pdq_dihedral,
        )  # fmt: skip

    return _make
