"""The job queue between the gateway and every scanner, with leases.

A scanner (an in-process slot or a remote worker) waits for a job with :meth:`JobQueue.lease`,
which returns the moment a job arrives (no polling). The job is then leased to it until the lease
expires; a lease that expires without a result puts the job back at the head of the queue for
another scanner, so a scanner that dies loses no job. Results for an unknown or expired lease are
refused. Everything runs on one event loop, so no locks are needed.

A scanner may take only some jobs (fedi-safety workers open only stills the gateway decoded first,
:mod:`~fediguard.scanning.stills`), by the type sniffed from the bytes, never as declared: jobs go
to the first waiting scanner that takes them (who is alive and what each takes is the
:class:`~fediguard.scanning.scanners.ScannerRegistry`'s to know), and an upload no live scanner
takes gets the fail policy at once. A scanner whose protocol cannot renew a lease (fedi-safety's)
holds a job until its deadline minus a margin instead; when that runs out the job gets no verdict
rather than going to another scanner too late. Every lease that runs out is logged with its holder.
The queue also estimates how long a new job would wait (jobs ahead, scanners alive, the recent time
per job), so an upload that cannot be scanned before its deadline is answered at once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque

from fediguard.scanning.job import ScanJob, ScanOutcome
from fediguard.scanning.leases import HOLDER_KIND, Lease, LeaseProtocol, Waiter
from fediguard.scanning.scanners import REMOTE_STALE_S, ScannerRegistry, ScannerState
from fediguard.verdicts import FailReason

log = logging.getLogger(__name__)

ESTIMATE_AFTER = 8
"""Completed jobs needed before the time per job is trusted for :meth:`JobQueue.wait_estimate`."""


class QueueFull(Exception):
    """The queue holds its maximum number of jobs."""


class JobQueue:
    def __init__(self, max_depth: int, lease_s: float, remote_stale_s: float = REMOTE_STALE_S) -> None:
        self.max_depth = max_depth
        self.lease_s = lease_s
        self.scanners = ScannerRegistry(remote_stale_s)
        self._pending: deque[ScanJob] = deque()
        # A waiter's result is its lease, or None when the queue closes under it.
        self._waiters: deque[Waiter] = deque()
        self._leases: dict[str, Lease] = {}
        self.requeued = 0
        self.orphaned = 0
        self.closed = False
        self._orphan_check: asyncio.TimerHandle | None = None
        self._job_s = 0.0  # moving average of the time from hand-over to result
        self._jobs_timed = 0

    # --- producers --------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self._pending)

    def put(self, job: ScanJob) -> None:
        """Queue a job or hand it straight to a waiting scanner. Raises QueueFull."""
        if len(self._pending) >= self.max_depth:
            raise QueueFull(f"{len(self._pending)} jobs queued (queue_max {self.max_depth})")
        job.enqueued_at = asyncio.get_running_loop().time()
        self._pending.append(job)
        self._dispatch()

    def withdraw(self, job: ScanJob) -> None:
        """The caller no longer wants this job (its deadline passed): drop it wherever it is."""
        if job in self._pending:
            self._pending.remove(job)
        for lease in [lease for lease in self._leases.values() if lease.job is job]:
            self._drop_lease(lease)
            self._state(lease.scanner).busy -= 1

    @property
    def remote_closed(self) -> bool:
        return self.scanners.remote_closed

    def wait_estimate(self) -> float:
        """Seconds a job queued now would likely take to get its result: the rounds of queued jobs
        ahead of it that the live scanners must work through, each the recent average time per job.
        0 until :data:`ESTIMATE_AFTER` jobs were timed, and 0 when a scanner is free."""
        if self._jobs_timed < ESTIMATE_AFTER:
            return 0.0
        alive = self.scanners.alive()
        if any(s.waiting > 0 for s in alive) and not self._pending:
            return 0.0
        slots = sum(max(1, s.waiting + s.busy) for s in alive)
        if slots == 0:
            return 0.0
        return (len(self._pending) // slots + 1) * self._job_s

    # --- scanners ---------------------------------------------------------------------------
    async def lease(
        self,
        scanner: str,
        timeout: float | None = None,
        lease_s: float | None = None,
        protocol: LeaseProtocol = LeaseProtocol.LOCAL,
        deadline_margin_s: float | None = None,
    ) -> Lease | None:
        """Wait up to ``timeout`` seconds for a job; None when none came (or the queue closed).

        The job is leased for ``lease_s`` seconds (default: the queue's), renewable with :meth:`extend`
        through the same ``protocol``; with ``deadline_margin_s``, for as long as its upload can
        still be answered instead: until the job's deadline minus that margin (a scanner that cannot
        renew its lease, however long its model takes), and only jobs with that much time left."""
        state = self._state(scanner)
        state.seen()
        state.left = False  # polling again: back (a restarted worker keeps its name)
        loop = asyncio.get_running_loop()
        if self.closed or (self.remote_closed and state.remote):
            return None
        waiter: asyncio.Future[Lease | None] = loop.create_future()
        entry = Waiter(waiter, scanner, lease_s or self.lease_s, protocol, deadline_margin_s)
        self._waiters.append(entry)
        state.waiting += 1
        self._dispatch()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return waiter.result()  # a job arrived in the very same tick
            return None
        except asyncio.CancelledError:
            handed = waiter.result() if waiter.done() and not waiter.cancelled() else None
            if handed is not None:
                # The job was handed over in the same tick the scanner went away: put it back.
                self._state(scanner).busy -= 1
                self._requeue(handed)
            raise
        finally:
            state.waiting -= 1
            state.seen()
            if not waiter.done():
                waiter.cancel()
                # Still queued (handing a job over, or closing, takes the waiter out of the queue).
                if entry in self._waiters:
                    self._waiters.remove(entry)
            if state.remote and state.waiting == 0 and state.busy == 0:
                self._check_orphans_later()

    def extend(
        self, lease_id: str, scanner: str, lease_s: float | None = None, protocol: LeaseProtocol | None = None
    ) -> bool:
        """Renew a lease its holder is still working on. False when unknown, expired, not its own, or
        handed out through another ``protocol`` (when given)."""
        lease = self.held(lease_id, scanner, protocol)
        if lease is None:
            return False
        loop = asyncio.get_running_loop()
        if lease._timer is not None:
            lease._timer.cancel()
        lease.expires = loop.time() + (lease_s or self.lease_s)
        lease._timer = loop.call_at(lease.expires, self._expire, lease.id)
        self._state(scanner).seen()
        return True

    def complete(
        self,
        lease_id: str,
        outcome: ScanOutcome,
        scanner: str | None = None,
        protocol: LeaseProtocol | None = None,
    ) -> bool:
        """Deliver a result. False (and nothing changes) when the lease is unknown, expired, held by
        another scanner than ``scanner`` or handed out through another ``protocol`` (each when given)."""
        lease = self.held(lease_id, scanner, protocol)
        if lease is None:
            return False
        self._drop_lease(lease)
        took = asyncio.get_running_loop().time() - lease.started
        self._job_s = took if self._jobs_timed == 0 else 0.8 * self._job_s + 0.2 * took
        self._jobs_timed += 1
        state = self._state(lease.scanner)
        state.busy -= 1
        state.completed_one()
        if not lease.job.future.done():
            lease.job.future.set_result(outcome)
        if state.remote and state.waiting == 0 and state.busy == 0:
            # A worker polls again right after its result; one that does not has left (SIGKILLed
            # between the two): its queued jobs must not wait for it until their deadline.
            self._check_orphans_later()
        return True

    def get_lease(self, lease_id: str) -> Lease | None:
        return self._leases.get(lease_id)

    def held(
        self, lease_id: str, scanner: str | None = None, protocol: LeaseProtocol | None = None
    ) -> Lease | None:
        """The lease, if it is live, held by ``scanner`` and handed out through ``protocol`` (each
        when given)."""
        lease = self._leases.get(lease_id)
        if lease is None or (scanner is not None and lease.scanner != scanner):
            return None
        if protocol is not None and lease.protocol is not protocol:
            return None
        return lease

    def abandon(self, lease_id: str) -> None:
        """The lease's holder is gone (the connection it renewed the lease over closed: the process
        died): its job goes back to the queue now rather than when the lease expires, and a worker
        left holding and awaiting nothing no longer counts as alive, so what no other scanner can
        take gets the fail policy now."""
        lease = self._leases.get(lease_id)
        if lease is None:
            return
        state = self._state(lease.scanner)
        if state.waiting == 0 and state.busy == 1:
            state.left = True
        self._expire(lease_id)
        self._fail_orphans()

    def leave(self, scanner: str) -> None:
        """A remote worker says it is leaving (it stops polling; the leases it holds it still
        completes): it no longer counts as alive for queued jobs, and those no scanner left can take
        get the fail policy now rather than at their deadline."""
        state = self.scanners.get(scanner)
        if state is None:
            return
        state.left = True
        self._fail_orphans()

    def close_remote(self, why: str) -> None:
        """The gateway is shutting down: remote workers can no longer reach it with results. Their
        waiting polls end now, new polls get nothing, and the jobs they hold or that only they could
        take fail at once with ``why`` (in-process slots keep scanning what they can)."""
        self.scanners.remote_closed = True
        for entry in list(self._waiters):
            waiter, scanner = entry.future, entry.scanner
            state = self.scanners.get(scanner)
            if state is not None and state.remote:
                self._waiters.remove(entry)
                if not waiter.done():
                    waiter.set_result(None)
        for lease in [lease for lease in self._leases.values() if self._state(lease.scanner).remote]:
            self._drop_lease(lease)
            self._state(lease.scanner).busy -= 1
            self._fail(lease.job, why)
        for job in [job for job in self._pending if not self.scanners.able_to_take_job(job)]:
            self._pending.remove(job)
            self._fail(job, why)

    def close(self) -> None:
        """Stop handing out jobs; wake every waiting scanner with None."""
        self.closed = True
        while self._waiters:
            waiter = self._waiters.popleft().future
            if not waiter.done():
                waiter.set_result(None)

    # --- internals --------------------------------------------------------------------------
    def _state(self, name: str) -> ScannerState:
        return self.scanners.state(name)

    def _dispatch(self) -> None:
        """Hand queued jobs to waiting scanners, oldest waiter first, each the oldest job it takes."""
        loop = asyncio.get_running_loop()
        for entry in list(self._waiters):
            if not self._pending:
                return
            waiter, scanner, protocol, margin = entry.future, entry.scanner, entry.protocol, entry.margin
            if waiter.done():
                self._waiters.remove(entry)
                continue
            job = self._take(self._state(scanner), loop.time() + (margin or 0.0))
            if job is None:
                continue
            self._waiters.remove(entry)
            now = loop.time()
            expires = now + entry.lease_s if margin is None else job.deadline - margin
            lease = Lease(
                uuid.uuid4().hex, job, scanner, expires, started=now, protocol=protocol,
                to_deadline=margin is not None,
            )  # fmt: skip
            lease._timer = loop.call_at(lease.expires, self._expire, lease.id)
            self._leases[lease.id] = lease
            job.attempts += 1
            self._state(scanner).busy += 1
            waiter.set_result(lease)

    def _take(self, state: ScannerState, until: float) -> ScanJob | None:
        """Remove and return the oldest queued job this scanner takes whose deadline is after
        ``until``; jobs whose caller is gone (settled, or past their deadline) are dropped on the way."""
        now = asyncio.get_running_loop().time()
        chosen: ScanJob | None = None
        gone: list[ScanJob] = []
        for job in self._pending:
            if job.settled or job.deadline <= now:
                gone.append(job)
            elif job.deadline > until and state.scans(job):
                chosen = job
                break
        for job in gone:
            self._pending.remove(job)
        if chosen is not None:
            self._pending.remove(chosen)
        return chosen

    def _drop_lease(self, lease: Lease) -> None:
        self._leases.pop(lease.id, None)
        lease.ended.set()
        if lease._timer is not None:
            lease._timer.cancel()

    def _expire(self, lease_id: str) -> None:
        lease = self._leases.get(lease_id)
        if lease is None:
            return
        state = self._state(lease.scanner)
        state.busy -= 1
        state.failed += 1
        loop = asyncio.get_running_loop()
        held_s = loop.time() - lease.started
        if lease.to_deadline:
            self._drop_lease(lease)
            why = (
                f"{HOLDER_KIND[lease.protocol]} worker {lease.scanner} held it {held_s:.1f} s without an "
                "answer, until too little of the deadline was left for another scanner"
            )
            log.warning("lease %s of worker %s expired: %s", lease.id, lease.scanner, why)
            self._fail(lease.job, why, FailReason.DEADLINE)
            return
        log.warning(
            "lease %s of %s worker %s expired after %.1f s without a result or renewal: its job goes "
            "back to the queue",
            lease.id, HOLDER_KIND[lease.protocol], lease.scanner, held_s,
        )  # fmt: skip
        self._requeue(lease)

    def _requeue(self, lease: Lease) -> None:
        self._drop_lease(lease)
        if not lease.job.settled:
            self.requeued += 1
            self._pending.appendleft(lease.job)
            self._dispatch()
            if self._pending:
                self._check_orphans_later()

    def _check_orphans_later(self) -> None:
        """A remote scanner may have left (its poll ended without a job, it posted a result and holds
        nothing, or its lease expired): once it has had time to poll again, fail the queued jobs no
        scanner left can take, so their uploads get the fail policy now rather than at their deadline."""
        if self._orphan_check is None:
            loop = asyncio.get_running_loop()
            self._orphan_check = loop.call_later(self.scanners.remote_stale_s + 0.05, self._fail_orphans)

    def _fail_orphans(self) -> None:
        if self._orphan_check is not None:
            self._orphan_check.cancel()
            self._orphan_check = None
        for job in [job for job in self._pending if not self.scanners.able_to_take_job(job)]:
            self._pending.remove(job)
            self._fail(job, "no scanner is left to take it (the last worker that could went away)")

    def _fail(self, job: ScanJob, why: str, reason: FailReason = FailReason.NO_SCANNER) -> None:
        if not job.future.done():
            if reason is FailReason.NO_SCANNER:
                self.orphaned += 1
            job.future.set_result(ScanOutcome(error=reason, error_detail=why, scanner="-"))
