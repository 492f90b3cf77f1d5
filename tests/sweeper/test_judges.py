"""The sweeper's judges, called directly: in this process (a real scan service), and through a real
gateway on a loopback port."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from fediguard.errors import FediguardError
from fediguard.records import RecordStore
from fediguard.scanning.service import ScanService
from fediguard.sweeper.judges import GatewayJudge, LocalJudge
from support.detectors import ScoreDetector
from support.gateway import RunningGateway, make_settings, pipelines
from support.images import drawn_png

Start = Callable[..., RunningGateway]


async def test_a_local_judge_waits_for_room_in_the_queue(tmp_path: Path) -> None:
    """More objects at once than the queue holds: each gets a verdict, none is refused as queue_full."""
    settings = make_settings(tmp_path, queue_max=1, scanner_threads=1, banks=False)
    records = RecordStore(settings.effective_database_url)
    service = ScanService(settings, records)
    service.pipeline_factory = pipelines(settings, lambda: ScoreDetector("nudity", {"explicit": 0.0}))
    await service.start()
    try:
        judge = LocalJudge(service, "store")
        bodies = [drawn_png(colour=(i, 2, 3)) for i in range(5)]
        verdicts = await asyncio.gather(*(judge.judge(body, f"{i}.png") for i, body in enumerate(bodies)))
    finally:
        await service.stop()
        records.close()
    assert [v.verdict for v in verdicts] == ["pass"] * 5, verdicts
    assert [v.sha256 for v in verdicts] == [hashlib.sha256(b).hexdigest() for b in bodies]
    assert all(v.decision_id is not None and v.fail_reason is None for v in verdicts)
    assert judge.client == "sweep:store"


async def test_a_gateway_judge_gives_the_gateways_verdict(gateway_for: Start) -> None:
    gw = gateway_for(
        lambda: ScoreDetector("nudity", {"explicit": 0.9}, notes=["test_class 0.90"]),
        lambda: ScoreDetector("age", {"faces": 1, "min_age": 11, "min_age_sd": 3}),
    )
    data = drawn_png()
    async with httpx.AsyncClient(timeout=30) as http:
        verdict = await GatewayJudge(http, gw.url + "/", None).judge(data, "a.png")
    assert verdict.verdict == "reject" and verdict.sha256 == hashlib.sha256(data).hexdigest()
    assert verdict.reasons == ("frame 0: test_class 0.90 at (100,150,100,100); face apparent age 11 ± 3",)
    assert verdict.decision_id is not None
    record = gw.store.get(verdict.decision_id)
    assert record is not None and record.verdict == "reject"


async def test_a_gateway_judge_explains_an_answer_that_is_no_verdict(gateway_for: Start) -> None:
    gw = gateway_for(lambda: ScoreDetector("nudity", {"explicit": 0.0}))
    async with httpx.AsyncClient(timeout=30) as http:
        judge = GatewayJudge(http, gw.url + "/not-here", None)
        with pytest.raises(FediguardError, match="gateway answered 404"):
            await judge.judge(drawn_png(), "a.png")
