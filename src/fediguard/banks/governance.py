"""Governing banks: switching banks and entries off and on, each bank's match radius and flood
limit, the flood guard that suspends an entry matching too many distinct uploads, its alerts, and
the entries' match counts. All state lives in the records database, so it holds across restarts and
for every node sharing it (SQLite or PostgreSQL).

**The flood guard.** A deny entry that suddenly matches many *different* uploads is far more likely
to be a bad entry (a hash of a meme, a blank frame, a logo added to a shared list by mistake: HMA's
users report such lists, ThreatExchange #1873) than a wave of abuse material, which arrives as copies
of few images and so as few distinct SHA-256 digests. When one entry has matched more than its
bank's ``flood_limit`` distinct uploads within ``flood_window_s``, it is suspended: it stops
rejecting, its matches are recorded with the label ``review``, a WARNING goes to the log, a counter
to ``/metrics`` and an alert to ``bank_alerts``, until an admin re-enables (`fediguard banks enable
BANK --entry ID`) or removes it. At most ``flood_limit`` distinct uploads per window are ever rejected
by one entry (uploads already being decided when it is suspended keep their verdict).

Defaults, and why: :data:`DEFAULT_FLOOD_LIMIT` distinct uploads in :data:`DEFAULT_FLOOD_WINDOW_S`.
A small instance sees a known image a handful of times a day, a raid re-posts a few images
(counted once per distinct file); 50 different files in one hour matching a *single* entry is beyond
what any single image should produce on one instance, while it is what a bad entry on a large
instance (thousands of uploads an hour) produces within minutes, so the damage of a false entry
stays bounded to 50 wrongly refused uploads. Allow banks have no flood guard by default: their
entries are overturned false positives, and suspending one would re-expose lawful images to the
models that misjudged them; a bank's limit can be set either way (`fediguard banks set`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, bindparam, delete, func, select, update

from fediguard.banks.store import BankError, BankStore, _changed
from fediguard.records.schema import bank_alerts, bank_entries, bank_matches, banks

log = logging.getLogger("fediguard.banks")

DEFAULT_FLOOD_LIMIT = 50
"""Distinct uploads (by SHA-256) one deny entry may match per window before it is suspended."""
DEFAULT_FLOOD_WINDOW_S = 3600
"""The flood guard's window: one hour."""
DEFAULT_MAX_DISTANCE = 31
"""PDQ match radius of a bank that sets none, when no ``pdq_max_distance`` setting is at hand."""


def flood_limit_of(kind: str, limit: int | None) -> int:
    """A bank's effective flood limit (0: none): its own, else the default for its kind."""
    if limit is not None:
        return limit
    return DEFAULT_FLOOD_LIMIT if kind == "deny" else 0


@dataclass(frozen=True)
class Suspension:
    entry_id: int
    bank: str
    matched: int
    window_s: int
    alert_id: int

    @property
    def message(self) -> str:
        return (
            f"entry {self.entry_id} of bank {self.bank!r} matched {self.matched} distinct uploads within "
            f"{_duration(self.window_s)} (its bank's flood limit): suspended, its matches now go to "
            f"review. Check it, then `fediguard banks enable {self.bank} --entry {self.entry_id}` or "
            f"`fediguard banks remove {self.bank} --id {self.entry_id}`"
        )


@dataclass(frozen=True)
class Alert:
    id: int
    created_at: datetime
    kind: str
    bank: str
    entry_id: int | None
    message: str
    resolved_at: datetime | None
    resolved_by: str | None


class BankGovernance:
    """Switches, settings, the flood guard and alerts over one records database. Thread-safe."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = BankStore(engine)

    # --- switching on and off --------------------------------------------------------------------
    def set_bank_enabled(self, name: str, enabled: bool) -> bool:
        """Enable or disable a whole bank; returns whether that changed anything. A re-enabled
        bank's entries are matched against the records again (retroactive matching)."""
        bank = self.store.get(name)
        if bank.enabled == enabled:
            return False
        with self.engine.begin() as conn:
            conn.execute(update(banks).where(banks.c.id == bank.id).values(enabled=enabled))
            if enabled:
                conn.execute(
                    update(bank_entries)
                    .where(bank_entries.c.bank_id == bank.id, bank_entries.c.status == "active")
                    .values(rematched_at=None)
                )
            _changed(conn)
        return True

    def set_entries_status(
        self, name: str, entry_ids: Sequence[int], status: str, note: str, by: str
    ) -> list[int]:
        """Set single entries (and their crop variants) ``active`` or ``disabled``; returns the ids
        named that the bank holds. Enabling an entry resolves its alerts, starts its flood window
        afresh and has it matched against the records again."""
        if status not in ("active", "disabled"):
            raise BankError(f"an admin sets entries active or disabled, not {status!r}")
        bank = self.store.get(name)
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            found = [
                int(i)
                for i in conn.execute(
                    select(bank_entries.c.id).where(
                        bank_entries.c.bank_id == bank.id, bank_entries.c.id.in_(list(entry_ids))
                    )
                ).scalars()
            ]
            if not found:
                return []
            ids = found + _variants(conn, found)
            values: dict[str, object] = {"status": status, "status_note": note or None, "status_at": now}
            if status == "active":
                values["rematched_at"] = None
                conn.execute(delete(bank_matches).where(bank_matches.c.entry_id.in_(ids)))
                conn.execute(
                    update(bank_alerts)
                    .where(bank_alerts.c.entry_id.in_(found), bank_alerts.c.resolved_at.is_(None))
                    .values(resolved_at=now, resolved_by=by[:200])
                )
            conn.execute(update(bank_entries).where(bank_entries.c.id.in_(ids)).values(**values))
            _changed(conn)
        return found

    def configure(
        self,
        name: str,
        *,
        max_distance: int | bool | None = False,
        flood_limit: int | bool | None = False,
        flood_window_s: int | bool | None = False,
    ) -> None:
        """Set a bank's match radius, flood limit or window (None: back to the default; False, the
        default: leave as it is)."""
        values: dict[str, int | None] = {}
        for column, value, low, high in (
            ("max_distance", max_distance, 0, 128),
            ("flood_limit", flood_limit, 0, 10**9),
            ("flood_window_s", flood_window_s, 1, 366 * 86400),
        ):
            if value is False:
                continue
            if value is not None and (isinstance(value, bool) or not low <= value <= high):
                raise BankError(f"{column.replace('_', ' ')} must be {low}-{high}, not {value}")
            values[column] = value
        bank = self.store.get(name)
        if not values:
            return
        with self.engine.begin() as conn:
            conn.execute(update(banks).where(banks.c.id == bank.id).values(**values))
            _changed(conn)

    # --- the flood guard -------------------------------------------------------------------------
    def record_matches(self, entry_ids: Iterable[int], sha256: str) -> list[Suspension]:
        """Count one upload (``sha256``) as matched by these deny entries, and suspend those that
        have now matched their bank's flood limit of distinct uploads within its window. One
        transaction per entry, holding the entry's row, so that concurrent gateways count exactly."""
        suspended = []
        for entry_id in sorted(set(entry_ids)):
            with self.engine.connect() as conn:
                if conn.dialect.name == "sqlite":
                    # pysqlite would begin only at the first write, after the entry's status was
                    # read: take the write lock first, as PostgreSQL's row lock does.
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                done = self._record(conn, entry_id, sha256)
                conn.commit()
            if done is not None:
                suspended.append(done)
        return suspended

    def _record(self, conn: Connection, entry_id: int, sha256: str) -> Suspension | None:
        query = (
            select(
                bank_entries.c.status, banks.c.name, banks.c.kind, banks.c.flood_limit, banks.c.flood_window_s
            )
            .join(banks, banks.c.id == bank_entries.c.bank_id)
            .where(bank_entries.c.id == entry_id)
            .with_for_update(of=bank_entries)
        )
        row = conn.execute(query).first()
        if row is None or row.status != "active":
            return None
        limit = flood_limit_of(row.kind, row.flood_limit)
        if limit <= 0:
            return None
        window = int(row.flood_window_s or DEFAULT_FLOOD_WINDOW_S)
        now = datetime.now(UTC)
        cutoff = now - timedelta(seconds=window)
        m = bank_matches.c
        conn.execute(delete(bank_matches).where(m.entry_id == entry_id, m.matched_at < cutoff))
        seen = conn.execute(select(m.id).where(m.entry_id == entry_id, m.sha256 == sha256).limit(1)).first()
        if seen is None:
            conn.execute(bank_matches.insert().values(entry_id=entry_id, sha256=sha256, matched_at=now))
        matched = int(
            conn.execute(
                select(func.count(func.distinct(m.sha256))).where(m.entry_id == entry_id)
            ).scalar_one()
        )
        if matched < limit:
            return None
        ids = [entry_id, *_variants(conn, [entry_id])]
        note = f"flood guard: {matched} distinct uploads within {_duration(window)}"
        conn.execute(
            update(bank_entries)
            .where(bank_entries.c.id.in_(ids))
            .values(status="suspended", status_note=note, status_at=now)
        )
        suspension = Suspension(entry_id, row.name, matched, window, 0)
        alert_id = conn.execute(
            bank_alerts.insert()
            .values(
                created_at=now, kind="flood", bank=row.name, entry_id=entry_id, message=suspension.message
            )
            .returning(bank_alerts.c.id)
        ).scalar_one()
        _changed(conn)
        return Suspension(entry_id, row.name, matched, window, int(alert_id))

    # --- alerts and counts -----------------------------------------------------------------------
    def alerts(self, include_resolved: bool = False, limit: int = 100) -> list[Alert]:
        query = select(bank_alerts).order_by(bank_alerts.c.id.desc()).limit(limit)
        if not include_resolved:
            query = query.where(bank_alerts.c.resolved_at.is_(None))
        with self.engine.connect() as conn:
            return [Alert(**dict(r)) for r in conn.execute(query).mappings()]

    def open_alerts(self) -> int:
        query = select(func.count()).select_from(bank_alerts).where(bank_alerts.c.resolved_at.is_(None))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def add_match_counts(self, counts: dict[int, tuple[int, datetime]]) -> None:
        """Add to entries' match counts and move their last match time (batched by the bank gate).
        Not a bank change: the generation stays."""
        if not counts:
            return
        statement = (
            update(bank_entries)
            .where(bank_entries.c.id == bindparam("entry"))
            .values(
                match_count=bank_entries.c.match_count + bindparam("n"),
                last_matched_at=bindparam("at"),
            )
        )
        rows = [{"entry": e, "n": n, "at": at} for e, (n, at) in sorted(counts.items())]
        with self.engine.begin() as conn:
            conn.execute(statement, rows)


def _variants(conn: Connection, entry_ids: list[int]) -> list[int]:
    query = select(bank_entries.c.id).where(bank_entries.c.variant_of.in_(entry_ids))
    return [int(i) for i in conn.execute(query).scalars()]


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
