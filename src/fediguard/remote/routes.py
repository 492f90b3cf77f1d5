"""The gateway's side of the native worker protocol (:mod:`fediguard.remote.protocol`), and what the
fedi-safety routes share with it: worker authentication and handing a leased job out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fediguard.config import Credential, Settings, match_credential
from fediguard.errors import RecordError
from fediguard.metrics import Metrics
from fediguard.remote import protocol
from fediguard.remote.checks import problem_with, sane_timings
from fediguard.remote.tasks import unless
from fediguard.scanning.bankgate import BankGate
from fediguard.scanning.leases import Lease, LeaseProtocol
from fediguard.scanning.queue import JobQueue

log = logging.getLogger(__name__)


class ScanBackend(Protocol):
    """What the worker routes use of the scan service."""

    queue: JobQueue
    banks: BankGate | None
    detector_fingerprint: str


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def authenticate_worker(
    request: Request, settings: Settings, metrics: Metrics, legacy: bool = False
) -> Credential | None:
    """The worker key presented (``apikey`` header for fedi-safety, else a bearer token), or None
    (logged and counted)."""
    if legacy:
        presented = request.headers.get("apikey", "")
    else:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            presented = ""
    cred = match_credential(presented, settings.worker_keys) if presented else None
    if cred is None:
        metrics.auth_failures.labels("worker").inc()
        peer = request.client.host if request.client else None
        log.warning("refused worker request from %s: bad or missing key", peer)
    return cred


async def lease_unless_disconnected(
    request: Request, leasing: Coroutine[Any, Any, Lease | None]
) -> Lease | None:
    """Wait for a job, but stop waiting the moment the worker hangs up, so a worker that died while
    long-polling is never handed a job (its waiter is withdrawn at once, not after a lease)."""
    return await unless(leasing, _disconnected(request))


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _held(lease: Lease, seconds: float) -> bool:
    """True once the lease ends or ``seconds`` pass, whichever is first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(lease.ended.wait(), seconds)
    return True


def job_response(backend: ScanBackend, lease: Lease, extra: dict[str, str] | None = None) -> Response:
    """The job's bytes, typed as the gateway sniffed them (the caller's declared type is not passed on)."""
    job = lease.job
    banks = backend.banks is not None and backend.banks.has_pdq()
    lease_s = backend.queue.lease_s
    if lease.to_deadline:
        lease_s = max(0.0, lease.expires - asyncio.get_running_loop().time())
    headers = protocol.job_headers(lease.id, lease_s, job.sha256, job.detected_type, banks)
    headers.update(extra or {})
    return Response(job.data, media_type=job.detected_type or "application/octet-stream", headers=headers)


class RouteSet:
    """Routes that lease jobs to workers authenticated by ``worker_keys``."""

    legacy = False
    """fedi-safety workers present their key in an ``apikey`` header, others as a bearer token."""

    def __init__(self, settings: Settings, backend: ScanBackend, metrics: Metrics) -> None:
        self.settings = settings
        self.backend = backend
        self.metrics = metrics

    def _worker(self, request: Request) -> Credential | None:
        return authenticate_worker(request, self.settings, self.metrics, self.legacy)


class WorkerRoutes(RouteSet):
    """``fediguard worker``'s routes: lease, extend, banks, result."""

    async def lease(self, request: Request) -> Response:
        worker = self._worker(request)
        if worker is None:
            return error(401, "unknown worker key")
        detectors = request.headers.get(protocol.DETECTORS_HEADER, "")
        expected = self.backend.detector_fingerprint
        if detectors != expected:
            log.error("worker %s refused: detectors %r, gateway runs %r", worker.name, detectors, expected)
            return error(409, f"detector mismatch: worker runs {detectors!r}, gateway runs {expected!r}")
        try:
            wait = min(max(float(request.query_params.get("wait", "25")), 0.0), protocol.MAX_WAIT_S)
        except ValueError:
            return error(400, "wait must be a number of seconds")
        queue = self.backend.queue
        if queue.remote_closed or queue.closed:
            return error(503, "the gateway is shutting down")
        queue.scanners.register(worker.name, remote=True, detectors=detectors)
        leasing = queue.lease(worker.name, timeout=wait, protocol=LeaseProtocol.NATIVE)
        lease = await lease_unless_disconnected(request, leasing)
        if lease is None:
            return Response(status_code=204)
        return job_response(self.backend, lease)

    async def extend(self, request: Request) -> Response:
        """Renew the lease; with ``?hold=SECONDS`` (at most half a lease) the answer comes only then,
        or when the lease ends, and a connection that closes before (the worker died mid-scan)
        gives the job back at once instead of when the lease runs out."""
        worker = self._worker(request)
        if worker is None:
            return error(401, "unknown worker key")
        queue = self.backend.queue
        lease_id = request.path_params["lease"]
        if not queue.extend(lease_id, worker.name, protocol=LeaseProtocol.NATIVE):
            return error(404, "lease unknown, expired or not yours")
        try:
            hold = min(max(float(request.query_params.get("hold", "0")), 0.0), queue.lease_s / 2)
        except ValueError:
            return error(400, "hold must be a number of seconds")
        lease = queue.held(lease_id)
        if hold > 0 and lease is not None:
            answered = await unless(_held(lease, hold), _disconnected(request))
            if answered is None and queue.held(lease_id, worker.name) is not None:
                log.warning("worker %s hung up while scanning: its job goes back to the queue", worker.name)
                queue.abandon(lease_id)
        return JSONResponse({"ok": True})

    async def leave(self, request: Request) -> Response:
        """A worker stopping (SIGTERM) says so: the uploads queued for it that no other scanner can
        take get the fail policy now, not when it is found gone. The leases it holds it completes."""
        worker = self._worker(request)
        if worker is None:
            return error(401, "unknown worker key")
        log.info("worker %s is leaving", worker.name)
        self.backend.queue.leave(worker.name)
        return JSONResponse({"ok": True})

    async def banks(self, request: Request) -> Response:
        """A worker holding a lease asks whether its frames' PDQ hashes match a bank, before it runs
        any model: an allow or deny hit settles the upload without them, as in-process scanning does."""
        worker = self._worker(request)
        if worker is None:
            return error(401, "unknown worker key")
        if self.backend.queue.held(request.path_params["lease"], worker.name, LeaseProtocol.NATIVE) is None:
            return error(404, "lease unknown, expired or not yours")
        body = await request.body()
        if len(body) > protocol.MAX_BODY_BYTES:
            return error(413, "too many hashes")
        try:
            hashes = protocol.decode_frame_hashes(json.loads(body))
        except ValueError as exc:
            return error(422, f"expected {{'pdq': [{{'frame', 'hash', 'quality'}}, …]}}: {exc}")
        gate = self.backend.banks
        try:
            found = await asyncio.to_thread(gate.check, hashes) if gate is not None else None
        except RecordError as exc:  # the worker runs its models; the result meets the banks again
            log.warning("could not match worker %s's hashes against the banks: %s", worker.name, exc)
            return error(503, "the banks cannot be read right now")
        return JSONResponse(protocol.encode_bank_answer(found))

    async def result(self, request: Request) -> Response:
        worker = self._worker(request)
        if worker is None:
            return error(401, "unknown worker key")
        body = await request.body()
        if len(body) > protocol.MAX_BODY_BYTES:
            return error(413, "result too large")
        try:
            outcome = protocol.decode_outcome(json.loads(body), scanner=worker.name)
        except ValueError as exc:
            return error(422, str(exc))
        fingerprint = self.backend.detector_fingerprint
        problem = problem_with(outcome, fingerprint)
        if problem is not None:
            log.warning("refused a result from worker %s: %s", worker.name, problem)
            return error(422, problem)
        # Its scan counts; its hashes, type and timings do not as sent (the gateway makes its own).
        outcome = replace(sane_timings(outcome, fingerprint, self.settings.deadline_s), remote=True)
        lease_id = request.path_params["lease"]
        if not self.backend.queue.complete(
            lease_id, outcome, scanner=worker.name, protocol=LeaseProtocol.NATIVE
        ):
            return error(404, "lease unknown, expired or not yours; the job went to another scanner")
        return JSONResponse({"ok": True})

    def routes(self) -> list[Route]:
        return [
            Route(protocol.LEASE_PATH, self.lease, methods=["GET"]),
            Route(protocol.EXTEND_PATH, self.extend, methods=["POST"]),
            Route(protocol.RESULT_PATH, self.result, methods=["POST"]),
            Route(protocol.BANKS_PATH, self.banks, methods=["POST"]),
            Route(protocol.LEAVE_PATH, self.leave, methods=["POST"]),
        ]
