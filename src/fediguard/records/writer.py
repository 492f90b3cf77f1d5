"""Batched record writes for async callers.

Under load, one transaction per decision spends most of its time committing; a single writer
thread that takes every decision waiting at that moment and inserts them in one transaction keeps
the cost per decision flat (measured in bench/gateway.py). Each caller still gets its own id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading

from fediguard.records.store import NewDecision, RecordStore

log = logging.getLogger(__name__)

MAX_BATCH = 256

_Outcome = tuple["asyncio.Future[int]", int | None, Exception | None]
"""A caller's future, and the record id or the error that settles it."""


class RecordWriter:
    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self._inbox: queue.SimpleQueue[tuple[NewDecision, asyncio.Future[int]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name="record-writer", daemon=True)
        self._thread.start()

    async def add(self, decision: NewDecision) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._inbox.put((decision, future))
        return await future

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        self._inbox.put(None)
        self._thread.join(timeout)

    def _main(self) -> None:
        stopping = False
        while not stopping:
            first = self._inbox.get()
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

    def _write(self, batch: list[tuple[NewDecision, asyncio.Future[int]]]) -> None:
        outcomes: list[_Outcome]
        try:
            ids = self.store.add_many([decision for decision, _ in batch])
            outcomes = [(future, record_id, None) for (_, future), record_id in zip(batch, ids, strict=True)]
        except Exception as exc:
            log.exception("writing %d decision record(s) failed", len(batch))
            outcomes = [(future, None, exc) for _, future in batch]
        # One wake-up per event loop and batch, rather than one thread-safe callback per record.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, settled)


def _settle(outcomes: list[_Outcome]) -> None:
    for future, record_id, exc in outcomes:
        if future.done():  # its caller was cancelled
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            assert record_id is not None
            future.set_result(record_id)
