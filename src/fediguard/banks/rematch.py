"""Retroactive matching: when a deny bank gains entries (added, imported, fed, or switched back on),
the hashes every decision recorded (its SHA-256 and its frames' PDQ hashes) are matched against
them, so media that passed before the entry existed is found without reading it again.

What is found is recorded in ``rematches`` (decision, entry, distance: the review queue reads it),
and a swept object whose decision it is is marked (``sweep_objects.rematched_at``, verdict
``reject``): the next sweep of its source, or `fediguard rematch`, flags it and gives it the
source's action. Decisions that were rejected already, overturned by a reviewer, or passed by an
allow entry are left alone.

Entries are matched once (``bank_entries.rematched_at``); several processes running this at once
(gateways on one database, a sweep, the command) find the same matches, recorded once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from fediguard.banks.governance import DEFAULT_MAX_DISTANCE
from fediguard.banks.index import HashIndex
from fediguard.banks.pdq import MIN_QUALITY
from fediguard.records.schema import bank_entries, banks, decisions, rematches, sweep_objects

log = logging.getLogger("fediguard.banks")

CHUNK = 500
"""Values per ``IN (…)`` list, and decisions per batch of PDQ searches."""


@dataclass(frozen=True)
class Rematch:
    decision_id: int
    source: str
    entry_id: int
    bank: str
    hash_kind: str
    distance: int
    frame: int | None = None
    objects: tuple[int, ...] = field(default=())
    """Ids of the swept objects whose decision it is (marked for the next sweep)."""

    @property
    def text(self) -> str:
        frame = f", frame {self.frame}" if self.frame is not None else ""
        objects = f"; swept object {', '.join(map(str, self.objects))}" if self.objects else ""
        return (
            f"decision {self.decision_id} ({self.source}) now matches deny bank {self.bank!r} entry "
            f"{self.entry_id} ({self.hash_kind}, distance {self.distance}{frame}){objects}"
        )


@dataclass
class _New:
    """The entries not matched against the records yet."""

    ids: list[int] = field(default_factory=list)
    named: dict[int, tuple[int, str]] = field(default_factory=dict)  # entry -> (entry named, bank)
    sha256: dict[str, list[int]] = field(default_factory=dict)
    pdq: list[tuple[int, HashIndex]] = field(default_factory=list)  # (radius, index) per bank


class Rematcher:
    """Matches new deny entries against recorded decisions. Blocking; thread-safe."""

    def __init__(self, engine: Engine, default_distance: int = DEFAULT_MAX_DISTANCE) -> None:
        self.engine = engine
        self.default_distance = default_distance

    def pending(self) -> int:
        """How many deny entries in force are still to be matched against the records (cheap)."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).select_from(self._new_query().subquery())).scalar_one()
            )

    def run(self, since: datetime | None = None) -> list[Rematch]:
        """Match every deny entry not matched yet against the decisions (those recorded since
        ``since``, or all), record what is found and mark the swept objects concerned; the
        matches found by this run, not those another process recorded first."""
        new = self._load()
        if not new.ids:
            return []
        found: dict[tuple[int, int], Rematch] = {}
        for rematch in [*self._by_sha256(new, since), *self._by_pdq(new, since)]:
            key = (rematch.decision_id, rematch.entry_id)
            if key not in found or rematch.distance < found[key].distance:
                found[key] = rematch
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            recorded = [r for r in found.values() if _insert(conn, r, now)]
            recorded = self._mark_objects(conn, recorded, now)
            for start in range(0, len(new.ids), CHUNK):
                chunk = new.ids[start : start + CHUNK]
                conn.execute(
                    update(bank_entries)
                    .where(bank_entries.c.id.in_(chunk), bank_entries.c.rematched_at.is_(None))
                    .values(rematched_at=now)
                )
        return recorded

    def _new_query(self) -> Any:
        e = bank_entries.c
        return (
            select(e.id, e.variant_of, e.hash_kind, e.value, banks.c.name, banks.c.max_distance)
            .join(banks, banks.c.id == e.bank_id)
            .where(banks.c.kind == "deny", banks.c.enabled, e.status == "active", e.rematched_at.is_(None))
        )

    def _load(self) -> _New:
        new = _New()
        pdq: dict[str, tuple[int, list[tuple[int, str]]]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(self._new_query()):
                entry_id = int(row.id)
                new.ids.append(entry_id)
                new.named[entry_id] = (int(row.variant_of or row.id), row.name)
                if row.hash_kind == "sha256":
                    new.sha256.setdefault(row.value, []).append(entry_id)
                else:
                    radius = self.default_distance if row.max_distance is None else int(row.max_distance)
                    pdq.setdefault(row.name, (radius, []))[1].append((entry_id, row.value))
        for radius, items in pdq.values():
            index = HashIndex()
            index.add_many(items)
            new.pdq.append((radius, index))
        return new

    def _decisions(self, since: datetime | None, *where: Any) -> Any:
        c = decisions.c
        query = select(c.id, c.source, c.sha256, c.pdq, c.labels, c.review).where(
            c.verdict != "reject", *where
        )
        return query.where(c.created_at >= since) if since is not None else query

    def _by_sha256(self, new: _New, since: datetime | None) -> Iterator[Rematch]:
        values = sorted(new.sha256)
        with self.engine.connect() as conn:
            for start in range(0, len(values), CHUNK):
                query = self._decisions(since, decisions.c.sha256.in_(values[start : start + CHUNK]))
                for row in conn.execute(query):
                    if _standing(row):
                        for entry_id in new.sha256[row.sha256]:
                            named, bank = new.named[entry_id]
                            yield Rematch(int(row.id), row.source, named, bank, "sha256", 0)

    def _by_pdq(self, new: _New, since: datetime | None) -> Iterator[Rematch]:
        if not new.pdq:
            return
        query = self._decisions(since, decisions.c.pdq.is_not(None)).order_by(decisions.c.id)
        with self.engine.connect() as conn:
            batch: list[Any] = []
            for row in conn.execution_options(yield_per=CHUNK).execute(query):
                if _standing(row):
                    batch.append(row)
                if len(batch) >= CHUNK:
                    yield from self._search(new, batch)
                    batch = []
            yield from self._search(new, batch)

    def _search(self, new: _New, rows: Sequence[Any]) -> Iterator[Rematch]:
        frames: list[tuple[Any, int | None, str]] = []
        for row in rows:
            for item in row.pdq or []:
                if isinstance(item, dict) and int(item.get("quality", 0)) >= MIN_QUALITY:
                    frame = item.get("frame")
                    frames.append((row, None if frame is None else int(frame), str(item["hash"])))
        if not frames:
            return
        for radius, index in new.pdq:
            found = index.search_many([h for _, _, h in frames], radius)
            for (row, frame, _), matches in zip(frames, found, strict=True):
                for entry_id, distance in matches:
                    named, bank = new.named[entry_id]
                    yield Rematch(int(row.id), row.source, named, bank, "pdq", int(distance), frame)

    @staticmethod
    def _mark_objects(conn: Connection, found: list[Rematch], now: datetime) -> list[Rematch]:
        """Mark the swept objects of these decisions for the next sweep; the matches with them."""
        ids = sorted({r.decision_id for r in found})
        objects: dict[int, list[int]] = {}
        o = sweep_objects.c
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            for row in conn.execute(select(o.id, o.decision_id).where(o.decision_id.in_(chunk))):
                objects.setdefault(int(row.decision_id), []).append(int(row.id))
            conn.execute(
                update(sweep_objects)
                .where(o.decision_id.in_(chunk))
                .values(verdict="reject", rematched_at=now)
            )
        return [
            Rematch(r.decision_id, r.source, r.entry_id, r.bank, r.hash_kind, r.distance, r.frame,
                    tuple(objects.get(r.decision_id, ())))
            for r in found
        ]  # fmt: skip


def _standing(row: Any) -> bool:
    """A decision a new deny entry changes: not overturned by a reviewer, not passed by an allow entry."""
    if not row.sha256 or row.review == "overturned":
        return False
    return "allowlisted" not in (row.labels or ())


def _insert(conn: Connection, rematch: Rematch, now: datetime) -> bool:
    """Record a match unless it is recorded already (by another process): whether this one did."""
    from sqlalchemy.dialects import postgresql, sqlite

    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(rematches)
        .values(
            found_at=now,
            decision_id=rematch.decision_id,
            entry_id=rematch.entry_id,
            bank=rematch.bank,
            hash_kind=rematch.hash_kind,
            distance=rematch.distance,
            frame=rematch.frame,
        )
        .on_conflict_do_nothing(index_elements=["decision_id", "entry_id"])
        .returning(rematches.c.id)  # psycopg's rowcount does not tell a skipped row
    )
    return conn.execute(statement).first() is not None


def log_rematches(found: Sequence[Rematch], shown: int = 100) -> None:
    """One WARNING line per retroactive match (the first ``shown``), then a count of the rest."""
    for rematch in found[:shown]:
        log.warning("retroactive match: %s", rematch.text)
    if len(found) > shown:
        log.warning("retroactive match: %d more (every one is in the rematches table)", len(found) - shown)
