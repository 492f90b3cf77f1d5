"""A remote worker: loads the detectors, pulls jobs from a gateway over HTTP(S), posts back scores.

Outbound connections only, so it works behind NAT. Each slot long-polls for a job (the gateway
answers the moment one arrives), renews its lease while it scans, and posts the outcome; the policy
stays in the gateway. It reconnects with capped exponential backoff forever and logs every
disconnect and reconnect. A gateway that refuses its key or its detectors at the very first
connection is a configuration error and stops it (exit status 2); once it has served, a refusal
(a gateway upgraded to other detectors, a proxy answering 403) is logged and retried like any
disconnect, so the worker comes back by itself when the gateway does. Told to stop (SIGINT,
SIGTERM), it tells the gateway it is leaving, so uploads only it could take get the fail policy at
once, then finishes the jobs in hand.

HTTP goes through aiohttp rather than the httpx used elsewhere in fediguard: a worker makes two
requests per job, and on this project's 2-core machine httpx's async client cost ~1 ms of CPU per
request against aiohttp's ~0.13 ms (docs/benchmarks.md), which decided the remote-scanning overhead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import certifi

from fediguard.banks.pdq import FrameHash
from fediguard.detectors.base import DetectorResult
from fediguard.errors import FediguardError
from fediguard.remote import protocol
from fediguard.remote.protocol import Job
from fediguard.remote.tasks import unless
from fediguard.scanning.job import ScanOutcome
from fediguard.scanning.pipeline import Pipeline, PipelineFactory
from fediguard.scanning.threads import ScannerThread
from fediguard.verdicts import FailReason

log = logging.getLogger(__name__)

REFUSED_RETRY_S = 5.0
"""Least wait before retrying after a refusal, which an admin must fix on one side or the other."""
LEAVE_TIMEOUT_S = 5.0
"""How long a stopping worker tries to tell the gateway it is leaving before it gives up."""


class WorkerRefused(FediguardError):
    """The gateway refused this worker (bad key, or detectors that differ from its own)."""


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter."""

    base: float = 0.5
    cap: float = 30.0
    attempt: int = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


BANKS_CHECK_TIMEOUT_S = 30.0


class _GatewayBanks:
    """The pipeline's bank check for one job, asked of the gateway that leased it (called from the
    slot's scanner thread; the request runs on the worker's event loop). Any failure to ask is
    answered "no match": the models run, and the gateway matches the hashes again at the result."""

    def __init__(self, worker: RemoteWorker, http: aiohttp.ClientSession, job: Job) -> None:
        self.loop = asyncio.get_running_loop()
        self.worker, self.http, self.job = worker, http, job

    def check(self, hashes: Sequence[FrameHash]) -> DetectorResult | None:
        if not hashes:
            return None
        asked = asyncio.run_coroutine_threadsafe(self._ask(hashes), self.loop)
        try:
            return asked.result(BANKS_CHECK_TIMEOUT_S)
        except Exception as exc:
            asked.cancel()
            log.warning(
                "could not ask the gateway about banks for %s: %s", self.job.sha256[:12], _describe(exc)
            )
            return None

    async def _ask(self, hashes: Sequence[FrameHash]) -> DetectorResult | None:
        url = self.worker.server + protocol.BANKS_PATH.format(lease=self.job.lease)
        payload = protocol.encode_frame_hashes(list(hashes))
        async with self.http.post(url, json=payload) as response:
            body = await response.read()
        if response.status != 200:
            raise _Unavailable(f"banks check answered {response.status}: {_error_text(body)}")
        return protocol.decode_bank_answer(json.loads(body))


def _warm_up(pipeline: Pipeline) -> str:
    pipeline.warm_up()
    return pipeline.fingerprint


def _scan(job: Job, banks: _GatewayBanks | None, pipeline: Pipeline) -> ScanOutcome:
    return pipeline.run(job.data, job.sha256, job.media_type, banks)


class RemoteWorker:
    def __init__(
        self,
        server: str,
        key: str,
        make_pipeline: PipelineFactory,
        concurrency: int = 1,
        wait_s: float = 25.0,
        verify: bool | str = True,
    ) -> None:
        self.server = server.rstrip("/")
        self.key = key
        self.make_pipeline = make_pipeline
        self.concurrency = concurrency
        self.wait_s = wait_s
        self.verify = verify
        self.completed = 0
        self.ready = asyncio.Event()
        self._connected = False
        self._served = False

    async def run(self, stop: asyncio.Event) -> None:
        """Serve jobs until ``stop`` is set. Raises WorkerRefused when the gateway refuses us."""
        slots = [ScannerThread(f"worker-{i}", self.make_pipeline) for i in range(self.concurrency)]
        prints = await asyncio.gather(*(slot.call(_warm_up) for slot in slots))
        detectors = str(prints[0])
        log.info("worker ready: %d slot(s), detectors %s, gateway %s", len(slots), detectors, self.server)
        headers = {"Authorization": f"Bearer {self.key}", protocol.DETECTORS_HEADER: detectors}
        tls = _tls_context(self.verify)
        try:
            self.ready.set()
            tasks = [asyncio.create_task(self._serve(headers, tls, slot, stop)) for slot in slots]
            tasks.append(asyncio.create_task(self._leave_when(stop, headers, tls)))
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for slot in slots:
                slot.stop()

    async def _leave_when(self, stop: asyncio.Event, headers: dict[str, str], tls: ssl.SSLContext) -> None:
        """Once told to stop, tell the gateway this worker is leaving (if it ever reached it)."""
        await stop.wait()
        if not self._served:
            return
        timeout = aiohttp.ClientTimeout(total=LEAVE_TIMEOUT_S)
        connector = aiohttp.TCPConnector(limit=1, ssl=tls)
        try:
            async with (
                aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as http,
                http.post(self.server + protocol.LEAVE_PATH) as response,
            ):
                body = await response.read()
        except _CONNECTION_ERRORS as exc:
            log.warning("could not tell %s this worker is leaving: %s", self.server, _describe(exc))
            return
        if response.status == 200:
            log.info("told %s this worker is leaving", self.server)
        else:
            log.warning("leaving: %s answered %d: %s", self.server, response.status, _error_text(body))

    def _session(self, headers: dict[str, str], tls: ssl.SSLContext) -> aiohttp.ClientSession:
        """One small session per slot: a slot needs at most two connections (its long-poll or
        result, and a lease renewal), and a pool shared by 64 slots cost CPU in proportion to its
        size (measured with httpx, whose pool scans every connection for every request)."""
        return aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.wait_s + 15),
            connector=aiohttp.TCPConnector(limit=2, ssl=tls),
        )

    async def _serve(
        self, headers: dict[str, str], tls: ssl.SSLContext, slot: ScannerThread, stop: asyncio.Event
    ) -> None:
        async with self._session(headers, tls) as http:
            await self._serve_with(http, slot, stop)

    async def _serve_with(
        self, http: aiohttp.ClientSession, slot: ScannerThread, stop: asyncio.Event
    ) -> None:
        backoff = Backoff()
        while not stop.is_set():
            try:
                job = await unless(self._lease(http), stop.wait())
            except _CONNECTION_ERRORS as exc:
                delay = backoff.next()
                self._disconnected(_describe(exc), delay)
                await _sleep_unless_stopped(delay, stop)
                continue
            except _Unavailable as exc:
                delay = backoff.next()
                self._disconnected(str(exc), delay)
                await _sleep_unless_stopped(delay, stop)
                continue
            except WorkerRefused as exc:
                if not self._served:
                    raise
                delay = max(backoff.next(), REFUSED_RETRY_S)
                log.error("%s; retrying in %.0f s", exc, delay)
                self._connected = False
                await _sleep_unless_stopped(delay, stop)
                continue
            if not self._connected:
                self._connected = True
                self._served = True
                log.info("connected to %s", self.server)
            backoff.reset()
            if job is not None:
                await self._process(http, slot, job)

    def _disconnected(self, why: str, delay: float) -> None:
        if self._connected:
            log.warning("disconnected from %s: %s", self.server, why)
        self._connected = False
        log.warning("cannot reach %s (%s); retrying in %.1f s", self.server, why, delay)

    async def _lease(self, http: aiohttp.ClientSession) -> Job | None:
        async with http.get(
            self.server + protocol.LEASE_PATH, params={"wait": f"{self.wait_s:g}"}
        ) as response:
            body = await response.read()
        status = response.status
        if status == 204:
            return None
        if status in (401, 403, 409):
            raise WorkerRefused(f"gateway refused this worker ({status}): {_error_text(body)}")
        if status != 200:
            raise _Unavailable(f"lease answered {status}: {_error_text(body)}")
        try:
            return protocol.parse_job(response.headers, body)
        except ValueError as exc:
            # Not a fediguard gateway's answer (a captive portal, a misrouted proxy): retry later.
            raise _Unavailable(str(exc)) from None

    async def _process(self, http: aiohttp.ClientSession, slot: ScannerThread, job: Job) -> None:
        # Renewing the lease holds a request open, which tells the gateway at once if this process
        # dies; it is ended only after the result is posted, so its closing connection never makes
        # the gateway give the job away while the result is on its way.
        heartbeat = asyncio.create_task(self._heartbeat(http, job))
        try:
            await self._scan_and_post(http, slot, job)
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)

    async def _scan_and_post(self, http: aiohttp.ClientSession, slot: ScannerThread, job: Job) -> None:
        try:
            banks = _GatewayBanks(self, http, job) if job.check_banks else None
            outcome: ScanOutcome = await slot.call(functools.partial(_scan, job, banks))
        except Exception as exc:
            log.exception("scan failed for %s", job.sha256[:12])
            outcome = ScanOutcome(error=FailReason.SCANNER_ERROR, error_detail=f"{type(exc).__name__}: {exc}")
        url = self.server + protocol.RESULT_PATH.format(lease=job.lease)
        for attempt in range(3):
            try:
                async with http.post(url, json=protocol.encode_outcome(outcome)) as response:
                    body = await response.read()
            except _CONNECTION_ERRORS as exc:
                log.warning(
                    "posting result for %s failed (%s); attempt %d",
                    job.sha256[:12],
                    _describe(exc),
                    attempt + 1,
                )
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            if response.status == 200:
                self.completed += 1
            else:
                log.warning("result for %s refused: %s", job.sha256[:12], _error_text(body))
            return

    async def _heartbeat(self, http: aiohttp.ClientSession, job: Job) -> None:
        """Renew the lease with held requests (``?hold``), one after another, until cancelled."""
        url = self.server + protocol.EXTEND_PATH.format(lease=job.lease)
        loop = asyncio.get_running_loop()
        hold = job.lease_s / 2
        while True:
            started = loop.time()
            try:
                async with http.post(url, params={"hold": f"{hold:g}"}) as response:
                    body = await response.read()
            except _CONNECTION_ERRORS as exc:
                log.warning("lease renewal failed: %s", _describe(exc))
                await asyncio.sleep(job.lease_s / 6)
                continue
            if response.status != 200:
                log.warning("lease %s lost: %s", job.lease[:8], _error_text(body))
                return
            # A gateway that does not hold (an older one) answers at once: renew at a third of the
            # lease then, as before, rather than in a busy loop.
            elapsed = loop.time() - started
            if elapsed < hold / 2:
                await asyncio.sleep(job.lease_s / 3 - elapsed)


def _tls_context(verify: bool | str) -> ssl.SSLContext:
    """One TLS context shared by every slot's session: ``verify`` is True (the system's and
    certifi's roots), False (no verification, for testing only) or a CA file or folder."""
    if isinstance(verify, str):
        if os.path.isdir(verify):
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    context = ssl.create_default_context()
    if verify:
        context.load_verify_locations(cafile=certifi.where())
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


_CONNECTION_ERRORS = (aiohttp.ClientError, TimeoutError)
"""What a request raises when the gateway cannot be reached or stops answering."""


class _Unavailable(Exception):
    pass


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _error_text(body: bytes) -> str:
    text = body[:2000].decode("utf-8", "replace")
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        error = None
    return str(error) if error is not None else text[:200]


async def _sleep_unless_stopped(seconds: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
