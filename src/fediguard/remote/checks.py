"""What a remote worker's outcome must satisfy before the gateway takes it.

A worker key buys scanning, nothing more: its results must come from exactly the detectors (names
and versions) this gateway runs, all of them unless a list hit ended the scan early, and only list
detectors may report list matches — so no worker can allow (or deny) an upload by saying so, and
every verdict follows this gateway's configuration. Bank results are matched again by the gateway
(:meth:`~fediguard.scanning.bankgate.BankGate.recheck`), whatever the worker said of them, on hashes
it makes itself; the type recorded is the gateway's own sniff; and a worker's timings are kept only
for the stages it runs, each within 0 and the deadline (:func:`sane_timings`).
"""

from __future__ import annotations

import math
from dataclasses import replace

from fediguard.banks.matcher import DETECTOR as BANKS_DETECTOR
from fediguard.banks.matcher import VERSION as BANKS_VERSION
from fediguard.detectors.base import ListMatch
from fediguard.scanning.bankgate import ended_on_a_list
from fediguard.scanning.job import ScanOutcome
from fediguard.scanning.pipeline import is_stage

LIST_DETECTORS = frozenset({"hashlist", BANKS_DETECTOR})
"""The detectors that check lists of known images: the only ones whose list matches count."""
PIPELINE_STAGES = ("decode", "pdq", "banks")
"""The stages a worker's pipeline times besides its detectors (``detector:NAME``)."""


def problem_with(outcome: ScanOutcome, fingerprint: str) -> str | None:
    """Why a worker's outcome cannot be taken from a worker of a gateway whose detectors have this
    ``fingerprint``, or None when it can."""
    if outcome.error is not None:
        return None
    expected = {part for part in fingerprint.split(",") if part and not is_stage(part)}
    banks = f"{BANKS_DETECTOR}@{BANKS_VERSION}"
    expected.add(banks)
    got = {f"{r.detector}@{r.version}" for r in outcome.results}
    if got - expected:
        return f"results from detectors this gateway does not run: {', '.join(sorted(got - expected))}"
    for result in outcome.results:
        if result.detector not in LIST_DETECTORS and any(isinstance(f, ListMatch) for f in result.findings):
            return f"list matches from {result.detector}, which checks no list"
    missing = expected - got - {banks}
    if not ended_on_a_list(outcome.results) and missing:
        return f"no result from {', '.join(sorted(missing))}"
    return None


def _seconds(value: float, limit_s: float) -> float | None:
    return min(max(value, 0.0), limit_s) if math.isfinite(value) else None


def sane_timings(outcome: ScanOutcome, fingerprint: str, limit_s: float) -> ScanOutcome:
    """The outcome with only the timings a worker of a gateway whose detectors have this
    ``fingerprint`` can have measured (its pipeline's stages, as ``remote:STAGE``), each clamped to
    0..``limit_s`` (the deadline: no stage of a scan the gateway waited for took longer); the
    results' ``seconds`` likewise."""
    detectors = {part.split("@", 1)[0] for part in fingerprint.split(",") if part and not is_stage(part)}
    known = {f"remote:{stage}" for stage in (*PIPELINE_STAGES, *(f"detector:{d}" for d in detectors))}
    timings: dict[str, float] = {}
    for name, value in outcome.timings.items():
        seconds = _seconds(value, limit_s) if name in known else None
        if seconds is not None:
            timings[name] = seconds
    results = [replace(r, seconds=_seconds(r.seconds, limit_s) or 0.0) for r in outcome.results]
    return replace(outcome, timings=timings, results=results)
