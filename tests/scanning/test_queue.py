"""The leased job queue, on a real event loop."""

from __future__ import annotations

import asyncio

import pytest

from fediguard.scanning.job import ScanJob, ScanOutcome
from fediguard.scanning.leases import LeaseProtocol
from fediguard.scanning.queue import ESTIMATE_AFTER, JobQueue, QueueFull
from fediguard.verdicts import FailReason


def job(deadline_in: float = 10.0, media_type: str = "image/png") -> ScanJob:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_in
    return ScanJob(b"x", "ab" * 32, media_type, deadline, loop.create_future(), detected_type=media_type)


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
    assert not q.scanners.able_to_scan()
    q.scanners.register("remote-1", remote=True)
    assert q.scanners.able_to_scan()
    await asyncio.sleep(0.1)
    assert not q.scanners.able_to_scan(), "a remote worker not seen for a while is not counted"
    q.scanners.register("scanner-0", remote=False)
    assert q.scanners.able_to_scan()


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
    q.scanners.register("remote-1", remote=True)
    poll = asyncio.create_task(q.lease("remote-1", timeout=None))
    await asyncio.sleep(0.01)
    poll.cancel()  # the worker hung up while long-polling
    with pytest.raises(asyncio.CancelledError):
        await poll
    assert q.scanners.able_to_scan(), "a worker is still counted for a moment, to poll again"
    waiting, later = job(deadline_in=60), job(deadline_in=60)
    q.put(waiting)
    q.put(later)
    outcome = await asyncio.wait_for(waiting.future, 5)
    assert outcome.error is FailReason.NO_SCANNER and "went away" in outcome.error_detail
    assert (await later.future).error is FailReason.NO_SCANNER
    assert q.depth == 0 and q.orphaned == 2


async def test_queued_jobs_wait_for_a_worker_that_polls_again() -> None:
    q = JobQueue(10, lease_s=5, remote_stale_s=0.05)
    q.scanners.register("remote-1", remote=True)
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
    q.scanners.register("scanner-0", remote=False)
    q.scanners.register("remote-1", remote=True)
    assert await q.lease("remote-1", timeout=0.01) is None
    j = job(deadline_in=60)
    q.put(j)
    await asyncio.sleep(0.2)
    assert not j.future.done() and q.depth == 1


async def test_close_remote_ends_polls_fails_remote_jobs_and_keeps_local_work() -> None:
    q = JobQueue(10, lease_s=5)
    q.scanners.register("remote-1", remote=True)
    q.scanners.register("scanner-0", remote=False)
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


def stills_only(media_type: str | None) -> bool:
    return media_type == "image/png"


async def test_a_scanner_gets_only_the_media_types_it_takes() -> None:
    q = JobQueue(10, lease_s=5, remote_stale_s=0.05)
    q.scanners.register("stills", remote=True, takes=stills_only)
    picky = asyncio.create_task(q.lease("stills", timeout=5))
    await asyncio.sleep(0.01)
    assert q.scanners.able_to_take("image/png") and not q.scanners.able_to_take("video/mp4")
    assert q.scanners.able_to_scan(), "a scanner is alive"
    video, still = job(media_type="video/mp4"), job()
    q.put(video)
    q.put(still)
    lease = await picky
    assert lease is not None and lease.job is still, "the video waits for a scanner that takes it"
    assert q.depth == 1
    anyone = await q.lease("local-0", timeout=1)
    assert anyone is not None and anyone.job is video


async def test_a_job_no_live_scanner_takes_fails_when_the_last_one_that_could_leaves() -> None:
    q = JobQueue(10, lease_s=0.05, remote_stale_s=0.05)
    q.scanners.register("stills", remote=True, takes=stills_only)
    q.scanners.register("everything", remote=True)
    video = job(media_type="video/mp4")
    q.put(video)
    lease = await q.lease("everything", timeout=1)
    assert lease is not None and lease.job is video
    # "everything" dies holding it; "stills" stays, long-polling, but does not take videos
    poll = asyncio.create_task(q.lease("stills", timeout=5))
    outcome = await asyncio.wait_for(video.future, 2)
    assert outcome.error is FailReason.NO_SCANNER and "could" in outcome.error_detail
    assert not poll.done(), "the still-image scanner was never handed the video"
    poll.cancel()


async def test_wait_estimate_counts_rounds_of_queued_work_per_live_scanner() -> None:
    q = JobQueue(100, lease_s=5)
    assert q.wait_estimate() == 0.0, "nothing timed yet"
    for _ in range(ESTIMATE_AFTER):
        q.put(job())
        lease = await q.lease("local-0", timeout=1)
        assert lease is not None
        await asyncio.sleep(0.01)
        assert q.complete(lease.id, ScanOutcome())
    per_job = q.wait_estimate()
    assert 0.005 < per_job < 1.0, "one free scanner and nothing queued: one job's time"
    busy = asyncio.create_task(q.lease("local-0", timeout=1))
    q.put(job())
    assert (await busy) is not None
    for _ in range(3):
        q.put(job())
    assert q.wait_estimate() == pytest.approx(4 * per_job), "3 queued ahead, 1 scanner: 4 rounds"
    q.scanners.register("local-1", remote=False)
    assert q.wait_estimate() == pytest.approx(2 * per_job), "2 scanners: 3 // 2 + 1 rounds"


async def test_a_lease_is_renewed_and_completed_only_through_its_own_protocol() -> None:
    q = JobQueue(10, lease_s=5)
    q.put(job())
    lease = await q.lease("w", timeout=1, protocol=LeaseProtocol.LEGACY)
    assert lease is not None and lease.protocol is LeaseProtocol.LEGACY
    assert not q.extend(lease.id, "w", protocol=LeaseProtocol.NATIVE)
    assert not q.complete(lease.id, ScanOutcome(), scanner="w", protocol=LeaseProtocol.NATIVE)
    assert q.complete(lease.id, ScanOutcome(), scanner="w", protocol=LeaseProtocol.LEGACY)


async def test_a_leaving_worker_hands_back_queued_jobs_at_once_and_finishes_its_own() -> None:
    q = JobQueue(10, lease_s=5, remote_stale_s=60)  # never found stale: only leaving counts
    q.scanners.register("w", remote=True)
    held, queued = job(), job()
    q.put(held)
    lease = await q.lease("w", timeout=1)
    assert lease is not None and lease.job is held
    q.put(queued)
    q.leave("w")
    outcome = queued.future.result()  # settled at once, no waiting
    assert outcome.error is FailReason.NO_SCANNER
    assert q.complete(lease.id, ScanOutcome(scanner="w")), "the lease in hand is still completed"
    poll = asyncio.create_task(q.lease("w", timeout=0.01))
    await poll
    assert not q.scanners["w"].left, "polling again, it is back"


async def test_an_abandoned_lease_goes_back_to_the_queue_at_once() -> None:
    q = JobQueue(10, lease_s=60, remote_stale_s=60)
    q.scanners.register("gone", remote=True)
    q.scanners.register("other", remote=True)
    j = job()
    q.put(j)
    lease = await q.lease("gone", timeout=1)
    assert lease is not None
    other = asyncio.create_task(q.lease("other", timeout=5))
    await asyncio.sleep(0)
    q.abandon(lease.id)
    again = await other
    assert again is not None and again.job is j and q.requeued == 1
    assert lease.ended.is_set() and q.scanners["gone"].left
