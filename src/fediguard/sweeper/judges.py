"""Judges: what gives the sweeper a verdict for one stored object's bytes, in this process or
through a running gateway. Either way the decision is recorded, as it is for an upload."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import httpx

from fediguard.errors import FediguardError

if TYPE_CHECKING:
    from fediguard.scanning.service import ScanService


@dataclass(frozen=True)
class Judgement:
    """A judge's answer about one object: the verdict (one of :class:`fediguard.verdicts.Verdict`'s
    values, as a gateway answers them), the decision's record and reasons."""

    verdict: str  # pass | reject | unscanned
    decision_id: int | None
    sha256: str | None
    reasons: tuple[str, ...] = ()
    fail_reason: str | None = None  # why there is no verdict (deadline, no_scanner, undecodable...)


class Judge(Protocol):
    """Gives the verdict on one object's bytes (in-process, or through a gateway) and records it."""

    async def judge(self, data: bytes, key: str) -> Judgement: ...


class NoJudge:
    """For a run that only acts on what is recorded (`fediguard rematch`): it reads nothing."""

    async def judge(self, data: bytes, key: str) -> Judgement:
        raise FediguardError("this run reads no object")


class LocalJudge:
    """Judges in this process, through the same service as the gateway.

    The service's queue refuses jobs beyond ``queue_max`` (an upload is better answered at once
    than kept waiting); a sweep instead waits for room, so with any --concurrency every object
    gets a verdict: at most ``queue_max`` objects are handed to the service at once.
    """

    def __init__(self, service: ScanService, source_name: str) -> None:
        self.service = service
        self.client = f"sweep:{source_name}"
        self.room = asyncio.Semaphore(max(1, int(service.queue.max_depth)))

    async def judge(self, data: bytes, key: str) -> Judgement:
        async with self.room:
            outcome = await self.service.screen(
                data, None, client=self.client, source="sweep", deadline_s=300
            )
        d = outcome.decision
        fail_reason = d.fail_reason.value if d.fail_reason else None
        return Judgement(d.verdict.value, outcome.record_id, outcome.sha256, d.reasons, fail_reason)


class GatewayJudge:
    """Judges through a running gateway (so its remote workers scan), as pict-rs would ask."""

    def __init__(self, http: httpx.AsyncClient, url: str, token: str | None) -> None:
        self.http = http
        self.url = f"{url.rstrip('/')}/api/v1/scan/{token or 'IPADDR'}"

    async def judge(self, data: bytes, key: str) -> Judgement:
        response = await self.http.post(
            self.url, content=data, headers={"Content-Type": "application/octet-stream"}
        )
        try:
            body = response.json()
            return Judgement(
                str(body["verdict"]), body.get("id"), body.get("sha256"), tuple(body.get("reasons", [])),
                body.get("fail_reason"),
            )  # fmt: skip
        except (ValueError, KeyError) as exc:
            raise FediguardError(f"gateway answered {response.status_code}: {response.text[:200]}") from exc
