"""Existing fedi-safety workers against a real gateway on loopback, speaking their protocol exactly as
the real worker does (tests/support/fedi_safety.py), with a model as slow as a CPU or a cold GPU."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from fediguard.media.jxl import JXL_SUPPORTED
from fediguard.media.sniff import sniff
from support.drawn_media import GREY, MADE, RED, mp4
from support.fedi_safety import FediSafetyWorker, Model, slow_model
from support.gateway import RunningGateway
from support.images import drawn_png
from support.workers import KEYS, WORKER_KEYS, Start, gateway, remote, wait_for


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


@pytest.mark.parametrize("kind", sorted(MADE))
def test_what_pillow_cannot_open_reaches_a_verdict_through_fedi_safety_workers_alone(
    gateway_for: Start, fedi_safety: Callable[..., FediSafetyWorker], kind: str
) -> None:
    """Video, animations, AVIF and JXL, with only a fedi-safety worker: the gateway hands it JPEG
    stills of sampled frames, one job each, and any frame it reports rejects the upload."""
    if kind == "jxl" and not JXL_SUPPORTED:
        pytest.skip("this Pillow has no JPEG XL plugin (pillow-jxl-plugin), so fediguard reads no JXL either")
    gw = gateway(gateway_for)
    worker = fedi_safety(gw, slow_model(0.05, reddish))
    clean, flagged = MADE[kind](GREY), MADE[kind](RED)
    passed = gw.post(clean, "application/octet-stream")
    assert passed.status_code == 200 and passed.json()["verdict"] == "pass", passed.text
    rejected = gw.post(flagged, "application/octet-stream")
    assert rejected.status_code == 406 and rejected.json()["labels"] == ["csam_suspect"], rejected.text
    assert any(reason.startswith("fedi-safety: frame ") for reason in rejected.json()["reasons"])

    record = gw.store.get(passed.json()["id"])
    assert record is not None and record.scanner == "w3"
    assert record.detected_type == sniff(clean) and record.pdq, "the gateway's own frame hashes"
    frames = len(record.results)
    assert 1 <= frames <= gw.settings.legacy_frames
    assert all(
        r["detector"] == "fedi-safety" and r["notes"][0].startswith("frame ") for r in record.results
    ), record.results
    assert {(p.content_type, p.pillow_format) for p in worker.popped} == {("image/jpeg", "JPEG")}
    assert all(p.filename.endswith(".jpg") for p in worker.popped)
    assert worker.unopened == 0 and not [e for e in worker.errors if "timed out" not in e]


def test_a_still_pillow_opens_is_handed_out_as_it_came(
    gateway_for: Start, fedi_safety: Callable[..., FediSafetyWorker]
) -> None:
    gw = gateway(gateway_for)
    worker = fedi_safety(gw, slow_model(0.05))
    data = drawn_png(colour=(3, 3, 3))
    answer = gw.post(data)
    assert answer.json()["verdict"] == "pass"
    assert [(p.content_type, p.pillow_format, p.filename[-4:]) for p in worker.popped] == [
        ("image/png", "PNG", ".png")
    ]


@pytest.mark.parametrize(
    "data",
    [
        drawn_png()[:60],
        b"\x89PNG\r\n\x1a\n" + bytes(200),
        b"\x00\x00\x00\x18ftypmp42" + bytes(64),
        b"junk" * 30,
    ],
    ids=["truncated-png", "corrupt-png", "empty-mp4", "junk"],
)
def test_undecodable_bytes_never_reach_a_fedi_safety_worker(
    gateway_for: Start, fedi_safety: Callable[..., FediSafetyWorker], data: bytes
) -> None:
    """The gateway decodes first: undecodable bytes get the fail policy at once, with no worker
    attempt (a worker's Pillow would answer nothing, or "CSAM to be sure")."""
    gw = gateway(gateway_for)
    worker = fedi_safety(gw, slow_model(0.05))
    answer = gw.post(data)
    body = answer.json()
    assert answer.status_code == 503 and body["fail_reason"] == "undecodable", body
    assert body["verdict"] == "unscanned"
    assert gw.post(drawn_png(colour=(4, 4, 4))).json()["verdict"] == "pass", "the worker still serves"
    assert len(worker.popped) == 1 and worker.popped[0].pillow_format == "PNG"
    assert worker.unopened == 0


def test_the_gateway_decodes_first_in_the_decoder_sandbox(
    gateway_for: Start, fedi_safety: Callable[..., FediSafetyWorker]
) -> None:
    """The decode before a fedi-safety worker gets anything runs in the sandbox's child processes,
    under their limits: with a wall-clock limit no decode can meet, the upload is refused with the
    sandbox's reason, and no worker sees it."""
    gw = gateway(gateway_for, decode_timeout_s=0.001)
    assert gw.service.sandbox is not None
    worker = fedi_safety(gw, slow_model(0.05))
    big = drawn_png(size=(2400, 1800), colour=(8, 8, 8))
    body = gw.post(big).json()
    assert body["fail_reason"] == "undecodable" and "decoding took more than 0.001 s" in body["reasons"][0], (
        body
    )
    assert worker.popped == []


def test_frames_left_unanswered_leave_no_verdict_unless_the_answered_ones_reject(
    gateway_for: Start, fedi_safety: Callable[..., FediSafetyWorker]
) -> None:
    """The model never finishes on blue frames: a video whose other frames are clean gets no verdict
    (the blue frames might hold anything), one with a red frame is rejected all the same."""
    release = threading.Event()
    blue = (10, 10, 220)

    def model(image: Image.Image) -> bool:
        red, _green, b = image.convert("RGB").getpixel((1, 1))  # type: ignore[misc]
        if b > 150 and red < 100:
            release.wait(60)
        return reddish(image)

    gw = gateway(gateway_for, deadline_s=3)
    fedi_safety(gw, model)
    try:
        unanswered = gw.post(mp4([GREY, blue]))
        rejected = gw.post(mp4([RED, blue]))
    finally:
        release.set()
    body = unanswered.json()
    assert unanswered.status_code == 503 and body["fail_reason"] == "deadline", body
    assert "frames got no verdict" in body["reasons"][0] and "frame 0" not in body["reasons"][0], body
    assert rejected.status_code == 406 and rejected.json()["labels"] == ["csam_suspect"], rejected.json()


def test_beside_an_in_process_scanner_a_video_goes_to_it_whole(
    gateway_for: Start, fedi_safety: Callable[..., FediSafetyWorker]
) -> None:
    """Frames are rendered for fedi-safety workers only when no other scanner takes the upload: with
    the in-process scanner alive, a video is scanned whole by it (its detectors see every sampled
    frame), and the worker is not given it."""
    gw = gateway_for(worker_keys=WORKER_KEYS, scanner_threads=1)
    worker = fedi_safety(gw, slow_model(0.05))
    answer = gw.post(MADE["mp4"](GREY), "video/mp4")
    assert answer.json()["verdict"] == "pass", answer.json()
    record = gw.store.get(answer.json()["id"])
    assert record is not None and record.scanner.startswith("scanner-"), record.scanner
    assert record.detected_type == "video/mp4"
    assert worker.popped == []
