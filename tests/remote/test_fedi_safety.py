"""Existing fedi-safety workers against a real gateway on loopback, speaking their protocol exactly as
the real worker does (tests/support/fedi_safety.py), with a model as slow as a CPU or a cold GPU."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from support.fedi_safety import FediSafetyWorker, Model, slow_model
from support.gateway import RunningGateway
from support.images import drawn_png
from support.workers import KEYS, Start, gateway, remote, wait_for


def reddish(image: Image.Image) -> bool:
    """The stub model's "CSAM": a picture with a red background (benign test images only)."""
    red, green, blue = image.convert("RGB").getpixel((1, 1))  # type: ignore[misc]
    return bool(red > 150 and green < 100 and blue < 100)


@pytest.fixture
def fedi_safety() -> Iterator[Callable[..., FediSafetyWorker]]:
    started: list[FediSafetyWorker] = []

    def start(gw: RunningGateway, model: Model, threads: int = 10) -> FediSafetyWorker:
        worker = FediSafetyWorker(gw.url, KEYS["w3"], model, threads=threads).start()
        started.append(worker)
        wait_for(lambda: "w3" in remote(gw), what="the fedi-safety worker to poll")
        return worker

    yield start
    for worker in started:
        worker.stop()


def test_a_six_second_model_gets_its_verdicts_within_the_eight_second_deadline(
    gateway_for: Start, fedi_safety: Callable[..., FediSafetyWorker]
) -> None:
    """A model call over the old 5 s lease: the job stays with its worker as long as the upload can
    be answered, so each upload gets the worker's verdict, and each is scanned once."""
    gw = gateway(gateway_for)
    assert gw.settings.deadline_s == 8
    worker = fedi_safety(gw, slow_model(6.0, reddish))
    uploads = {"red": drawn_png(colour=(220, 10, 10)), "grey": drawn_png(colour=(90, 90, 90))}
    with ThreadPoolExecutor(2) as pool:
        answers = dict(zip(uploads, pool.map(gw.post, uploads.values()), strict=True))
    assert answers["red"].status_code == 406, answers["red"].text
    assert answers["red"].json()["labels"] == ["csam_suspect"]
    assert answers["grey"].status_code == 200 and answers["grey"].json()["verdict"] == "pass"
    for answer in answers.values():
        record = gw.store.get(answer.json()["id"])
        assert record is not None and record.scanner == "w3"
    assert len(worker.popped) == 2, "each upload was handed out once: no lease ran out under it"
    assert worker.answers == [200, 200]
    assert gw.service.queue.requeued == 0 and remote(gw)["w3"]["expired_leases"] == 0


def test_a_worker_that_never_answers_holds_its_job_until_the_deadline_and_is_named(
    gateway_for: Start, fedi_safety: Callable[..., FediSafetyWorker], caplog: pytest.LogCaptureFixture
) -> None:
    """A lease that runs out is logged at WARNING with the worker's name, and the upload's fail-policy
    answer names it too; the job is not handed to the worker a second time."""
    release = threading.Event()
    gw = gateway(gateway_for, deadline_s=3)
    worker = fedi_safety(gw, lambda _image: release.wait(60) and False)
    try:
        with caplog.at_level(logging.WARNING, logger="fediguard.scanning.queue"):
            answer = gw.post(drawn_png(colour=(5, 6, 7)))
    finally:
        release.set()
    body = answer.json()
    assert answer.status_code == 503 and body["fail_reason"] == "deadline", body
    assert "worker w3" in body["reasons"][0], body
    expired = [r for r in caplog.records if r.name == "fediguard.scanning.queue" and "w3" in r.message]
    assert expired and expired[0].levelno == logging.WARNING, caplog.text
    assert len(worker.popped) == 1
    assert remote(gw)["w3"]["expired_leases"] == 1


def test_the_lease_margin_must_leave_room_in_the_deadline(settings_for: Callable[..., object]) -> None:
    from fediguard.errors import ConfigError

    with pytest.raises(ConfigError, match="legacy_lease_margin_s"):
        settings_for(deadline_s=2, legacy_lease_margin_s=2)


def test_an_old_legacy_lease_setting_still_starts(settings_for: Callable[..., object]) -> None:
    settings_for(legacy_lease_s=5)  # no longer used: accepted, with a warning at start-up
