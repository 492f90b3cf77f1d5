"""A gateway whose test detector flags uploads as csam_suspect (benign images, injected scores),
sealed evidence on, and the review desk beside it sharing its records database."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fediguard.evidence import keygen
from support.desk import RunningDesk, add_account, start_desk
from support.detectors import ScoreDetector
from support.gateway import RunningGateway, make_settings, start_gateway

PASSPHRASE = "the evidence passphrase"
FLAGGING = {"explicit": 0.97, "min_age": 9.0}


@dataclass
class Stack:
    gateway: RunningGateway
    desk: RunningDesk
    scores: dict[str, float]
    """The test detector's scores, shared by its instances: clear it to let uploads pass."""

    def flag(self, data: bytes, content_type: str = "image/jpeg") -> int:
        self.scores.update(FLAGGING)
        answer = self.gateway.post(data, content_type)
        assert answer.status_code == 406, answer.text
        assert answer.json()["labels"] == ["csam_suspect"]
        return int(answer.json()["id"])


@contextlib.contextmanager
def open_stack(tmp_path: Path, **overrides: object) -> Iterator[Stack]:
    """The gateway and desk of :func:`stack` with these settings changed."""
    keygen(tmp_path / "data" / "evidence", PASSPHRASE)
    values = {"evidence_labels": "csam_suspect,denylisted", "decode_sandbox": False, "bank_refresh_s": 0.1}
    values.update(overrides)
    settings = make_settings(tmp_path, detectors=["nudity"], **values)
    scores: dict[str, float] = dict(FLAGGING)
    gateway = start_gateway(settings, lambda: ScoreDetector("nudity", scores, notes=["porn"]))
    desk = start_desk(settings, gateway.store)
    add_account(gateway.store, "alice", "admin")
    add_account(gateway.store, "bob", "reviewer")
    try:
        yield Stack(gateway, desk, scores)
    finally:
        desk.stop()
        gateway.stop()


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """Settings may be overridden by indirect parametrization: ``{"decode_sandbox": True}``."""
    with open_stack(tmp_path, **getattr(request, "param", {})) as running:
        yield running
