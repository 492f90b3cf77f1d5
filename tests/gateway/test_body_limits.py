"""Reading a body is bounded in time: slow senders and clients that hang up, over raw sockets
against a real gateway."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from support.detectors import ScoreDetector
from support.gateway import RunningGateway
from support.images import drawn_png
from support.workers import wait_for

Start = Callable[..., RunningGateway]


def start(gateway_for: Start, **overrides: Any) -> RunningGateway:
    return gateway_for(lambda: ScoreDetector("nudity", {"explicit": 0.0}), **overrides)


def begin_upload(gw: RunningGateway, length: int) -> socket.socket:
    """A connection that has sent an upload's headers (a Content-Length of ``length``), no body yet."""
    url = urlsplit(gw.url)
    sock = socket.create_connection((url.hostname, url.port), timeout=30)
    head = (
        "POST /api/v1/scan/IPADDR HTTP/1.1\r\nHost: fediguard\r\nContent-Type: image/png\r\n"
        f"Content-Length: {length}\r\n\r\n"
    )
    sock.sendall(head.encode())
    return sock


def read_answer(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of the answer, read until the gateway closes the connection (which
    it must: the rest of the body is never read)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


@pytest.mark.parametrize("policy,status", [("closed", 503), ("open", 200)])
def test_a_stalled_body_gets_the_fail_policy_at_the_idle_timeout(
    gateway_for: Start, policy: str, status: int
) -> None:
    gw = start(gateway_for, body_idle_timeout_s=1, fail_policy=policy)
    data = drawn_png()
    with begin_upload(gw, len(data)) as sock:
        sent = time.monotonic()
        sock.sendall(data[: len(data) // 2])  # then nothing more
        code, body = read_answer(sock)
        took = time.monotonic() - sent
    assert code == status and body["fail_reason"] == "body_timeout", body
    assert "body_idle_timeout_s (1 s)" in body["reasons"][0]
    # At the 1 s idle timeout; < 3 s only to stay robust on a loaded 2-core machine.
    assert 0.9 < took < 3, took
    record = gw.store.get(body["id"])
    assert record is not None and record.fail_reason == "body_timeout" and record.size == len(data)
    assert record.fail_policy == policy and record.verdict == "unscanned"


def test_a_trickling_body_gets_the_fail_policy_at_the_total_limit(gateway_for: Start) -> None:
    """A byte every 0.2 s never trips the 1 s idle timeout, but the whole body must arrive in 2 s."""
    gw = start(gateway_for, body_idle_timeout_s=1, body_timeout_s=2)
    data = drawn_png()
    stop = threading.Event()

    def trickle(sock: socket.socket) -> None:
        for byte in data[:-1]:
            if stop.wait(0.2):
                return
            with contextlib.suppress(OSError):  # the gateway has answered and closed
                sock.sendall(bytes([byte]))

    with begin_upload(gw, len(data)) as sock:
        sender = threading.Thread(target=trickle, args=(sock,), daemon=True)
        started = time.monotonic()
        sender.start()
        try:
            code, body = read_answer(sock)
        except ConnectionResetError:
            # A byte that arrives after the gateway stopped reading makes its close a reset, which
            # may discard the answer on its way: the record says what was answered instead.
            wait_for(lambda: gw.store.count() == 1, timeout=30, what="the record")
            record = gw.store.recent(1)[0]
            code, body = 503, {"fail_reason": record.fail_reason, "reasons": list(record.reasons)}
        took = time.monotonic() - started
        stop.set()
        sender.join(10)
    assert code == 503 and body["fail_reason"] == "body_timeout", body
    assert "body_timeout_s (2 s)" in body["reasons"][0]
    assert 1.9 < took < 4, took  # the 2 s limit; the margin is for a loaded machine


def test_a_client_gone_mid_body_is_one_info_line_and_a_record(
    gateway_for: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gw = start(gateway_for)
    data = drawn_png()
    before = len(caplog.records)
    with begin_upload(gw, len(data)) as sock:
        sock.sendall(data[: len(data) // 2])
    wait_for(lambda: gw.store.count() == 1, timeout=30, what="the record")
    # One more request through the same event loop: anything the dead connection logs comes first.
    assert gw.post(drawn_png(colour=(9, 9, 9))).status_code == 200
    # The gateway's own lines (fediguard, uvicorn, starlette), not this test's HTTP client's.
    window = [r for r in caplog.records[before:] if not r.name.startswith(("httpx", "httpcore"))]
    record = gw.store.recent(1, verdict="unscanned")[0]
    assert record.fail_reason == "client_disconnect" and record.size == len(data)
    assert "client disconnected after" in record.reasons[0]
    lines = [r for r in window if r.levelno >= logging.INFO and "verdict=pass" not in r.getMessage()]
    assert [(r.levelname, "client_disconnect" in r.getMessage()) for r in lines] == [("INFO", True)], [
        r.getMessage() for r in lines
    ]
    assert not [r for r in window if r.exc_info or "Traceback" in r.getMessage()]
