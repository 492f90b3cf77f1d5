"""A real gateway (uvicorn, real sockets) on a free loopback port, for tests and benchmarks."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from fediguard.config import Settings, load_settings
from fediguard.detectors.base import Detector
from fediguard.gateway.server import make_server
from fediguard.media.decode import decode
from fediguard.records import RecordStore
from fediguard.scanning.pipeline import Pipeline, media_limits
from fediguard.scanning.service import ScanService


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": tmp_path / "data", "detectors": ["hashlist"], "log_level": "DEBUG"}
    values.update(overrides)
    return load_settings(environ={}, **values)


def pipelines(
    settings: Settings, *makers: Callable[[], Detector], service: ScanService | None = None
) -> Callable[[str], Pipeline]:
    """A pipeline factory whose detectors are built by ``makers`` (one new set per scanner thread),
    hashing frames, matching banks and decoding (in the decoder sandbox when it is on) as the real
    one does when ``service`` is given."""
    limits = media_limits(settings)

    def make(name: str) -> Pipeline:
        matcher = service.banks if service else None
        detectors = [make() for make in makers]
        return Pipeline(
            detectors, limits, scanner=name, hash_frames=settings.banks, matcher=matcher,
            decoder=service.decoder if service else decode, dihedral=settings.pdq_dihedral,
        )  # fmt: skip

    return make


@dataclass
class RunningGateway:
    url: str
    settings: Settings
    service: ScanService
    store: RecordStore
    server: Any
    thread: threading.Thread

    def scan_url(self, client: str = "IPADDR") -> str:
        return f"{self.url}/api/v1/scan/{client}"

    def post(
        self,
        data: bytes,
        content_type: str | None = "image/png",
        client: str = "IPADDR",
        timeout: float = 30.0,
    ) -> httpx.Response:
        """Post like pict-rs does: the raw bytes, their Content-Type, no auth header."""
        headers = {"Content-Type": content_type} if content_type else {}
        with httpx.Client(timeout=timeout) as http:
            return http.post(self.scan_url(client), content=data, headers=headers)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def start_gateway(settings: Settings, *makers: Callable[[], Detector]) -> RunningGateway:
    """The real gateway (uvicorn, real sockets) on a free loopback port, in a background thread.

    With ``makers`` its scanners run those detectors; without, the configured ones."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    store = RecordStore(settings.effective_database_url, busy_timeout_s=settings.db_busy_timeout_s)
    service = ScanService(settings, store)
    if makers:
        service.pipeline_factory = pipelines(settings, *makers, service=service)
    server = make_server(settings, service)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        time.sleep(0.01)
    return RunningGateway(f"http://127.0.0.1:{port}", settings, service, store, server, thread)
