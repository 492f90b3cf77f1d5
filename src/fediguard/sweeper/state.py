"""What the sweeper remembers per object, in the records database: enough to skip what was already
scanned, to resume an interrupted sweep, and to finish or undo actions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError

from fediguard.records.schema import sweep_objects, sweep_sources
from fediguard.storage import StoredObject


@dataclass(frozen=True)
class ObjectRecord:
    id: int
    source_id: int
    key: str
    size: int
    modified: datetime
    etag: str | None
    status: str
    verdict: str | None
    decision_id: int | None
    action: str | None
    action_state: str | None
    quarantine_key: str | None


def _record(row: Any) -> ObjectRecord:
    modified = row["modified"]
    if modified.tzinfo is None:
        modified = modified.replace(tzinfo=UTC)
    return ObjectRecord(
        row["id"], row["source_id"], row["key"], row["size"], modified, row["etag"], row["status"],
        row["verdict"], row["decision_id"], row["action"], row["action_state"], row["quarantine_key"],
    )  # fmt: skip


def unchanged(known: ObjectRecord, obj: StoredObject) -> bool:
    """Whether a listed object is the one already scanned: same size, and same ETag where the
    backend has one, else the same modification time."""
    if known.size != obj.size:
        return False
    if obj.etag is not None and known.etag is not None:
        return known.etag == obj.etag
    return abs((known.modified - obj.modified).total_seconds()) < 1e-3


class SweepState:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def source_id(self, url: str, options: dict[str, Any]) -> int:
        """The id of a source, registering it (with its non-secret options) on first use."""
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            found = conn.execute(select(sweep_sources.c.id).where(sweep_sources.c.url == url)).scalar()
            if found is not None:
                conn.execute(
                    update(sweep_sources)
                    .where(sweep_sources.c.id == found)
                    .values(options=options, updated_at=now)
                )
                return int(found)
            try:
                new = conn.execute(
                    sweep_sources.insert()
                    .values(url=url, options=options, updated_at=now)
                    .returning(sweep_sources.c.id)
                ).scalar_one()
            except IntegrityError:  # another sweeper registered it in the meantime
                return self.source_id(url, options)
            return int(new)

    def source(self, source_id: int) -> tuple[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            row = conn.execute(select(sweep_sources).where(sweep_sources.c.id == source_id)).mappings().one()
        return str(row["url"]), dict(row["options"])

    def known(self, source_id: int, keys: Sequence[str]) -> dict[str, ObjectRecord]:
        """The records of these keys (one query for a whole batch of listed objects)."""
        if not keys:
            return {}
        query = select(sweep_objects).where(
            sweep_objects.c.source_id == source_id, sweep_objects.c.key.in_(keys)
        )
        with self.engine.connect() as conn:
            return {r["key"]: _record(r) for r in conn.execute(query).mappings()}

    def save(
        self,
        source_id: int,
        obj: StoredObject,
        *,
        status: str,
        sha256: str | None = None,
        verdict: str | None = None,
        decision_id: int | None = None,
        error: str | None = None,
        action: str | None = None,
        quarantine_key: str | None = None,
    ) -> int:
        """Record what was found for an object (replacing an older record of the same key). An action,
        when given, is recorded as pending: call :meth:`action_done` once it has happened."""
        values = {
            "size": obj.size, "modified": obj.modified, "etag": obj.etag, "sha256": sha256, "status": status,
            "verdict": verdict, "decision_id": decision_id, "error": error, "action": action,
            "action_state": "pending" if action else None, "quarantine_key": quarantine_key,
            "scanned_at": datetime.now(UTC),
        }  # fmt: skip
        key_match = (sweep_objects.c.source_id == source_id) & (sweep_objects.c.key == obj.key)
        with self.engine.begin() as conn:
            found = conn.execute(select(sweep_objects.c.id).where(key_match)).scalar()
            if found is not None:
                conn.execute(update(sweep_objects).where(sweep_objects.c.id == found).values(**values))
                return int(found)
            new = conn.execute(
                sweep_objects.insert()
                .values(source_id=source_id, key=obj.key, **values)
                .returning(sweep_objects.c.id)
            ).scalar_one()
            return int(new)

    def action_done(self, object_id: int, state: str = "done", error: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(sweep_objects)
                .where(sweep_objects.c.id == object_id)
                .values(action_state=state, error=error)
            )

    def set_quarantine_key(self, object_id: int, quarantine_key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(sweep_objects)
                .where(sweep_objects.c.id == object_id)
                .values(quarantine_key=quarantine_key)
            )

    def begin_restore(self, object_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(sweep_objects)
                .where(sweep_objects.c.id == object_id)
                .values(action="restore", action_state="pending")
            )

    def get(self, object_id: int) -> ObjectRecord | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(sweep_objects).where(sweep_objects.c.id == object_id)).mappings().first()
            )
        return _record(row) if row else None

    def pending(self, source_id: int) -> list[ObjectRecord]:
        query = select(sweep_objects).where(
            sweep_objects.c.source_id == source_id, sweep_objects.c.action_state == "pending"
        )
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query).mappings()]
