"""The one place where bytes become a recorded decision, for the gateway, `fediguard scan` and the
sweeper alike: hash, queue for a scanner, wait within the deadline, apply the policy (or the fail
policy), record, count and log.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from fediguard.banks.pdq import FrameHash
from fediguard.config import Settings
from fediguard.errors import MediaError, RecordError
from fediguard.evidence import EvidenceVault, load_recipient
from fediguard.media.decode import decode
from fediguard.media.sandbox import Decoder, DecoderPool
from fediguard.media.sniff import sniff
from fediguard.metrics import Metrics
from fediguard.policy import decide
from fediguard.records import NewDecision, RecordStore
from fediguard.records.spool import Spool
from fediguard.records.store import describe_error
from fediguard.records.writer import RecordWriter
from fediguard.scanning.bankgate import BankGate
from fediguard.scanning.job import ScanJob, ScanOutcome
from fediguard.scanning.local import LocalScanner
from fediguard.scanning.pipeline import Pipeline, make_pipeline_factory, media_limits, sandbox_limits
from fediguard.scanning.queue import JobQueue, QueueFull
from fediguard.scanning.scanners import ScannerGauges
from fediguard.scanning.stills import AS_IS_TYPES, Stills, prepare, scan_frames
from fediguard.verdicts import REVIEW, Decision, FailReason, PolicyConfig, Verdict, fail_decision

log = logging.getLogger("fediguard.decisions")

_HASH_IN_THREAD_BYTES = 256 * 1024
"""Above this size SHA-256 runs in a thread: 40 MB takes tens of milliseconds, too long for the loop."""

RECORD_GRACE_S = 0.5
"""With a spool, an answer waits for its record until the upload's deadline, and at least this long
(a decision made at the deadline itself): then it goes out, its record to be written later."""

_DATABASE_ERRORS = (SQLAlchemyError, RecordError)


@dataclass(frozen=True)
class DecisionOutcome:
    decision: Decision
    record_id: int | None
    sha256: str
    size: int
    timings: dict[str, float] = field(default_factory=dict)
    scan: ScanOutcome | None = None
    spooled: bool = False
    """Its record was not written in time (``record_id`` None): it waits in the spool, or is being
    written, and reaches the database later."""


class ScanService:
    """Owns the job queue, the in-process scanner, the bank gate and the decoder sandbox they share;
    answers :meth:`screen` calls."""

    def __init__(
        self,
        settings: Settings,
        store: RecordStore | None,
        metrics: Metrics | None = None,
        pipeline_factory: Callable[[str], Pipeline] | None = None,
        *,
        record: bool = True,
    ) -> None:
        self.settings = settings
        self.store = store
        self.record = record
        """Whether decisions are written to ``store``; without, it only serves the banks and the
        verdict cache (`fediguard scan --no-record`: the same pipeline, nothing written)."""
        self.metrics = metrics or Metrics()
        self.queue = JobQueue(settings.queue_max, lease_s=settings.lease_s)
        self.banks: BankGate | None = None
        self.pipeline_factory = pipeline_factory or self._default_pipeline
        self.local: LocalScanner | None = None
        self.writer: RecordWriter | None = None
        self.sandbox: DecoderPool | None = None
        """Decoder child processes (``decode_sandbox``), one per scanner thread."""
        self.detector_fingerprint = ""
        self.evidence: EvidenceVault | None = None
        """Sealed evidence (``evidence_labels``): what screen keeps, encrypted to the public key."""
        self._expiry: asyncio.Task[None] | None = None
        gauges = ScannerGauges(self.queue.scanners, self.metrics)
        self.metrics.on_collect(gauges.refresh)
        self.metrics.on_collect(self._refresh_queue_gauges)

    @property
    def decoder(self) -> Decoder:
        """What scanners and the bank gate decode uploads with: the sandbox's when it is on."""
        return self.sandbox.decode if self.sandbox is not None else decode

    def _default_pipeline(self, scanner: str) -> Pipeline:
        return make_pipeline_factory(self.settings, self.banks, self.decoder)(scanner)

    @property
    def ready(self) -> bool:
        return (
            (self.local is None or self.local.ready)
            and self.queue.scanners.able_to_scan()
            and self.queue.wait_estimate() <= self.settings.deadline_s
            and self.records_problem is None
        )

    @property
    def records_problem(self) -> str | None:
        """The database's error while decisions wait in the spool because of it (None: all well)."""
        writer = self.writer
        if writer is None or writer.unwritable is None or not writer.spool_depth:
            return None
        spooled = writer.spool_depth
        return f"{spooled} decision(s) spooled; the records database cannot be written: {writer.unwritable}"

    async def start(self, spool_dir: Path | None = None) -> None:
        """Start the decoder sandbox and the record writer (with a spool in ``spool_dir`` for the
        decisions the database cannot take: the gateway's), load the banks, load and warm up the
        in-process scanner."""
        s = self.settings
        if s.evidence_labels:
            folder = s.effective_evidence_dir
            recipient = load_recipient(folder, s.evidence_recipient)
            self.evidence = EvidenceVault(folder, recipient, s.evidence_retention_days * 86400)
            self._expiry = asyncio.create_task(expire_evidence(self.evidence))
        spool = None
        if self.store is not None and spool_dir is not None:
            spool = Spool(spool_dir)
            await asyncio.to_thread(spool.open)
        if s.decode_sandbox:
            # One child per scanner thread; as many without them, for what the gateway decodes itself
            # (remote results' hashes, uploads decoded first for fedi-safety workers).
            self.sandbox = DecoderPool(s.scanner_threads, sandbox_limits(s))
            await asyncio.to_thread(self.sandbox.start)
        if self.store is not None:
            if self.record:
                self.writer = RecordWriter(self.store, spool, on_error=self._record_write_failed)
            if s.banks:
                self.banks = BankGate(
                    self.store, media_limits(s), s.pdq_max_distance, s.bank_refresh_s, self.decoder,
                    dihedral=s.pdq_dihedral,
                )  # fmt: skip
                await self.banks.start()
        if self.settings.local_scanner:
            self.local = LocalScanner(self.queue, self.pipeline_factory, self.settings.scanner_threads)
            self.detector_fingerprint = await self.local.start()
        else:
            # Remote workers must run the same detectors; build the set once to learn its versions.
            probe = await asyncio.to_thread(self.pipeline_factory, "probe")
            self.detector_fingerprint = probe.fingerprint
            del probe

    async def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self.banks is not None:
            await self.banks.stop()
        self.queue.close()
        if self.local is not None:
            await self.local.stop()
        if self.writer is not None:
            await asyncio.to_thread(self.writer.close)
        if self.sandbox is not None:
            await asyncio.to_thread(self.sandbox.close)

    async def screen(
        self,
        data: bytes,
        media_type: str | None,
        *,
        client: str,
        source: str,
        deadline_s: float | None = None,
        policy: PolicyConfig | None = None,
    ) -> DecisionOutcome:
        """Screen one upload: triage, scan, the policy's verdict (the client's, unless ``policy`` is
        given), recorded. Never raises for the upload's content."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        budget_s = deadline_s if deadline_s is not None else self.settings.deadline_s
        deadline = started + budget_s
        timings: dict[str, float] = {}

        t = time.perf_counter()
        if len(data) > _HASH_IN_THREAD_BYTES:
            sha256 = await asyncio.to_thread(_sha256, data)
        else:
            sha256 = _sha256(data)
        timings["hash"] = time.perf_counter() - t

        policy = policy or self.settings.policy_for(client)
        cache_key = self._cache_key(policy)
        outcome: ScanOutcome | None = None
        try:
            outcome, decision = await self._decide(data, media_type, sha256, cache_key, policy, timings,
                                                   deadline=deadline, budget_s=budget_s)  # fmt: skip
        except _DATABASE_ERRORS as exc:
            # A verdict-cache or bank lookup failed: no verdict, whatever the upload holds.
            outcome, decision = None, self._fail(FailReason.RECORD_ERROR, _database_failed(exc))

        await self._keep_evidence(decision, sha256, data)
        timings["total"] = loop.time() - started
        # A verdict only the configured detectors reached may be reused for the same bytes later; a
        # pass flagged for review is not (a reuse would pass it without the flag).
        cacheable = (outcome is None or outcome.cacheable) and REVIEW not in decision.labels
        record_id, spooled = await self._record(
            decision, data, sha256, media_type, client, source, timings, outcome,
            cache_key=cache_key if cacheable else None, wait_until=deadline,
        )  # fmt: skip
        self._count(decision, source, timings)
        log.info(
            "decision id=%s source=%s client=%s verdict=%s labels=%s policy=%s size=%d type=%s sha256=%s "
            "ms=%.1f reasons=%s",
            "spooled" if spooled else record_id,
            source,
            client,
            decision.verdict.value,
            ",".join(decision.labels) or "-",
            decision.fail_policy.value if decision.fail_policy else "-",
            len(data),
            media_type or "-",
            sha256[:16],
            timings["total"] * 1000,
            "; ".join(decision.reasons) or "-",
        )
        return DecisionOutcome(decision, record_id, sha256, len(data), timings, outcome, spooled)

    async def _decide(
        self,
        data: bytes,
        media_type: str | None,
        sha256: str,
        cache_key: str,
        policy: PolicyConfig,
        timings: dict[str, float],
        *,
        deadline: float,
        budget_s: float,
    ) -> tuple[ScanOutcome | None, Decision]:
        loop = asyncio.get_running_loop()
        # What the bytes are, never what the caller declared, decides which scanners may take them.
        sniffed = sniff(data)
        triage = await self._triage(data, media_type, sha256, cache_key, policy, timings) if data else None
        if not data:
            return None, self._fail(FailReason.UNDECODABLE, "empty body")
        if triage is not None:
            return triage
        if not self.queue.scanners.able_to_take(sniffed) and not self.queue.scanners.stills_only_alive():
            why = _no_scanner_for(sniffed, self.queue.scanners.able_to_scan())
            return None, self._fail(FailReason.NO_SCANNER, why)
        if (ahead := self.queue.wait_estimate()) > deadline - loop.time():
            return None, self._fail(
                FailReason.DEADLINE,
                f"cannot be scanned within the {budget_s:g} s deadline: about {ahead:.1f} s of work is "
                "queued ahead for the scanners alive",
            )
        job = ScanJob(data, sha256, media_type, deadline, loop.create_future(), detected_type=sniffed)
        return await self._route(job, timings, policy, budget_s=budget_s)

    async def record_failure(
        self, reason: FailReason, detail: str, *, size: int, media_type: str | None, client: str, source: str
    ) -> DecisionOutcome:
        """Record and count an upload that could not be read whole (too large, too slow, its client
        gone): the fail policy decides. Logs one line (at INFO for a client that hung up)."""
        decision = self._fail(reason, detail)
        timings: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        record_id, spooled = await self._record(
            decision, b"", "", media_type, client, source, timings, None, size=size,
            wait_until=loop.time() + self.settings.db_busy_timeout_s,
        )  # fmt: skip
        self._count(decision, source, timings)
        log.info(
            "decision id=%s source=%s client=%s verdict=%s policy=%s size=%d reasons=%s",
            "spooled" if spooled else record_id,
            source,
            client,
            decision.verdict.value,
            self.settings.fail_policy.value,
            size,
            "; ".join(decision.reasons),
        )
        return DecisionOutcome(decision, record_id, "", size, timings, spooled=spooled)

    async def _keep_evidence(self, decision: Decision, sha256: str, data: bytes) -> None:
        """Seal the bytes of a decision with one of ``evidence_labels`` (never raises)."""
        if self.evidence is None or not data:
            return
        wanted = self.settings.evidence_labels
        if not any(label in wanted for label in (*decision.labels, decision.verdict.value)):
            return
        try:
            await asyncio.to_thread(self.evidence.seal, sha256, data)
        except Exception:
            log.exception("could not seal the evidence for %s", sha256[:16])

    def _cache_key(self, policy: PolicyConfig) -> str:
        """What a cached pass must have been decided under: detectors (with the contents of their
        lists), policy, banks, match radius and media limits, all unchanged."""
        s = self.settings
        banks = self.banks.state if self.banks else "-"
        media = f"frames={s.sample_frames};side={s.max_frame_side};pixels={s.max_pixels}"
        return f"{self.detector_fingerprint}|{policy.fingerprint()}|banks={banks}|{media}"

    async def _triage(
        self,
        data: bytes,
        media_type: str | None,
        sha256: str,
        cache_key: str,
        policy: PolicyConfig,
        timings: dict[str, float],
    ) -> tuple[ScanOutcome, Decision] | None:
        """Decisions that need no scanner: an exact SHA-256 bank match, or a pass already decided
        for the same bytes under the same detectors, policy and banks."""
        t = time.perf_counter()
        try:
            if self.banks is not None:
                matched = await self.banks.triage(data, media_type, sha256)
                if matched is not None:
                    return matched, decide(matched.results, policy)
            if self.settings.verdict_cache and self.store is not None:
                workers = [key.name for key in self.settings.worker_keys]
                cached = await asyncio.to_thread(self.store.find_pass, sha256, cache_key, workers)
                if cached is not None:
                    reason = f"cached: identical bytes passed in decision {cached[0]}"
                    pdq = [FrameHash.from_json(item) for item in cached[1]] if cached[1] is not None else None
                    # Not a cache entry itself: a reuse always leads back to the scan (and scanner)
                    # that made the pass, so a revoked worker's pass stops counting everywhere.
                    outcome = ScanOutcome(scanner="cache", pdq=pdq, cacheable=False)
                    return outcome, Decision(Verdict.PASS, (), (reason,))
            return None
        finally:
            timings["triage"] = time.perf_counter() - t

    async def _route(
        self, job: ScanJob, timings: dict[str, float], policy: PolicyConfig, *, budget_s: float
    ) -> tuple[ScanOutcome | None, Decision]:
        """Scan the upload; with a scanner that opens stills only alive (a fedi-safety worker), decode
        it first: undecodable bytes get the fail policy at once, and what such a scanner cannot open
        goes to it as rendered frames when no other scanner takes it (:mod:`~fediguard.scanning.stills`)."""
        scanners = self.queue.scanners
        full = scanners.able_to_take(job.detected_type)  # a scanner that decodes it itself
        if not scanners.stills_only_alive() or (full and job.detected_type not in AS_IS_TYPES):
            return await self._scan(job, timings, policy, budget_s=budget_s)
        s = self.settings
        started = time.perf_counter()
        try:
            stills = await asyncio.to_thread(
                prepare, job.data, self.decoder, media_limits(s), s.legacy_frames, self.banks is not None
            )
        except MediaError as exc:
            outcome = ScanOutcome(
                detected_type=job.detected_type,
                error=FailReason.UNDECODABLE,
                error_detail=str(exc),
                scanner="gateway",
                cacheable=False,
            )
            return outcome, self._fail(FailReason.UNDECODABLE, str(exc))
        finally:
            timings["decode_first"] = time.perf_counter() - started
        job.pdq = stills.pdq
        if stills.as_is:
            job.decoded = True
        elif not full:
            return await self._scan_frames(job, stills, timings, policy, budget_s=budget_s)
        return await self._scan(job, timings, policy, budget_s=budget_s)

    async def _scan_frames(
        self,
        job: ScanJob,
        stills: Stills,
        timings: dict[str, float],
        policy: PolicyConfig,
        *,
        budget_s: float,
    ) -> tuple[ScanOutcome | None, Decision]:
        """Scan an upload as its rendered frames, one job each, and decide on all their answers."""
        started = time.perf_counter()
        try:
            outcome = await scan_frames(self.queue, job, stills, policy.reject_labels)
        except QueueFull as exc:
            return None, self._fail(FailReason.QUEUE_FULL, str(exc))
        finally:
            timings["scan"] = time.perf_counter() - started
        missing, detail = outcome.error, outcome.error_detail
        if missing is FailReason.DEADLINE:
            detail = f"no result within the {budget_s:g} s deadline: {detail}"
        outcome = replace(outcome, error=None, error_detail="")
        if self.banks is not None and self.banks.needs_recheck(outcome):
            outcome = await asyncio.to_thread(self.banks.recheck, outcome)
        if outcome.error is not None:
            return outcome, self._fail(outcome.error, outcome.error_detail)
        decision = decide(outcome.results, policy)
        if missing is not None and decision.verdict is not Verdict.REJECT:
            # A frame nobody answered for may hold what the others do not: no verdict, unless the
            # answered frames reject the upload already.
            return replace(outcome, error=missing, error_detail=detail), self._fail(missing, detail)
        return outcome, decision

    async def _scan(
        self, job: ScanJob, timings: dict[str, float], policy: PolicyConfig | None, *, budget_s: float
    ) -> tuple[ScanOutcome | None, Decision]:
        loop = asyncio.get_running_loop()
        deadline = job.deadline
        try:
            self.queue.put(job)
        except QueueFull as exc:
            return None, self._fail(FailReason.QUEUE_FULL, str(exc))
        t = loop.time()
        try:
            outcome = await asyncio.wait_for(asyncio.shield(job.future), max(0.0, deadline - loop.time()))
        except TimeoutError:
            self.queue.withdraw(job)
            timings["scan"] = loop.time() - t
            return None, self._fail(
                FailReason.DEADLINE,
                f"no result within the {budget_s:g} s deadline (attempts {job.attempts})",
            )
        except asyncio.CancelledError:
            self.queue.withdraw(job)
            raise
        timings["scan"] = loop.time() - t
        if outcome.remote:
            outcome = await self._own_view(outcome, job)
        timings.update(outcome.timings)
        if self.banks is not None and self.banks.needs_recheck(outcome):
            outcome = await asyncio.to_thread(self.banks.recheck, outcome)
        if outcome.error is not None:
            return outcome, self._fail(outcome.error, outcome.error_detail)
        return outcome, decide(outcome.results, policy or self.settings.policy)

    async def _own_view(self, outcome: ScanOutcome, job: ScanJob) -> ScanOutcome:
        """A remote worker's outcome as the gateway keeps it: its scan (results, checked by the
        routes), with the type the gateway sniffed and the frame hashes the gateway makes itself."""
        outcome = replace(outcome, detected_type=job.detected_type, pdq=None)
        if self.banks is None:
            return outcome
        if job.pdq is not None and outcome.error is None:
            return replace(outcome, pdq=job.pdq)  # hashed when the gateway decoded it first
        return await asyncio.to_thread(self.banks.rehash, outcome, job.data)

    def _fail(self, reason: FailReason, detail: str) -> Decision:
        decision = fail_decision(reason, self.settings.fail_policy, detail)
        self.metrics.fail_policy.labels(reason.value, self.settings.fail_policy.value).inc()
        if reason is FailReason.RECORD_ERROR:
            self.metrics.database_errors.labels("lookup").inc()
        if reason is not FailReason.CLIENT_DISCONNECT:  # nobody hears it: the decision line says it all
            log.warning(
                "fail policy %s applied: %s: %s", self.settings.fail_policy.value, reason.value, detail
            )
        return decision

    async def _record(
        self,
        decision: Decision,
        data: bytes,
        sha256: str,
        media_type: str | None,
        client: str,
        source: str,
        timings: dict[str, float],
        outcome: ScanOutcome | None,
        size: int | None = None,
        cache_key: str | None = None,
        wait_until: float | None = None,
    ) -> tuple[int | None, bool]:
        """Record the decision: its id, and whether it went to the spool instead (or was not written
        by ``wait_until``, on the loop's clock: then it is written or spooled later, unwaited)."""
        if self.store is None or not self.record:
            return None, False
        record = NewDecision(
            source=source,
            client=client,
            media_type=media_type,
            size=len(data) if size is None else size,
            sha256=sha256,
            verdict=decision.verdict.value,
            labels=decision.labels,
            reasons=decision.reasons,
            results=[r.to_json() for r in outcome.results] if outcome else [],
            timings={k: round(v, 6) for k, v in timings.items()},
            detected_type=outcome.detected_type if outcome else None,
            pdq=[h.to_json() for h in outcome.pdq] if outcome and outcome.pdq is not None else None,
            fail_reason=decision.fail_reason.value if decision.fail_reason else None,
            fail_policy=decision.fail_policy.value if decision.fail_policy else None,
            scanner=outcome.scanner if outcome else None,
            fingerprint=cache_key,
            created_at=datetime.now(UTC),
        )
        t = time.perf_counter()
        writer = self.writer
        spooling = writer is not None and writer.spool is not None
        try:
            if writer is not None:
                wait_s = None
                if spooling and wait_until is not None:
                    wait_s = max(RECORD_GRACE_S, wait_until - asyncio.get_running_loop().time())
                record_id = await writer.add(record, wait_s)
            else:
                record_id = await asyncio.to_thread(self.store.add, record)
        except Exception:
            # The verdict still stands and is answered; the missing record is logged and counted.
            log.exception("could not record the decision for %s (verdict %s)", sha256[:16], decision.verdict)
            self.metrics.record_failures.inc()
            return None, False
        self.metrics.stage_seconds.labels("record").observe(time.perf_counter() - t)
        return record_id, record_id is None and spooling

    def _record_write_failed(self, exc: BaseException) -> None:
        """The record writer could not write (called in its thread): counted."""
        self.metrics.database_errors.labels("record").inc()

    def _count(self, decision: Decision, source: str, timings: dict[str, float]) -> None:
        policy = decision.fail_policy.value if decision.fail_policy else "none"
        self.metrics.decisions.labels(source, decision.verdict.value, policy).inc()
        for label in decision.labels:
            self.metrics.labels.labels(label).inc()
        self.metrics.observe_timings(timings)

    def _refresh_queue_gauges(self) -> None:
        self.metrics.queue_depth.set(self.queue.depth)
        self.metrics.requeued.set(self.queue.requeued)
        self.metrics.spool_depth.set(self.writer.spool_depth if self.writer is not None else 0)


def _database_failed(exc: BaseException) -> str:
    if isinstance(exc, RecordError):
        return str(exc)
    return f"the records database failed while looking up the verdict cache or banks: {describe_error(exc)}"


async def expire_evidence(vault: EvidenceVault) -> None:
    """Delete expired evidence now and then, for as long as the service runs."""
    while True:
        try:
            await asyncio.to_thread(vault.expire)
        except Exception:
            log.exception("could not expire evidence in %s", vault.folder)
        await asyncio.sleep(vault.check_interval())


def _no_scanner_for(media_type: str | None, any_alive: bool) -> str:
    if any_alive:
        kind = media_type or "this type"
        return f"no scanner alive takes {kind}"
    return "no scanner is running or has been seen recently"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
