"""The leased job queue, on a real event loop."""

from __future__ import annotations

import asyncio

import pytest

from fediguard.policy import FailReason
from fediguard.scanning.job import ScanJob, ScanOutcome
from fediguard.scanning.queue import JobQueue, QueueFull


def job(deadline_in: float = 10.0) -> ScanJob:
    loop = asyncio.get_running_loop()
    return ScanJob(b"x", "ab" * 32, "image/png", loop.time() + deadline_in, loop.create_future())


async def test_waiting_scanner_gets_a_job_the_moment_it_arrives() -> None:
    q = JobQueue(10, lease_s=5)
    waiter = asyncio.create_task(q.lease("w1", timeout=5))
    await asyncio.sleep(0.01)
    j = job()
    loop = asyncio.get_running_loop()
    t = loop.time()
    q.put(j)
    lease = await waiter
    assert lease is not None and lease.job is j and loop.time() - t < 0.05
    assert q.complete(lease.id, ScanOutcome(scanner="w1"))
    assert (await j.future).scanner == "w1"
    assert not q.complete(lease.id, ScanOutcome()), "a lease completes once"


async def test_lease_times_out_with_none() -> None:
    q = JobQueue(10, lease_s=5)
    assert await q.lease("w1", timeout=0.05) is None
    assert q.scanners["w1"].waiting == 0


async def test_expired_lease_goes_back_to_another_scanner() -> None:
    q = JobQueue(10, lease_s=0.1)
    j = job()
    q.put(j)
    first = await q.lease("dead", timeout=1)
    assert first is not None
    second = await q.lease("alive", timeout=2)
    assert second is not None and second.job is j and j.attempts == 2
    assert not q.complete(first.id, ScanOutcome()), "the expired lease's result is refused"
    assert q.complete(second.id, ScanOutcome(scanner="alive"))
    assert q.requeued == 1 and q.scanners["dead"].failed == 1 and q.scanners["dead"].busy == 0


async def test_queue_full() -> None:
    q = JobQueue(2, lease_s=1)
    q.put(job())
    q.put(job())
    with pytest.raises(QueueFull):
        q.put(job())
    assert q.depth == 2


async def test_withdrawn_and_expired_jobs_are_skipped() -> None:
    q = JobQueue(10, lease_s=1)
    stale, withdrawn, good = job(deadline_in=-1), job(), job()
    for j in (stale, withdrawn, good):
        q.put(j)
    q.withdraw(withdrawn)
    lease = await q.lease("w", timeout=1)
    assert lease is not None and lease.job is good


async def test_withdraw_a_leased_job_frees_the_scanner_count() -> None:
    q = JobQueue(10, lease_s=5)
    j = job()
    q.put(j)
    lease = await q.lease("w", timeout=1)
    assert lease is not None and q.scanners["w"].busy == 1
    q.withdraw(j)
    assert q.scanners["w"].busy == 0 and not q.complete(lease.id, ScanOutcome())


async def test_able_to_scan_counts_local_and_recent_remote_scanners() -> None:
    q = JobQueue(10, lease_s=5, remote_stale_s=0.05)
    assert not q.able_to_scan()
    q.register("remote-1", remote=True)
    assert q.able_to_scan()
    await asyncio.sleep(0.1)
    assert not q.able_to_scan(), "a remote worker not seen for a while is not counted"
    q.register("scanner-0", remote=False)
    assert q.able_to_scan()


async def test_close_wakes_waiting_scanners() -> None:
    q = JobQueue(10, lease_s=5)
    waiter = asyncio.create_task(q.lease("w", timeout=None))
    await asyncio.sleep(0.01)
    q.close()
    assert await waiter is None, "woken with None, not cancelled (its caller was not)"


async def test_jobs_queued_when_the_last_remote_worker_leaves_fail_without_waiting_for_their_deadline() -> (
    None
):
    q = JobQueue(10, lease_s=5, remote_stale_s=0.05)
    q.register("remote-1", remote=True)
    poll = asyncio.create_task(q.lease("remote-1", timeout=None))
    await asyncio.sleep(0.01)
    poll.cancel()  # the worker hung up while long-polling
    with pytest.raises(asyncio.CancelledError):
        await poll
    assert q.able_to_scan(), "a worker is still counted for a moment, to poll again"
    waiting, later = job(deadline_in=60), job(deadline_in=60)
    q.put(waiting)
    q.put(later)
    outcome = await asyncio.wait_for(waiting.future, 5)
    assert outcome.error is FailReason.NO_SCANNER and "went away" in outcome.error_detail
    assert (await later.future).error is FailReason.NO_SCANNER
    assert q.depth == 0 and q.orphaned == 2


async def test_queued_jobs_wait_for_a_worker_that_polls_again() -> None:
    q = JobQueue(10, lease_s=5, remote_stale_s=0.05)
    q.register("remote-1", remote=True)
    first = asyncio.create_task(q.lease("remote-1", timeout=0.01))
    assert await first is None  # a long-poll that ended without a job
    j = job(deadline_in=60)
    q.put(j)
    await asyncio.sleep(0.02)
    lease = await q.lease("remote-1", timeout=1)  # the worker's next poll
    assert lease is not None and lease.job is j
    await asyncio.sleep(0.2)  # past the check the first poll scheduled
    assert not j.future.done(), "a job leased to a live worker is not failed"


async def test_a_local_scanner_keeps_queued_jobs_when_remote_workers_leave() -> None:
    q = JobQueue(10, lease_s=5, remote_stale_s=0.05)
    q.register("scanner-0", remote=False)
    q.register("remote-1", remote=True)
    assert await q.lease("remote-1", timeout=0.01) is None
    j = job(deadline_in=60)
    q.put(j)
    await asyncio.sleep(0.2)
    assert not j.future.done() and q.depth == 1


async def test_close_remote_ends_polls_fails_remote_jobs_and_keeps_local_work() -> None:
    q = JobQueue(10, lease_s=5)
    q.register("remote-1", remote=True)
    q.register("scanner-0", remote=False)
    held = job(deadline_in=60)
    q.put(held)
    lease = await q.lease("remote-1", timeout=1)
    assert lease is not None and lease.job is held
    poll = asyncio.create_task(q.lease("remote-1", timeout=None))
    await asyncio.sleep(0.01)
    queued = job(deadline_in=60)
    q.close_remote("the gateway is shutting down")
    q.put(queued)
    assert await poll is None
    assert (await held.future).error is FailReason.NO_SCANNER
    assert not queued.future.done(), "an in-process slot can still take it"
    assert await q.lease("remote-1", timeout=1) is None
    local = await q.lease("scanner-0", timeout=1)
    assert local is not None and local.job is queued
