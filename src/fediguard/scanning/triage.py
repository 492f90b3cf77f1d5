"""Decisions that need no scanner: an exact SHA-256 bank match, or a pass already decided for the
same bytes under the same detectors, policy and banks (the verdict cache, keyed by :func:`cache_key`)."""

from __future__ import annotations

import asyncio
import time

from fediguard.banks.pdq import FrameHash
from fediguard.config import Settings
from fediguard.policy import decide
from fediguard.records import RecordStore
from fediguard.scanning.bankgate import BankGate
from fediguard.scanning.job import ScanOutcome
from fediguard.verdicts import Decision, PolicyConfig, Verdict


def cache_key(
    settings: Settings, detector_fingerprint: str, banks: BankGate | None, policy: PolicyConfig
) -> str:
    """What a cached pass must have been decided under: detectors (with the contents of their
    lists), policy, banks, match radius and media limits, all unchanged."""
    s = settings
    bank_state = banks.state if banks else "-"
    media = f"frames={s.sample_frames};side={s.max_frame_side};pixels={s.max_pixels}"
    return f"{detector_fingerprint}|{policy.fingerprint()}|banks={bank_state}|{media}"


async def triage(
    data: bytes,
    media_type: str | None,
    sha256: str,
    key: str,
    policy: PolicyConfig,
    timings: dict[str, float],
    *,
    settings: Settings,
    banks: BankGate | None,
    store: RecordStore | None,
) -> tuple[ScanOutcome, Decision] | None:
    """The decision reached without a scanner, or None. Raises what a database lookup raises."""
    t = time.perf_counter()
    try:
        if banks is not None:
            matched = await banks.triage(data, media_type, sha256)
            if matched is not None:
                return matched, decide(matched.results, policy)
        if settings.verdict_cache and store is not None:
            workers = [worker.name for worker in settings.worker_keys]
            cached = await asyncio.to_thread(store.find_pass, sha256, key, workers)
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
