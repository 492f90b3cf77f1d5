"""The gateway's side of remote scanning: workers lease jobs over HTTP(S) and post back scores.

Native protocol (``fediguard worker``), authenticated by ``Authorization: Bearer <key>`` against
``worker_keys`` (``name:key`` pairs):

- ``GET /api/v1/worker/lease?wait=25`` with ``X-Fediguard-Detectors: <fingerprint>``: long-polls;
  answers 200 with the media as the body and the lease in headers the moment a job arrives, or
  204 when ``wait`` passes. 409 when the worker's detectors differ from the gateway's.
- ``POST /api/v1/worker/lease/{id}/extend``: renews the lease while a long scan runs.
- ``POST /api/v1/worker/lease/{id}/result``: the :class:`ScanOutcome` JSON. 404 when the lease is
  unknown or expired (its job has gone to another worker), 422 when malformed.

fedi-safety compatibility (``apikey`` header, same keys): ``GET /api/v1/pop`` answers 200 with the
file as an attachment or 204; ``POST /api/v1/pop`` takes ``{"image", "is_csam", "is_nsfw"}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import time
from collections.abc import Coroutine
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fediguard.banks.pdq import PdqHash, parse_pdq
from fediguard.config import Credential, Settings
from fediguard.detectors.base import DetectorResult
from fediguard.gateway.auth import address_allowed, match_credential
from fediguard.metrics import Metrics
from fediguard.scanning.job import LEGACY_DETECTOR, ScanOutcome
from fediguard.scanning.queue import Lease
from fediguard.scanning.service import ScanService

log = logging.getLogger(__name__)

MAX_WAIT_S = 30.0
LEGACY_WAIT_S = 1.0
"""fedi-safety workers poll in a loop with a 2 s client timeout: answer well within it, so a job is
never handed to a poll its worker has already given up on."""
MAX_RESULT_BYTES = 2_000_000
LEGACY_STILL_TYPES = frozenset(
    {"image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff", "image/x-icon"}
)
"""What fedi-safety workers are given: they open files with Pillow, which reads no video, and they
answer nothing for a file they cannot open, so any other type would wait out their lease."""


def _still_image(media_type: str | None) -> bool:
    return (media_type or "").split(";", 1)[0].strip().lower() in LEGACY_STILL_TYPES


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _lease_unless_disconnected(
    request: Request, leasing: Coroutine[Any, Any, Lease | None]
) -> Lease | None:
    """Wait for a job, but stop waiting the moment the worker hangs up, so a worker that died while
    long-polling is never handed a job (its waiter is withdrawn at once, not after a lease)."""
    lease_task = asyncio.ensure_future(leasing)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({lease_task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not lease_task.done():
        lease_task.cancel()
        await asyncio.gather(lease_task, return_exceptions=True)
        return None
    return lease_task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


class WorkerRoutes:
    def __init__(self, settings: Settings, service: ScanService, metrics: Metrics) -> None:
        self.settings = settings
        self.service = service
        self.metrics = metrics

    # --- auth ---------------------------------------------------------------------------------
    def _worker(self, request: Request, legacy: bool = False) -> Credential | None:
        if legacy:
            presented = request.headers.get("apikey", "")
        else:
            scheme, _, presented = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer":
                presented = ""
        cred = match_credential(presented, self.settings.worker_keys) if presented else None
        if cred is None:
            self.metrics.auth_failures.labels("worker").inc()
            peer = request.client.host if request.client else None
            log.warning("refused worker request from %s: bad or missing key", peer)
        return cred

    # --- native protocol ------------------------------------------------------------------------
    async def lease(self, request: Request) -> Response:
        worker = self._worker(request)
        if worker is None:
            return _error(401, "unknown worker key")
        detectors = request.headers.get("x-fediguard-detectors", "")
        expected = self.service.detector_fingerprint
        if detectors != expected:
            log.error("worker %s refused: detectors %r, gateway runs %r", worker.name, detectors, expected)
            return _error(409, f"detector mismatch: worker runs {detectors!r}, gateway runs {expected!r}")
        try:
            wait = min(max(float(request.query_params.get("wait", "25")), 0.0), MAX_WAIT_S)
        except ValueError:
            return _error(400, "wait must be a number of seconds")
        queue = self.service.queue
        if queue.remote_closed or queue.closed:
            return _error(503, "the gateway is shutting down")
        queue.register(worker.name, remote=True, detectors=detectors)
        lease = await _lease_unless_disconnected(request, queue.lease(worker.name, timeout=wait))
        if lease is None:
            return Response(status_code=204)
        return self._job_response(lease)

    def _job_response(self, lease: Lease, legacy: bool = False) -> Response:
        job = lease.job
        headers = {
            "X-Fediguard-Lease": lease.id,
            "X-Fediguard-Lease-Seconds": f"{self.service.queue.lease_s:g}",
            "X-Fediguard-Sha256": job.sha256,
            "X-Fediguard-Media-Type": job.media_type or "",
        }
        if self.service.has_pdq_banks():
            # Ask before running models: POST the frames' PDQ hashes to .../banks (see `banks`).
            headers["X-Fediguard-Banks"] = "pdq"
        if legacy:
            ext = mimetypes.guess_extension(job.media_type or "") or ".bin"
            # Unquoted, as pictrs-safety sent it: fedi-safety takes everything after the first '='.
            headers["Content-Disposition"] = f"attachment; filename={lease.id}{ext}"
        return Response(job.data, media_type=job.media_type or "application/octet-stream", headers=headers)

    async def extend(self, request: Request) -> Response:
        worker = self._worker(request)
        if worker is None:
            return _error(401, "unknown worker key")
        if not self.service.queue.extend(request.path_params["lease"], worker.name):
            return _error(404, "lease unknown, expired or not yours")
        return JSONResponse({"ok": True})

    async def banks(self, request: Request) -> Response:
        """A worker holding a lease asks whether its frames' PDQ hashes match a bank, before it runs
        any model: an allow or deny hit settles the upload without them, as in-process scanning does."""
        worker = self._worker(request)
        if worker is None:
            return _error(401, "unknown worker key")
        lease = self.service.queue.get_lease(request.path_params["lease"])
        if lease is None or lease.scanner != worker.name:
            return _error(404, "lease unknown, expired or not yours")
        body = await request.body()
        if len(body) > MAX_RESULT_BYTES:
            return _error(413, "too many hashes")
        try:
            items = json.loads(body)["pdq"]
            hashes = [(int(p["frame"]), PdqHash(parse_pdq(str(p["hash"])), int(p["quality"]))) for p in items]
        except (ValueError, KeyError, TypeError) as exc:
            return _error(422, f"expected {{'pdq': [{{'frame', 'hash', 'quality'}}, …]}}: {exc}")
        found = await asyncio.to_thread(self.service.check_banks, hashes)
        return JSONResponse({"result": found.to_json() if found is not None else None})

    async def result(self, request: Request) -> Response:
        worker = self._worker(request)
        if worker is None:
            return _error(401, "unknown worker key")
        body = await request.body()
        if len(body) > MAX_RESULT_BYTES:
            return _error(413, "result too large")
        try:
            outcome = ScanOutcome.from_json(json.loads(body), scanner=worker.name)
        except ValueError as exc:
            return _error(422, str(exc))
        problem = self.service.check_remote(outcome)
        if problem is not None:
            log.warning("refused a result from worker %s: %s", worker.name, problem)
            return _error(422, problem)
        if not self.service.queue.complete(request.path_params["lease"], outcome, scanner=worker.name):
            return _error(404, "lease unknown, expired or not yours; the job went to another scanner")
        return JSONResponse({"ok": True})

    # --- fedi-safety compatibility --------------------------------------------------------------
    async def legacy_pop(self, request: Request) -> Response:
        worker = self._worker(request, legacy=True)
        if worker is None:
            return _error(401, "unknown apikey")
        queue = self.service.queue
        if queue.remote_closed or queue.closed:
            return _error(503, "the gateway is shutting down")
        queue.register(worker.name, remote=True, detectors=LEGACY_DETECTOR, takes=_still_image)
        # No renewal in that protocol: one lease of legacy_lease_s, then the job goes elsewhere.
        lease_s = min(self.settings.legacy_lease_s, self.settings.deadline_s)
        lease = await _lease_unless_disconnected(
            request, queue.lease(worker.name, timeout=LEGACY_WAIT_S, lease_s=lease_s)
        )
        if lease is None:
            return Response(status_code=204)
        return self._job_response(lease, legacy=True)

    async def legacy_result(self, request: Request) -> Response:
        worker = self._worker(request, legacy=True)
        if worker is None:
            return _error(401, "unknown apikey")
        try:
            data = await request.json()
            image = str(data["image"])
            is_csam, is_nsfw = data["is_csam"], data["is_nsfw"]
            if not isinstance(is_csam, bool) or not isinstance(is_nsfw, bool):
                raise ValueError("is_csam and is_nsfw must be booleans")
        except (ValueError, KeyError, TypeError) as exc:
            return _error(422, f"expected {{'image', 'is_csam', 'is_nsfw'}}: {exc}")
        lease_id = image.strip().strip('"').rsplit("/", 1)[-1].split(".", 1)[0]
        notes = [f"worker {worker.name} reported csam={is_csam} nsfw={is_nsfw}"]
        result = DetectorResult(
            LEGACY_DETECTOR, "legacy", scores={"csam": float(is_csam), "nsfw": float(is_nsfw)}, notes=notes
        )
        outcome = ScanOutcome(results=[result], scanner=worker.name)
        if not self.service.queue.complete(lease_id, outcome, scanner=worker.name):
            return _error(404, "image unknown, expired or not yours")
        return JSONResponse({"message": "Changed"})

    # --- listing ----------------------------------------------------------------------------------
    async def listing(self, request: Request) -> Response:
        peer = request.client.host if request.client else None
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        by_token = scheme.lower() == "bearer" and match_credential(presented, self.settings.client_tokens)
        if not by_token and not address_allowed(peer, self.settings.allowed_cidrs):
            return _error(403, "listing workers needs a client token or an allowed address")
        now = time.time()
        rows = [
            {
                "name": s.name,
                "kind": "remote" if s.remote else "local",
                "detectors": s.detectors,
                "last_seen_s_ago": round(now - s.last_seen, 1),
                "waiting": s.waiting,
                "busy": s.busy,
                "completed": s.completed,
                "per_minute": s.per_minute(),
                "expired_leases": s.failed,
            }
            for s in self.service.queue.scanners.values()
        ]
        return JSONResponse({"queue_depth": self.service.queue.depth, "scanners": rows})

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/worker/lease", self.lease, methods=["GET"]),
            Route("/api/v1/worker/lease/{lease}/extend", self.extend, methods=["POST"]),
            Route("/api/v1/worker/lease/{lease}/result", self.result, methods=["POST"]),
            Route("/api/v1/worker/lease/{lease}/banks", self.banks, methods=["POST"]),
            Route("/api/v1/pop", self.legacy_pop, methods=["GET"]),
            Route("/api/v1/pop", self.legacy_result, methods=["POST"]),
            Route("/api/v1/workers", self.listing, methods=["GET"]),
        ]
