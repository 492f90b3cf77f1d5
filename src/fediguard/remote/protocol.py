"""The native remote-worker protocol, spoken by `fediguard worker` and the gateway alike.

Authentication: ``Authorization: Bearer <key>`` against the gateway's ``worker_keys``.

- ``GET /api/v1/worker/lease?wait=25`` with ``X-Fediguard-Detectors: <fingerprint>`` long-polls:
  200 with the media as the body and the job in the ``X-Fediguard-*`` headers below the moment a
  job arrives, 204 when ``wait`` passes, 409 when the worker's detectors differ from the gateway's.
- ``POST …/lease/{id}/extend`` renews the lease while a long scan runs. With ``?hold=SECONDS`` (at
  most half a lease) the gateway answers only then, or when the lease ends: a worker keeps one such
  request open while it scans, so if it dies its connection closes and the job goes back to the
  queue at once, not when the lease runs out.
- ``POST …/lease/{id}/banks`` with ``{"pdq": [frame hash, …]}``: the gateway's bank verdict on the
  frames' hashes (``{"result": detector result or null}``), asked before any model runs when the
  job's ``X-Fediguard-Banks: pdq`` header says the banks hold PDQ hashes.
- ``POST …/lease/{id}/result`` with the outcome (:func:`encode_outcome`): 404 when the lease is
  unknown or expired (the job went to another worker) or was not handed out by this protocol, 422
  when malformed or not from the gateway's detectors. The gateway keeps the results; the frame
  hashes, the detected type and the timings it makes or bounds itself.
- ``POST /api/v1/worker/leave``: the worker is stopping (it finishes the leases it holds, then polls
  no more), so uploads only it could take get the fail policy at once.

A frame hash is ``{"frame": int, "hash": 64 hex digits, "quality": 0..100}``
(:class:`~fediguard.banks.pdq.FrameHash`). A detector result is
:meth:`~fediguard.detectors.base.DetectorResult.to_json`, its findings included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fediguard.banks.pdq import FrameHash
from fediguard.detectors.base import DetectorResult
from fediguard.scanning.job import ScanOutcome
from fediguard.verdicts import FailReason

LEASE_PATH = "/api/v1/worker/lease"
EXTEND_PATH = LEASE_PATH + "/{lease}/extend"
RESULT_PATH = LEASE_PATH + "/{lease}/result"
BANKS_PATH = LEASE_PATH + "/{lease}/banks"
LEAVE_PATH = "/api/v1/worker/leave"

DETECTORS_HEADER = "X-Fediguard-Detectors"
LEASE_HEADER = "X-Fediguard-Lease"
LEASE_SECONDS_HEADER = "X-Fediguard-Lease-Seconds"
SHA256_HEADER = "X-Fediguard-Sha256"
MEDIA_TYPE_HEADER = "X-Fediguard-Media-Type"
BANKS_HEADER = "X-Fediguard-Banks"

MAX_WAIT_S = 30.0
"""The longest long-poll the gateway holds."""
MAX_BODY_BYTES = 2_000_000
"""The largest result or bank question the gateway reads."""
WORKER_ERRORS = frozenset({FailReason.UNDECODABLE, FailReason.SCANNER_ERROR})
"""The only reasons for no verdict a worker may report; the others are the gateway's to find."""


@dataclass(frozen=True)
class Job:
    """One leased job as a worker receives it."""

    lease: str
    lease_s: float
    sha256: str
    media_type: str | None
    """As the gateway sniffed it from the bytes."""
    data: bytes = field(repr=False)
    check_banks: bool = False
    """The gateway holds PDQ bank entries: ask it about the frames' hashes before any model."""


def job_headers(
    lease: str, lease_s: float, sha256: str, media_type: str | None, banks: bool
) -> dict[str, str]:
    headers = {
        LEASE_HEADER: lease,
        LEASE_SECONDS_HEADER: f"{lease_s:g}",
        SHA256_HEADER: sha256,
        MEDIA_TYPE_HEADER: media_type or "",
    }
    if banks:
        headers[BANKS_HEADER] = "pdq"
    return headers


def parse_job(headers: Mapping[str, str], body: bytes) -> Job:
    """The job in a 200 lease answer (``headers`` looked up case-insensitively); ValueError when
    the answer is not a fediguard gateway's (a captive portal, a misrouted proxy)."""
    try:
        return Job(
            lease=headers[LEASE_HEADER],
            lease_s=float(headers.get(LEASE_SECONDS_HEADER, "5")),
            sha256=headers[SHA256_HEADER],
            media_type=headers.get(MEDIA_TYPE_HEADER) or None,
            data=body,
            check_banks=headers.get(BANKS_HEADER) == "pdq",
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(f"lease answered 200 without a valid job ({exc!r} missing or bad)") from None


def encode_frame_hashes(hashes: list[FrameHash]) -> dict[str, Any]:
    return {"pdq": [h.to_json() for h in hashes]}


def decode_frame_hashes(data: Any) -> list[FrameHash]:
    """``{"pdq": [frame hash, …]}`` from an untrusted body; ValueError when malformed."""
    if not isinstance(data, dict) or not isinstance(data.get("pdq"), list):
        raise ValueError("expected {'pdq': [{'frame', 'hash', 'quality'}, …]}")
    return [FrameHash.from_json(item) for item in data["pdq"]]


def encode_bank_answer(result: DetectorResult | None) -> dict[str, Any]:
    return {"result": result.to_json() if result is not None else None}


def decode_bank_answer(data: Any) -> DetectorResult | None:
    found = data.get("result") if isinstance(data, dict) else None
    return DetectorResult.from_json(found) if found else None


def encode_outcome(outcome: ScanOutcome) -> dict[str, Any]:
    """The form a worker posts back (without ``scanner``: the gateway knows who sent it)."""
    return {
        "results": [r.to_json() for r in outcome.results],
        "detected_type": outcome.detected_type,
        "timings": outcome.timings,
        "pdq": [h.to_json() for h in outcome.pdq] if outcome.pdq is not None else None,
        "error": outcome.error.value if outcome.error else None,
        "error_detail": outcome.error_detail,
    }


def decode_outcome(data: Any, scanner: str) -> ScanOutcome:
    """Parse a worker's untrusted answer; ValueError when malformed."""
    if not isinstance(data, dict):
        raise ValueError("result must be a JSON object")
    try:
        error = FailReason(data["error"]) if data.get("error") else None
        if error is not None and error not in WORKER_ERRORS:
            raise ValueError(f"a worker cannot report {error}")
        results = data.get("results", [])
        if not isinstance(results, list):
            raise ValueError("results must be a list")
        timings = {str(k): float(v) for k, v in dict(data.get("timings") or {}).items()}
        pdq = data.get("pdq")
        if pdq is not None and not isinstance(pdq, list):
            raise ValueError("pdq must be a list")
        detected = data.get("detected_type")
        return ScanOutcome(
            results=[DetectorResult.from_json(r) for r in results],
            detected_type=str(detected)[:100] if detected else None,
            timings={f"remote:{k}"[:64]: v for k, v in list(timings.items())[:50]},
            pdq=[FrameHash.from_json(item) for item in pdq] if pdq is not None else None,
            error=error,
            error_detail=str(data.get("error_detail", ""))[:2000],
            scanner=scanner,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed result: {exc!r}") from exc
