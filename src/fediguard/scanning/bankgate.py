"""The hash banks as a scan meets them, in one place: loaded and kept current, checked on the exact
SHA-256 before anything else, on every frame's PDQ hash by the pipeline (in-process) or by a remote
worker asking before its models, and once more when a remote worker's result arrives, on hashes the
gateway makes itself from the bytes (:meth:`BankGate.rehash`): a worker's own hashes are never kept.

Every bank verdict is a ``banks`` :class:`~fediguard.detectors.base.DetectorResult` of
:class:`~fediguard.detectors.base.ListMatch` findings, built by the
:class:`~fediguard.banks.matcher.BankMatcher`; the policy weighs it like any other result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy.exc import SQLAlchemyError

from fediguard.banks.matcher import DETECTOR as BANKS_DETECTOR
from fediguard.banks.matcher import BankMatcher
from fediguard.banks.pdq import FrameHash, frame_hashes
from fediguard.banks.store import BankStore
from fediguard.detectors.base import DetectorResult, ListMatch
from fediguard.errors import MediaError, RecordError
from fediguard.media.decode import MediaLimits, decode
from fediguard.media.sandbox import Decoder
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
    ) -> None:
        self.records = records
        self.dihedral = dihedral
        self.limits = limits
        self.decoder = decoder
        self.max_distance = max_distance
        self.refresh_s = refresh_s
        self.matcher = BankMatcher(BankStore(records.engine), max_distance)
        self._refresh: asyncio.Task[None] | None = None

    @property
    def state(self) -> str:
        """Changes whenever the banks, the match radius or the hashing change (for cached verdicts):
        ``views`` since frames are hashed as stored too, ``dihedral`` with flips and rotations."""
        flips = ";dihedral" if self.dihedral else ""
        return f"{self.matcher.state};pdq<={self.max_distance};views{flips}"

    async def start(self) -> None:
        """Load the banks, then pick up changes made by other processes (the CLI, another node)."""
        await asyncio.to_thread(self.matcher.reload_if_changed)
        self._refresh = asyncio.create_task(self._refresh_loop(), name="bank-refresh")

    async def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            await asyncio.gather(self._refresh, return_exceptions=True)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await asyncio.to_thread(self.matcher.reload_if_changed)
            except Exception:
                log.exception("reloading the banks failed; keeping the previous ones")

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
