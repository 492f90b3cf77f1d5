"""Banks in the records database: named lists of hashes, each ``deny`` or ``allow``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from fediguard.banks._hex import parse_hex256
from fediguard.banks.formats import BankEntry
from fediguard.errors import FediguardError
from fediguard.records.schema import bank_alerts, bank_entries, bank_generation, bank_matches, banks
from fediguard.records.store import database_label

BANK_KINDS = ("deny", "allow")
SOURCE_KINDS = ("file", "hash", "record", "import", "feed", "other")
"""Where an entry came from: an image file (`banks add FILE`), a hash given by hand (`--hash`), a
reviewed decision (`confirm`/`allow`), a bank file (`banks import`), a subscribed feed; ``source``
holds the detail (file name, record id, feed URL)."""
ENTRY_STATUSES = ("active", "disabled", "suspended")
"""``disabled``: an admin turned it off, it matches nothing; ``suspended``: the flood guard turned it
off, its matches are recorded for review instead of deciding (docs/banks.md)."""


def source_kind_of(source: str) -> str:
    """The provenance kind said by a ``source`` text as fediguard writes them ("record 12",
    "import x.csv", "feed https://…", "cli add x.png", "cli add --hash")."""
    first = source.split(" ", 1)[0].split(":", 1)[0].lower()  # "feed:NAME#seq" too
    if first in ("record", "import", "feed"):
        return first
    if source == "cli add --hash":
        return "hash"
    if source.startswith("cli add "):
        return "file"
    return "other"


class BankError(FediguardError):
    """A bank operation that cannot be done (unknown bank, name taken, bad kind)."""


@dataclass(frozen=True)
class Bank:
    id: int
    name: str
    kind: str
    description: str
    created_at: datetime
    entries: int = 0
    crop_variants: int = 0
    """How many of ``entries`` are PDQ hashes of crops of another entry's image."""
    enabled: bool = True
    max_distance: int | None = None
    """PDQ match radius in bits; None: the ``pdq_max_distance`` setting."""
    flood_limit: int | None = None
    """Distinct uploads one entry may match per window before it is suspended; None: the default
    for the bank's kind (:mod:`fediguard.banks.governance`); 0: no flood guard."""
    flood_window_s: int | None = None


@dataclass(frozen=True)
class StoredEntry:
    id: int
    bank: str
    bank_kind: str
    hash_kind: str
    value: str
    note: str
    source: str
    added_by: str
    added_at: datetime
    variant: str | None = None
    variant_of: int | None = None
    source_kind: str = "other"
    status: str = "active"
    status_note: str | None = None
    match_count: int = 0
    last_matched_at: datetime | None = None
    bank_enabled: bool = True

    @property
    def matches(self) -> bool:
        """Whether it takes part in matching at all (active or suspended, in an enabled bank)."""
        return self.bank_enabled and self.status != "disabled"


@dataclass(frozen=True)
class BankRule:
    """What the matcher needs of one bank."""

    id: int
    name: str
    kind: str
    max_distance: int | None


class BankStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, name: str, kind: str, description: str = "") -> Bank:
        if kind not in BANK_KINDS:
            raise BankError(f"bank kind must be deny or allow, not {kind!r}")
        if (
            not name
            or len(name) > 100
            or not name.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            raise BankError("bank names are 1-100 letters, digits, '-', '_' or '.'")
        created = datetime.now(UTC)
        row = {"name": name, "kind": kind, "description": description, "created_at": created, "enabled": True}
        try:
            with self.engine.begin() as conn:
                bank_id = conn.execute(banks.insert().values(**row).returning(banks.c.id)).scalar_one()
                _changed(conn)
        except IntegrityError as exc:
            raise BankError(f"a bank named {name!r} exists already") from exc
        return Bank(int(bank_id), name, kind, description, created)

    def get(self, name: str) -> Bank:
        with self.engine.connect() as conn:
            row = conn.execute(select(banks).where(banks.c.name == name)).mappings().first()
            if row is None:
                where = database_label(self.engine.url.render_as_string(hide_password=False))
                raise BankError(f"no bank named {name!r} in {where} (see `fediguard banks list`)")
            count, variants = conn.execute(
                select(func.count(), func.count(bank_entries.c.variant_of)).where(
                    bank_entries.c.bank_id == row["id"]
                )
            ).one()
        return _bank(row, int(count), int(variants))

    def ensure(self, name: str, kind: str) -> Bank:
        """The bank named ``name``, created with ``kind`` if missing; BankError if it has the other kind."""
        try:
            bank = self.get(name)
        except BankError:
            return self.create(name, kind)
        if bank.kind != kind:
            article = "an" if bank.kind == "allow" else "a"
            raise BankError(f"bank {name!r} is {article} {bank.kind} bank, not {kind}")
        return bank

    def list(self) -> list[Bank]:
        counts = (
            select(
                bank_entries.c.bank_id,
                func.count().label("n"),
                func.count(bank_entries.c.variant_of).label("variants"),
            )
            .group_by(bank_entries.c.bank_id)
            .subquery()
        )
        query = select(
            banks, func.coalesce(counts.c.n, 0).label("n"), func.coalesce(counts.c.variants, 0).label("v")
        ).outerjoin(counts, counts.c.bank_id == banks.c.id)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(banks.c.name)).mappings().all()
        return [_bank(r, int(r["n"]), int(r["v"])) for r in rows]

    def delete(self, name: str) -> int:
        """Delete a bank and its entries; returns how many entries went."""
        bank = self.get(name)
        with self.engine.begin() as conn:
            ids = select(bank_entries.c.id).where(bank_entries.c.bank_id == bank.id)
            _forget(conn, ids)
            gone = conn.execute(delete(bank_entries).where(bank_entries.c.bank_id == bank.id)).rowcount
            conn.execute(delete(banks).where(banks.c.id == bank.id))
            _changed(conn)
        return int(gone or 0)

    def remove(
        self, name: str, entry_ids: Sequence[int] = (), hashes: Sequence[str] = ()
    ) -> tuple[StoredEntry, ...]:
        """Delete single entries of a bank, named by entry id or by hash (of either kind), with the
        crop variants of those entries; returns the entries deleted. Ids and hashes the bank does not
        hold are ignored."""
        bank = self.get(name)
        try:
            values = [parse_hex256(h, "hash") for h in hashes]
        except ValueError as exc:
            raise BankError(str(exc)) from exc
        query = (
            select(bank_entries, banks.c.name, banks.c.kind)
            .join(banks, banks.c.id == bank_entries.c.bank_id)
            .where(bank_entries.c.bank_id == bank.id)
            .order_by(bank_entries.c.id)
        )
        named = or_(bank_entries.c.id.in_(list(entry_ids)), bank_entries.c.value.in_(values))
        with self.engine.begin() as conn:
            found = tuple(_stored(r) for r in conn.execute(query.where(named)).mappings())
            ids = [e.id for e in found]
            crops = query.where(bank_entries.c.variant_of.in_(ids), bank_entries.c.id.not_in(ids))
            found += tuple(_stored(r) for r in conn.execute(crops).mappings()) if ids else ()
            if found:
                gone = [e.id for e in found]
                conn.execute(delete(bank_entries).where(bank_entries.c.id.in_(gone)))
                _forget(conn, gone)
                _changed(conn)
        return found

    def add(
        self,
        name: str,
        entries: Sequence[BankEntry],
        source: str,
        added_by: str,
        source_kind: str | None = None,
    ) -> int:
        """Add entries to a bank in one transaction; hashes already in it are skipped. Crop variants
        are tied to the PDQ entry of their ``parent`` (which must be among ``entries`` or already in
        the bank, else BankError). ``source_kind`` (:data:`SOURCE_KINDS`) defaults to the one
        ``source`` says (:func:`source_kind_of`). Returns how many were new."""
        kind = source_kind or source_kind_of(source)
        if kind not in SOURCE_KINDS:
            raise BankError(f"source kind must be one of {', '.join(SOURCE_KINDS)}, not {kind!r}")
        bank = self.get(name)
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            values = {e.value for e in entries}
            existing = self._existing(conn, bank.id, values if len(values) <= 10_000 else None)
            rows: list[tuple[dict[str, Any], BankEntry]] = []
            variants: list[tuple[dict[str, Any], BankEntry]] = []
            seen = set(existing)
            for entry in entries:
                key = (entry.kind, entry.value)
                if key in seen:
                    continue
                seen.add(key)
                row = {
                    "bank_id": bank.id, "hash_kind": entry.kind, "value": entry.value, "note": entry.note,
                    "source": source[:300], "added_by": added_by[:200], "added_at": now,
                    "source_kind": kind, "status": "active", "match_count": 0,
                }  # fmt: skip
                (variants if entry.variant else rows).append((row, entry))
            if rows:
                conn.execute(bank_entries.insert(), [row for row, _ in rows])
            if variants:
                parents = self._pdq_ids(conn, bank.id, {entry.parent for _, entry in variants})
                for row, entry in variants:
                    if entry.parent not in parents:
                        raise BankError(f"crop variant {entry.value}: no pdq {entry.parent} in {name!r}")
                    row.update(variant=entry.variant, variant_of=parents[entry.parent])
                conn.execute(bank_entries.insert(), [row for row, _ in variants])
            if rows or variants:
                _changed(conn)
        return len(rows) + len(variants)

    @staticmethod
    def _pdq_ids(conn: Connection, bank_id: int, values: set[str]) -> dict[str, int]:
        query = select(bank_entries.c.id, bank_entries.c.value).where(
            bank_entries.c.bank_id == bank_id, bank_entries.c.hash_kind == "pdq",
            bank_entries.c.value.in_(sorted(values)),
        )  # fmt: skip
        return {row.value: int(row.id) for row in conn.execute(query)}

    @staticmethod
    def _existing(conn: Connection, bank_id: int, values: set[str] | None) -> set[tuple[str, str]]:
        """Keys already in the bank: among ``values``, or all of them (for large imports)."""
        query = select(bank_entries.c.hash_kind, bank_entries.c.value).where(
            bank_entries.c.bank_id == bank_id
        )
        if values is not None:
            query = query.where(bank_entries.c.value.in_(values))
        return {(r.hash_kind, r.value) for r in conn.execute(query)}

    def entries(self, name: str) -> Iterator[BankEntry]:
        bank = self.get(name)
        parent = bank_entries.alias("parent")
        query = (
            select(
                bank_entries.c.hash_kind,
                bank_entries.c.value,
                bank_entries.c.note,
                bank_entries.c.variant,
                parent.c.value.label("parent"),
            )
            .outerjoin(parent, parent.c.id == bank_entries.c.variant_of)
            .where(bank_entries.c.bank_id == bank.id)
            .order_by(bank_entries.c.id)
        )
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                crop = (row.variant or "", row.parent or "") if row.variant and row.parent else ("", "")
                yield BankEntry(row.hash_kind, row.value, row.note, *crop)

    def stored_entries(
        self, name: str, limit: int | None = None, crops: bool = True
    ) -> Iterator[StoredEntry]:
        """A bank's entries in full (source, who, when), newest first; ``crops=False`` leaves out
        crop variants."""
        bank = self.get(name)
        query = (
            select(bank_entries, banks.c.name, banks.c.kind)
            .join(banks, banks.c.id == bank_entries.c.bank_id)
            .where(bank_entries.c.bank_id == bank.id)
            .order_by(bank_entries.c.id.desc())
        )
        if not crops:
            query = query.where(bank_entries.c.variant_of.is_(None))
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            for row in conn.execute(query).mappings():
                yield _stored(row)

    def all_hashes(self) -> Iterable[tuple[int, str, str, str]]:
        """Every entry as (entry id, bank kind, hash kind, value), for building the matcher's indexes."""
        query = select(bank_entries.c.id, banks.c.kind, bank_entries.c.hash_kind, bank_entries.c.value).join(
            banks, banks.c.id == bank_entries.c.bank_id
        )
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=10_000).execute(query):
                yield int(row.id), row.kind, row.hash_kind, row.value

    def rules(self) -> dict[int, BankRule]:
        """Every enabled bank, by id: what the matcher needs of it."""
        query = select(banks.c.id, banks.c.name, banks.c.kind, banks.c.max_distance).where(banks.c.enabled)
        with self.engine.connect() as conn:
            return {
                int(r.id): BankRule(int(r.id), r.name, r.kind, r.max_distance) for r in conn.execute(query)
            }

    def match_entries(self) -> Iterable[tuple[int, int, str, str]]:
        """Every entry that takes part in matching, as (entry id, bank id, hash kind, value): those
        of enabled banks that are not disabled (suspended ones are: their matches go to review)."""
        query = (
            select(bank_entries.c.id, bank_entries.c.bank_id, bank_entries.c.hash_kind, bank_entries.c.value)
            .join(banks, banks.c.id == bank_entries.c.bank_id)
            .where(banks.c.enabled, bank_entries.c.status != "disabled")
        )
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=10_000).execute(query):
                yield int(row.id), int(row.bank_id), row.hash_kind, row.value

    def describe(self, entry_ids: Sequence[int]) -> dict[int, StoredEntry]:
        query = (
            select(bank_entries, banks.c.name, banks.c.kind, banks.c.enabled.label("bank_enabled"))
            .join(banks, banks.c.id == bank_entries.c.bank_id)
            .where(bank_entries.c.id.in_(list(entry_ids)))
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return {r["id"]: _stored(r) for r in rows}

    def find(self, bank_kind: str, hashes: Sequence[tuple[str, str]]) -> tuple[StoredEntry, ...]:
        """Entries of ``bank_kind`` banks holding exactly one of these (hash kind, value) pairs."""
        wanted = {(kind, value.lower()) for kind, value in hashes}
        query = (
            select(bank_entries, banks.c.name, banks.c.kind)
            .join(banks, banks.c.id == bank_entries.c.bank_id)
            .where(banks.c.kind == bank_kind, bank_entries.c.value.in_(sorted({v for _, v in wanted})))
            .order_by(banks.c.name, bank_entries.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return tuple(_stored(r) for r in rows if (r["hash_kind"], r["value"]) in wanted)

    def state(self) -> int:
        """The banks' generation: raised by every write that changes a bank, in the same transaction,
        so it changes whenever any bank changes (on every node sharing the database). Cheap to poll."""
        query = select(bank_generation.c.generation).where(bank_generation.c.id == 1)
        with self.engine.connect() as conn:
            generation = conn.execute(query).scalar()
        return int(generation or 0)


def _forget(conn: Connection, entry_ids: Any) -> None:
    """What the flood guard kept about entries that are gone: their window, and their open alerts
    (resolved: removing an entry is one of the two answers to one)."""
    conn.execute(delete(bank_matches).where(bank_matches.c.entry_id.in_(entry_ids)))
    conn.execute(
        update(bank_alerts)
        .where(bank_alerts.c.entry_id.in_(entry_ids), bank_alerts.c.resolved_at.is_(None))
        .values(resolved_at=datetime.now(UTC), resolved_by="removed")
    )


def _changed(conn: Connection) -> None:
    """Raise the banks' generation, inside the transaction that changes them."""
    bumped = conn.execute(
        update(bank_generation)
        .where(bank_generation.c.id == 1)
        .values(generation=bank_generation.c.generation + 1)
    ).rowcount
    if not bumped:  # a database whose schema was made without RecordStore
        conn.execute(bank_generation.insert().values(id=1, generation=1))


def _stored(row: Any) -> StoredEntry:
    return StoredEntry(
        row["id"], row["name"], row["kind"], row["hash_kind"], row["value"], row["note"], row["source"],
        row["added_by"], row["added_at"], row["variant"], row["variant_of"], row["source_kind"],
        row["status"], row["status_note"], int(row["match_count"] or 0), row["last_matched_at"],
        bool(row.get("bank_enabled", True)),
    )  # fmt: skip


def _bank(row: Any, count: int, variants: int) -> Bank:
    return Bank(
        row["id"], row["name"], row["kind"], row["description"], row["created_at"], count, variants,
        bool(row["enabled"]), row["max_distance"], row["flood_limit"], row["flood_window_s"],
    )  # fmt: skip
