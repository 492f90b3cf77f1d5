"""`fediguard workers` as the gateway answers it for its own, in-process scanner slots."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from support.detectors import ScoreDetector
from support.gateway import RunningGateway
from support.workers import wait_for


def test_idle_local_slots_show_their_detectors_and_are_seen_now(
    gateway_for: Callable[..., RunningGateway],
) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {"explicit": 0.0}), scanner_threads=2)
    slots = [s for s in gw.service.queue.scanners if not s.remote]
    assert len(slots) == 2
    wait_for(lambda: all(s.waiting > 0 for s in slots))
    for slot in slots:  # idle for a minute: a waiting slot is in touch all the same
        slot.last_seen -= 60
    rows = httpx.get(f"{gw.url}/api/v1/workers").json()["scanners"]
    local = [r for r in rows if r["kind"] == "local"]
    assert [r["detectors"] for r in local] == [gw.service.detector_fingerprint] * 2
    assert gw.service.detector_fingerprint
    assert [r["last_seen_s_ago"] for r in local] == [0.0, 0.0], local
