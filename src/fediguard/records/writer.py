"""Batched record writes for async callers.

Under load, one transaction per decision spends most of its time committing; a single writer
thread that takes every decision waiting at that moment and inserts them in one transaction keeps
the cost per decision flat (measured in bench/gateway.py). Each caller still gets its own id.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from concurrent.futures import Future

from fediguard.records.store import NewDecision, RecordStore

log = logging.getLogger(__name__)

MAX_BATCH = 256


class RecordWriter:
    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self._inbox: queue.SimpleQueue[tuple[NewDecision, Future[int]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name="record-writer", daemon=True)
        self._thread.start()

    async def add(self, decision: NewDecision) -> int:
        future: Future[int] = Future()
        self._inbox.put((decision, future))
        return await asyncio.wrap_future(future)

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

    def _write(self, batch: list[tuple[NewDecision, Future[int]]]) -> None:
        try:
            ids = self.store.add_many([decision for decision, _ in batch])
        except Exception as exc:
            log.exception("writing %d decision record(s) failed", len(batch))
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), record_id in zip(batch, ids, strict=True):
            future.set_result(record_id)
