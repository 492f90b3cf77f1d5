"""fedi-safety (pictrs-safety) compatibility: existing fedi-safety GPU workers serve this gateway.

Their protocol: ``GET /api/v1/pop`` with an ``apikey`` header (the same ``worker_keys``) answers 200
with the file as an attachment, or 204; ``POST /api/v1/pop`` takes ``{"image", "is_csam",
"is_nsfw"}``. Such a worker decides by itself, so its answer is a
:class:`~fediguard.detectors.base.Report`, recorded but never reused as a cached verdict. It cannot
renew a lease, so it holds a job until the upload's deadline minus ``legacy_lease_margin_s``; it
opens files with Pillow, so it gets only what the gateway decoded first: an upload as it came, or
frames rendered from it (:mod:`fediguard.scanning.stills`).
"""

from __future__ import annotations

import mimetypes

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fediguard.detectors.base import DetectorResult, Finding, Report
from fediguard.remote.routes import RouteSet, error, job_response, lease_unless_disconnected
from fediguard.scanning.job import ScanOutcome
from fediguard.scanning.leases import LeaseProtocol

POP_PATH = "/api/v1/pop"
LEGACY_DETECTOR = "fedi-safety"
"""The detector name given to a fedi-safety worker's answer, which no configured detector produced."""
LEGACY_WAIT_S = 1.0
"""fedi-safety workers poll in a loop with a 2 s client timeout: answer well within it, so a job is
never handed to a poll its worker has already given up on."""


class LegacyRoutes(RouteSet):
    """fedi-safety's ``/api/v1/pop``: a job out (GET), its yes/no back (POST)."""

    legacy = True

    async def pop(self, request: Request) -> Response:
        worker = self._worker(request)
        if worker is None:
            return error(401, "unknown apikey")
        queue = self.backend.queue
        if queue.remote_closed or queue.closed:
            return error(503, "the gateway is shutting down")
        # It opens stills with Pillow: it gets only what the gateway decoded first (an upload Pillow
        # opens as it is, or frames rendered from one it cannot), by the type sniffed from the bytes.
        queue.scanners.register(worker.name, remote=True, detectors=LEGACY_DETECTOR, stills_only=True)
        # That protocol cannot renew a lease, and a worker's model may take seconds (CPU torch, a
        # cold GPU): it holds the job for as long as the upload can still be answered.
        leasing = queue.lease(
            worker.name,
            timeout=LEGACY_WAIT_S,
            protocol=LeaseProtocol.LEGACY,
            deadline_margin_s=self.settings.legacy_lease_margin_s,
        )
        lease = await lease_unless_disconnected(request, leasing)
        if lease is None:
            return Response(status_code=204)
        ext = mimetypes.guess_extension(lease.job.detected_type or "") or ".bin"
        # Unquoted, as pictrs-safety sent it: fedi-safety takes everything after the first '='.
        return job_response(
            self.backend, lease, {"Content-Disposition": f"attachment; filename={lease.id}{ext}"}
        )

    async def result(self, request: Request) -> Response:
        worker = self._worker(request)
        if worker is None:
            return error(401, "unknown apikey")
        try:
            data = await request.json()
            image = str(data["image"])
            is_csam, is_nsfw = data["is_csam"], data["is_nsfw"]
            if not isinstance(is_csam, bool) or not isinstance(is_nsfw, bool):
                raise ValueError("is_csam and is_nsfw must be booleans")
        except (ValueError, KeyError, TypeError) as exc:
            return error(422, f"expected {{'image', 'is_csam', 'is_nsfw'}}: {exc}")
        lease_id = image.strip().strip('"').rsplit("/", 1)[-1].split(".", 1)[0]
        note = f"worker {worker.name} reported csam={is_csam} nsfw={is_nsfw}"
        findings: list[Finding] = []
        if is_csam:
            findings.append(Report("csam_suspect", note))
        elif is_nsfw:
            findings.append(Report("nsfw", note))
        scores = {"csam": float(is_csam), "nsfw": float(is_nsfw)}
        result = DetectorResult(LEGACY_DETECTOR, "legacy", scores=scores, notes=[note], findings=findings)
        outcome = ScanOutcome(results=[result], scanner=worker.name, cacheable=False, remote=True)
        if not self.backend.queue.complete(
            lease_id, outcome, scanner=worker.name, protocol=LeaseProtocol.LEGACY
        ):
            return error(404, "image unknown, expired or not yours")
        return JSONResponse({"message": "Changed"})

    def routes(self) -> list[Route]:
        return [Route(POP_PATH, self.pop, methods=["GET"]), Route(POP_PATH, self.result, methods=["POST"])]
