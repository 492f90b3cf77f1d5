"""The last worker leaving: uploads queued for it get the fail policy within about a second, not at
their deadline, whether it was stopped (SIGTERM: it says it is leaving) or killed (SIGKILL: the
connections it holds close with it). Real worker processes against a real gateway on loopback.

Times are asserted under 3 s rather than 1 s only to stay robust on a loaded 2-core machine: the
deadline here is 20 s and the scans in hand far longer than 3 s, so a pass still tells the cases apart.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable

import httpx

from support.gateway import RunningGateway
from support.images import drawn_png
from support.workers import Start, gateway, remote, wait_for

Workers = Callable[..., subprocess.Popen[bytes]]


def upload(
    gw: RunningGateway, colour: tuple[int, int, int], answers: dict[str, httpx.Response], key: str
) -> threading.Thread:
    thread = threading.Thread(
        target=lambda: answers.update({key: gw.post(drawn_png(colour=colour), timeout=60)})
    )
    thread.start()
    return thread


def one_scanning_one_queued(
    gw: RunningGateway, answers: dict[str, httpx.Response]
) -> tuple[threading.Thread, threading.Thread]:
    """Upload ``held`` (the worker takes it), then ``queued`` (it waits behind it)."""
    held = upload(gw, (1, 1, 1), answers, "held")
    wait_for(lambda: remote(gw)["w1"]["busy"] == 1, what="w1 to take the first upload")
    queued = upload(gw, (2, 2, 2), answers, "queued")
    wait_for(lambda: gw.service.queue.depth == 1, what="the second upload to queue")
    return held, queued


def signal_mid_scan(
    gateway_for: Start, workers: Workers, sig: signal.Signals, sleep_s: float
) -> tuple[subprocess.Popen[bytes], dict[str, httpx.Response], threading.Thread, threading.Thread, float]:
    """A worker scanning an upload for ``sleep_s`` with another queued behind it, sent ``sig``: the
    process, the answers to come, the threads awaiting them and when the signal went."""
    gw = gateway(gateway_for, deadline_s=20)
    proc = workers(gw, "w1", sleep_s=sleep_s)
    wait_for(lambda: "w1" in remote(gw), what="w1 to poll")
    answers: dict[str, httpx.Response] = {}
    held, queued = one_scanning_one_queued(gw, answers)
    signalled = time.monotonic()
    proc.send_signal(sig)
    return proc, answers, held, queued, signalled


def test_a_worker_stopped_by_sigterm_leaves_its_queued_uploads_to_the_fail_policy_at_once(
    gateway_for: Start, workers: Workers
) -> None:
    proc, answers, held, queued, signalled = signal_mid_scan(gateway_for, workers, signal.SIGTERM, 8.0)
    queued.join(30)
    queued_s = time.monotonic() - signalled
    assert answers["queued"].status_code == 503 and answers["queued"].json()["fail_reason"] == "no_scanner"
    assert queued_s < 3, queued_s
    # The upload in hand is finished and its result taken, then the worker exits.
    held.join(30)
    assert answers["held"].status_code == 200 and answers["held"].json()["verdict"] == "pass"
    assert proc.wait(30) == 0


def test_a_worker_killed_mid_scan_leaves_its_uploads_to_the_fail_policy_at_once(
    gateway_for: Start, workers: Workers
) -> None:
    """Killed, it cannot say so: the renewal request it keeps open while scanning closes with it,
    so neither the upload it held nor the one queued waits for its 5 s lease to run out."""
    _, answers, held, queued, killed = signal_mid_scan(gateway_for, workers, signal.SIGKILL, 30.0)
    queued.join(30)
    held.join(30)
    answered_s = time.monotonic() - killed
    for key in ("held", "queued"):
        assert answers[key].status_code == 503 and answers[key].json()["fail_reason"] == "no_scanner"
    assert answered_s < 3, answered_s
