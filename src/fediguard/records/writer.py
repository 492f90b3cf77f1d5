"""Batched record writes for async callers, with a spool for when the database cannot take them.

Under load, one transaction per decision spends most of its time committing; a single writer
thread that takes every decision waiting at that moment and inserts them in one transaction keeps
the cost per decision flat (measured in bench/gateway.py). Each caller still gets its own id.

With a :class:`~fediguard.records.spool.Spool` (the gateway's), a batch the database refuses
(locked past its busy timeout, full, read-only, down, corrupt) is appended to the spool instead,
and its callers get ``None``: kept, not yet written. While the spool holds anything, new decisions
join it behind what waits, so the database receives them in the order they were made; the writer
tries to write the spool out, oldest first, every :data:`RETRY_MIN_S` to :data:`RETRY_MAX_S`
seconds until it is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from fediguard.records.spool import Spool, to_json
from fediguard.records.store import NewDecision, RecordStore, describe_error, refused

log = logging.getLogger(__name__)

MAX_BATCH = 256
RETRY_MIN_S = 0.5
RETRY_MAX_S = 5.0
"""How often the writer tries to write the spool to the database: from every half second, doubling
while it fails (each try may wait the busy timeout)."""

_Outcome = tuple["asyncio.Future[int | None]", int | None, Exception | None]
"""A caller's future, and the record id (None: spooled) or the error that settles it."""
_Item = tuple[NewDecision, "asyncio.Future[int | None]"]
T = TypeVar("T")


class RecordWriter:
    def __init__(
        self,
        store: RecordStore,
        spool: Spool | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.store = store
        self.spool = spool
        self.on_error = on_error
        """Called (in the writer thread) for every failed database write."""
        self.unwritable: str | None = None
        """The database's error, while decisions wait in the spool because of it."""
        self._inbox: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._retry_s = RETRY_MIN_S
        self._next_try = 0.0
        self._thread = threading.Thread(target=self._main, name="record-writer", daemon=True)
        self._thread.start()

    @property
    def spool_depth(self) -> int:
        return self.spool.depth if self.spool is not None else 0

    async def add(self, decision: NewDecision, timeout: float | None = None) -> int | None:
        """The decision's record id once written; None when it went to the spool, or when
        ``timeout`` seconds passed first (it is then written, or spooled, later). Raises when it
        could be neither written nor spooled."""
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._inbox.put((decision, future))
        if timeout is None:
            return await future
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return None

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        self._inbox.put(None)
        self._thread.join(timeout)
        if self.spool is not None:
            if self.spool.depth:
                log.warning(
                    "%d decision(s) stay in the spool %s, to be written when the database can take them "
                    "(the next gateway started on this data_dir takes them over)",
                    self.spool.depth,
                    self.spool.folder,
                )
            self.spool.close()

    def _main(self) -> None:
        if self.spool is not None and self.spool.depth:
            self._drain()
        stopping = False
        while not stopping:
            try:
                first = self._inbox.get(timeout=self._wait())
            except queue.Empty:
                self._drain()
                continue
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._write(batch)

    def _wait(self) -> float | None:
        """How long to wait for decisions before trying the spool again (None: it is empty)."""
        if not self.spool_depth:
            return None
        return max(0.0, self._next_try - time.monotonic())

    def _write(self, batch: list[_Item]) -> None:
        if self.spool is not None and self.spool.depth:
            # Behind what waits in the spool, so the database gets decisions in the order made.
            self._settle(self._spool(batch))
            if time.monotonic() >= self._next_try:
                self._drain()
            return
        try:
            ids = self.store.add_many([decision for decision, _ in batch])
        except Exception as exc:
            if refused(exc) and len(batch) > 1:  # one decision's value: the others go on without it
                for item in batch:
                    self._write([item])
                return
            self._failed(exc, len(batch))
            if self.spool is None or refused(exc):
                self._settle([(future, None, exc) for _, future in batch])
            else:
                self._settle(self._spool(batch))
                self._begin_retries()
            return
        self._settle([(future, record_id, None) for (_, future), record_id in zip(batch, ids, strict=True)])

    def _spool(self, batch: list[_Item]) -> list[_Outcome]:
        assert self.spool is not None
        try:
            self.spool.append([decision for decision, _ in batch])
        except OSError as exc:
            log.exception(
                "LOST %d decision(s): the database cannot take them and the spool %s cannot either",
                len(batch),
                self.spool.folder,
            )
            return [(future, None, exc) for _, future in batch]
        return [(future, None, None) for _, future in batch]

    def _failed(self, exc: BaseException, count: int) -> None:
        if self.on_error is not None:
            self.on_error(exc)
        cause = describe_error(exc)
        if refused(exc):
            log.error("%s refused %d decision record(s): %s", self.store.where, count, cause, exc_info=exc)
            return
        if cause != self.unwritable:
            where = f"; decisions go to the spool {self.spool.folder} until it is back" if self.spool else ""
            log.error("%s cannot be written: %s%s", self.store.where, cause, where)
        self.unwritable = cause

    def _begin_retries(self) -> None:
        self._retry_s = RETRY_MIN_S
        self._next_try = time.monotonic() + self._retry_s

    def _drain(self) -> None:
        """Write the spool to the database, oldest segment first; stop at the first failure."""
        spool = self.spool
        if spool is None:
            return
        written = 0
        was = self.unwritable
        for segment in spool.segments():
            for chunk in _chunks(spool.entries(segment), MAX_BATCH):
                try:
                    count = self._apply(segment.generation, chunk)
                except Exception as exc:
                    self._failed(exc, len(chunk))
                    self._next_try = time.monotonic() + self._retry_s
                    self._retry_s = min(RETRY_MAX_S, self._retry_s * 2)
                    if written:
                        log.info("spool: %d decision(s) written to the database so far", written)
                    return
                self.unwritable = None  # writable again: ready, while the rest drains
                spool.applied(segment, count)
                written += count
            spool.remove(segment)
        if was is not None or written:
            log.warning(
                "%s is writable again: %d spooled decision(s) written to it, the spool is empty",
                self.store.where,
                written,
            )
        self.unwritable = None
        self._retry_s = RETRY_MIN_S

    def _apply(self, generation: str, chunk: Sequence[tuple[int, NewDecision]]) -> int:
        """Write one chunk of a segment; a decision the database refuses for itself (not for its
        state) is logged whole, at ERROR, and passed over, so it cannot hold the spool up."""
        try:
            return self.store.apply_spooled(generation, chunk)
        except Exception as exc:
            if not refused(exc):
                raise
        written = 0
        for entry in chunk:
            try:
                written += self.store.apply_spooled(generation, [entry])
            except Exception as exc:
                if not refused(exc):
                    raise
                log.error(
                    "spool: %s refused decision %d of segment %s (%s); passed over, as it was: %s",
                    self.store.where, entry[0], generation, describe_error(exc), to_json(entry[1]),
                )  # fmt: skip
                if self.on_error is not None:
                    self.on_error(exc)
                self.store.skip_spooled(generation, entry[0])
        return written

    def _settle(self, outcomes: Iterable[_Outcome]) -> None:
        # One wake-up per event loop and batch, rather than one thread-safe callback per record.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, settled)


def _chunks(items: Iterator[T], size: int) -> Iterator[list[T]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def _settle(outcomes: list[_Outcome]) -> None:
    for future, record_id, exc in outcomes:
        if future.done():  # its caller was cancelled
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(record_id)
