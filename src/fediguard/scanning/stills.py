"""What scanners that open still images only are given: fedi-safety workers, which open what they
get with Pillow, answer nothing for a file they cannot open, and read no video.

With such a scanner alive the gateway decodes an upload first, through the same decoder (the
sandbox) as every other decode, so bytes that cannot be decoded never reach a worker: they get the
fail policy at once (``undecodable``). A still image Pillow opens as it is (JPEG, PNG, WebP, a
one-frame GIF…) is handed out as it came. Anything else — a video, an animation, AVIF, JXL, APNG —
is handed out as still frames the gateway renders itself (:func:`~fediguard.media.render.render_still`),
``legacy_frames`` of the frames decoding sampled, spread over the whole (first and last included,
:func:`~fediguard.media.limits.spread_indices`): one job per frame, so a worker's threads scan them
side by side. Their answers are combined for the policy: every frame's report counts, so one frame
reported as CSAM rejects the upload. A frame left without an answer leaves the upload without a
verdict, unless the frames answered already reject it. :class:`StillsRoute` decides which way an
upload goes.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field, replace

from fediguard.banks.pdq import FrameHash, frame_hashes
from fediguard.detectors.base import DetectorResult, Finding, Report
from fediguard.errors import MediaError
from fediguard.media.decode import MediaLimits, spread_indices
from fediguard.media.render import STILL_TYPE, render_still
from fediguard.media.sandbox import Decoder
from fediguard.policy import decide
from fediguard.scanning.bankgate import BankGate
from fediguard.scanning.job import ScanJob, ScanOutcome
from fediguard.scanning.queue import JobQueue, QueueFull
from fediguard.verdicts import Decision, FailReason, PolicyConfig, Verdict

Scanned = tuple[ScanOutcome | None, Decision]

AS_IS_TYPES = frozenset(
    {"image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff", "image/x-icon"}
)
"""Sniffed types of one-frame stills a fedi-safety worker's Pillow opens as they are: handed out
unchanged. Every other upload is handed out as frames the gateway renders."""


@dataclass(frozen=True)
class Stills:
    """An upload decoded first, for scanners that open stills only."""

    as_is: bool
    """The upload itself is a one-frame still they open: hand it out unchanged."""
    frames: list[tuple[int, bytes]] = field(default_factory=list, repr=False)
    """Otherwise: (frame index in the upload, the frame rendered as a JPEG), in order."""
    pdq: list[FrameHash] | None = None
    """Every decoded frame's PDQ hash (when asked for): the bank recheck and the record use them."""


def prepare(data: bytes, decoder: Decoder, limits: MediaLimits, frames: int, hash_frames: bool) -> Stills:
    """Decode ``data`` (raises :class:`~fediguard.errors.MediaError` when it cannot be) and say what
    a stills-only scanner gets of it: the upload as it is, or up to ``frames`` rendered frames.
    Blocking: call in a thread."""
    media = decoder(data, limits=limits)
    pdq = frame_hashes(media.frames) if hash_frames else None
    if media.media_type in AS_IS_TYPES and not media.animated and len(media.frames) == 1:
        return Stills(as_is=True, pdq=pdq)
    count = len(media.frames)
    # The first, the last and the rest spread between; one alone: the middle one.
    chosen = [media.frames[i] for i in (spread_indices(count, frames - 2) if frames > 1 else [count // 2])]
    return Stills(as_is=False, frames=[(f.index, render_still(f.image)) for f in chosen], pdq=pdq)


def frame_jobs(upload: ScanJob, stills: Stills) -> list[ScanJob]:
    """One job per rendered frame, due when the upload is; only stills-only scanners take them."""
    loop = upload.future.get_loop()
    return [
        ScanJob(
            still,
            hashlib.sha256(still).hexdigest(),
            STILL_TYPE,
            upload.deadline,
            loop.create_future(),
            detected_type=STILL_TYPE,
            decoded=True,
            frame=index,
        )
        for index, still in stills.frames
    ]


async def scan_frames(
    queue: JobQueue, upload: ScanJob, stills: Stills, reject_labels: Collection[str]
) -> ScanOutcome:
    """Queue one job per rendered frame, wait for their answers (until the upload's deadline, or a
    frame reports a label that rejects) and :func:`combine` them. Raises QueueFull (nothing queued)."""
    parts = frame_jobs(upload, stills)
    try:
        for part in parts:
            queue.put(part)
        await settled_or_rejected(parts, upload.deadline, reject_labels)
    finally:
        for part in parts:
            if not part.settled:
                queue.withdraw(part)
    return combine(upload, parts, stills.pdq)


async def settled_or_rejected(
    parts: Sequence[ScanJob], deadline: float, reject_labels: Collection[str]
) -> None:
    """Wait until every frame has its answer, one reports a label that rejects (the rest cannot
    change the verdict), or the deadline (on the event loop's clock) passes."""
    loop = asyncio.get_running_loop()
    pending = {part.future for part in parts}
    while pending and (remaining := deadline - loop.time()) > 0:
        done, pending = await asyncio.wait(pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        for future in done:
            findings = (f for result in future.result().results for f in result.findings)
            if any(isinstance(f, Report) and f.label in reject_labels for f in findings):
                return


def combine(upload: ScanJob, parts: Sequence[ScanJob], pdq: list[FrameHash] | None) -> ScanOutcome:
    """The frames' answers as one outcome: every result, its notes naming its frame. ``error`` is
    set when a frame got no answer (the caller may still reject on what the others reported)."""
    results: list[DetectorResult] = []
    scanners: list[str] = []
    missing: list[str] = []
    error: FailReason | None = None
    for part in parts:
        outcome = part.future.result() if part.future.done() else None
        frame = part.frame if part.frame is not None else 0
        if outcome is None or outcome.error is not None:
            error = error or (outcome.error if outcome is not None else FailReason.DEADLINE)
            why = outcome.error_detail if outcome is not None else "no answer in time"
            missing.append(f"frame {frame}: {why}")
            continue
        scanners.append(outcome.scanner)
        results.extend(_of_frame(result, frame) for result in outcome.results)
    detail = f"{len(missing)} of {len(parts)} frames got no verdict ({'; '.join(missing)})" if missing else ""
    return ScanOutcome(
        results=results, detected_type=upload.detected_type, pdq=pdq, error=error, error_detail=detail,
        scanner=",".join(dict.fromkeys(scanners)) or "-", cacheable=False,
    )  # fmt: skip


def _of_frame(result: DetectorResult, frame: int) -> DetectorResult:
    findings: list[Finding] = [
        replace(f, note=f"frame {frame}: {f.note}") if isinstance(f, Report) else f for f in result.findings
    ]
    return replace(result, notes=[f"frame {frame}: {note}" for note in result.notes], findings=findings)


@dataclass(frozen=True)
class StillsRoute:
    """How one upload reaches the scanners: as it is, or, with a scanner that opens stills only alive
    (a fedi-safety worker), decoded first: undecodable bytes get the fail policy at once, and what
    such a scanner cannot open goes to it as rendered frames when no other scanner takes it."""

    queue: JobQueue
    decoder: Decoder
    limits: MediaLimits
    frames: int
    """``legacy_frames``: how many rendered frames an upload is handed out as."""
    banks: BankGate | None
    scan: Callable[[ScanJob], Awaitable[Scanned]]
    """Queue the job for a scanner and decide on its answer (the scan service's)."""
    fail: Callable[[FailReason, str], Decision]
    """The fail policy's decision for a reason (the scan service's: counted and logged)."""

    async def route(
        self, job: ScanJob, timings: dict[str, float], policy: PolicyConfig, *, budget_s: float
    ) -> Scanned:
        scanners = self.queue.scanners
        full = scanners.able_to_take(job.detected_type)  # a scanner that decodes it itself
        if not scanners.stills_only_alive() or (full and job.detected_type not in AS_IS_TYPES):
            return await self.scan(job)
        started = time.perf_counter()
        try:
            stills = await asyncio.to_thread(
                prepare, job.data, self.decoder, self.limits, self.frames, self.banks is not None
            )
        except MediaError as exc:
            outcome = ScanOutcome(
                detected_type=job.detected_type,
                error=FailReason.UNDECODABLE,
                error_detail=str(exc),
                scanner="gateway",
                cacheable=False,
            )
            return outcome, self.fail(FailReason.UNDECODABLE, str(exc))
        finally:
            timings["decode_first"] = time.perf_counter() - started
        job.pdq = stills.pdq
        if stills.as_is:
            job.decoded = True
        elif not full:
            return await self._scan_frames(job, stills, timings, policy, budget_s=budget_s)
        return await self.scan(job)

    async def _scan_frames(
        self,
        job: ScanJob,
        stills: Stills,
        timings: dict[str, float],
        policy: PolicyConfig,
        *,
        budget_s: float,
    ) -> Scanned:
        """Scan an upload as its rendered frames, one job each, and decide on all their answers."""
        started = time.perf_counter()
        try:
            outcome = await scan_frames(self.queue, job, stills, policy.reject_labels)
        except QueueFull as exc:
            return None, self.fail(FailReason.QUEUE_FULL, str(exc))
        finally:
            timings["scan"] = time.perf_counter() - started
        missing, detail = outcome.error, outcome.error_detail
        if missing is FailReason.DEADLINE:
            detail = f"no result within the {budget_s:g} s deadline: {detail}"
        outcome = replace(outcome, error=None, error_detail="")
        if self.banks is not None and self.banks.needs_recheck(outcome):
            outcome = await asyncio.to_thread(self.banks.recheck, outcome)
        if outcome.error is not None:
            return outcome, self.fail(outcome.error, outcome.error_detail)
        decision = decide(outcome.results, policy)
        if missing is not None and decision.verdict is not Verdict.REJECT:
            # A frame nobody answered for may hold what the others do not: no verdict, unless the
            # answered frames reject the upload already.
            return replace(outcome, error=missing, error_detail=detail), self.fail(missing, detail)
        return outcome, decision
