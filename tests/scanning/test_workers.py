"""Remote workers as real processes against a real gateway on loopback."""

from __future__ import annotations

import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx
import pytest

from support.images import drawn_png
from support.tls import make_ca
from support.workers import CHILD_PYTHONPATH, KEYS, PLUGINS, TESTS_DIR, Start, gateway, remote, wait_for


@pytest.fixture(autouse=True)
def _plugins_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS_DIR))


def test_uploads_spread_across_two_workers(gateway_for: Start, workers: Callable[..., object]) -> None:
    gw = gateway(gateway_for)
    workers(gw, "w1", 0.1)
    workers(gw, "w2", 0.1)
    wait_for(lambda: {"w1", "w2"} <= set(remote(gw)), what="both workers to poll")
    responses: list[httpx.Response] = []
    bodies = [drawn_png(colour=(i, 50, 50)) for i in range(12)]  # distinct bytes: no verdict cache
    threads = [threading.Thread(target=lambda b=b: responses.append(gw.post(b))) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in responses] == [200] * 12
    scanners = {gw.store.get(r.json()["id"]).scanner for r in responses}  # type: ignore[union-attr]
    assert scanners == {"w1", "w2"}
    record = gw.store.get(responses[0].json()["id"])
    assert record is not None and record.results[0]["detector"] == "sleep"
    metrics = httpx.get(f"{gw.url}/metrics").text
    done = {
        name: sum(1 for r in responses if gw.store.get(r.json()["id"]).scanner == name)
        for name in ("w1", "w2")
    }  # type: ignore[union-attr]
    for name in ("w1", "w2"):
        assert (
            f'fediguard_worker_jobs_total{{outcome="completed",scanner="{name}"}} {float(done[name])}'
            in metrics
        )
        assert remote(gw)[name]["completed"] == done[name] and remote(gw)[name]["per_minute"] == done[name]


def test_killed_worker_loses_no_job(
    gateway_for: Start, workers: Callable[..., subprocess.Popen[bytes]]
) -> None:
    """A worker killed mid-scan loses no job: the request it renews its lease over closes with it, so
    the job goes to another worker at once, not when the 5 s lease runs out."""
    gw = gateway(gateway_for, deadline_s=15)
    stuck = workers(gw, "w1", 60)  # holds its lease, scanning "forever"
    wait_for(lambda: "w1" in remote(gw), what="w1 to poll")
    result: list[httpx.Response] = []
    poster = threading.Thread(target=lambda: result.append(gw.post(drawn_png())))
    poster.start()
    wait_for(lambda: remote(gw)["w1"]["busy"] == 1, what="w1 to hold the lease")
    workers(gw, "w2", 0.01)
    wait_for(lambda: "w2" in remote(gw) and remote(gw)["w2"]["waiting"] == 1, what="w2 to poll")
    killed = time.monotonic()
    stuck.send_signal(signal.SIGKILL)
    poster.join(30)
    answered_s = time.monotonic() - killed
    assert result and result[0].status_code == 200, result
    body = result[0].json()
    assert body["verdict"] == "pass"
    assert gw.store.get(body["id"]).scanner == "w2"  # type: ignore[union-attr]
    assert gw.service.queue.requeued == 1 and gw.service.queue.depth == 0
    assert remote(gw)["w1"]["expired_leases"] == 1
    # Well under the 5 s lease; 3 s rather than 1 s only for a loaded 2-core machine.
    assert answered_s < 3, answered_s


def test_worker_with_other_detectors_is_refused(
    gateway_for: Start, workers: Callable[..., subprocess.Popen[bytes]]
) -> None:
    gw = gateway(gateway_for)
    proc = workers(gw, "w1", detectors="support.plugins:benign")
    assert proc.wait(60) == 2
    assert proc.stderr is not None and b"detector mismatch" in proc.stderr.read()


def test_worker_refused_after_serving_keeps_retrying_until_the_gateway_takes_it_again(
    gateway_for: Start, workers: Callable[..., subprocess.Popen[bytes]]
) -> None:
    """A gateway upgraded to other detectors refuses a worker that was serving: the worker keeps
    retrying (it is fixed on the other side), and serves again once the gateway accepts it."""
    gw = gateway(gateway_for)
    proc = workers(gw, "w1")
    wait_for(lambda: "w1" in remote(gw), what="w1 to poll")
    assert gw.post(drawn_png(colour=(9, 9, 9))).json()["verdict"] == "pass"
    wait_for(lambda: remote(gw)["w1"]["waiting"] == 1, what="w1 to poll again")
    fingerprint = gw.service.detector_fingerprint
    gw.service.detector_fingerprint = "upgraded-detectors@2"
    # Its long-poll in progress was accepted before the change: one more upload ends it (the result,
    # from detectors the gateway no longer runs, is refused, so the fail policy answers), and its
    # next poll is refused (409).
    assert gw.post(drawn_png(colour=(8, 8, 8))).json()["verdict"] == "unscanned"
    wait_for(lambda: remote(gw)["w1"]["waiting"] == 0, what="w1 to be refused")
    time.sleep(1.5)
    assert proc.poll() is None, "the worker must not exit on a refusal once it has served"
    assert remote(gw)["w1"]["waiting"] == 0, "refused, it waits before retrying"
    gw.service.detector_fingerprint = fingerprint
    wait_for(lambda: remote(gw)["w1"]["waiting"] == 1, what="w1 to come back", timeout=30)
    response = gw.post(drawn_png(colour=(7, 7, 7)))
    assert response.status_code == 200 and response.json()["verdict"] == "pass"
    assert proc.poll() is None


def test_worker_with_a_wrong_key_exits(gateway_for: Start) -> None:
    gw = gateway(gateway_for)
    env = dict(os.environ, PYTHONPATH=CHILD_PYTHONPATH, FEDIGUARD_DETECTORS=PLUGINS)
    run = subprocess.run(
        [sys.executable, "-m", "fediguard", "worker", "--server", gw.url, "--key", "not-a-key-0123456789"],
        env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2 and b"refused this worker (401)" in run.stderr


def test_protocol_errors_are_clean_and_change_nothing(gateway_for: Start) -> None:
    gw = gateway(gateway_for, lease_s=0.5, deadline_s=10, fail_policy="open")
    fp = gw.service.detector_fingerprint
    auth = {n: {"Authorization": f"Bearer {k}", "X-Fediguard-Detectors": fp} for n, k in KEYS.items()}
    lease_url = f"{gw.url}/api/v1/worker/lease"
    with httpx.Client(timeout=20) as http:
        assert http.get(lease_url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.get(lease_url, params={"wait": "0.05"}, headers=auth["w1"]).status_code == 204
        assert http.get(lease_url, params={"wait": "x"}, headers=auth["w1"]).status_code == 400
        poster = threading.Thread(target=lambda: gw.post(drawn_png(), timeout=20))
        poster.start()
        job = http.get(lease_url, params={"wait": "5"}, headers=auth["w1"])
        assert job.status_code == 200 and job.content.startswith(b"\x89PNG")
        lease = job.headers["x-fediguard-lease"]
        result_url = f"{lease_url}/{lease}/result"
        good = {"results": [{"detector": "sleep", "version": "test-1", "scores": {}}]}
        # another worker's lease, malformed results, an unknown lease: refused, nothing changes
        assert http.post(result_url, json=good, headers=auth["w2"]).status_code == 404
        assert http.post(result_url, content=b"{not json", headers=auth["w1"]).status_code == 422
        assert http.post(result_url, json={"results": [{"scores": 1}]}, headers=auth["w1"]).status_code == 422
        assert http.post(result_url, json={"error": "deadline"}, headers=auth["w1"]).status_code == 422
        # results the gateway did not ask for: another detector, another version, or none at all
        for results in (
            [{"detector": "sleep", "version": "test-1"}, {"detector": "nudity", "version": "9"}],
            [{"detector": "sleep", "version": "test-2", "scores": {}}],
            [],
        ):
            refused = http.post(result_url, json={"results": results}, headers=auth["w1"])
            assert refused.status_code == 422, refused.text
        assert http.post(f"{lease_url}/nope/result", json=good, headers=auth["w1"]).status_code == 404
        assert http.post(f"{lease_url}/{lease}/extend", headers=auth["w2"]).status_code == 404
        assert http.post(f"{lease_url}/{lease}/extend", headers=auth["w1"]).status_code == 200
        # let the lease go stale: its result is refused; the job went back to the queue
        time.sleep(0.8)
        assert http.post(result_url, json=good, headers=auth["w1"]).status_code == 404
        again = http.get(lease_url, params={"wait": "5"}, headers=auth["w2"])
        assert (
            again.status_code == 200
            and again.headers["x-fediguard-sha256"] == job.headers["x-fediguard-sha256"]
        )
        lease2 = again.headers["x-fediguard-lease"]
        assert http.post(f"{lease_url}/{lease2}/result", json=good, headers=auth["w2"]).status_code == 200
        poster.join(20)
    assert gw.store.count() == 1
    assert gw.store.recent(1)[0].scanner == "w2" and gw.store.recent(1)[0].verdict == "pass"


def test_no_worker_applies_the_fail_policy_promptly(
    gateway_for: Start, workers: Callable[..., subprocess.Popen[bytes]]
) -> None:
    gw = gateway(gateway_for, deadline_s=20)
    proc = workers(gw, "w1")
    wait_for(lambda: "w1" in remote(gw), what="w1 to poll")
    proc.kill()
    proc.wait(10)
    # At once, while the gateway may still count the dead worker as about to poll again: the upload
    # is queued, then failed as soon as no scanner is left, not at its 20 s deadline.
    queued = gw.post(drawn_png(colour=(1, 2, 3)), timeout=30)
    assert queued.status_code == 503 and queued.json()["fail_reason"] == "no_scanner", queued.json()
    later = gw.post(drawn_png(), timeout=30)
    assert later.status_code == 503 and later.json()["fail_reason"] == "no_scanner"
    assert httpx.get(f"{gw.url}/readyz").status_code == 503
    record = gw.store.get(queued.json()["id"])
    assert record is not None and record.fail_policy == "closed"


def test_fedi_safety_worker_protocol(gateway_for: Start) -> None:
    """A stand-in that speaks exactly the fedi-safety worker protocol gets jobs and its verdicts apply."""
    gw = gateway(gateway_for, fail_policy="open")
    answers = iter([(True, False), (False, True), (False, False), (False, False)])
    stop = threading.Event()
    seen: list[str] = []
    timeouts: list[int] = []

    def fedi_safety_worker() -> None:
        # As fedi-safety does: a 2 s timeout per poll, and the name is all after the first '='.
        with httpx.Client(base_url=gw.url, headers={"apikey": KEYS["w3"]}, timeout=2) as http:
            while not stop.is_set():
                try:
                    r = http.get("/api/v1/pop")
                except httpx.TimeoutException:
                    timeouts.append(1)
                    continue
                if r.status_code == 204:
                    continue
                assert r.status_code == 200
                name = r.headers["content-disposition"].split("=", 1)[1]
                seen.append(name)
                is_csam, is_nsfw = next(answers)
                done = http.post("/api/v1/pop", json={"image": name, "is_csam": is_csam, "is_nsfw": is_nsfw})
                assert done.status_code == 200

    thread = threading.Thread(target=fedi_safety_worker, daemon=True)
    thread.start()
    wait_for(lambda: "w3" in remote(gw), what="the stand-in to poll")
    try:
        statuses = [gw.post(drawn_png(colour=(i, i, i))) for i in range(3)]
        # its pass is not reused from the verdict cache: the same bytes go to it again
        again = gw.post(drawn_png(colour=(2, 2, 2)))
        # the gateway decodes first: bytes it cannot decode get the fail policy at once, unseen by it
        video = gw.post(b"\x00\x00\x00\x18ftypmp42" + bytes(64), "video/mp4")
    finally:
        stop.set()
        thread.join(10)
    assert [r.json()["verdict"] for r in statuses] == ["reject", "pass", "pass"]
    assert [r.status_code for r in statuses] == [406, 200, 200]
    assert [r.json()["labels"] for r in statuses] == [["csam_suspect"], ["nsfw"], []]
    assert all(name.endswith(".png") for name in seen) and len(seen) == 4
    assert again.json()["verdict"] == "pass" and not any("cached" in r for r in again.json()["reasons"])
    again_record = gw.store.get(again.json()["id"])
    assert again_record is not None and again_record.scanner == "w3"
    assert video.json()["fail_reason"] == "undecodable", video.json()
    assert not timeouts, "an idle poll is answered within fedi-safety's 2 s timeout"
    record = gw.store.get(statuses[0].json()["id"])
    assert record is not None and record.scanner == "w3"
    assert record.results[0]["scores"] == {"csam": 1.0, "nsfw": 0.0}
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        assert http.get("/api/v1/pop", headers={"apikey": "nope"}).status_code == 401
        bad = http.post(
            "/api/v1/pop", headers={"apikey": KEYS["w3"]}, json={"image": "x.png", "is_csam": "yes"}
        )
        assert bad.status_code == 422
        gone = http.post("/api/v1/pop", headers={"apikey": KEYS["w3"]},
                         json={"image": "unknown.png", "is_csam": False, "is_nsfw": False})  # fmt: skip
        assert gone.status_code == 404


def test_shutdown_answers_uploads_held_by_workers_at_once(
    gateway_for: Start, workers: Callable[..., subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    """A stopping gateway can no longer take workers' results: an upload a worker is scanning gets
    the fail policy at once (not at its 20 s deadline), and is recorded; the shutdown completes,
    and the long-polls of idle workers end cleanly (204, not a server error)."""
    gw = gateway(gateway_for, deadline_s=20)
    workers(gw, "w1", sleep_s=5.0)
    workers(gw, "w2", sleep_s=5.0)
    wait_for(lambda: {"w1", "w2"} <= set(remote(gw)), what="w1 and w2 to poll")
    answers: list[httpx.Response] = []
    upload = threading.Thread(target=lambda: answers.append(gw.post(drawn_png(colour=(5, 6, 7)), timeout=60)))
    upload.start()
    wait_for(lambda: sum(int(str(w["busy"])) for w in remote(gw).values()) == 1, what="a worker to take it")
    wait_for(lambda: sum(int(str(w["waiting"])) for w in remote(gw).values()) == 1, what="the other to wait")
    gw.stop()
    upload.join(30)
    assert not gw.thread.is_alive(), "the gateway stopped"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors
    (response,) = answers
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["fail_reason"] == "no_scanner" and "shutting down" in body["reasons"][0]
    record = gw.store.get(body["id"])
    assert record is not None and record.fail_policy == "closed"


def test_workers_reach_a_gateway_over_https_with_its_own_ca(
    gateway_for: Start, workers: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """The gateway serves HTTPS itself (tls_certfile/tls_keyfile); a worker given the CA with
    --ca-file connects and scans, one without it refuses the unknown certificate and keeps trying."""
    ca = make_ca(tmp_path)
    gw = gateway(gateway_for, tls_certfile=ca.cert_file, tls_keyfile=ca.key_file)
    url = gw.url.replace("http://", "https://")
    trusted = ssl.create_default_context(cafile=str(ca.ca_file))
    with httpx.Client(base_url=url, verify=trusted, timeout=30) as https:

        def polling() -> set[str]:
            rows = https.get("/api/v1/workers").json()["scanners"]
            return {r["name"] for r in rows if r["kind"] == "remote"}

        distrusting = workers(gw, "w2", server=url)
        assert distrusting.stderr is not None
        refusals = _lines_of(distrusting.stderr)
        workers(gw, "w1", server=url, args=("--ca-file", str(ca.ca_file)))
        wait_for(lambda: "w1" in polling(), what="w1 to poll over HTTPS")
        png = {"Content-Type": "image/png"}
        response = https.post("/api/v1/scan/IPADDR", content=drawn_png(), headers=png)
        assert response.status_code == 200 and response.json()["verdict"] == "pass"
        record = gw.store.get(response.json()["id"])
        assert record is not None and record.scanner == "w1"
        assert "w2" not in polling()
    # Its first attempt may come after w1 has served (it loads detectors first): wait for it.
    wait_for(lambda: any(b"CERTIFICATE_VERIFY_FAILED" in line for line in refusals), what="w2's refusal")
    assert distrusting.poll() is None, "it keeps retrying"


def _lines_of(stream: IO[bytes]) -> list[bytes]:
    """The lines a child process writes to ``stream``, collected by a daemon thread as they come."""
    lines: list[bytes] = []

    def collect() -> None:
        for line in iter(stream.readline, b""):
            lines.append(line)

    threading.Thread(target=collect, daemon=True).start()
    return lines


def test_a_bank_hit_settles_a_remote_job_before_any_model_runs(
    gateway_for: Start, workers: Callable[..., subprocess.Popen[bytes]]
) -> None:
    """A worker asks the gateway about its frames' PDQ hashes first: an allow or deny entry then
    decides, and the worker's models never run (its result holds no detector but the banks')."""
    from skimage import data

    from fediguard.banks.formats import BankEntry
    from fediguard.banks.store import BankStore
    from support.images import encode

    gw = gateway(gateway_for, bank_refresh_s=0.1)
    workers(gw, "w1")
    wait_for(lambda: "w1" in remote(gw), what="w1 to poll")
    photo, other = data.astronaut(), data.chelsea()
    scanned = gw.store.get(gw.post(encode(photo, "PNG")).json()["id"])
    assert scanned is not None and scanned.pdq and "remote:detector:sleep" in scanned.timings
    unrelated = gw.store.get(gw.post(encode(other, "PNG")).json()["id"])
    assert unrelated is not None and unrelated.pdq

    banks = BankStore(gw.store.engine)
    assert gw.service.banks is not None
    matcher = gw.service.banks.matcher
    banks.create("ok", "allow")
    banks.add("ok", [BankEntry("pdq", scanned.pdq[0]["hash"])], "t", "t")
    banks.create("bad", "deny")
    banks.add("bad", [BankEntry("pdq", unrelated.pdq[0]["hash"])], "t", "t")
    now = banks.state()  # wait for this state: a reload between two changes would miss the later
    wait_for(lambda: matcher.state == now, what="the banks to load")

    allowed = gw.post(encode(photo, "JPEG", quality=70), "image/jpeg")  # other bytes: no SHA-256 hit
    assert allowed.status_code == 200 and allowed.json()["labels"] == ["allowlisted"], allowed.json()
    denied = gw.post(encode(other, "JPEG", quality=70), "image/jpeg")
    assert denied.status_code == 406 and "bank 'bad'" in denied.json()["reasons"][0], denied.json()
    for response in (allowed, denied):
        record = gw.store.get(response.json()["id"])
        assert record is not None and record.scanner == "w1"
        assert [r["detector"] for r in record.results] == ["banks"], record.results
        assert "remote:detector:sleep" not in record.timings and record.pdq
    # An unmatched upload still runs the models after asking.
    fresh = gw.store.get(gw.post(encode(data.coffee(), "JPEG")).json()["id"])
    assert fresh is not None and "remote:detector:sleep" in fresh.timings
