"""Idle keep-alive connections outlive pict-rs's connection pool: a real gateway on loopback."""

from __future__ import annotations

import http.client
import select
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from support.gateway import RunningGateway
from support.images import drawn_png

IDLE_S = 10.5
"""Past uvicorn's own 5 s default and past 10 s; pict-rs itself keeps pooled connections ~90 s."""


def closed_by_peer(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0.25)
    return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""


def upload(conn: http.client.HTTPConnection, data: bytes) -> http.client.HTTPResponse:
    conn.request("POST", "/api/v1/scan/IPADDR", body=data, headers={"Content-Type": "image/png"})
    response = conn.getresponse()
    response.read()
    return response


def test_an_idle_connection_is_reused_for_an_upload_after_ten_seconds(
    gateway_for: Callable[..., RunningGateway],
) -> None:
    gw = gateway_for()
    assert gw.settings.keep_alive_s >= 95
    url = urlsplit(gw.url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
    assert upload(conn, drawn_png(colour=(1, 1, 1))).status == 200
    sock = conn.sock
    assert sock is not None
    # Held idle as pict-rs's pool holds it; the wait is the condition under test, and a server that
    # closes the connection meanwhile fails the test the moment it does.
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < IDLE_S:
        assert not closed_by_peer(sock), f"closed after {time.monotonic() - idle_since:.1f} s idle"
    again = upload(conn, drawn_png(colour=(2, 2, 2)))
    assert conn.sock is sock, "the same connection carried the second upload"
    assert again.status == 200
    conn.close()
