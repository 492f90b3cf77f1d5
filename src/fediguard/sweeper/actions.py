"""What is done to rejected objects in storage: quarantine or delete, restore from quarantine, and
finishing what a crashed run recorded but may not have done.

Every action is recorded as pending (by the sweep, or :func:`restore`) before it happens, and marked
done, or failed, once it has: a run killed in between leaves it pending, for a later run with the
same action (or ``fediguard restore``) to finish.
"""

from __future__ import annotations

import asyncio
import logging

from fediguard.logs import shown
from fediguard.storage import ObjectGone, QuarantineConflict, Source, SourceError
from fediguard.sweeper.progress import SweepStats
from fediguard.sweeper.state import ObjectRecord, SweepState

log = logging.getLogger("fediguard.sweep")

ACTIONS = ("report", "quarantine", "delete")
"""What a sweep may do with rejected objects (``report`` changes nothing in storage)."""
NAME_MAX = 255
"""The longest file name (in bytes) of the filesystems a folder or SFTP source is on."""


def conflict_key(key: str, object_id: int) -> str:
    """Where object ``object_id`` is quarantined when ``key`` is taken there already: ``key.ID``,
    its last segment cut short to keep within NAME_MAX bytes (a name as long as the filesystem
    allows must stay quarantinable). It is recorded, so a restore never has to work it out."""
    folder, slash, name = key.rpartition("/")
    suffix = f".{object_id}"
    while name and len((name + suffix).encode("utf-8", "surrogateescape")) > NAME_MAX:
        name = name[:-1]  # whole characters: the key stays valid UTF-8 wherever it was
    return f"{folder}{slash}{name}{suffix}"


class ActionTaker:
    """Carries out recorded actions on one source, counting them (and their errors) in ``stats``."""

    def __init__(self, source: Source, state: SweepState, stats: SweepStats | None = None) -> None:
        self.source = source
        self.state = state
        self.stats = stats if stats is not None else SweepStats()

    async def perform(self, object_id: int, action: str, key: str, quarantine_key: str | None) -> None:
        """Carry out an action recorded as pending for object ``object_id`` (stored under ``key``):
        ``delete``, ``quarantine`` (to ``quarantine_key``) or ``restore`` (from ``quarantine_key``),
        and record how it went. Storage errors are logged and recorded, never raised."""
        try:
            if action == "delete":
                await self.source.delete(key)
            elif action == "quarantine":
                assert quarantine_key is not None
                try:
                    await self.source.quarantine(key, quarantine_key)
                except QuarantineConflict:
                    # Another object was quarantined under that key before: keep both.
                    quarantine_key = conflict_key(quarantine_key, object_id)
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
            log.error("%s of %s failed: %s", action, shown(key), exc)
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
                held = shown(quarantine_key)
                error = f"'{held}' is not in the quarantine location (moved? pass --quarantine)"
        except SourceError as exc:
            error = str(exc)
        if error is None:
            self.stats.actions += 1
            await asyncio.to_thread(self.state.action_done, object_id)
            return
        self.stats.errors += 1
        log.error("restore of %s failed: %s; it stays in quarantine", shown(key), error)
        await asyncio.to_thread(self.state.restore_failed, object_id, error)

    async def _exists(self, key: str) -> bool:
        try:
            await self.source.read_head(key, 1)
        except SourceError:
            return False
        return True

    async def finish_pending(self, source_id: int, action: str, *, dry_run: bool = False) -> None:
        """Finish the actions a crashed run recorded but may not have carried out, when they are
        this run's own ``action``: a report-only run never deletes or quarantines, a delete run never
        quarantines, and a dry run changes nothing. The others are reported and left pending, for
        a run with that action (or ``fediguard restore``) to finish."""
        pending: list[ObjectRecord] = await asyncio.to_thread(self.state.pending, source_id)
        for record in pending:
            assert record.action is not None
            key = shown(record.key)
            if dry_run:
                log.warning(
                    "dry run: %s of %s (object %d) is pending from an earlier run; left as it is",
                    record.action, key, record.id,
                )  # fmt: skip
            elif record.action != action:
                by = f"`fediguard restore {record.id}`" if record.action == "restore" else (
                    f"a sweep with --action {record.action}"
                )  # fmt: skip
                log.warning(
                    "%s of %s (object %d) is pending from an earlier run; left as it is (this run's "
                    "action is %s): %s finishes it", record.action, key, record.id, action, by,
                )  # fmt: skip
            else:
                log.info("finishing %s of %s left pending by an earlier run", record.action, key)
                await self.perform(record.id, record.action, record.key, record.quarantine_key)


async def restore(source: Source, state: SweepState, object_id: int) -> ObjectRecord:
    """Move a quarantined object back where it was, and give its record as it is then (a failed
    restore leaves it in quarantine, restorable). Raises ValueError when it is not quarantined."""
    record = await asyncio.to_thread(state.get, object_id)
    if record is None:
        raise ValueError(f"no swept object {object_id}")
    if not in_quarantine(record):
        raise ValueError(f"object {object_id} ({shown(record.key)}) is not in quarantine")
    await asyncio.to_thread(state.begin_restore, object_id)
    await ActionTaker(source, state).perform(object_id, "restore", record.key, record.quarantine_key)
    done = await asyncio.to_thread(state.get, object_id)
    assert done is not None
    return done


def in_quarantine(record: ObjectRecord) -> bool:
    """Quarantined, or left in quarantine by a restore that failed or was interrupted."""
    if not record.quarantine_key:
        return False
    held = record.action == "quarantine" and record.action_state == "done"
    return held or (record.action == "restore" and record.action_state in ("pending", "failed"))
