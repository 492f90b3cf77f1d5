"""The in-process scanner: a few slots, each a daemon thread with its own detector instances,
feeding from the same :class:`~fediguard.scanning.queue.JobQueue` as remote workers.

Threads, not processes: onnxruntime releases the GIL while it runs a model, so threads use both
cores without copying images between processes (measured in bench/detectors.py). Daemon threads,
because a detector that hangs must not keep the process from exiting; its slot is lost, its job's
lease expires, and the request gets its answer from the fail policy at its deadline.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from fediguard.policy import FailReason
from fediguard.scanning.job import ScanJob, ScanOutcome
from fediguard.scanning.pipeline import Pipeline
from fediguard.scanning.queue import JobQueue
from fediguard.scanning.threads import PipelineFactory, ScannerThread

log = logging.getLogger(__name__)


def _run(job: ScanJob, pipeline: Pipeline) -> ScanOutcome:
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
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = False

    async def start(self) -> str:
        """Start the threads, load and warm up every slot's detectors, then begin taking jobs.

        Returns the detector fingerprint (names and versions) the slots run."""
        self._slots = [ScannerThread(f"scanner-{i}", self.make_pipeline) for i in range(self.slot_count)]
        prints = await asyncio.gather(*(slot.call(_warm_up) for slot in self._slots))
        for slot in self._slots:
            self.queue.register(slot.name, remote=False)
            self._tasks.append(asyncio.create_task(self._serve(slot), name=slot.name))
        self.ready = True
        log.info("in-process scanner ready: %d slot(s), detectors %s", self.slot_count, prints[0])
        return str(prints[0])

    async def _serve(self, slot: ScannerThread) -> None:
        while True:
            lease = await self.queue.lease(slot.name)
            if lease is None:
                return
            job = lease.job
            try:
                outcome: ScanOutcome = await slot.call(functools.partial(_run, job))
            except Exception as exc:
                log.exception("scanner slot %s crashed", slot.name)
                outcome = ScanOutcome(
                    error=FailReason.SCANNER_ERROR, error_detail=repr(exc), scanner=slot.name
                )
            self.queue.complete(lease.id, outcome)

    async def stop(self) -> None:
        self.ready = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for slot in self._slots:
            slot.stop()
            self.queue.unregister(slot.name)
        self._tasks.clear()
