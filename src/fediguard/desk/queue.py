"""The review queue: flagged decisions, newest first, filtered, paged by keyset (``id <``), each
held by one reviewer at a time (a claim that expires); and the items' reports to a hotline.

Flood-guard alerts, retroactive matches and flagged swept objects are listed beside the queue, on
the Flags page (:mod:`fediguard.desk.flags`), each linking to the decision it points to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from fediguard.records.schema import decision_flags, decisions, desk_items
from fediguard.records.store import ANY_FLAG
from fediguard.verdicts import CSAM_SUSPECT, DENYLISTED, NSFW, REVIEW

QUEUE_LABELS = (CSAM_SUSPECT, REVIEW, NSFW, DENYLISTED, "unscanned")
"""The labels the queue filters by (``unscanned``: that verdict). Without a filter it shows every
flagged decision (records/store.py ``flags_of``: any label but ``allowlisted``, or unscanned)."""
SOURCES = ("gateway", "sweep", "scan")
STATES = ("open", "reviewed", "all")


@dataclass(frozen=True)
class QueueFilter:
    label: str | None = None
    source: str | None = None
    client: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    state: str = "open"
    before: int | None = None


@dataclass(frozen=True)
class QueueItem:
    id: int
    created_at: datetime
    source: str
    client: str
    verdict: str
    labels: tuple[str, ...]
    reasons: tuple[str, ...]
    sha256: str
    size: int
    review: str | None
    claimed_by: str | None
    claimed_until: datetime | None
    report_ref: str | None

    def held_by_other(self, name: str, now: datetime | None = None) -> str | None:
        now = now or datetime.now(UTC)
        if self.claimed_by and self.claimed_by != name and self.claimed_until and self.claimed_until > now:
            return self.claimed_by
        return None


_COLUMNS = (
    decisions.c.id, decisions.c.created_at, decisions.c.source, decisions.c.client, decisions.c.verdict,
    decisions.c.labels, decisions.c.reasons, decisions.c.sha256, decisions.c.size, decisions.c.review,
    desk_items.c.claimed_by, desk_items.c.claimed_until, desk_items.c.report_ref,
)  # fmt: skip


class DeskQueue:
    def __init__(self, engine: Engine, claim_s: float = 900.0) -> None:
        self.engine = engine
        self.claim_s = claim_s

    def page(self, f: QueueFilter, limit: int = 50) -> tuple[list[QueueItem], int | None]:
        """One page of the queue and the ``before`` of the next page (None: the last page). Keyset
        paging on the primary key: each page costs the same however deep it is."""
        # Driven by decision_flags' key (flag, decision_id): newest flagged first, however rare.
        joined = decision_flags.join(decisions, decisions.c.id == decision_flags.c.decision_id).outerjoin(
            desk_items, desk_items.c.decision_id == decisions.c.id
        )
        query = (
            select(*_COLUMNS)
            .select_from(joined)
            .where(decision_flags.c.flag == (f.label or ANY_FLAG))
            .order_by(decision_flags.c.decision_id.desc())
            .limit(limit + 1)
        )
        if f.source:
            query = query.where(decisions.c.source == f.source)
        if f.client:
            query = query.where(decisions.c.client == f.client)
        if f.since is not None:
            query = query.where(decisions.c.created_at >= f.since)
        if f.until is not None:
            query = query.where(decisions.c.created_at < f.until)
        if f.state == "open":
            query = query.where(decisions.c.review.is_(None))
        elif f.state == "reviewed":
            query = query.where(decisions.c.review.is_not(None))
        if f.before is not None:
            query = query.where(decision_flags.c.decision_id < f.before)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        items = [_item(r) for r in rows[:limit]]
        return items, (items[-1].id if len(rows) > limit else None)

    def get(self, decision_id: int) -> QueueItem | None:
        query = (
            select(*_COLUMNS)
            .select_from(decisions.outerjoin(desk_items, desk_items.c.decision_id == decisions.c.id))
            .where(decisions.c.id == decision_id)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return _item(row) if row is not None else None

    def next_open(self, after: int, name: str) -> int | None:
        """The next older open item nobody else holds (for "next" after an action)."""
        items, _ = self.page(QueueFilter(before=after), limit=20)
        for item in items:
            if item.held_by_other(name) is None:
                return item.id
        return None

    def claim(self, decision_id: int, name: str) -> str | None:
        """Hold the item for ``name`` for ``claim_s``; None when held, else who holds it."""
        now = datetime.now(UTC)
        until = now + timedelta(seconds=self.claim_s)
        free = or_(
            desk_items.c.claimed_by.is_(None),
            desk_items.c.claimed_by == name,
            desk_items.c.claimed_until.is_(None),
            desk_items.c.claimed_until <= now,
        )
        for _attempt in range(3):
            with self.engine.begin() as conn:
                changed = conn.execute(
                    update(desk_items)
                    .where(and_(desk_items.c.decision_id == decision_id, free))
                    .values(claimed_by=name, claimed_until=until)
                ).rowcount
                if changed:
                    return None
                holder = conn.execute(
                    select(desk_items.c.claimed_by).where(desk_items.c.decision_id == decision_id)
                ).first()
                if holder is not None:
                    return str(holder.claimed_by)
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        desk_items.insert().values(
                            decision_id=decision_id, claimed_by=name, claimed_until=until
                        )
                    )
                return None
            except IntegrityError:  # claimed by someone else in between: look again
                continue
        return "another reviewer"

    def release(self, decision_id: int, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(desk_items)
                .where(desk_items.c.decision_id == decision_id, desk_items.c.claimed_by == name)
                .values(claimed_by=None, claimed_until=None)
            )

    def mark_reported(self, decision_id: int, reference: str, name: str) -> None:
        values: dict[str, Any] = {
            "report_ref": reference,
            "reported_by": name,
            "reported_at": datetime.now(UTC),
        }
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(desk_items).where(desk_items.c.decision_id == decision_id).values(**values)
            ).rowcount
            if not changed:
                conn.execute(desk_items.insert().values(decision_id=decision_id, **values))


def _utc(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _item(row: Any) -> QueueItem:
    created = _utc(row["created_at"])
    assert created is not None
    return QueueItem(
        id=int(row["id"]), created_at=created, source=row["source"], client=row["client"],
        verdict=row["verdict"], labels=tuple(row["labels"] or ()), reasons=tuple(row["reasons"] or ()),
        sha256=row["sha256"], size=int(row["size"]), review=row["review"], claimed_by=row["claimed_by"],
        claimed_until=_utc(row["claimed_until"]), report_ref=row["report_ref"],
    )  # fmt: skip
