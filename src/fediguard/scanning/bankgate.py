"""The hash banks as a scan meets them, in one place: loaded and kept current, checked on the exact
SHA-256 before anything else, on every frame's PDQ hash by the pipeline (in-process) or by a remote
worker asking before its models, and once more when a remote worker's result arrives, on hashes the
gateway makes itself from the bytes (:meth:`BankGate.rehash`): a worker's own hashes are never kept.

Every bank verdict is a ``banks`` :class:`~fediguard.detectors.base.DetectorResult` of
:class:`~fediguard.detectors.base.ListMatch` findings, built by the
:class:`~fediguard.banks.matcher.BankMatcher`; the policy weighs it like any other result.

After each decision the gate is told which entries it matched (:meth:`BankGate.observe`): their
match counts are kept in memory and written in one batch per refresh, and deny matches feed the
flood guard (:mod:`fediguard.banks.governance`), which may suspend an entry at once. The refresh
loop also runs retroactive matching (:mod:`fediguard.banks.rematch`) whenever the banks changed and
deny entries wait to be matched against the records: a running gateway flags recorded decisions
itself; swept objects get their action from the next sweep or `fediguard rematch`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError

from fediguard.banks.governance import BankGovernance
from fediguard.banks.matcher import DETECTOR as BANKS_DETECTOR
from fediguard.banks.matcher import BankMatcher
from fediguard.banks.pdq import FrameHash, frame_hashes
from fediguard.banks.rematch import Rematch, Rematcher, log_rematches
from fediguard.banks.store import BankStore
from fediguard.detectors.base import DetectorResult, ListMatch
from fediguard.errors import MediaError, RecordError
from fediguard.media.decode import MediaLimits, decode
from fediguard.media.sandbox import Decoder
from fediguard.metrics import Metrics
from fediguard.records import RecordStore
from fediguard.records.store import describe_error
from fediguard.scanning.job import ScanOutcome
from fediguard.verdicts import FailReason

log = logging.getLogger("fediguard.banks")


def ended_on_a_list(results: Sequence[DetectorResult]) -> bool:
    """Whether a scan stopped early because a list matched (no model ran after it)."""
    return any(r.decisive and any(isinstance(f, ListMatch) for f in r.findings) for r in results)


class BankGate:
    """Thread-safe where the matcher is: checks run in scanner threads while the gateway reloads."""

    def __init__(
        self,
        records: RecordStore,
        limits: MediaLimits,
        max_distance: int,
        refresh_s: float,
        decoder: Decoder = decode,
        dihedral: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self.records = records
        self.dihedral = dihedral
        self.limits = limits
        self.decoder = decoder
        self.max_distance = max_distance
        self.refresh_s = refresh_s
        self.metrics = metrics or Metrics()
        self.matcher = BankMatcher(BankStore(records.engine), max_distance)
        self.governance = BankGovernance(records.engine)
        self.rematcher = Rematcher(records.engine, max_distance)
        self._refresh: asyncio.Task[None] | None = None
        self._rematching: asyncio.Task[None] | None = None
        self._counts_lock = threading.Lock()
        self._counts: dict[int, tuple[int, datetime]] = {}
        self._rematched_state = -1

    @property
    def state(self) -> str:
        """Changes whenever the banks, the match radius or the hashing change (for cached verdicts):
        ``views`` since frames are hashed as stored too, ``dihedral`` with flips and rotations."""
        flips = ";dihedral" if self.dihedral else ""
        return f"{self.matcher.state};pdq<={self.max_distance};views{flips}"

    async def start(self) -> None:
        """Load the banks, then pick up changes made by other processes (the CLI, another node)."""
        await asyncio.to_thread(self._reload)
        self._refresh = asyncio.create_task(self._refresh_loop(), name="bank-refresh")

    async def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            await asyncio.gather(self._refresh, return_exceptions=True)
        if self._rematching is not None:  # a thread cannot be cancelled: let it finish its pass
            await asyncio.gather(self._rematching, return_exceptions=True)
        try:
            await asyncio.to_thread(self.flush_counts)
        except Exception:
            log.exception("writing the bank entries' match counts failed")

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            for step, what in (
                (self._reload, "reloading the banks failed; keeping the previous ones"),
                (self.flush_counts, "writing the bank entries' match counts failed; kept for the next try"),
            ):
                try:
                    await asyncio.to_thread(step)
                except Exception:
                    log.exception(what)
            # In a task of its own: a long pass over the records never holds up the next reload.
            if self._rematching is None or self._rematching.done():
                self._rematching = asyncio.create_task(self._rematch(), name="bank-rematch")

    async def _rematch(self) -> None:
        try:
            await asyncio.to_thread(self.rematch_if_changed)
        except Exception:
            log.exception("retroactive matching failed; tried again at the next bank change")

    def _reload(self) -> None:
        if self.matcher.reload_if_changed():
            self.metrics.bank_alerts_open.set(self.governance.open_alerts())

    def rematch_if_changed(self) -> list[Rematch]:
        """Retroactive matching, when the banks changed since the last run and deny entries wait for
        it: recorded decisions they match are flagged (log, ``rematches``, metrics). Blocking."""
        state = self.matcher.state
        if state == self._rematched_state:
            return []
        found = self.rematcher.run() if self.rematcher.pending() else []
        self._rematched_state = state
        for rematch in found:
            self.metrics.rematches.labels(rematch.source).inc()
        log_rematches(found)
        return found

    # --- after a decision ---------------------------------------------------------------------------
    async def observe(self, results: Sequence[DetectorResult], sha256: str) -> None:
        """Count the entries a decision's bank result matched, and feed its deny matches to the
        flood guard, which may suspend an entry (at once, for every node). Cheap without a match."""
        matched = [
            f
            for r in results
            if r.detector == BANKS_DETECTOR
            for f in r.findings
            if isinstance(f, ListMatch) and f.entry is not None
        ]
        if not matched:
            return
        now = datetime.now(UTC)
        with self._counts_lock:
            for entry in {f.entry for f in matched if f.entry is not None}:
                count, _ = self._counts.get(entry, (0, now))
                self._counts[entry] = (count + 1, now)
        for f in matched:
            self.metrics.bank_matches.labels(f.list_kind, "suspended" if f.suspended else "in_force").inc()
        guarded = {f.entry for f in matched if f.list_kind == "deny" and not f.suspended and f.entry}
        if not guarded or not sha256:
            return
        suspended = await asyncio.to_thread(self.governance.record_matches, guarded, sha256)
        for s in suspended:
            log.warning("bank alert %d: %s", s.alert_id, s.message)
            self.metrics.bank_suspensions.labels(s.bank).inc()
            self.metrics.bank_alerts_open.inc()

    def flush_counts(self) -> None:
        """Write the match counts gathered since the last flush (one transaction). Blocking."""
        with self._counts_lock:
            counts, self._counts = self._counts, {}
        try:
            self.governance.add_match_counts(counts)
        except Exception:
            with self._counts_lock:  # keep them for the next try
                for entry, (n, at) in counts.items():
                    more, last = self._counts.get(entry, (0, at))
                    self._counts[entry] = (n + more, max(at, last))
            raise

    def has_pdq(self) -> bool:
        """Whether any bank holds PDQ hashes (workers then check their frames before any model)."""
        return self.matcher.has_pdq("allow") or self.matcher.has_pdq("deny")

    def check(self, hashes: Sequence[FrameHash]) -> DetectorResult | None:
        """The banks' result for frames' hashes, or None (blocking: call in a thread). Raises
        RecordError when the database that describes the matched entries fails."""
        try:
            return self.matcher.check(hashes)
        except SQLAlchemyError as exc:
            raise RecordError(
                f"{self.records.where} failed while matching the banks: {describe_error(exc)}"
            ) from exc

    async def triage(self, data: bytes, media_type: str | None, sha256: str) -> ScanOutcome | None:
        """The outcome of an exact SHA-256 bank match, which needs no scanner; None without one."""
        hits = self.matcher.match_sha256(sha256)
        if not hits:
            return None
        pdq: list[FrameHash] | None = None
        if all(h.bank_kind == "allow" for h in hits) and self.matcher.has_pdq("deny"):
            # An exact allow only ties an exact deny PDQ entry, and ties go to deny: hash the frames
            # (no model runs) so the policy sees both.
            pdq = await asyncio.to_thread(self._frame_hashes, data, media_type)
            if pdq:
                hits += await asyncio.to_thread(self.matcher.match_pdq, pdq)
        result = await asyncio.to_thread(self.matcher.result, hits)
        if result is None or not result.decisive:
            return None  # nothing, or only flagged for review: scan it (its PDQ meets the flag again)
        if pdq is None:
            pdq = await asyncio.to_thread(self._known_pdq, data, media_type, sha256)
        return ScanOutcome(results=[result], scanner="gateway", pdq=pdq)

    def recheck(self, outcome: ScanOutcome) -> ScanOutcome:
        """Match a scanner's frame hashes against the banks here, whatever it reported of them: a
        remote worker's own ``banks`` result only tells that it stopped before its models, which
        holds only if the banks still say so now. Blocking: call in a thread."""
        stopped_on_banks = any(r.detector == BANKS_DETECTOR and r.decisive for r in outcome.results)
        others = [r for r in outcome.results if r.detector != BANKS_DETECTOR]
        result = self.matcher.check(outcome.pdq or [])
        if stopped_on_banks and result is None and not ended_on_a_list(others):
            detail = f"worker {outcome.scanner} stopped on a bank match the banks no longer hold"
            return replace(outcome, results=others, error=FailReason.SCANNER_ERROR, error_detail=detail)
        return replace(outcome, results=[result, *others] if result else others)

    def rehash(self, outcome: ScanOutcome, data: bytes) -> ScanOutcome:
        """A remote worker's outcome with the frames' PDQ hashes made here from the bytes in place of
        whatever it sent (which are dropped): the bank recheck and the record use only these. Bytes
        the worker scanned that the gateway cannot decode get no verdict (``undecodable``). Blocking:
        call in a thread. Costs a decode and a hash per frame (docs/benchmarks.md)."""
        if outcome.error is not None:
            return replace(outcome, pdq=None)
        started = time.perf_counter()
        try:
            hashes = frame_hashes(self.decoder(data, limits=self.limits).frames, dihedral=self.dihedral)
        except MediaError as exc:
            detail = (
                f"worker {outcome.scanner} scanned it, but the gateway cannot decode it to hash it: {exc}"
            )
            return replace(outcome, pdq=None, error=FailReason.UNDECODABLE, error_detail=detail)
        timings = {**outcome.timings, "rehash": time.perf_counter() - started}
        return replace(outcome, pdq=hashes, timings=timings)

    def needs_recheck(self, outcome: ScanOutcome) -> bool:
        return outcome.error is None and (
            bool(outcome.pdq) or any(r.detector == BANKS_DETECTOR for r in outcome.results)
        )

    def _frame_hashes(self, data: bytes, media_type: str | None) -> list[FrameHash] | None:
        """PDQ hashes of the upload's frames; None if undecodable."""
        try:
            media = self.decoder(data, declared_type=media_type, limits=self.limits)
        except MediaError:
            return None
        return frame_hashes(media.frames, dihedral=self.dihedral)

    def _known_pdq(self, data: bytes, media_type: str | None, sha256: str) -> list[FrameHash] | None:
        """The PDQ hashes to record for bytes decided by their SHA-256 alone: as recorded before for
        the same bytes, else hashed now (once; later copies find this record's)."""
        known = self.records.pdq_of(sha256)
        if known is not None:
            return [FrameHash.from_json(item) for item in known]
        return self._frame_hashes(data, media_type)
