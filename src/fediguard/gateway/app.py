"""The gateway's ASGI app: pict-rs's validation endpoint, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from fediguard.banks.feeds.poller import FeedPoller
from fediguard.config import Settings, match_credential
from fediguard.errors import RecordError
from fediguard.gateway.auth import AuthError, address_allowed, admitting, authenticate_client
from fediguard.gateway.body import (
    BODY_TIMEOUT,
    CLIENT_DISCONNECT,
    TOO_LARGE,
    BodyError,
    BodyLimits,
    read_upload,
)
from fediguard.gateway.feeds import FeedRoutes
from fediguard.metrics import Metrics
from fediguard.records import RecordStore
from fediguard.remote.legacy import LegacyRoutes
from fediguard.remote.routes import WorkerRoutes
from fediguard.scanning.service import DecisionOutcome, ScanService
from fediguard.verdicts import Decision, FailPolicy, FailReason, Verdict

log = logging.getLogger(__name__)

_FAIL_REASONS = {
    TOO_LARGE: FailReason.TOO_LARGE,
    BODY_TIMEOUT: FailReason.BODY_TIMEOUT,
    CLIENT_DISCONNECT: FailReason.CLIENT_DISCONNECT,
}
"""Why a body could not be read → the fail reason recorded; any other (malformed) is ``undecodable``."""


def status_for(decision: Decision) -> int:
    """pict-rs accepts on any 2xx and rejects on anything else."""
    if decision.verdict is Verdict.PASS:
        return 200
    if decision.verdict is Verdict.REJECT:
        return 406
    if decision.fail_policy is FailPolicy.OPEN:
        return 200
    return 413 if decision.fail_reason is FailReason.TOO_LARGE else 503


def decision_body(outcome: DecisionOutcome) -> dict[str, Any]:
    d = outcome.decision
    return {
        "verdict": d.verdict.value,
        "reasons": list(d.reasons),
        "labels": list(d.labels),
        "id": outcome.record_id,
        "policy": d.fail_policy.value if d.fail_policy else None,
        "fail_reason": d.fail_reason.value if d.fail_reason else None,
        "sha256": outcome.sha256 or None,
        "spooled": outcome.spooled,
    }


def open_records(settings: Settings) -> RecordStore:
    """The gateway's records store, with its short busy timeout, checked to take writes: raises
    RecordError naming ``database_url`` / ``data_dir`` when it cannot (blocking)."""
    store = RecordStore(settings.effective_database_url, busy_timeout_s=settings.db_busy_timeout_s)
    try:
        store.check_writable()
    except RecordError:
        store.close()
        raise
    return store


def spool_dir(settings: Settings) -> Path:
    """Where decisions wait when the database cannot take them."""
    return settings.data_dir / "spool"


class Gateway:
    """Holds what the routes share: settings, the scan service (with the records store), the metrics."""

    def __init__(self, settings: Settings, service: ScanService | None = None) -> None:
        self.settings = settings
        # Without a given service, the records store is opened at start-up (lifespan), off the loop.
        self.service = service or ScanService(settings, None, Metrics())
        self.metrics = self.service.metrics
        self.body_limits = BodyLimits(
            settings.max_body_bytes, settings.body_idle_timeout_s, settings.body_timeout_s
        )
        self.workers = WorkerRoutes(settings, self.service, self.metrics)
        self.legacy = LegacyRoutes(settings, self.service, self.metrics)
        self.feeds = FeedRoutes(settings, self.service)
        self.feed_poller: FeedPoller | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        if self.service.store is None:
            self.service.store = await asyncio.to_thread(open_records, self.settings)
        else:
            await asyncio.to_thread(self.service.store.check_writable)
        await self.service.start(spool_dir=spool_dir(self.settings))
        if self.settings.legacy_lease_s is not None:
            log.warning(
                "legacy_lease_s (FEDIGUARD_LEGACY_LEASE_S) is no longer used: a fedi-safety worker now "
                "holds a job until the upload's deadline minus legacy_lease_margin_s; remove it"
            )
        if self.service.store is not None:  # subscribed feeds, polled every feed_poll_s
            self.feed_poller = FeedPoller(self.service.store.engine, self.settings.feed_poll_s)
            self.feed_poller.start()
        log.info(
            "gateway ready: fail policy %s, deadline %g s, max body %g MB, records in %s",
            self.settings.fail_policy.value,
            self.settings.deadline_s,
            self.settings.max_body_mb,
            self.service.store.label,
        )
        try:
            yield
        finally:
            if self.feed_poller is not None:
                await self.feed_poller.stop()
            await self.service.stop()
            if self.service.store is not None:
                self.service.store.close()

    async def scan(self, request: Request) -> Response:
        peer = request.client.host if request.client else None
        try:
            client = authenticate_client(
                request.path_params["client"], peer, self.settings.client_tokens, self.settings.allowed_cidrs
            )
        except AuthError as exc:
            self.metrics.auth_failures.labels(exc.kind).inc()
            hint = admitting(peer) if exc.kind == "address" else "the token is not in client_tokens"
            log.warning("refused scan request from %s: %s; %s", peer, exc, hint)
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        try:
            upload = await read_upload(request, self.body_limits)
        except BodyError as exc:
            # Too large, too slow, its client gone, or a body that cannot be read as an upload (a
            # malformed multipart form, no `file` field, a bad Content-Length): no verdict, so the
            # admin's fail policy answers, and it is recorded and counted like any other. The rest
            # of the body is not read: the connection closes after the answer.
            self.metrics.bad_requests.labels(exc.reason).inc()
            reason = _FAIL_REASONS.get(exc.reason, FailReason.UNDECODABLE)
            outcome = await self.service.record_failure(
                reason,
                str(exc),
                size=exc.size,
                media_type=request.headers.get("content-type"),
                client=client,
                source="gateway",
            )
            status = status_for(outcome.decision)
            return JSONResponse(decision_body(outcome), status_code=status, headers={"Connection": "close"})
        outcome = await self.service.screen(upload.data, upload.media_type, client=client, source="gateway")
        return JSONResponse(decision_body(outcome), status_code=status_for(outcome.decision))

    async def healthz(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, _request: Request) -> Response:
        ready = self.service.ready
        body = {
            "ready": ready,
            "queue_depth": self.service.queue.depth,
            "queued_work_s": round(self.service.queue.wait_estimate(), 3),
            "detectors": self.service.detector_fingerprint,
            "records": self.service.records_problem or "ok",
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    async def workers_listing(self, request: Request) -> Response:
        """`fediguard workers`: every scanner the gateway knows, for a client token or an allowed address."""
        peer = request.client.host if request.client else None
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        by_token = scheme.lower() == "bearer" and match_credential(presented, self.settings.client_tokens)
        if not by_token and not address_allowed(peer, self.settings.allowed_cidrs):
            log.warning("refused a workers listing from %s: %s", peer, admitting(peer))
            return JSONResponse({"error": "listing workers needs a client token or an allowed address"}, 403)
        now = time.time()
        rows = [
            {
                "name": s.name,
                "kind": "remote" if s.remote else "local",
                "detectors": s.detectors,
                # One waiting for a job (an idle slot, a long-polling worker) is in touch right now.
                "last_seen_s_ago": 0.0 if s.waiting > 0 else round(now - s.last_seen, 1),
                "waiting": s.waiting,
                "busy": s.busy,
                "completed": s.completed,
                "per_minute": s.per_minute(),
                "expired_leases": s.failed,
            }
            for s in self.service.queue.scanners
        ]
        return JSONResponse({"queue_depth": self.service.queue.depth, "scanners": rows})

    async def metrics_endpoint(self, _request: Request) -> Response:
        return PlainTextResponse(self.metrics.render(), media_type="text/plain; version=0.0.4")

    def routes(self) -> list[Route]:
        return [
            *self.workers.routes(),
            *self.legacy.routes(),
            *self.feeds.routes(),
            Route("/api/v1/workers", self.workers_listing, methods=["GET"]),
            Route("/api/v1/scan/{client}", self.scan, methods=["POST"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
        ]


def create_app(settings: Settings, service: ScanService | None = None) -> Starlette:
    """The gateway app. Pass ``service`` to supply its scanner and store (tests, embedding)."""
    gateway = Gateway(settings, service)
    app = Starlette(routes=gateway.routes(), lifespan=gateway.lifespan)
    app.state.gateway = gateway
    return app
