"""The sweep itself: stream a source's listing, skip what was already scanned, scan the rest
through the same pipeline and policy as uploads, and report, quarantine or delete what is rejected.

Memory stays flat: listing is streamed in batches, and at most 4 times ``concurrency`` objects wait
between the lister and the readers, so the listing runs only as fast as the readers. Once it has to
wait for them, a second listing runs ahead that only counts (it holds nothing), so the progress
shows a total and an ETA long before the listing itself ends.

Every object is claimed (recorded as being scanned, with its SHA-256) before it is decided, so a
run killed between the decision and the object's record takes that decision up instead of scanning
again. Every action is recorded as pending before it happens, and a later run with the same action
finishes what a crash left pending (any other run, and a dry run, only reports it): see
:mod:`fediguard.sweeper.actions`.

Objects with no verdict (no scanner, deadline, scanner error, an error reading them) are retried
by the next run; objects that cannot be scanned however often we try (undecodable, over the size
limit) are recorded as such and skipped while unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from fediguard.banks.rematch import Rematcher, log_rematches
from fediguard.logs import shown
from fediguard.media.sniff import sniff
from fediguard.storage import (
    Fetched,
    Layout,
    ObjectChanged,
    ObjectGone,
    ObjectTooLarge,
    Source,
    SourceError,
    StoredObject,
    iter_media,
    quiet_listing,
)
from fediguard.sweeper.actions import ACTIONS, ActionTaker
from fediguard.sweeper.judges import Judge, Judgement
from fediguard.sweeper.progress import Progress, SweepStats
from fediguard.sweeper.state import ObjectRecord, SweepState, unchanged

log = logging.getLogger("fediguard.sweep")

BATCH = 256
HEAD_BYTES = 4096
"""Enough of an object's first bytes to tell whether it is media."""
SNIFF_FIRST_ABOVE = 1 << 20
"""Plain layout: objects larger than this are sniffed from their first bytes before being read whole."""
SETTLED = ("scanned", "not_media", "undecodable", "too_large")
"""Statuses after which nothing is left to try while the object is unchanged."""
CLAIMED = "scanning"
"""Status of an object handed to the judge and not recorded since: read, hashed, being judged."""
CLAIM_CLOCK_SLACK = timedelta(seconds=5)
"""A decision recorded this long before its object's claim still counts (clock steps)."""
_HASH_IN_THREAD_BYTES = 256 * 1024

_Todo = asyncio.Queue[tuple[StoredObject, ObjectRecord | None] | None]


@dataclass(frozen=True)
class SweepOptions:
    layout: Layout
    action: str = "report"
    dry_run: bool = False
    since: datetime | None = None
    prefix: str = ""
    concurrency: int = 4
    max_bytes: int = 40_000_000
    rematch_distance: int | None = None
    """Run retroactive matching before each pass, with this default PDQ radius (None: don't)."""


class Sweeper:
    def __init__(
        self,
        source: Source,
        source_id: int,
        state: SweepState,
        judge: Judge,
        options: SweepOptions,
        progress: Progress | None = None,
    ) -> None:
        if options.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}")
        self.source = source
        self.source_id = source_id
        self.state = state
        self.judge = judge
        self.options = options
        self.stats = progress.stats if progress else SweepStats()
        self.progress = progress or Progress(self.stats)
        self.actions = ActionTaker(source, state, self.stats)
        self._counter: asyncio.Task[None] | None = None

    async def run(self) -> SweepStats:
        await self.actions.finish_pending(self.source_id, self.options.action, dry_run=self.options.dry_run)
        await self.flag_rematched()
        todo: _Todo = asyncio.Queue(maxsize=self.options.concurrency * 4)
        readers = [asyncio.create_task(self._reader(todo)) for _ in range(self.options.concurrency)]
        try:
            await self._list(todo)
        finally:
            if self._counter is not None:  # the listing ended: what it listed is the total
                self._counter.cancel()
                await asyncio.gather(self._counter, return_exceptions=True)
            for _ in readers:
                await todo.put(None)
            await asyncio.gather(*readers)
        return self.stats

    async def flag_rematched(self) -> None:
        """Flag the objects that a deny entry added since their decision now matches, and give them
        this run's action, without reading them again (:mod:`fediguard.banks.rematch`)."""
        if self.options.rematch_distance is not None:
            rematcher = Rematcher(self.state.engine, self.options.rematch_distance)
            log_rematches(await asyncio.to_thread(rematcher.run))
        for record in await asyncio.to_thread(self.state.rematched, self.source_id):
            reasons = await asyncio.to_thread(self.state.rematch_reasons, record.decision_id)
            verdict = Judgement("reject", record.decision_id, record.sha256, reasons)
            obj = StoredObject(record.key, record.size, record.modified, record.etag)
            self.stats.flagged += 1
            if self.options.dry_run:  # the mark stays, for the run that acts
                would = f" (dry run: would {self.options.action})" if self.options.action != "report" else ""
                log.warning(
                    "flagged %s: object %d, decision %s: %s%s",
                    shown(obj.key), record.id, record.decision_id, shown("; ".join(reasons)), would,
                )  # fmt: skip
                continue
            await self._act(obj, verdict)

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

    async def _list(self, todo: _Todo) -> None:
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

    async def _triage(self, batch: list[StoredObject], todo: _Todo) -> None:
        known = await asyncio.to_thread(self.state.known, self.source_id, [o.key for o in batch])
        for obj in batch:
            record = known.get(obj.key)
            if record is not None and self._settled(record) and unchanged(record, obj):
                self.stats.skipped += 1
                self.progress.tick()
                continue
            if not _utf8(obj.key):
                log.warning(
                    "the name %s is not valid UTF-8 (shown and recorded with \\xNN escapes); it is "
                    "scanned all the same, read by its raw name", shown(obj.key),
                )  # fmt: skip
            if todo.full() and self._counter is None:
                # The listing must now wait for the readers: count what is ahead meanwhile.
                self._counter = asyncio.create_task(self._count(), name="sweep-count")
            await todo.put((obj, record))

    async def _count(self) -> None:
        """List the source a second time, only counting, so the total (and the ETA) is known while
        the listing proper waits for the readers. Holds no object: memory stays flat."""
        quiet_listing.set(True)  # this task only: the listing proper reports unreadable folders
        try:
            async for _ in self._objects():
                self.stats.counted += 1
                if self.stats.counted % 1000 == 0:
                    self.progress.tick()
        except Exception as exc:  # the listing proper meets the same error and reports it
            log.debug("counting the objects ahead stopped: %s", exc)
            return
        self.stats.counting_done = True
        log.info("%s objects to go through (counted ahead of the listing)", f"{self.stats.counted:,}")
        self.progress.tick()

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
    async def _reader(self, todo: _Todo) -> None:
        while (item := await todo.get()) is not None:
            obj, record = item
            try:
                await self._process(obj, record)
            except Exception as exc:  # one object never stops the sweep
                log.exception("sweeping %s failed", shown(obj.key))
                self.stats.errors += 1
                try:
                    await asyncio.to_thread(
                        self.state.save, self.source_id, obj, status="error", error=repr(exc)
                    )
                except Exception:
                    log.exception("could not record the error for %s", shown(obj.key))
            self.progress.tick()

    async def _process(self, listed: StoredObject, record: ObjectRecord | None) -> None:
        fetched = await self._read(listed)
        if fetched is None:
            return
        # From here on the object is recorded as read (size, mtime, ETag of the bytes judged), not as
        # listed: one rewritten in between is then skipped next run only while it stays as read.
        data, obj = fetched.data, fetched.object
        if obj != listed:
            log.debug(
                "%s changed since it was listed (%d bytes, %s); recorded as read (%d bytes, %s)",
                shown(obj.key), listed.size, listed.etag or listed.modified,
                obj.size, obj.etag or obj.modified,
            )  # fmt: skip
        if self.options.layout.name == "plain" and sniff(data) is None:
            self.stats.not_media += 1
            await asyncio.to_thread(self.state.save, self.source_id, obj, status="not_media")
            return
        sha256 = await _sha256(data)
        verdict = await self._decided_before(obj, record, sha256)
        if verdict is None:
            # Claimed before deciding: a run killed after the decision is recorded but before this
            # object's record is finished takes the decision up again instead of scanning twice.
            await asyncio.to_thread(self.state.save, self.source_id, obj, status=CLAIMED, sha256=sha256)
            verdict = await self.judge.judge(data, obj.key)
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

    async def _read(self, listed: StoredObject) -> Fetched | None:
        """The object's bytes and what they are; or None, once why it was not read (vanished, too
        large, changing, unreadable, not media by its first bytes) is counted and recorded."""
        error: str | None = None
        try:
            fetched = await self._fetch(listed)
        except ObjectGone:
            self.stats.gone += 1
            log.info("%s vanished before it could be read", shown(listed.key))
            return None
        except ObjectTooLarge as exc:
            self.stats.too_large += 1
            log.warning("not scanned: %s", exc)
            status, error = "too_large", str(exc)
        except ObjectChanged as exc:
            self.stats.unscanned += 1
            log.warning("no verdict for %s: %s; it is tried again next run", shown(listed.key), exc)
            status, error = "unscanned", str(exc)
        except SourceError as exc:
            self.stats.errors += 1
            log.warning("cannot read %s: %s", shown(listed.key), exc)
            status, error = "error", str(exc)
        else:
            if fetched is not None:
                return fetched
            self.stats.not_media += 1  # as its first bytes tell
            status = "not_media"
        # Not read: the listed version is recorded (a later change makes it differ, and be tried again).
        await asyncio.to_thread(self.state.save, self.source_id, listed, status=status, error=error)
        return None

    async def _decided_before(
        self, obj: StoredObject, record: ObjectRecord | None, sha256: str
    ) -> Judgement | None:
        """The verdict an interrupted run reached for these very bytes after claiming this object,
        or None. It stands for this object even with the verdict cache off (and for a reject)."""
        if record is None or record.status != CLAIMED or record.sha256 != sha256 or record.scanned_at is None:
            return None
        found = await asyncio.to_thread(
            self.state.decision_since, sha256, record.scanned_at - CLAIM_CLOCK_SLACK
        )
        if found is None:
            return None
        decision_id, verdict, reasons = found
        log.info(
            "%s: taking up decision %d (%s), reached for it by an interrupted run",
            shown(obj.key), decision_id, verdict,
        )  # fmt: skip
        return Judgement(verdict, decision_id, sha256, reasons)

    async def _fetch(self, obj: StoredObject) -> Fetched | None:
        """The object's bytes and what they are, or None when its first bytes show it is not media
        (a large object, plain layout). Its listed size is checked before it is read whole."""
        plain = self.options.layout.name == "plain"
        if plain and obj.size > min(SNIFF_FIRST_ABOVE, self.options.max_bytes):
            head = await self.source.read_head(obj.key, HEAD_BYTES)
            if sniff(head) is None:
                return None
        if obj.size > self.options.max_bytes:
            raise ObjectTooLarge(obj.key, obj.size, self.options.max_bytes)
        return await self.source.fetch(obj.key, self.options.max_bytes)

    async def _no_verdict(self, obj: StoredObject, verdict: Judgement) -> None:
        """Undecodable media is recorded once; anything else with no verdict is retried next run."""
        status = "undecodable" if verdict.fail_reason == "undecodable" else "unscanned"
        if status == "undecodable":
            self.stats.undecodable += 1
        else:
            self.stats.unscanned += 1
            log.warning(
                "no verdict for %s (%s); it is tried again next run", shown(obj.key), verdict.fail_reason
            )
        await asyncio.to_thread(
            self.state.save, self.source_id, obj, status=status, sha256=verdict.sha256, verdict="unscanned",
            decision_id=verdict.decision_id, error=verdict.fail_reason,
        )  # fmt: skip

    async def _act(self, obj: StoredObject, verdict: Judgement) -> None:
        action = None if self.options.action == "report" or self.options.dry_run else self.options.action
        why = shown("; ".join(verdict.reasons)) or "rejected"
        quarantine_key = obj.key if action == "quarantine" else None
        object_id = await asyncio.to_thread(
            self.state.save, self.source_id, obj, status="scanned", sha256=verdict.sha256, verdict="reject",
            decision_id=verdict.decision_id, action=action, quarantine_key=quarantine_key,
        )  # fmt: skip
        if action is None:
            would = "" if self.options.action == "report" else f" (dry run: would {self.options.action})"
            log.warning(
                "flagged %s: object %d, decision %s: %s%s",
                shown(obj.key),
                object_id,
                verdict.decision_id,
                why,
                would,
            )
            return
        log.warning(
            "flagged %s: object %d, decision %s: %s; %s",
            shown(obj.key), object_id, verdict.decision_id, why, action,
        )  # fmt: skip
        await self.actions.perform(object_id, action, obj.key, quarantine_key)


async def _sha256(data: bytes) -> str:
    if len(data) > _HASH_IN_THREAD_BYTES:
        return await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
    return hashlib.sha256(data).hexdigest()


def _utf8(key: str) -> bool:
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
