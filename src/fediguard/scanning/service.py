"""The one place where bytes become a recorded decision, for the gateway, `fediguard scan` and the
sweeper alike: hash, queue for a scanner, wait within the deadline, apply the policy (or the fail
policy), record, count and log.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from fediguard.banks.matcher import DETECTOR as BANKS_DETECTOR
from fediguard.banks.matcher import VERSION as BANKS_VERSION
from fediguard.banks.matcher import BankMatcher, Hit
from fediguard.banks.pdq import PdqHash, pdq_hash
from fediguard.banks.store import BankStore
from fediguard.config import Settings
from fediguard.detectors.base import DetectorResult
from fediguard.detectors.registry import build_detectors
from fediguard.errors import MediaError
from fediguard.media.decode import MediaLimits, decode
from fediguard.metrics import Metrics
from fediguard.policy import (
    LIST_DETECTORS,
    Decision,
    FailReason,
    PolicyConfig,
    Verdict,
    decide,
    fail_decision,
)
from fediguard.records import NewDecision, RecordStore
from fediguard.records.writer import RecordWriter
from fediguard.scanning.job import LEGACY_DETECTOR, ScanJob, ScanOutcome
from fediguard.scanning.local import LocalScanner
from fediguard.scanning.pipeline import PDQ_STAGE, Pipeline
from fediguard.scanning.queue import JobQueue, QueueFull

log = logging.getLogger("fediguard.decisions")

_HASH_IN_THREAD_BYTES = 256 * 1024
"""Above this size SHA-256 runs in a thread: 40 MB takes tens of milliseconds, too long for the loop."""


@dataclass(frozen=True)
class DecisionOutcome:
    decision: Decision
    record_id: int | None
    sha256: str
    size: int
    timings: dict[str, float] = field(default_factory=dict)
    scan: ScanOutcome | None = None


def media_limits(settings: Settings) -> MediaLimits:
    return MediaLimits(
        max_pixels=settings.max_pixels,
        max_frame_side=settings.max_frame_side,
        sample_frames=settings.sample_frames,
        max_bytes=settings.max_body_bytes,
    )


def make_pipeline_factory(
    settings: Settings, matcher: BankMatcher | None = None
) -> Callable[[str], Pipeline]:
    """Pipelines with the configured detectors; ``matcher`` checks banks in-process (None in workers)."""
    limits = media_limits(settings)

    def _make(scanner: str) -> Pipeline:
        detectors = build_detectors(settings)
        return Pipeline(detectors, limits, scanner=scanner, hash_frames=settings.banks, matcher=matcher)

    return _make


class ScanService:
    """Owns the job queue and the in-process scanner; answers ``decide`` calls."""

    def __init__(
        self,
        settings: Settings,
        store: RecordStore | None,
        metrics: Metrics | None = None,
        pipeline_factory: Callable[[str], Pipeline] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics or Metrics()
        self.policy = PolicyConfig.from_settings(settings)
        self.queue = JobQueue(settings.queue_max, lease_s=settings.lease_s)
        self.matcher: BankMatcher | None = None
        self.pipeline_factory = pipeline_factory or self._default_pipeline
        self.local: LocalScanner | None = None
        self.writer: RecordWriter | None = None
        self.detector_fingerprint = ""
        self._bank_refresh: asyncio.Task[None] | None = None
        self._jobs_reported: dict[tuple[str, str], int] = {}
        self.metrics.on_collect(self._refresh_gauges)

    def _default_pipeline(self, scanner: str) -> Pipeline:
        return make_pipeline_factory(self.settings, self.matcher)(scanner)

    @property
    def ready(self) -> bool:
        return (
            (self.local is None or self.local.ready)
            and self.queue.able_to_scan()
            and self.queue.wait_estimate() <= self.settings.deadline_s
        )

    async def start(self) -> None:
        """Start the record writer, load the banks, load and warm up the in-process scanner."""
        if self.store is not None:
            self.writer = RecordWriter(self.store)
            if self.settings.banks:
                self.matcher = BankMatcher(BankStore(self.store.engine), self.settings.pdq_max_distance)
                await asyncio.to_thread(self.matcher.reload_if_changed)
                self._bank_refresh = asyncio.create_task(self._refresh_banks(), name="bank-refresh")
        if self.settings.local_scanner:
            self.local = LocalScanner(self.queue, self.pipeline_factory, self.settings.scanner_threads)
            self.detector_fingerprint = await self.local.start()
        else:
            # Remote workers must run the same detectors; build the set once to learn its versions.
            probe = await asyncio.to_thread(self.pipeline_factory, "probe")
            self.detector_fingerprint = probe.fingerprint
            del probe

    async def _refresh_banks(self) -> None:
        """Pick up bank changes made by other processes (the CLI, another gateway node)."""
        assert self.matcher is not None
        while True:
            await asyncio.sleep(self.settings.bank_refresh_s)
            try:
                await asyncio.to_thread(self.matcher.reload_if_changed)
            except Exception:
                log.exception("reloading the banks failed; keeping the previous ones")

    async def stop(self) -> None:
        if self._bank_refresh is not None:
            self._bank_refresh.cancel()
        self.queue.close()
        if self.local is not None:
            await self.local.stop()
        if self.writer is not None:
            await asyncio.to_thread(self.writer.close)

    async def decide(
        self,
        data: bytes,
        media_type: str | None,
        *,
        client: str,
        source: str,
        deadline_s: float | None = None,
        policy: PolicyConfig | None = None,
    ) -> DecisionOutcome:
        """Decide about one upload and record the decision. Never raises for the upload's content."""
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

        policy = policy or self.policy
        cache_key = self._cache_key(policy)
        outcome: ScanOutcome | None = None
        triage = await self._triage(data, media_type, sha256, cache_key, policy, timings) if data else None
        if not data:
            decision = self._fail(FailReason.UNDECODABLE, "empty body")
        elif triage is not None:
            outcome, decision = triage
        elif not self.queue.able_to_take(media_type):
            why = _no_scanner_for(media_type, self.queue.able_to_scan())
            decision = self._fail(FailReason.NO_SCANNER, why)
        elif (ahead := self.queue.wait_estimate()) > deadline - loop.time():
            decision = self._fail(
                FailReason.DEADLINE,
                f"cannot be scanned within the {budget_s:g} s deadline: about {ahead:.1f} s of work is "
                "queued ahead for the scanners alive",
            )
        else:
            outcome, decision = await self._scan(
                data, sha256, media_type, deadline, timings, policy, budget_s=budget_s
            )

        timings["total"] = loop.time() - started
        # A verdict only the configured detectors reached may be reused for the same bytes later.
        cacheable = outcome is None or not any(r.detector == LEGACY_DETECTOR for r in outcome.results)
        record_id = await self._record(
            decision, data, sha256, media_type, client, source, timings, outcome,
            cache_key=cache_key if cacheable else None,
        )  # fmt: skip
        self._count(decision, source, timings)
        log.info(
            "decision id=%s source=%s client=%s verdict=%s labels=%s policy=%s size=%d type=%s sha256=%s "
            "ms=%.1f reasons=%s",
            record_id,
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
        return DecisionOutcome(decision, record_id, sha256, len(data), timings, outcome)

    async def record_failure(
        self, reason: FailReason, detail: str, *, size: int, media_type: str | None, client: str, source: str
    ) -> DecisionOutcome:
        """Record and count an upload that could not be read whole (too large): the fail policy decides."""
        decision = self._fail(reason, detail)
        timings: dict[str, float] = {}
        record_id = await self._record(
            decision, b"", "", media_type, client, source, timings, None, size=size
        )
        self._count(decision, source, timings)
        log.info(
            "decision id=%s source=%s client=%s verdict=%s policy=%s size=%d reasons=%s",
            record_id,
            source,
            client,
            decision.verdict.value,
            self.settings.fail_policy.value,
            size,
            "; ".join(decision.reasons),
        )
        return DecisionOutcome(decision, record_id, "", size, timings)

    def _cache_key(self, policy: PolicyConfig) -> str:
        """What a cached pass must have been decided under: detectors (with the contents of their
        lists), policy, banks, match radius and media limits, all unchanged."""
        s = self.settings
        banks = f"{self.matcher.state};pdq<={s.pdq_max_distance}" if self.matcher else "-"
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
            if self.matcher is not None:
                hits = self.matcher.match_sha256(sha256)
                pdq: list[dict[str, object]] | None = None
                if hits and all(h.bank_kind == "allow" for h in hits) and self.matcher.has_pdq("deny"):
                    # An exact allow only ties an exact deny PDQ entry, and ties go to deny: hash the
                    # frames (no model runs) so the policy sees both.
                    pdq, pdq_hits = await asyncio.to_thread(self._match_frames, data, media_type)
                    hits += pdq_hits
                if hits:
                    result = await asyncio.to_thread(self.matcher.result, hits)
                    if result is not None:
                        if pdq is None:
                            pdq = await asyncio.to_thread(self._known_pdq, data, media_type, sha256)
                        outcome = ScanOutcome(results=[result], scanner="gateway", pdq=pdq)
                        return outcome, decide([result], policy)
            if self.settings.verdict_cache and self.store is not None:
                cached = await asyncio.to_thread(self.store.find_pass, sha256, cache_key)
                if cached is not None:
                    reason = f"cached: identical bytes passed in decision {cached[0]}"
                    outcome = ScanOutcome(scanner="cache", pdq=cached[1])
                    return outcome, Decision(Verdict.PASS, (), (reason,))
            return None
        finally:
            timings["triage"] = time.perf_counter() - t

    async def _scan(
        self,
        data: bytes,
        sha256: str,
        media_type: str | None,
        deadline: float,
        timings: dict[str, float],
        policy: PolicyConfig | None,
        *,
        budget_s: float,
    ) -> tuple[ScanOutcome | None, Decision]:
        loop = asyncio.get_running_loop()
        job = ScanJob(data, sha256, media_type, deadline, loop.create_future())
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
        timings.update(outcome.timings)
        if (
            outcome.error is None
            and self.matcher is not None
            and (outcome.pdq or any(r.detector == BANKS_DETECTOR for r in outcome.results))
        ):
            outcome = await asyncio.to_thread(self._match_remote_hashes, outcome)
        if outcome.error is not None:
            return outcome, self._fail(outcome.error, outcome.error_detail)
        return outcome, decide(outcome.results, policy or self.policy)

    def has_pdq_banks(self) -> bool:
        """Whether any bank holds PDQ hashes (workers then check their frames before any model)."""
        return self.matcher is not None and (self.matcher.has_pdq("allow") or self.matcher.has_pdq("deny"))

    def check_banks(self, hashes: Sequence[tuple[int, PdqHash]]) -> DetectorResult | None:
        """The banks' verdict on a remote worker's frame hashes (blocking: call in a thread)."""
        return self.matcher.check(hashes) if self.matcher is not None else None

    def check_remote(self, outcome: ScanOutcome) -> str | None:
        """Why a remote worker's outcome cannot be taken, or None. Its results must come from exactly
        the detectors (names and versions) this gateway runs, all of them unless a list hit (its
        hash list, or the banks this gateway told it about) ended the scan early, so every verdict
        follows this gateway's configuration. Bank results are matched again here."""
        if outcome.error is not None:
            return None
        expected = {part for part in self.detector_fingerprint.split(",") if part and part != PDQ_STAGE}
        expected.add(f"{BANKS_DETECTOR}@{BANKS_VERSION}")
        got = {f"{r.detector}@{r.version}" for r in outcome.results}
        if got - expected:
            return f"results from detectors this gateway does not run: {', '.join(sorted(got - expected))}"
        ended_early = any(r.decisive and r.detector in LIST_DETECTORS for r in outcome.results)
        missing = expected - got - {f"{BANKS_DETECTOR}@{BANKS_VERSION}"}
        if not ended_early and missing:
            return f"no result from {', '.join(sorted(missing))}"
        return None

    def policy_for(self, client: str) -> PolicyConfig:
        return self.policy.for_client(client, self.settings)

    def _match_frames(
        self, data: bytes, media_type: str | None
    ) -> tuple[list[dict[str, object]] | None, list[Hit]]:
        """PDQ hashes of the upload's frames (as recorded) and their bank hits; none if undecodable."""
        assert self.matcher is not None
        try:
            media = decode(data, declared_type=media_type, limits=media_limits(self.settings))
        except MediaError:
            return None, []
        hashes = [(f.index, pdq_hash(f.image)) for f in media.frames if min(f.image.shape[:2]) > 0]
        records: list[dict[str, object]] = [
            {"frame": index, "hash": h.hex, "quality": h.quality} for index, h in hashes
        ]
        return records, self.matcher.match_pdq(hashes)

    def _known_pdq(self, data: bytes, media_type: str | None, sha256: str) -> list[dict[str, object]] | None:
        """The PDQ hashes to record for bytes decided by their SHA-256 alone: as recorded before for
        the same bytes, else hashed now (once; later copies find this record's)."""
        known = self.store.pdq_of(sha256) if self.store is not None else None
        return known if known is not None else self._match_frames(data, media_type)[0]

    def _match_remote_hashes(self, outcome: ScanOutcome) -> ScanOutcome:
        """Match a remote worker's frame hashes against the banks here, whatever it reported of
        them: its own ``banks`` result only tells that it stopped before its models, which holds
        only if the banks still say so now."""
        assert self.matcher is not None
        stopped_on_banks = any(r.detector == BANKS_DETECTOR and r.decisive for r in outcome.results)
        others = [r for r in outcome.results if r.detector != BANKS_DETECTOR]
        try:
            hashes = [
                (int(p["frame"]), PdqHash(str(p["hash"]), int(p["quality"]))) for p in outcome.pdq or []
            ]
            result = self.matcher.check(hashes)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring malformed PDQ hashes from %s: %s", outcome.scanner, exc)
            result = None
        ended_early = any(r.decisive and r.detector in LIST_DETECTORS for r in others)
        if stopped_on_banks and result is None and not ended_early:
            detail = f"worker {outcome.scanner} stopped on a bank match the banks no longer hold"
            return replace(outcome, results=others, error=FailReason.SCANNER_ERROR, error_detail=detail)
        return replace(outcome, results=[result, *others] if result else others)

    def _fail(self, reason: FailReason, detail: str) -> Decision:
        decision = fail_decision(reason, self.settings.fail_policy, detail)
        self.metrics.fail_policy.labels(reason.value, self.settings.fail_policy.value).inc()
        log.warning("fail policy %s applied: %s: %s", self.settings.fail_policy.value, reason.value, detail)
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
    ) -> int | None:
        if self.store is None:
            return None
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
            pdq=outcome.pdq if outcome else None,
            fail_reason=decision.fail_reason.value if decision.fail_reason else None,
            fail_policy=decision.fail_policy.value if decision.fail_policy else None,
            scanner=outcome.scanner if outcome else None,
            fingerprint=cache_key,
        )
        t = time.perf_counter()
        try:
            if self.writer is not None:
                record_id = await self.writer.add(record)
            else:
                record_id = await asyncio.to_thread(self.store.add, record)
        except Exception:
            # The verdict still stands and is answered; the missing record is logged and counted.
            log.exception("could not record the decision for %s (verdict %s)", sha256[:16], decision.verdict)
            self.metrics.record_failures.inc()
            return None
        self.metrics.stage_seconds.labels("record").observe(time.perf_counter() - t)
        return record_id

    def _count(self, decision: Decision, source: str, timings: dict[str, float]) -> None:
        policy = decision.fail_policy.value if decision.fail_policy else "none"
        self.metrics.decisions.labels(source, decision.verdict.value, policy).inc()
        for label in decision.labels:
            self.metrics.labels.labels(label).inc()
        self.metrics.observe_timings(timings)

    def _refresh_gauges(self) -> None:
        self.metrics.queue_depth.set(self.queue.depth)
        self.metrics.requeued.set(self.queue.requeued)
        counts: dict[tuple[str, str], int] = {}
        for state in self.queue.scanners.values():
            kind = "remote" if state.remote else "local"
            key = (kind, "busy" if state.busy > 0 else "idle")
            counts[key] = counts.get(key, 0) + 1
            for outcome, total in (("completed", state.completed), ("expired", state.failed)):
                # Counters follow the queue's totals; a scanner that re-registers starts again at 0.
                reported = self._jobs_reported.get((state.name, outcome), 0)
                if total > reported:
                    self.metrics.worker_jobs.labels(state.name, outcome).inc(total - reported)
                self._jobs_reported[(state.name, outcome)] = total
            self.metrics.worker_last_seen.labels(state.name).set(state.last_seen)
        for kind in ("local", "remote"):
            for st in ("busy", "idle"):
                self.metrics.scanners.labels(kind, st).set(counts.get((kind, st), 0))


def _no_scanner_for(media_type: str | None, any_alive: bool) -> str:
    if any_alive:
        kind = media_type or "this type"
        return f"no scanner alive takes {kind} (fedi-safety workers take still images only)"
    return "no scanner is running or has been seen recently"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
