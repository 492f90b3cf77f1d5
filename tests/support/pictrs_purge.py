"""A stand-in for pict-rs's internal purge endpoint on a real loopback socket: ``POST
/internal/purge?alias=A`` with ``X-Api-Token`` (checked in constant time), 401 without the right
token, 404 for an alias it does not hold, else ``{"msg": "ok", "aliases": [...]}``. Records calls."""

from __future__ import annotations

import hmac
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class PurgeCall:
    path: str
    alias: str | None
    token: str | None
    status: int


@dataclass
class FakePictrs:
    api_key: str
    files: dict[str, list[str]]
    """Each alias it holds -> all the aliases of that file (purged together)."""
    calls: list[PurgeCall] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakePictrs:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                alias = (parse_qs(parts.query).get("alias") or [None])[0]
                token = self.headers.get("X-Api-Token")
                status, body = fake._answer(parts.path, alias, token)
                fake.calls.append(PurgeCall(parts.path, alias, token, status))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def _answer(self, path: str, alias: str | None, token: str | None) -> tuple[int, dict[str, object]]:
        if not hmac.compare_digest((token or "").encode(), self.api_key.encode()):
            return 401, {"msg": "Invalid API key"}
        if path != "/internal/purge" or alias is None:
            return 400, {"msg": "bad request"}
        if alias not in self.files:
            return 404, {"msg": "Requested alias not found"}
        aliases = self.files[alias]
        for a in aliases:
            self.files.pop(a, None)
        return 200, {"msg": "ok", "aliases": aliases}

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
