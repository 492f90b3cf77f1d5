"""The sweep itself: stream a source's listing, skip what was already scanned, scan the rest
through the same pipeline and policy as uploads, and report, quarantine or delete what is rejected.

Memory stays flat: listing is streamed in batches, and at most 4 times ``concurrency`` objects wait
between the lister and the readers. Every action is recorded as pending before it happens, and a
later run finishes what a crash left pending (a dry run only reports it).

Objects with no verdict (no scanner, deadline, scanner error, an error reading them) are retried
by the next run; objects that cannot be scanned however often we try (undecodable, over the size
limit) are recorded as such and skipped while unchanged.
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
HEAD_BYTES = 4096
"""Enough of an object's first bytes to tell whether it is media."""
SNIFF_FIRST_ABOVE = 1 << 20
"""Plain layout: objects larger than this are sniffed from their first bytes before being read whole."""
SETTLED = ("scanned", "not_media", "undecodable", "too_large")
"""Statuses after which nothing is left to try while the object is unchanged."""


@dataclass(frozen=True)
class Verdict:
    verdict: str  # pass | reject | unscanned
    decision_id: int | None
    sha256: str | None
    reasons: tuple[str, ...] = ()
    fail_reason: str | None = None  # why there is no verdict (deadline, no_scanner, undecodable...)


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
        if self.options.dry_run:
            await self.report_pending()
        else:
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
        """Whether nothing is left to do for an unchanged object: it has a verdict (or is not media,
        undecodable, or over a size limit that was not raised since), and, when this run acts, it is
        not a reject whose action is still to be done (after a report-only run). Errors and objects
        with no verdict are never settled: they are tried again."""
        if record.status not in SETTLED:
            return False
        if record.status == "scanned" and record.verdict not in ("pass", "reject"):
            return False  # recorded by an older version, which saved "no verdict" as scanned
        if record.status == "too_large" and record.size <= self.options.max_bytes:
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
            data = await self._fetch(obj)
        except ObjectGone:
            self.stats.gone += 1
            log.info("%s vanished before it could be read", obj.key)
            return
        except ObjectTooLarge as exc:
            self.stats.too_large += 1
            log.warning("not scanned: %s", exc)
            await asyncio.to_thread(self.state.save, self.source_id, obj, status="too_large", error=str(exc))
            return
        except SourceError as exc:
            self.stats.errors += 1
            log.warning("cannot read %s: %s", obj.key, exc)
            await asyncio.to_thread(self.state.save, self.source_id, obj, status="error", error=str(exc))
            return
        if data is None:
            self.stats.not_media += 1
            await asyncio.to_thread(self.state.save, self.source_id, obj, status="not_media")
            return
        verdict = await self.decider.decide(data, obj.key)
        if verdict.verdict == "unscanned":
            await self._no_verdict(obj, verdict)
            return
        self.stats.scanned += 1
        if verdict.verdict != "reject":
            await asyncio.to_thread(
                self.state.save, self.source_id, obj, status="scanned", sha256=verdict.sha256,
                verdict=verdict.verdict, decision_id=verdict.decision_id,
            )  # fmt: skip
            return
        self.stats.flagged += 1
        await self._act(obj, verdict)

    async def _fetch(self, obj: StoredObject) -> bytes | None:
        """The object's bytes, or None when it is not media (plain layout). Its listed size and, for
        a large object in the plain layout, its first bytes are checked before it is read whole."""
        plain = self.options.layout.name == "plain"
        if plain and obj.size > min(SNIFF_FIRST_ABOVE, self.options.max_bytes):
            head = await self.source.read_head(obj.key, HEAD_BYTES)
            if sniff(head) is None:
                return None
        if obj.size > self.options.max_bytes:
            raise ObjectTooLarge(obj.key, obj.size, self.options.max_bytes)
        data = await self.source.read(obj.key, self.options.max_bytes)
        return None if plain and sniff(data) is None else data

    async def _no_verdict(self, obj: StoredObject, verdict: Verdict) -> None:
        """Undecodable media is recorded once; anything else with no verdict is retried next run."""
        status = "undecodable" if verdict.fail_reason == "undecodable" else "unscanned"
        if status == "undecodable":
            self.stats.undecodable += 1
        else:
            self.stats.unscanned += 1
            log.warning("no verdict for %s (%s); it is tried again next run", obj.key, verdict.fail_reason)
        await asyncio.to_thread(
            self.state.save, self.source_id, obj, status=status, sha256=verdict.sha256, verdict="unscanned",
            decision_id=verdict.decision_id, error=verdict.fail_reason,
        )  # fmt: skip

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
                await self._restore(object_id, key, quarantine_key)
                return
        except ObjectGone:
            log.info("%s of object %d: the object is already gone; counted as done", action, object_id)
        except SourceError as exc:
            self.stats.errors += 1
            log.error("%s of %s failed: %s", action, key, exc)
            await asyncio.to_thread(self.state.action_done, object_id, "failed", str(exc))
            return
        self.stats.actions += 1
        await asyncio.to_thread(self.state.action_done, object_id)

    async def _restore(self, object_id: int, key: str, quarantine_key: str) -> None:
        """Move a quarantined object back; when that fails it stays in quarantine, restorable."""
        error = None
        try:
            await self.source.restore(quarantine_key, key)
        except ObjectGone:
            # Back in place already (a restore interrupted before it was recorded), or held elsewhere.
            if not await self._exists(key):
                error = f"{quarantine_key!r} is not in the quarantine location (moved? pass --quarantine)"
        except SourceError as exc:
            error = str(exc)
        if error is None:
            self.stats.actions += 1
            await asyncio.to_thread(self.state.action_done, object_id)
            return
        self.stats.errors += 1
        log.error("restore of %s failed: %s; it stays in quarantine", key, error)
        await asyncio.to_thread(self.state.restore_failed, object_id, error)

    async def _exists(self, key: str) -> bool:
        try:
            await self.source.read_head(key, 1)
        except SourceError:
            return False
        return True

    async def finish_pending(self) -> None:
        """Finish actions a crashed run recorded but may not have carried out."""
        pending: list[ObjectRecord] = await asyncio.to_thread(self.state.pending, self.source_id)
        for record in pending:
            assert record.action is not None
            log.info("finishing %s of %s left pending by an earlier run", record.action, record.key)
            await self._perform(record.id, record.action, record.key, record.quarantine_key)

    async def report_pending(self) -> None:
        """Dry run: say which actions an earlier run left pending, without carrying them out."""
        pending: list[ObjectRecord] = await asyncio.to_thread(self.state.pending, self.source_id)
        for record in pending:
            log.warning(
                "dry run: %s of %s (object %d) is pending from an earlier run; left as it is",
                record.action, record.key, record.id,
            )  # fmt: skip


async def restore(source: Source, state: SweepState, object_id: int) -> ObjectRecord:
    """Move a quarantined object back where it was. Raises ValueError when it is not quarantined."""
    record = await asyncio.to_thread(state.get, object_id)
    if record is None:
        raise ValueError(f"no swept object {object_id}")
    if not in_quarantine(record):
        raise ValueError(f"object {object_id} ({record.key}) is not in quarantine")
    await asyncio.to_thread(state.begin_restore, object_id)
    sweeper = Sweeper(source, record.source_id, state, _NoDecider(), SweepOptions(layout=get_layout("plain")))
    await sweeper._perform(object_id, "restore", record.key, record.quarantine_key)
    done = await asyncio.to_thread(state.get, object_id)
    assert done is not None
    return done


def in_quarantine(record: ObjectRecord) -> bool:
    """Quarantined, or left in quarantine by a restore that failed or was interrupted."""
    if not record.quarantine_key:
        return False
    held = record.action == "quarantine" and record.action_state == "done"
    return held or (record.action == "restore" and record.action_state in ("pending", "failed"))


class _NoDecider:
    async def decide(self, data: bytes, key: str) -> Verdict:
        raise RuntimeError("restoring decides nothing")
