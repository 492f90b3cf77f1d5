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
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from fediguard.config import Settings
from fediguard.errors import RecordError
from fediguard.evidence import EvidenceKeeper, EvidenceVault
from fediguard.media.decode import decode
from fediguard.media.sandbox import Decoder, DecoderPool
from fediguard.media.sniff import sniff
from fediguard.metrics import Metrics
from fediguard.policy import decide
from fediguard.records import RecordStore
from fediguard.records.store import describe_error
from fediguard.records.writer import RecordWriter
from fediguard.scanning.bankgate import BankGate
from fediguard.scanning.job import ScanJob, ScanOutcome
from fediguard.scanning.local import LocalScanner
from fediguard.scanning.pipeline import Pipeline, make_pipeline_factory, media_limits, sandbox_limits
from fediguard.scanning.queue import JobQueue, QueueFull
from fediguard.scanning.recording import Recorder
from fediguard.scanning.scanners import ScannerGauges
from fediguard.scanning.stills import StillsRoute
from fediguard.scanning.triage import cache_key as verdict_cache_key
from fediguard.scanning.triage import triage
from fediguard.verdicts import REVIEW, Decision, FailReason, PolicyConfig, fail_decision

log = logging.getLogger("fediguard.decisions")

_HASH_IN_THREAD_BYTES = 256 * 1024
"""Above this size SHA-256 runs in a thread: 40 MB takes tens of milliseconds, too long for the loop."""

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
        self.metrics = metrics or Metrics()
        self.recorder = Recorder(store, self.metrics, record=record)
        """Writes the decisions to ``store`` (:mod:`~fediguard.scanning.recording`)."""
        self.queue = JobQueue(settings.queue_max, lease_s=settings.lease_s)
        self.banks: BankGate | None = None
        self.pipeline_factory = pipeline_factory or self._default_pipeline
        self.local: LocalScanner | None = None
        self.sandbox: DecoderPool | None = None
        """Decoder child processes (``decode_sandbox``), one per scanner thread."""
        self.detector_fingerprint = ""
        self.keeper = EvidenceKeeper(settings)
        """Sealed evidence (``evidence_labels``): what screen keeps, encrypted to the public key."""
        gauges = ScannerGauges(self.queue.scanners, self.metrics)
        self.metrics.on_collect(gauges.refresh)
        self.metrics.on_collect(self._refresh_queue_gauges)

    @property
    def store(self) -> RecordStore | None:
        """The records database: decisions, the verdict cache, the banks (None: none at all)."""
        return self.recorder.store

    @store.setter
    def store(self, store: RecordStore | None) -> None:
        self.recorder.store = store

    @property
    def record(self) -> bool:
        """Whether decisions are written to ``store``; without, it only serves the banks and the
        verdict cache (`fediguard scan --no-record`: the same pipeline, nothing written)."""
        return self.recorder.record

    @property
    def writer(self) -> RecordWriter | None:
        return self.recorder.writer

    @property
    def evidence(self) -> EvidenceVault | None:
        return self.keeper.vault

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
        return self.recorder.problem

    async def start(self, spool_dir: Path | None = None) -> None:
        """Start the decoder sandbox and the record writer (with a spool in ``spool_dir`` for the
        decisions the database cannot take: the gateway's), load the banks, load and warm up the
        in-process scanner."""
        s = self.settings
        self.keeper.start()
        spool = await self.recorder.open_spool(spool_dir)
        if s.decode_sandbox:
            # One child per scanner thread; as many without them, for what the gateway decodes itself
            # (remote results' hashes, uploads decoded first for fedi-safety workers).
            self.sandbox = DecoderPool(s.scanner_threads, sandbox_limits(s))
            await asyncio.to_thread(self.sandbox.start)
        self.recorder.start(spool)
        if self.store is not None and s.banks:
            self.banks = BankGate(
                self.store, media_limits(s), s.pdq_max_distance, s.bank_refresh_s, self.decoder,
                dihedral=s.pdq_dihedral, metrics=self.metrics,
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
        self.keeper.stop()
        if self.banks is not None:
            await self.banks.stop()
        self.queue.close()
        if self.local is not None:
            await self.local.stop()
        await self.recorder.stop()
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
        cache_key = verdict_cache_key(self.settings, self.detector_fingerprint, self.banks, policy)
        outcome: ScanOutcome | None = None
        try:
            outcome, decision = await self._decide(data, media_type, sha256, cache_key, policy, timings,
                                                   deadline=deadline, budget_s=budget_s)  # fmt: skip
        except _DATABASE_ERRORS as exc:
            # A verdict-cache or bank lookup failed: no verdict, whatever the upload holds.
            outcome, decision = None, self._fail(FailReason.RECORD_ERROR, _database_failed(exc))

        if self.banks is not None and outcome is not None and outcome.results:
            # Match counts and the flood guard (a database write only when a deny entry matched).
            try:
                await self.banks.observe(outcome.results, sha256)
            except _DATABASE_ERRORS as exc:
                log.warning("bank match counts and flood guard not updated: %s", _database_failed(exc))
        await self.keeper.keep(decision, sha256, data)
        timings["total"] = loop.time() - started
        # A verdict only the configured detectors reached may be reused for the same bytes later; a
        # pass flagged for review is not (a reuse would pass it without the flag).
        cacheable = (outcome is None or outcome.cacheable) and REVIEW not in decision.labels
        record_id, spooled = await self.recorder.write(
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
        if not data:
            return None, self._fail(FailReason.UNDECODABLE, "empty body")
        triaged = await triage(data, media_type, sha256, cache_key, policy, timings,
                               settings=self.settings, banks=self.banks, store=self.store)  # fmt: skip
        if triaged is not None:
            return triaged
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
        record_id, spooled = await self.recorder.write(
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

    async def _route(
        self, job: ScanJob, timings: dict[str, float], policy: PolicyConfig, *, budget_s: float
    ) -> tuple[ScanOutcome | None, Decision]:
        """Scan the upload, decoded first while a scanner that opens stills only is alive
        (:class:`~fediguard.scanning.stills.StillsRoute`)."""

        async def scan(job: ScanJob) -> tuple[ScanOutcome | None, Decision]:
            return await self._scan(job, timings, policy, budget_s=budget_s)

        s = self.settings
        route = StillsRoute(
            self.queue, self.decoder, media_limits(s), s.legacy_frames, self.banks, scan, self._fail
        )
        return await route.route(job, timings, policy, budget_s=budget_s)

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


def _no_scanner_for(media_type: str | None, any_alive: bool) -> str:
    if any_alive:
        kind = media_type or "this type"
        return f"no scanner alive takes {kind}"
    return "no scanner is running or has been seen recently"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
