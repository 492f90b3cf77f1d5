"""The recording side of the scan service: each decision written to the records database through the
record writer, with a spool for what the database cannot take (the gateway's), counted and timed."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from fediguard.metrics import Metrics
from fediguard.records import NewDecision, RecordStore
from fediguard.records.spool import Spool
from fediguard.records.writer import RecordWriter
from fediguard.scanning.job import ScanOutcome
from fediguard.verdicts import Decision

log = logging.getLogger("fediguard.decisions")

RECORD_GRACE_S = 0.5
"""With a spool, an answer waits for its record until the upload's deadline, and at least this long
(a decision made at the deadline itself): then it goes out, its record to be written later."""


class Recorder:
    """Writes decisions to ``store`` (nothing without one, or with ``record`` off)."""

    def __init__(self, store: RecordStore | None, metrics: Metrics, *, record: bool = True) -> None:
        self.store = store
        self.metrics = metrics
        self.record = record
        self.writer: RecordWriter | None = None

    @property
    def problem(self) -> str | None:
        """The database's error while decisions wait in the spool because of it (None: all well)."""
        writer = self.writer
        if writer is None or writer.unwritable is None or not writer.spool_depth:
            return None
        spooled = writer.spool_depth
        return f"{spooled} decision(s) spooled; the records database cannot be written: {writer.unwritable}"

    async def open_spool(self, spool_dir: Path | None) -> Spool | None:
        """The spool in ``spool_dir``, opened (None without a store or a folder)."""
        if self.store is None or spool_dir is None:
            return None
        spool = Spool(spool_dir)
        await asyncio.to_thread(spool.open)
        return spool

    def start(self, spool: Spool | None) -> None:
        """Start the record writer (with ``spool`` for the decisions the database cannot take)."""
        if self.store is not None and self.record:
            self.writer = RecordWriter(self.store, spool, on_error=self._write_failed)

    async def stop(self) -> None:
        if self.writer is not None:
            await asyncio.to_thread(self.writer.close)

    async def write(
        self,
        decision: Decision,
        data: bytes,
        sha256: str,
        media_type: str | None,
        client: str,
        source: str,
        timings: dict[str, float],
        outcome: ScanOutcome | None,
        size: int | None = None,
        cache_key: str | None = None,
        wait_until: float | None = None,
    ) -> tuple[int | None, bool]:
        """Record the decision: its id, and whether it went to the spool instead (or was not written
        by ``wait_until``, on the loop's clock: then it is written or spooled later, unwaited)."""
        if self.store is None or not self.record:
            return None, False
        record = NewDecision(
            source=source,
            client=client,
            media_type=media_type,
            size=len(data) if size is None else size,
            sha256=sha256,
            verdict=decision.verdict.value,
            labels=decision.labels,
            reasons=decision.reasons,
            results=[r.to_json() for r in outcome.results] if outcome else [],
            timings={k: round(v, 6) for k, v in timings.items()},
            detected_type=outcome.detected_type if outcome else None,
            pdq=[h.to_json() for h in outcome.pdq] if outcome and outcome.pdq is not None else None,
            fail_reason=decision.fail_reason.value if decision.fail_reason else None,
            fail_policy=decision.fail_policy.value if decision.fail_policy else None,
            scanner=outcome.scanner if outcome else None,
            fingerprint=cache_key,
            created_at=datetime.now(UTC),
        )
        t = time.perf_counter()
        writer = self.writer
        spooling = writer is not None and writer.spool is not None
        try:
            if writer is not None:
                wait_s = None
                if spooling and wait_until is not None:
                    wait_s = max(RECORD_GRACE_S, wait_until - asyncio.get_running_loop().time())
                record_id = await writer.add(record, wait_s)
            else:
                record_id = await asyncio.to_thread(self.store.add, record)
        except Exception:
            # The verdict still stands and is answered; the missing record is logged and counted.
            log.exception("could not record the decision for %s (verdict %s)", sha256[:16], decision.verdict)
            self.metrics.record_failures.inc()
            return None, False
        self.metrics.stage_seconds.labels("record").observe(time.perf_counter() - t)
        return record_id, record_id is None and spooling

    def _write_failed(self, exc: BaseException) -> None:
        """The record writer could not write (called in its thread): counted."""
        self.metrics.database_errors.labels("record").inc()
