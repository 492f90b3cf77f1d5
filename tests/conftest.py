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

import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from fediguard.config import Settings  # noqa: E402
from fediguard.detectors.base import Detector  # noqa: E402
from support.gateway import RunningGateway, make_settings, start_gateway  # noqa: E402
from support.services import POSTGRES_URL, unavailable  # noqa: E402
from support.workers import Workers  # noqa: E402


def leftover_temp_files() -> list[str]:
    """Files in the private temp dir, but pytest's own and multiprocessing's (``pymp-``: the decoder
    sandbox's forkserver socket, made once per process and removed when it exits)."""
    return sorted(name for name in os.listdir(_PRIVATE_TMP) if not name.startswith(("pytest-of-", "pymp-")))


@pytest.fixture
def no_temp_files_left() -> Iterator[None]:
    before = leftover_temp_files()
    yield
    assert leftover_temp_files() == before, "a temporary file was left behind"


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[..., Settings]:
    return lambda **overrides: make_settings(tmp_path, **overrides)


@pytest.fixture
def gateway_for(tmp_path: Path) -> Iterator[Callable[..., RunningGateway]]:
    """Start a gateway with the given detector makers and settings overrides; stopped after the test."""
    running: list[RunningGateway] = []

    def _start(*makers: Callable[[], Detector], **overrides: Any) -> RunningGateway:
        settings = make_settings(tmp_path, **overrides)
        gw = start_gateway(settings, *makers)
        running.append(gw)
        return gw

    yield _start
    for gw in running:
        gw.stop()


@pytest.fixture
def workers() -> Iterator[Workers]:
    """Start real `fediguard worker` processes against a test gateway; killed after the test."""
    started = Workers()
    yield started
    started.close()


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
