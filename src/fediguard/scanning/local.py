"""The in-process scanner: a few slots, each a daemon thread with its own detector instances,
feeding from the same :class:`~fediguard.scanning.queue.JobQueue` as remote workers.

Threads, not processes: onnxruntime releases the GIL while it runs a model, so threads use both
cores without copying images between processes (measured in bench/detectors.py).

A slot's lease never expires while its thread works (a thread in this process cannot die without
the process): a long scan is never handed to a second slot. A detector that hangs gets its upload
the fail policy at the upload's deadline; once the deadline is ``STUCK_GRACE_S`` behind it, the slot
is written off (daemon thread, so it cannot keep the process from exiting) and a fresh slot takes
its place, at most ``slots`` times over the process's life; after that readiness turns false.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from fediguard.media.sandbox import decode_deadline
from fediguard.scanning.job import ScanJob, ScanOutcome
from fediguard.scanning.pipeline import Pipeline, PipelineFactory
from fediguard.scanning.queue import JobQueue
from fediguard.scanning.threads import ScannerThread
from fediguard.verdicts import FailReason

log = logging.getLogger(__name__)

STUCK_GRACE_S = 10.0
"""How long past its job's deadline a slot may stay busy before it is counted as stuck."""
LOCAL_LEASE_S = 365 * 24 * 3600.0
"""In-process leases do not expire: the deadline ends the upload's wait, a stuck slot is replaced."""


DECODE_MARGIN_S = 0.25
"""A decode still running this long before its upload's deadline is ended (its decoder child
replaced), leaving the time to answer ``undecodable`` with the reason instead of the fail policy's
timeout."""


def _run(job: ScanJob, pipeline: Pipeline) -> ScanOutcome:
    # job.deadline is on the event loop's clock, which is time.monotonic().
    with decode_deadline(job.deadline - DECODE_MARGIN_S):
        return pipeline.run(job.data, job.sha256, job.media_type)


def _warm_up(pipeline: Pipeline) -> str:
    pipeline.warm_up()
    return pipeline.fingerprint


class LocalScanner:
    """Runs ``slots`` scanner threads against the queue until stopped."""

    def __init__(self, job_queue: JobQueue, make_pipeline: PipelineFactory, slots: int) -> None:
        self.queue = job_queue
        self.make_pipeline = make_pipeline
        self.slot_count = slots
        self._slots: list[ScannerThread] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = 0
        self.stuck = 0  # slots written off so far
        self._still_stuck = 0  # of those, the ones whose call has not returned yet
        self.started = False
        self.fingerprint = ""
        """The detectors (names and versions) the slots run, as `fediguard workers` lists them."""

    @property
    def ready(self) -> bool:
        """Started, and at least one slot is not stuck."""
        return self.started and len(self._slots) > 0

    async def start(self) -> str:
        """Start the threads, load and warm up every slot's detectors, then begin taking jobs.

        Returns the detector fingerprint (names and versions) the slots run."""
        slots = [self._new_slot() for _ in range(self.slot_count)]
        prints = await asyncio.gather(*(slot.call(_warm_up) for slot in slots))
        self.fingerprint = str(prints[0])
        for slot in slots:
            self._begin(slot)
        self.started = True
        log.info("in-process scanner ready: %d slot(s), detectors %s", self.slot_count, prints[0])
        return str(prints[0])

    def _new_slot(self) -> ScannerThread:
        slot = ScannerThread(f"scanner-{self._started}", self.make_pipeline)
        self._started += 1
        return slot

    def _begin(self, slot: ScannerThread) -> None:
        self._slots.append(slot)
        self.queue.scanners.register(slot.name, remote=False, detectors=self.fingerprint)
        task = asyncio.create_task(self._serve(slot), name=slot.name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, slot: ScannerThread) -> None:
        loop = asyncio.get_running_loop()
        while True:
            lease = await self.queue.lease(slot.name, lease_s=LOCAL_LEASE_S)
            if lease is None:
                return
            job = lease.job
            call = asyncio.ensure_future(slot.call(functools.partial(_run, job)))
            budget = max(0.0, job.deadline - loop.time()) + STUCK_GRACE_S
            done, _ = await asyncio.wait({call}, timeout=budget)
            if not done:
                self._write_off(slot, lease.id, call)
                return
            try:
                outcome: ScanOutcome = call.result()
            except Exception as exc:
                log.exception("scanner slot %s crashed", slot.name)
                outcome = ScanOutcome(
                    error=FailReason.SCANNER_ERROR, error_detail=repr(exc), scanner=slot.name
                )
            self.queue.complete(lease.id, outcome)

    def _write_off(self, slot: ScannerThread, lease_id: str, call: asyncio.Future[Any]) -> None:
        """A slot busy far past its job's deadline is stuck (a detector hung in a native call, a
        huge decode). A fresh slot takes its place while no more than ``slot_count`` threads are
        stuck at once; when a stuck call returns at last, its thread ends and the budget comes back."""
        self.stuck += 1
        self._still_stuck += 1
        call.add_done_callback(lambda _: self._unstuck())
        self._slots.remove(slot)
        self.queue.complete(
            lease_id,
            ScanOutcome(error=FailReason.SCANNER_ERROR, error_detail="scanner stuck", scanner=slot.name),
        )
        self.queue.scanners.unregister(slot.name)
        slot.stop()
        if self._still_stuck <= self.slot_count:
            log.error("scanner slot %s is stuck in a detector; starting a fresh slot in its place", slot.name)
            task = asyncio.create_task(self._replace(), name=f"replace-{slot.name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            log.error(
                "scanner slot %s is stuck in a detector; %d slot(s) stuck so far, none replaced until one "
                "returns "
                "(%d left)",
                slot.name,
                self.stuck,
                len(self._slots),
            )

    def _unstuck(self) -> None:
        self._still_stuck -= 1
        if self.started and len(self._slots) < self.slot_count:
            log.info("a stuck scanner call returned; starting a slot to make up the %d", self.slot_count)
            task = asyncio.create_task(self._replace(), name="replace-unstuck")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _replace(self) -> None:
        slot = self._new_slot()
        try:
            await slot.call(_warm_up)
        except Exception:
            log.exception("replacement scanner slot %s failed to start", slot.name)
            slot.stop()
            return
        if not self.started or len(self._slots) >= self.slot_count:
            slot.stop()  # another replacement made up the number first, or we are stopping
            return
        self._begin(slot)
        log.info("scanner slot %s started in place of a stuck one", slot.name)

    async def stop(self) -> None:
        self.started = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for slot in self._slots:
            slot.stop()
            self.queue.scanners.unregister(slot.name)
        self._slots.clear()
