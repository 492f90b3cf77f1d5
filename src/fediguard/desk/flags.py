"""What the queue shows besides flagged decisions: the banks' own alerts (an entry the flood guard
suspended, with its provenance and match counts), retroactive matches (a decision that a deny entry
added later now matches) and swept objects the sweeper flagged, each with the decision it points
to. Newest first; read-only (the actions are in :mod:`fediguard.desk.actions`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, or_, select

from fediguard.banks.governance import Alert, BankGovernance
from fediguard.banks.store import BankStore, StoredEntry
from fediguard.records.schema import bank_alerts, decisions, rematches, sweep_objects, sweep_sources

LIMIT = 100
"""Rows per section: the newest; the command line (`fediguard banks alerts`, `rematch`) has the rest."""


@dataclass(frozen=True)
class AlertView:
    alert: Alert
    entry: StoredEntry | None
    """The suspended entry (None: it is gone since)."""


@dataclass(frozen=True)
class RematchView:
    id: int
    found_at: datetime
    decision_id: int
    entry_id: int
    bank: str
    hash_kind: str
    distance: int
    frame: int | None
    review: str | None


@dataclass(frozen=True)
class SweptView:
    id: int
    source: str
    key: str
    verdict: str | None
    decision_id: int | None
    action: str | None
    action_state: str | None
    error: str | None
    scanned_at: datetime
    rematched: bool
    review: str | None


@dataclass(frozen=True)
class Counts:
    alerts: int
    rematches: int


_SWEPT_FLAGGED = or_(
    sweep_objects.c.verdict == "reject",
    sweep_objects.c.rematched_at.is_not(None),
    sweep_objects.c.action.is_not(None),
)
"""A swept object the sweeper rejected, a retroactive match marked, or an action was taken on."""


class DeskFlags:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.governance = BankGovernance(engine)
        self.banks = BankStore(engine)

    def alerts(self, limit: int = LIMIT) -> list[AlertView]:
        """Open flood-guard alerts, newest first, each with its entry as it is now."""
        found = self.governance.alerts(limit=limit)
        entries = self.banks.describe([a.entry_id for a in found if a.entry_id is not None])
        return [AlertView(a, entries.get(a.entry_id) if a.entry_id is not None else None) for a in found]

    def alert(self, alert_id: int) -> Alert | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(bank_alerts).where(bank_alerts.c.id == alert_id)).mappings().first()
        return Alert(**dict(row)) if row is not None else None

    def rematches(self, limit: int = LIMIT) -> list[RematchView]:
        r = rematches.c
        query = (
            select(r.id, r.found_at, r.decision_id, r.entry_id, r.bank, r.hash_kind, r.distance, r.frame,
                   decisions.c.review)
            .select_from(rematches.outerjoin(decisions, decisions.c.id == r.decision_id))
            .order_by(r.id.desc())
            .limit(limit)
        )  # fmt: skip
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [RematchView(**{**dict(row), "found_at": _utc(row["found_at"])}) for row in rows]

    def swept(self, limit: int = LIMIT) -> list[SweptView]:
        o = sweep_objects.c
        query = (
            select(o.id, sweep_sources.c.url.label("source"), o.key, o.verdict, o.decision_id, o.action,
                   o.action_state, o.error, o.scanned_at, o.rematched_at, decisions.c.review)
            .select_from(
                sweep_objects.join(sweep_sources, sweep_sources.c.id == o.source_id)
                .outerjoin(decisions, decisions.c.id == o.decision_id)
            )
            .where(_SWEPT_FLAGGED)
            .order_by(o.id.desc())
            .limit(limit)
        )  # fmt: skip
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_swept(row) for row in rows]

    def counts(self) -> Counts:
        """Open alerts and decisions with retroactive matches nobody reviewed yet (both small, cheap
        to count on every queue page; flagged swept objects are not counted: the table is large)."""
        open_rematches = (
            select(func.count(func.distinct(rematches.c.decision_id)))
            .select_from(rematches.join(decisions, decisions.c.id == rematches.c.decision_id))
            .where(decisions.c.review.is_(None))
        )
        with self.engine.connect() as conn:
            n_rematches = int(conn.execute(open_rematches).scalar_one())
        return Counts(self.governance.open_alerts(), n_rematches)


def _swept(row: Any) -> SweptView:
    return SweptView(
        id=row["id"], source=row["source"], key=row["key"], verdict=row["verdict"],
        decision_id=row["decision_id"], action=row["action"], action_state=row["action_state"],
        error=row["error"], scanned_at=_utc(row["scanned_at"]), rematched=row["rematched_at"] is not None,
        review=row["review"],
    )  # fmt: skip


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
