"""A worker key buys scanning, nothing more: a real gateway on loopback against a worker that forges
what it sends, speaking the protocols over raw HTTP as an attacker holding a key would."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from skimage import data as photos

from fediguard.banks.pdq import frame_hashes
from fediguard.banks.review import review_decision
from fediguard.banks.store import BankStore
from fediguard.media.decode import decode
from fediguard.scanning.pipeline import media_limits
from support.gateway import RunningGateway
from support.images import astronaut_jpeg, drawn_png, encode
from support.workers import KEYS, Start, gateway, remote, wait_for

LEASE = "/api/v1/worker/lease"
POP = "/api/v1/pop"
GOOD = {"results": [{"detector": "sleep", "version": "test-1", "scores": {}}]}
FORGED_PDQ = "f" * 64
MP4 = b"\x00\x00\x00\x18ftypmp42" + bytes(64)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as executor:
        yield executor


def native(gw: RunningGateway, name: str = "w1") -> httpx.Client:
    """A client with the native protocol's headers: the worker's key and the gateway's detectors."""
    headers = {
        "Authorization": f"Bearer {KEYS[name]}",
        "X-Fediguard-Detectors": gw.service.detector_fingerprint,
    }
    return httpx.Client(base_url=gw.url, headers=headers, timeout=30)


def legacy(gw: RunningGateway, name: str = "w1") -> httpx.Client:
    """A client as a fedi-safety worker is: its key in an ``apikey`` header, a 2 s timeout per poll."""
    return httpx.Client(base_url=gw.url, headers={"apikey": KEYS[name]}, timeout=30)


def handed_out(
    gw: RunningGateway,
    pool: ThreadPoolExecutor,
    poll: Callable[[], httpx.Response],
    polling: Callable[[], bool],
    data: bytes,
    content_type: str = "image/png",
) -> tuple[httpx.Response, Future[httpx.Response]]:
    """Start ``poll`` (a worker asking for a job), and once the gateway sees it ``polling`` upload
    ``data``: the job handed out, and the upload's answer to come."""
    job = pool.submit(poll)
    wait_for(polling, what="the worker to poll")
    upload = pool.submit(gw.post, data, content_type)
    answer = job.result(30)
    assert answer.status_code == 200, answer.text
    return answer, upload


def native_lease(
    gw: RunningGateway, pool: ThreadPoolExecutor, data: bytes, content_type: str = "image/png"
) -> tuple[httpx.Response, Future[httpx.Response]]:
    """Long-poll as w1, upload ``data``: the job handed out, and the upload's answer to come."""

    def poll() -> httpx.Response:
        with native(gw) as http:
            return http.get(LEASE, params={"wait": "20"})

    return handed_out(
        gw, pool, poll, lambda: remote(gw).get("w1", {}).get("waiting") == 1, data, content_type
    )


def legacy_pop(
    gw: RunningGateway, pool: ThreadPoolExecutor, data: bytes
) -> tuple[str, Future[httpx.Response]]:
    """Poll as w1 speaking fedi-safety's protocol until the upload of ``data`` is handed out: the
    image name it answers with, and the upload's answer to come."""

    def poll() -> httpx.Response:
        with legacy(gw) as http:
            while (answer := http.get(POP)).status_code == 204:
                pass
        return answer

    popped, upload = handed_out(gw, pool, poll, lambda: "w1" in remote(gw), data)
    return popped.headers["content-disposition"].split("=", 1)[1], upload


def scanned_by_forger(
    gw: RunningGateway, pool: ThreadPoolExecutor, data: bytes, answer: dict[str, Any], content_type: str
) -> httpx.Response:
    leased, upload = native_lease(gw, pool, data, content_type)
    with native(gw) as http:
        done = http.post(f"{LEASE}/{leased.headers['x-fediguard-lease']}/result", json=answer)
    assert done.status_code == 200, done.text
    return upload.result(30)


def own_hashes(gw: RunningGateway, data: bytes) -> list[dict[str, object]]:
    return [h.to_json() for h in frame_hashes(decode(data, limits=media_limits(gw.settings)).frames)]


def test_a_forged_result_keeps_only_its_scan(gateway_for: Start, pool: ThreadPoolExecutor) -> None:
    """The gateway records its own PDQ hashes, its own sniffed type and only known, bounded timings,
    and a review puts only its own hashes into a bank."""
    gw = gateway(gateway_for)
    forged = {
        "results": [{"detector": "sleep", "version": "test-1", "scores": {}, "seconds": 1e9}],
        "detected_type": "image/forged",
        "timings": {"decode": 1e9, "detector:sleep": -5, "made-up": 1.0, "detector:nudity": 2.0},
        "pdq": [{"frame": 0, "hash": FORGED_PDQ, "quality": 100}],
    }
    records = []
    for data in (astronaut_jpeg(), encode(photos.chelsea(), "JPEG")):
        response = scanned_by_forger(gw, pool, data, forged, content_type="image/png")
        assert response.status_code == 200 and response.json()["verdict"] == "pass", response.text
        record = gw.store.get(response.json()["id"])
        assert record is not None and record.scanner == "w1"
        assert record.pdq == own_hashes(gw, data) and record.pdq
        assert record.detected_type == "image/jpeg"
        remote_timings = {k: v for k, v in record.timings.items() if k.startswith("remote:")}
        assert remote_timings == {"remote:decode": gw.settings.deadline_s, "remote:detector:sleep": 0.0}
        assert record.results[0]["seconds"] == gw.settings.deadline_s
        assert "rehash" in record.timings
        records.append(record)

    banks = BankStore(gw.store.engine)
    for record, review, bank in zip(records, ("confirmed", "overturned"), ("bad", "ok"), strict=True):
        review_decision(gw.store, banks, record.id, review, bank, "", "test")
        pdq = {e.value for e in banks.entries(bank) if e.kind == "pdq"}
        assert pdq == {str(h["hash"]) for h in record.pdq or []} and FORGED_PDQ not in pdq


def test_a_revoked_workers_pass_is_not_reused(gateway_for: Start, pool: ThreadPoolExecutor) -> None:
    """A pass made by a worker whose key is then removed stops counting for the verdict cache, and
    no reuse of it (a cached decision) stands in for it; with the key back it counts again."""
    data = drawn_png(colour=(3, 4, 5))
    gw = gateway(gateway_for)
    first = scanned_by_forger(gw, pool, data, GOOD, content_type="image/png")
    assert first.json()["verdict"] == "pass"
    cached = gw.post(data)  # no worker polls any more: only the cache can pass it
    assert cached.json()["verdict"] == "pass" and "cached" in cached.json()["reasons"][0], cached.json()
    gw.stop()

    revoked = gateway(gateway_for, worker_keys=f"w2:{KEYS['w2']}")  # the same database, without w1
    again = revoked.post(data)
    assert again.status_code == 503 and again.json()["fail_reason"] == "no_scanner", again.json()
    revoked.stop()

    restored = gateway(gateway_for)
    back = restored.post(data)
    assert back.json()["verdict"] == "pass" and f"decision {first.json()['id']}" in back.json()["reasons"][0]


def test_a_lease_completes_only_through_the_protocol_that_handed_it_out(
    gateway_for: Start, pool: ThreadPoolExecutor
) -> None:
    gw = gateway(gateway_for, fail_policy="open")
    verdict = {"is_csam": False, "is_nsfw": False}

    leased, upload = native_lease(gw, pool, drawn_png(colour=(1, 1, 1)))
    lease = leased.headers["x-fediguard-lease"]
    with legacy(gw) as fedi_safety:
        refused = fedi_safety.post(POP, json={"image": f"{lease}.png", **verdict})
        assert refused.status_code == 404, refused.text
    with native(gw) as http:
        assert http.post(f"{LEASE}/{lease}/result", json=GOOD).status_code == 200
    native_record = gw.store.get(upload.result(30).json()["id"])
    assert native_record is not None and native_record.results[0]["detector"] == "sleep"

    image, upload = legacy_pop(gw, pool, drawn_png(colour=(2, 2, 2)))
    lease = image.split(".", 1)[0]
    with native(gw) as http:
        assert http.post(f"{LEASE}/{lease}/result", json=GOOD).status_code == 404
        assert http.post(f"{LEASE}/{lease}/extend").status_code == 404
        assert http.post(f"{LEASE}/{lease}/banks", json={"pdq": []}).status_code == 404
    with legacy(gw) as fedi_safety:
        assert fedi_safety.post(POP, json={"image": image, **verdict}).status_code == 200
    legacy_record = gw.store.get(upload.result(30).json()["id"])
    assert legacy_record is not None and legacy_record.results[-1]["detector"] == "fedi-safety"


def fedi_safety_stand_in(
    gw: RunningGateway, stop: threading.Event, seen: list[httpx.Response]
) -> Callable[[], None]:
    def run() -> None:
        with legacy(gw, "w3") as http:
            while not stop.is_set():
                job = http.get(POP)
                if job.status_code != 200:
                    continue
                seen.append(job)
                name = job.headers["content-disposition"].split("=", 1)[1]
                http.post(POP, json={"image": name, "is_csam": False, "is_nsfw": False})

    return run


def test_fedi_safety_workers_get_media_by_its_bytes_not_its_declared_type(gateway_for: Start) -> None:
    """An MP4 declared image/png never reaches a fedi-safety worker as it is (it cannot open video;
    this one, empty, is undecodable and reaches it not at all); a PNG declared video/mp4 does, named
    and typed as the PNG it is."""
    gw = gateway(gateway_for, fail_policy="open")
    stop = threading.Event()
    seen: list[httpx.Response] = []
    thread = threading.Thread(target=fedi_safety_stand_in(gw, stop, seen), daemon=True)
    thread.start()
    try:
        wait_for(lambda: "w3" in remote(gw), what="the stand-in to poll")
        video = gw.post(MP4, "image/png")
        still = gw.post(drawn_png(colour=(6, 6, 6)), "video/mp4")
    finally:
        stop.set()
        thread.join(10)
    assert video.json()["fail_reason"] == "undecodable", video.json()
    assert still.json()["verdict"] == "pass", still.json()
    still_record = gw.store.get(still.json()["id"])
    assert still_record is not None and still_record.scanner == "w3"
    assert still_record.detected_type == "image/png" and still_record.media_type == "video/mp4"
    assert [job.content[:8] for job in seen] == [b"\x89PNG\r\n\x1a\n"]
    assert seen[0].headers["content-type"] == "image/png"
    assert seen[0].headers["content-disposition"].endswith(".png")
