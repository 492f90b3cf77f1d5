"""Fixtures shared by every test: a private temp dir to prove nothing is left behind, settings, a
real gateway on a free loopback port, and the PostgreSQL database."""

from __future__ import annotations

import os
import tempfile

# Everything this process writes through `tempfile` lands in a private folder, so a test can prove
# that handling an upload leaves nothing behind.
_PRIVATE_TMP = tempfile.mkdtemp(prefix="fediguard-tests-")
os.environ["TMPDIR"] = _PRIVATE_TMP
tempfile.tempdir = None

import io  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from fediguard.config import Settings, load_settings  # noqa: E402
from fediguard.detectors.base import Detector  # noqa: E402
from fediguard.gateway.server import make_server  # noqa: E402
from fediguard.records import RecordStore  # noqa: E402
from fediguard.scanning.pipeline import Pipeline  # noqa: E402
from fediguard.scanning.service import ScanService, media_limits  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL = os.environ.get("FEDIGUARD_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def unavailable(reason: str) -> None:
    """A service a test needs is missing: skip locally, fail in CI (where .ci/run must provide it)."""
    if IN_CI:
        pytest.fail(f"required test service unavailable in CI: {reason}")
    pytest.skip(reason)


def leftover_temp_files() -> list[str]:
    return sorted(name for name in os.listdir(_PRIVATE_TMP) if not name.startswith("pytest-of-"))


@pytest.fixture
def no_temp_files_left() -> Iterator[None]:
    before = leftover_temp_files()
    yield
    assert leftover_temp_files() == before, "a temporary file was left behind"


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": tmp_path / "data", "detectors": ["hashlist"], "log_level": "DEBUG"}
    values.update(overrides)
    return load_settings(environ={}, **values)


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[..., Settings]:
    return lambda **overrides: make_settings(tmp_path, **overrides)


def pipelines(settings: Settings, *makers: Callable[[], Detector]) -> Callable[[str], Pipeline]:
    """A pipeline factory whose detectors are built by ``makers`` (one new set per scanner thread)."""
    limits = media_limits(settings)
    return lambda name: Pipeline([make() for make in makers], limits, scanner=name)


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


def start_gateway(settings: Settings, factory: Callable[[str], Pipeline] | None = None) -> RunningGateway:
    """The real gateway (uvicorn, real sockets) on a free loopback port, in a background thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    store = RecordStore(settings.effective_database_url)
    service = ScanService(settings, store, pipeline_factory=factory)
    server = make_server(settings, service)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        time.sleep(0.01)
    return RunningGateway(f"http://127.0.0.1:{port}", settings, service, store, server, thread)


@pytest.fixture
def gateway_for(tmp_path: Path) -> Iterator[Callable[..., RunningGateway]]:
    """Start a gateway with the given detector makers and settings overrides; stopped after the test."""
    running: list[RunningGateway] = []

    def _start(*makers: Callable[[], Detector], **overrides: Any) -> RunningGateway:
        settings = make_settings(tmp_path, **overrides)
        gw = start_gateway(settings, pipelines(settings, *makers) if makers else None)
        running.append(gw)
        return gw

    yield _start
    for gw in running:
        gw.stop()


# --- benign test images ----------------------------------------------------------------------
def encode(image: Image.Image | np.ndarray, fmt: str = "PNG", **params: Any) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def astronaut_jpeg() -> bytes:
    from skimage import data

    return encode(data.astronaut(), "JPEG", quality=90)


def drawn_png(size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    from PIL import ImageDraw

    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).ellipse((4, 4, size[0] - 4, size[1] - 4), fill=(250, 200, 40))
    return encode(image)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema in the local PostgreSQL, dropped afterwards."""
    try:
        import psycopg
    except ImportError:
        unavailable("psycopg is not installed")
    base = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {base} unreachable: {exc}")
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
