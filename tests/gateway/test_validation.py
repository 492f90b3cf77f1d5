"""The pict-rs validation endpoint end to end: a real server, a client that behaves like pict-rs."""

from __future__ import annotations

import hashlib
import io
import struct
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

from fediguard.detectors.base import DetectorResult, Subject
from fediguard.scanning.queue import ESTIMATE_AFTER
from support.detectors import CallCounter, HangDetector, RaiseDetector, ScoreDetector, SleepDetector
from support.gateway import RunningGateway
from support.images import astronaut_jpeg, drawn_png, encode

pytestmark = pytest.mark.usefixtures("no_temp_files_left")

Start = Callable[..., RunningGateway]


def _record(gw: RunningGateway, response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert body["id"] is not None, body
    record = gw.store.get(body["id"])
    assert record is not None
    assert record.verdict == body["verdict"]
    return body


def test_benign_image_passes_and_is_recorded(gateway_for: Start) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {"explicit": 0.01}))
    data = astronaut_jpeg()
    response = gw.post(data, "image/jpeg")
    assert response.status_code == 200
    body = _record(gw, response)
    assert body["verdict"] == "pass" and body["policy"] is None
    record = gw.store.get(body["id"])
    assert record is not None
    assert record.sha256 == hashlib.sha256(data).hexdigest()
    assert record.size == len(data) and record.media_type == "image/jpeg"
    assert record.detected_type == "image/jpeg"
    assert record.results[0]["detector"] == "nudity"
    assert {"hash", "scan", "total", "decode", "detector:nudity"} <= set(record.timings)
    assert record.client == "ip:127.0.0.1" and record.source == "gateway"


def test_injected_scores_reach_the_policy(gateway_for: Start) -> None:
    """Explicit content with an apparent minor in the same frame is rejected with readable reasons."""
    gw = gateway_for(
        lambda: ScoreDetector("nudity", {"explicit": 0.9}, notes=["test_class 0.90"]),
        lambda: ScoreDetector("age", {"faces": 1, "min_age": 11, "min_age_sd": 3}),
    )
    response = gw.post(drawn_png())
    assert response.status_code == 406
    body = _record(gw, response)
    assert body["verdict"] == "reject" and body["labels"] == ["csam_suspect"]
    assert body["reasons"] == ["frame 0: test_class 0.90 at (100,150,100,100); face apparent age 11 ± 3"]


def test_nsfw_alone_passes_by_default(gateway_for: Start) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {"explicit": 0.9}))
    response = gw.post(drawn_png())
    assert response.status_code == 200
    assert _record(gw, response)["labels"] == ["nsfw"]


def test_deny_list_rejects_without_running_costlier_detectors(gateway_for: Start, tmp_path: Path) -> None:
    data = drawn_png(colour=(1, 2, 3))
    deny = tmp_path / "deny.txt"
    deny.write_text(f"# known bad\n{hashlib.sha256(data).hexdigest()} seen 2026\n")
    counter = CallCounter()
    from fediguard.detectors.hashlist import HashListDetector

    gw = gateway_for(
        lambda: HashListDetector(deny_file=deny),
        lambda: counter.wrap(ScoreDetector("nudity", {"explicit": 0.0})),
    )
    response = gw.post(data)
    assert response.status_code == 406
    body = _record(gw, response)
    assert body["labels"] == ["denylisted"]
    assert body["reasons"][0].startswith("denied: sha256 listed in")
    assert counter.count == 0
    assert gw.post(drawn_png(colour=(9, 9, 9))).status_code == 200
    assert counter.count == 1


@pytest.mark.parametrize("policy,status", [("closed", 503), ("open", 200)])
def test_hanging_detector_gets_the_fail_policy_at_the_deadline(
    gateway_for: Start, policy: str, status: int
) -> None:
    release = threading.Event()
    gw = gateway_for(lambda: HangDetector(release), fail_policy=policy, deadline_s=0.5, scanner_threads=1)
    try:
        response = gw.post(drawn_png())
        assert response.status_code == status
        body = _record(gw, response)
        assert body["verdict"] == "unscanned"
        assert body["policy"] == policy and body["fail_reason"] == "deadline"
        assert "within the 0.5 s deadline" in body["reasons"][0]  # type: ignore[index]
        record = gw.store.get(int(body["id"]))  # type: ignore[arg-type]
        assert record is not None and record.fail_policy == policy and record.fail_reason == "deadline"
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert f'fediguard_fail_policy_applied_total{{policy="{policy}",reason="deadline"}} 1.0' in metrics
    finally:
        release.set()


class _HangOnFirstCalls:
    """Hangs (until released) on its first ``n`` calls across every slot, then answers at once."""

    name = "hang"
    version = "test-1"
    cost = 5

    def __init__(self, state: dict[str, int], release: threading.Event) -> None:
        self.state = state
        self.release = release

    def warm_up(self) -> None:
        return None

    def detect(self, subject: Subject) -> DetectorResult:
        with _HANG_LOCK:
            self.state["calls"] += 1
            hang = self.state["calls"] <= self.state["n"]
        if hang:
            self.release.wait(60)
        return DetectorResult(self.name, self.version)


_HANG_LOCK = threading.Lock()


def test_stuck_slots_are_replaced_so_later_uploads_are_scanned(
    gateway_for: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fediguard.scanning.local as local

    monkeypatch.setattr(local, "STUCK_GRACE_S", 0.2)
    release = threading.Event()
    state = {"calls": 0, "n": 2}
    gw = gateway_for(lambda: _HangOnFirstCalls(state, release), deadline_s=0.5, scanner_threads=2)
    try:
        results: list[httpx.Response] = []
        posts = [threading.Thread(target=lambda c=c: results.append(gw.post(drawn_png(colour=c))))
                 for c in ((1, 1, 1), (2, 2, 2))]  # fmt: skip
        for t in posts:
            t.start()
        for t in posts:
            t.join(30)
        assert [r.json()["fail_reason"] for r in results] == ["deadline", "deadline"]
        # Both slots are stuck in native code; fresh slots take their place.
        scanner = gw.service.local
        assert scanner is not None
        for _ in range(300):
            if scanner.stuck == 2 and len(gw.service.queue.scanners) == 2:
                break
            time.sleep(0.02)
        response = gw.post(drawn_png(colour=(3, 3, 3)), timeout=30)
        assert response.status_code == 200 and response.json()["verdict"] == "pass", response.json()
        assert httpx.get(f"{gw.url}/readyz").status_code == 200
        assert scanner.stuck == 2
    finally:
        release.set()


def test_when_stuck_calls_return_the_scanner_is_made_whole_again(
    gateway_for: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past slot_count stuck threads no more are started; once the stuck calls return (a long
    decode that ended), fresh slots make up the number and uploads are scanned again."""
    import fediguard.scanning.local as local

    monkeypatch.setattr(local, "STUCK_GRACE_S", 0.2)
    release = threading.Event()
    state = {"calls": 0, "n": 2}
    gw = gateway_for(lambda: _HangOnFirstCalls(state, release), deadline_s=0.5, scanner_threads=1)
    scanner = gw.service.local
    assert scanner is not None
    try:
        assert gw.post(drawn_png(colour=(1, 1, 1))).json()["fail_reason"] == "deadline"
        for _ in range(300):  # its replacement comes up...
            if scanner.stuck == 1 and len(gw.service.queue.scanners) == 1:
                break
            time.sleep(0.02)
        assert gw.post(drawn_png(colour=(2, 2, 2))).json()["fail_reason"] == "deadline"
        for _ in range(300):  # ...and gets stuck too: two stuck threads for one slot, no third
            if scanner.stuck == 2:
                break
            time.sleep(0.02)
        time.sleep(0.3)
        assert len(gw.service.queue.scanners) == 0
        assert httpx.get(f"{gw.url}/readyz").status_code == 503
    finally:
        release.set()
    for _ in range(500):
        if len(gw.service.queue.scanners) == 1:
            break
        time.sleep(0.02)
    response = gw.post(drawn_png(colour=(3, 3, 3)), timeout=30)
    assert response.status_code == 200 and response.json()["verdict"] == "pass", response.json()


def test_a_scan_longer_than_the_lease_is_not_run_twice(gateway_for: Start) -> None:
    """In-process leases do not expire under a slot that is still working."""
    counter = CallCounter()
    gw = gateway_for(lambda: counter.wrap(SleepDetector(0.6)), lease_s=0.2, deadline_s=5, scanner_threads=2)
    response = gw.post(drawn_png())
    assert response.status_code == 200 and response.json()["verdict"] == "pass", response.json()
    assert counter.count == 1


def test_crashing_detector_gets_the_fail_policy(gateway_for: Start) -> None:
    gw = gateway_for(RaiseDetector)
    response = gw.post(drawn_png())
    assert response.status_code == 503
    body = _record(gw, response)
    assert body["fail_reason"] == "scanner_error" and "the model crashed" in body["reasons"][0]


def test_token_auth(gateway_for: Start) -> None:
    secret = "s3cret-token-for-lemmy-0123456789"
    gw = gateway_for(
        lambda: ScoreDetector("nudity", {}), client_tokens=f"lemmy:{secret}", allowed_cidrs="10.0.0.0/8"
    )
    ok = gw.post(drawn_png(), client=secret)
    assert ok.status_code == 200
    assert gw.store.get(ok.json()["id"]).client == "lemmy"  # type: ignore[union-attr]
    assert gw.post(drawn_png(), client=secret[:-1]).status_code == 401
    assert gw.post(drawn_png(), client="IPADDR").status_code == 403  # 127.0.0.1 is not in 10/8
    assert gw.store.count() == 1, "refused requests must store nothing"
    assert 'fediguard_auth_failures_total{kind="token"} 1.0' in httpx.get(f"{gw.url}/metrics").text


@pytest.mark.parametrize("policy,status", [("closed", 413), ("open", 200)])
def test_body_too_large_is_cut_while_reading(gateway_for: Start, policy: str, status: int) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {}), max_body_mb=0.01, fail_policy=policy)
    big = b"\xff\xd8" + b"\0" * 50_000

    def chunks():  # no Content-Length: the limit must hold while streaming
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    with httpx.Client(timeout=10) as http:
        for content in (big, chunks()):
            response = http.post(gw.scan_url(), content=content, headers={"Content-Type": "image/jpeg"})
            assert response.status_code == status
            body = _record(gw, response)
            assert body["fail_reason"] == "too_large" and body["verdict"] == "unscanned"
            record = gw.store.get(body["id"])  # type: ignore[arg-type]
            # The declared length, or (streamed) what was read before the limit cut it.
            limit = int(0.01 * 1024 * 1024)
            assert record is not None and limit < record.size <= len(big), record.size


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a huge size in its header (a decompression bomb's first bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat_data = zlib.compress(b"\0" * 1024)
    idat = (
        struct.pack(">I", len(idat_data))
        + b"IDAT"
        + idat_data
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat_data))
    )
    return b"\x89PNG\r\n\x1a\n" + chunk + idat


def _truncated_jpeg() -> bytes:
    data = astronaut_jpeg()
    return data[: len(data) // 3]


BAD_MEDIA = {
    "empty": (b"", "image/png"),
    "not_an_image": (b"this is not an image at all" * 20, "image/jpeg"),
    "truncated_jpeg": (_truncated_jpeg(), "image/jpeg"),
    "bomb_header": (_png_header_only(60_000, 60_000), "image/png"),
}


@pytest.mark.parametrize("case", sorted(BAD_MEDIA))
@pytest.mark.parametrize("policy,status", [("closed", 503), ("open", 200)])
def test_undecodable_media_gets_the_fail_policy(
    gateway_for: Start, case: str, policy: str, status: int
) -> None:
    data, content_type = BAD_MEDIA[case]
    gw = gateway_for(lambda: ScoreDetector("nudity", {}), fail_policy=policy)
    response = gw.post(data, content_type)
    assert response.status_code == status, response.text
    body = _record(gw, response)
    assert body["verdict"] == "unscanned" and body["fail_reason"] == "undecodable"


def test_missing_content_type_is_sniffed(gateway_for: Start) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {}))
    response = gw.post(drawn_png(), content_type=None)
    assert response.status_code == 200
    body = _record(gw, response)
    assert gw.store.get(body["id"]).detected_type == "image/png"  # type: ignore[arg-type,union-attr]


def test_one_pixel_image_passes(gateway_for: Start) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {}))
    response = gw.post(encode(Image.new("RGB", (1, 1), (5, 6, 7))))
    assert response.status_code == 200 and _record(gw, response)["verdict"] == "pass"


def test_huge_image_is_answered_by_policy_without_decoding(gateway_for: Start) -> None:
    import resource

    big = encode(Image.new("L", (10_000, 10_000), 128), optimize=False)
    gw = gateway_for(lambda: ScoreDetector("nudity", {}))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    response = gw.post(big, "image/png", timeout=60)
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert response.status_code == 503
    body = _record(gw, response)
    assert body["fail_reason"] == "undecodable" and "MP" in body["reasons"][0]
    assert (peak_after - peak_before) < 150_000, "decoding 100 MP must not be attempted"  # KiB


def test_animated_gif_is_scanned_frame_by_frame(gateway_for: Start) -> None:
    frames = [Image.new("RGB", (40, 30), (i * 20, 100, 255 - i * 20)) for i in range(8)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    gw = gateway_for(lambda: ScoreDetector("nudity", {"explicit": 0.0}))
    response = gw.post(buf.getvalue(), "image/gif")
    assert response.status_code == 200
    record = gw.store.get(_record(gw, response)["id"])  # type: ignore[arg-type]
    assert record is not None and record.detected_type == "image/gif"
    assert len(record.results[0]["frames"]) == 8


def test_multipart_with_hostile_filename(gateway_for: Start, tmp_path: Path) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {}))
    data = drawn_png()
    for name in ("../../x", "/etc/passwd", "..\\..\\x", "a\0b.png", "x" * 1000):
        with httpx.Client(timeout=10) as http:
            response = http.post(gw.scan_url(), files={"file": (name, data, "image/png")})
        assert response.status_code == 200, response.text
        body = _record(gw, response)
        assert gw.store.get(body["id"]).sha256 == hashlib.sha256(data).hexdigest()  # type: ignore[arg-type,union-attr]
    assert not (tmp_path.parent / "x").exists() and not Path("x").exists()
    # A part header over python-multipart's 4 KiB limit cannot be read: the fail policy answers,
    # with the reason, and the decision is recorded (without the name or the bytes).
    with httpx.Client(timeout=10) as http:
        response = http.post(gw.scan_url(), files={"file": ("x" * 5000, data, "image/png")})
    assert response.status_code == 503
    body = _record(gw, response)
    assert body["fail_reason"] == "undecodable" and "header size" in body["reasons"][0]  # type: ignore[index]
    assert gw.store.count() == 6


@pytest.mark.parametrize("policy,status", [("closed", 503), ("open", 200)])
def test_unreadable_request_bodies_get_the_fail_policy(gateway_for: Start, policy: str, status: int) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {}), fail_policy=policy)
    with httpx.Client(timeout=10) as http:
        no_file = http.post(gw.scan_url(), files={"other": ("a.png", drawn_png(), "image/png")})
        no_boundary = http.post(
            gw.scan_url(), content=b"--x--", headers={"Content-Type": "multipart/form-data"}
        )
        cut_short = http.post(
            gw.scan_url(),
            content=b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
    for response, words in ((no_file, "file"), (no_boundary, "boundary"), (cut_short, "")):
        assert response.status_code == status, response.text
        body = _record(gw, response)
        assert body["verdict"] == "unscanned" and body["policy"] == policy
        assert body["fail_reason"] == "undecodable" and words in body["reasons"][0]  # type: ignore[index]
    metrics = httpx.get(f"{gw.url}/metrics").text
    assert f'fediguard_fail_policy_applied_total{{policy="{policy}",reason="undecodable"}} 3.0' in metrics, (
        metrics
    )


def test_no_scanner_applies_the_fail_policy_at_once(gateway_for: Start) -> None:
    gw = gateway_for(local_scanner=False, deadline_s=20)
    response = gw.post(drawn_png(), timeout=5)
    assert response.status_code == 503
    body = _record(gw, response)
    assert body["fail_reason"] == "no_scanner"
    assert httpx.get(f"{gw.url}/readyz").status_code == 503


def test_queue_full_applies_the_fail_policy(gateway_for: Start) -> None:
    gw = gateway_for(lambda: SleepDetector(0.4), queue_max=1, scanner_threads=1, fail_policy="open")
    results: list[httpx.Response] = []

    def post() -> None:
        results.append(gw.post(drawn_png()))

    threads = [threading.Thread(target=post) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reasons = sorted(str(r.json()["fail_reason"]) for r in results)
    assert "queue_full" in reasons and "None" in reasons
    assert all(r.status_code == 200 for r in results)
    assert gw.store.count() == 5


def test_work_queued_beyond_the_deadline_is_answered_at_once(gateway_for: Start) -> None:
    """With the one scanner busy and more work queued ahead than the deadline allows, an upload gets
    the fail policy when it arrives (reason: queued work), not after waiting out its deadline."""
    gw = gateway_for(lambda: SleepDetector(0.2), scanner_threads=1, deadline_s=1.0, fail_policy="open",
                     verdict_cache=False)  # fmt: skip
    for i in range(ESTIMATE_AFTER):  # the queue learns the time per job
        assert gw.post(drawn_png(colour=(i, 0, 0))).json()["verdict"] == "pass"
    results: list[httpx.Response] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(gw.post(drawn_png(colour=(0, i, 0)))))
        for i in range(12)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bodies = [r.json() for r in results]
    early = [b for b in bodies if "queued ahead" in " ".join(b["reasons"])]
    assert early, bodies
    assert all(b["fail_reason"] == "deadline" and b["verdict"] == "unscanned" for b in early)
    assert any(b["verdict"] == "pass" for b in bodies), "the scanner still serves what it can"
    assert gw.store.count() == ESTIMATE_AFTER + 12


def test_health_ready_and_metrics(gateway_for: Start) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {}))
    assert httpx.get(f"{gw.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gw.url}/readyz")
    assert ready.status_code == 200 and ready.json()["detectors"] == "nudity@test-1,pdq@1"
    gw.post(drawn_png())
    text = httpx.get(f"{gw.url}/metrics").text
    assert 'fediguard_decisions_total{policy="none",source="gateway",verdict="pass"} 1.0' in text
    assert 'fediguard_stage_seconds_count{stage="total"} 1.0' in text
    assert "fediguard_queue_depth 0.0" in text


def test_per_client_policy_override(gateway_for: Start) -> None:
    strict_secret, lax_secret = "strict-client-secret-012345", "lax-client-secret-0123456"
    gw = gateway_for(
        lambda: ScoreDetector("nudity", {"explicit": 0.9}),
        client_tokens=f"strict:{strict_secret},lax:{lax_secret}",
        client_policies={"strict": {"reject_labels": ["csam_suspect", "nsfw"]}},
    )
    assert gw.post(drawn_png(), client=lax_secret).status_code == 200
    strict = gw.post(drawn_png(), client=strict_secret)
    assert strict.status_code == 406 and strict.json()["labels"] == ["nsfw"]


def test_real_default_detectors_pass_benign_photos_through_the_gateway(gateway_for: Start) -> None:
    """The shipped CPU detectors (nudity, apparent age) and the default policy, end to end: benign
    photos pass, with both detectors' scores and the face's apparent age in the record (screening off,
    so the age model runs on frames nothing explicit is in; with it on, see the next test)."""
    from skimage import data as samples

    gw = gateway_for(detectors=["nudity", "age"], screening_threshold=0)
    for name in ("astronaut", "camera", "coffee"):
        image = getattr(samples, name)()
        response = gw.post(encode(image, "JPEG", quality=90), "image/jpeg")
        assert response.status_code == 200, (name, response.text)
        body = _record(gw, response)
        assert body["verdict"] == "pass" and body["labels"] == [], (name, body)
        record = gw.store.get(body["id"])  # type: ignore[arg-type]
        assert record is not None
        assert [r["detector"] for r in record.results] == ["nudity", "age"]
        if name in ("astronaut", "camera"):
            assert record.results[1]["scores"]["faces"] >= 1 and record.results[1]["scores"]["min_age"] >= 18


def test_by_default_the_age_model_skips_frames_with_nothing_explicit(gateway_for: Start) -> None:
    from skimage import data as samples

    gw = gateway_for(detectors=["nudity", "age"])
    response = gw.post(encode(samples.astronaut(), "JPEG", quality=90), "image/jpeg")
    body = _record(gw, response)
    record = gw.store.get(body["id"])  # type: ignore[arg-type]
    assert body["verdict"] == "pass" and record is not None
    assert record.results[1]["detector"] == "age" and record.results[1]["notes"][0].startswith("not run")
    assert "detector:age" not in record.timings


def test_bombs_meet_the_decoder_sandbox_and_benign_uploads_still_pass(gateway_for: Start) -> None:
    """With the sandbox on (the default), decoding runs in its child processes: a bomb over the
    header checks is refused from its header, one just under them (27 flat 3840² WebP frames, 398 M
    pixels, ~5 s of CPU) is ended by the CPU limit; the child is replaced and the next upload passes."""
    from support import bombs

    gw = gateway_for(lambda: ScoreDetector("nudity", {}), decode_sandbox=True, decode_cpu_s=1)
    sandbox = gw.service.sandbox
    assert sandbox is not None and len(sandbox.pids) == gw.settings.scanner_threads
    response = gw.post(bombs.webp_animation(100, (3840, 3840)), "image/webp")
    assert response.status_code == 503
    body = _record(gw, response)
    assert body["fail_reason"] == "undecodable" and "100 frames of 3840x3840" in body["reasons"][0]
    response = gw.post(bombs.webp_animation(27, (3840, 3840)), "image/webp")
    assert response.status_code == 503
    assert "(undecodable): decoding used more than 1 s of CPU" in _record(gw, response)["reasons"][0]
    assert sandbox.replaced == 1
    response = gw.post(drawn_png(), "image/png")
    assert response.status_code == 200 and _record(gw, response)["verdict"] == "pass"


def test_a_bomb_past_the_header_checks_is_ended_by_its_deadline_and_frees_the_scanner(
    gateway_for: Start,
) -> None:
    """27 flat 3840² WebP frames pass the header checks and take ~5 s of CPU: with CPU and wall
    limits far off, the upload's deadline ends the decode (answered ``undecodable`` naming it, not
    ``deadline``), the child is replaced, and the next upload on the one scanner slot is scanned."""
    from support import bombs

    gw = gateway_for(
        lambda: ScoreDetector("nudity", {}), decode_sandbox=True, decode_cpu_s=600, decode_timeout_s=600,
        deadline_s=1.5, scanner_threads=1,
    )  # fmt: skip
    sandbox = gw.service.sandbox
    assert sandbox is not None
    response = gw.post(bombs.webp_animation(27, (3840, 3840)), "image/webp")
    assert response.status_code == 503
    body = _record(gw, response)
    assert body["fail_reason"] == "undecodable"
    assert "decoding was not done by the upload's deadline" in body["reasons"][0]  # type: ignore[index]
    assert sandbox.replaced == 1
    response = gw.post(drawn_png(), "image/png")
    assert response.status_code == 200 and _record(gw, response)["verdict"] == "pass"
