"""The gateway's feed route: a published feed's batches, a page at a time (docs/feeds.md)."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import threading

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fediguard.banks.feeds.publisher import PAGE_BATCHES, Publisher
from fediguard.banks.feeds.signing import FeedKeyError, load_key
from fediguard.config import Settings
from fediguard.scanning.service import ScanService

log = logging.getLogger("fediguard.feeds")


class FeedRoutes:
    """``GET /api/v1/feeds/{name}?after=N&limit=L``: batches after N, for the feed's read token
    (``Authorization: Bearer``) or anyone for a public feed; gzip when the client accepts it."""

    def __init__(self, settings: Settings, service: ScanService) -> None:
        self.settings = settings
        self.service = service
        self._publisher: Publisher | None = None
        self._key: Ed25519PrivateKey | None = None
        self._key_lock = threading.Lock()

    def routes(self) -> list[Route]:
        return [Route("/api/v1/feeds/{name}", self.feed, methods=["GET"])]

    def _signing_key(self) -> Ed25519PrivateKey:
        with self._key_lock:
            if self._key is None:
                self._key = load_key(self.settings.effective_feed_key_file)
            return self._key

    async def feed(self, request: Request) -> Response:
        store = self.service.store
        if store is None:
            return JSONResponse({"error": "feeds need the records database"}, status_code=503)
        if self._publisher is None:
            self._publisher = Publisher(store.engine)
        publisher = self._publisher
        name = request.path_params["name"]
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        allowed = await asyncio.to_thread(
            publisher.authorized, name, token if scheme.lower() == "bearer" else None
        )
        if allowed is None:
            return JSONResponse({"error": f"no published feed named {name!r}"}, status_code=404)
        if not allowed:
            peer = request.client.host if request.client else None
            log.warning("refused feed %s to %s: missing or wrong read token", name, peer)
            return JSONResponse(
                {"error": "this feed needs its read token (Authorization: Bearer)"}, status_code=401
            )
        try:
            after = int(request.query_params.get("after", "0"))
            limit = int(request.query_params.get("limit", str(PAGE_BATCHES)))
        except ValueError:
            return JSONResponse({"error": "after and limit must be whole numbers"}, status_code=400)
        if after < 0 or limit < 1:
            return JSONResponse({"error": "after must be >= 0 and limit >= 1"}, status_code=400)
        try:
            key = await asyncio.to_thread(self._signing_key)
            await asyncio.to_thread(publisher.sync, name, key)
        except FeedKeyError as exc:
            log.error("feed %s cannot be signed: %s", name, exc)
            return JSONResponse({"error": "the publisher's feed key is not available"}, status_code=503)
        head, batches = await asyncio.to_thread(publisher.page, name, after, limit)
        body = json.dumps({"feed": name, "head": head, "batches": [b.to_json() for b in batches]}).encode()
        headers = {"Cache-Control": "no-store"}
        if "gzip" in request.headers.get("accept-encoding", "") and len(body) > 1024:
            body = await asyncio.to_thread(gzip.compress, body, 6)
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type="application/json", headers=headers)
