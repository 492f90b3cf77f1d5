"""The sweep itself: stream a source's listing, skip what was already scanned, scan the rest
through the same pipeline and policy as uploads, and report, quarantine or delete what is rejected.

Memory stays flat: listing is streamed in batches, and at most 4 times ``concurrency`` objects wait
between the lister and the readers. Every action is recorded as pending before it happens, and a
later run finishes what a crash left pending.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from fediguard.media.sniff import sniff
from fediguard.storage import (
    Layout,
    ObjectGone,
    ObjectTooLarge,
    QuarantineConflict,
    Source,
    SourceError,
    StoredObject,
    get_layout,
    iter_media,
)
from fediguard.sweeper.progress import Progress, SweepStats
from fediguard.sweeper.state import ObjectRecord, SweepState, unchanged

log = logging.getLogger("fediguard.sweep")

ACTIONS = ("report", "quarantine", "delete")
BATCH = 256


@dataclass(frozen=True)
class Verdict:
    verdict: str  # pass | reject | unscanned
    decision_id: int | None
    sha256: str | None
    reasons: tuple[str, ...] = ()


class Decider(Protocol):
    """Decides about one object's bytes (in-process, or through a gateway) and records the decision."""

    async def decide(self, data: bytes, key: str) -> Verdict: ...


@dataclass(frozen=True)
class SweepOptions:
    layout: Layout
    action: str = "report"
    dry_run: bool = False
    since: datetime | None = None
    prefix: str = ""
    concurrency: int = 4
    max_bytes: int = 40_000_000


class Sweeper:
    def __init__(
        self,
        source: Source,
        source_id: int,
        state: SweepState,
        decider: Decider,
        options: SweepOptions,
        progress: Progress | None = None,
    ) -> None:
        if options.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}")
        self.source = source
        self.source_id = source_id
        self.state = state
        self.decider = decider
        self.options = options
        self.stats = progress.stats if progress else SweepStats()
        self.progress = progress or Progress(self.stats)

    async def run(self) -> SweepStats:
        await self.finish_pending()
        todo: asyncio.Queue[StoredObject | None] = asyncio.Queue(maxsize=self.options.concurrency * 4)
        readers = [asyncio.create_task(self._reader(todo)) for _ in range(self.options.concurrency)]
        try:
            await self._list(todo)
        finally:
            for _ in readers:
                await todo.put(None)
            await asyncio.gather(*readers)
        return self.stats

    # --- listing -----------------------------------------------------------------------------------
    async def _objects(self) -> AsyncIterator[StoredObject]:
        layout, prefix = self.options.layout, self.options.prefix
        if not prefix:
            async for obj in iter_media(self.source, layout, since=self.options.since):
                yield obj
            return
        async for obj in self.source.list(prefix, since=self.options.since):
            if layout.is_media(obj.key):
                yield obj

    async def _list(self, todo: asyncio.Queue[StoredObject | None]) -> None:
        batch: list[StoredObject] = []
        async for obj in self._objects():
            self.stats.listed += 1
            batch.append(obj)
            if len(batch) >= BATCH:
                await self._triage(batch, todo)
                batch = []
        await self._triage(batch, todo)
        self.stats.listing_done = True
        self.progress.tick()

    async def _triage(self, batch: list[StoredObject], todo: asyncio.Queue[StoredObject | None]) -> None:
        known = await asyncio.to_thread(self.state.known, self.source_id, [o.key for o in batch])
        for obj in batch:
            record = known.get(obj.key)
            if record is not None and self._settled(record) and unchanged(record, obj):
                self.stats.skipped += 1
                self.progress.tick()
                continue
            await todo.put(obj)

    def _settled(self, record: ObjectRecord) -> bool:
        """Whether nothing is left to do for an unchanged object: scanned (or not media), and, when
        this run acts, not a reject whose action is still to be done (after a report-only run)."""
        if record.status not in ("scanned", "not_media"):
            return False
        acting = self.options.action != "report" and not self.options.dry_run
        return not (acting and record.verdict == "reject" and record.action_state != "done")

    # --- reading and deciding ---------------------------------------------------------------------
    async def _reader(self, todo: asyncio.Queue[StoredObject | None]) -> None:
        while (obj := await todo.get()) is not None:
            try:
                await self._process(obj)
            except Exception as exc:  # one object never stops the sweep
                log.exception("sweeping %s failed", obj.key)
                self.stats.errors += 1
                await asyncio.to_thread(self.state.save, self.source_id, obj, status="error", error=repr(exc))
            self.progress.tick()

    async def _process(self, obj: StoredObject) -> None:
        try:
            data = await self.source.read(obj.key, self.options.max_bytes)
        except ObjectGone:
            self.stats.gone += 1
            log.info("%s vanished before it could be read", obj.key)
            return
        except (ObjectTooLarge, SourceError) as exc:
            self.stats.errors += 1
            log.warning("cannot read %s: %s", obj.key, exc)
            await asyncio.to_thread(self.state.save, self.source_id, obj, status="error", error=str(exc))
            return
        if self.options.layout.name == "plain" and sniff(data) is None:
            self.stats.not_media += 1
            await asyncio.to_thread(self.state.save, self.source_id, obj, status="not_media")
            return
        verdict = await self.decider.decide(data, obj.key)
        self.stats.scanned += 1
        if verdict.verdict != "reject":
            await asyncio.to_thread(
                self.state.save, self.source_id, obj, status="scanned", sha256=verdict.sha256,
                verdict=verdict.verdict, decision_id=verdict.decision_id,
            )  # fmt: skip
            return
        self.stats.flagged += 1
        await self._act(obj, verdict)

    async def _act(self, obj: StoredObject, verdict: Verdict) -> None:
        action = None if self.options.action == "report" or self.options.dry_run else self.options.action
        why = "; ".join(verdict.reasons) or "rejected"
        quarantine_key = obj.key if action == "quarantine" else None
        object_id = await asyncio.to_thread(
            self.state.save, self.source_id, obj, status="scanned", sha256=verdict.sha256, verdict="reject",
            decision_id=verdict.decision_id, action=action, quarantine_key=quarantine_key,
        )  # fmt: skip
        if action is None:
            would = "" if self.options.action == "report" else f" (dry run: would {self.options.action})"
            log.warning(
                "flagged %s: object %d, decision %s: %s%s",
                obj.key,
                object_id,
                verdict.decision_id,
                why,
                would,
            )
            return
        log.warning(
            "flagged %s: object %d, decision %s: %s; %s", obj.key, object_id, verdict.decision_id, why, action
        )
        await self._perform(object_id, action, obj.key, quarantine_key)

    async def _perform(self, object_id: int, action: str, key: str, quarantine_key: str | None) -> None:
        try:
            if action == "delete":
                await self.source.delete(key)
            elif action == "quarantine":
                assert quarantine_key is not None
                try:
                    await self.source.quarantine(key, quarantine_key)
                except QuarantineConflict:
                    # Another object was quarantined under that key before: keep both.
                    quarantine_key = f"{quarantine_key}.{object_id}"
                    await asyncio.to_thread(self.state.set_quarantine_key, object_id, quarantine_key)
                    await self.source.quarantine(key, quarantine_key)
            elif action == "restore":
                assert quarantine_key is not None
                await self.source.restore(quarantine_key, key)
        except ObjectGone:
            log.info("%s of object %d: the object is already gone; counted as done", action, object_id)
        except SourceError as exc:
            self.stats.errors += 1
            log.error("%s of %s failed: %s", action, key, exc)
            await asyncio.to_thread(self.state.action_done, object_id, "failed", str(exc))
            return
        self.stats.actions += 1
        await asyncio.to_thread(self.state.action_done, object_id)

    async def finish_pending(self) -> None:
        """Finish actions a crashed run recorded but may not have carried out."""
        pending: list[ObjectRecord] = await asyncio.to_thread(self.state.pending, self.source_id)
        for record in pending:
            assert record.action is not None
            log.info("finishing %s of %s left pending by an earlier run", record.action, record.key)
            await self._perform(record.id, record.action, record.key, record.quarantine_key)


async def restore(source: Source, state: SweepState, object_id: int) -> ObjectRecord:
    """Move a quarantined object back where it was. Raises ValueError when it is not quarantined."""
    record = await asyncio.to_thread(state.get, object_id)
    if record is None:
        raise ValueError(f"no swept object {object_id}")
    if record.action != "quarantine" or record.action_state != "done" or not record.quarantine_key:
        raise ValueError(f"object {object_id} ({record.key}) is not in quarantine")
    await asyncio.to_thread(state.begin_restore, object_id)
    sweeper = Sweeper(source, record.source_id, state, _NoDecider(), SweepOptions(layout=get_layout("plain")))
    await sweeper._perform(object_id, "restore", record.key, record.quarantine_key)
    done = await asyncio.to_thread(state.get, object_id)
    assert done is not None
    return done


class _NoDecider:
    async def decide(self, data: bytes, key: str) -> Verdict:
        raise RuntimeError("restoring decides nothing")
