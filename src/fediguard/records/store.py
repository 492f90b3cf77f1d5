"""The records database behind one small class: decisions in, decisions out."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, String, create_engine, event, func, or_, select
from sqlalchemy.engine import make_url

from fediguard.config import IN_PROCESS_SCANNERS, LOCAL_SLOT_PREFIX, mask_url
from fediguard.records import migrate
from fediguard.records.schema import decisions


@dataclass(frozen=True)
class NewDecision:
    """A decision about to be recorded."""

    source: str
    client: str
    media_type: str | None
    size: int
    sha256: str
    verdict: str
    labels: Sequence[str] = ()
    reasons: Sequence[str] = ()
    results: Sequence[dict[str, Any]] = ()
    timings: dict[str, float] = field(default_factory=dict)
    detected_type: str | None = None
    pdq: list[dict[str, Any]] | None = None
    fail_reason: str | None = None
    fail_policy: str | None = None
    scanner: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class DecisionRecord(NewDecision):
    """A recorded decision."""

    id: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    review: str | None = None
    review_note: str | None = None
    reviewed_at: datetime | None = None
    reviewed_by: str | None = None


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL (None: another database, or SQLite in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(str(parsed.database))


def database_label(url: str) -> str:
    """How messages name a database: a SQLite file by its absolute path, any other by its URL with
    the password hidden."""
    path = sqlite_file(url)
    if path is not None:
        return f"the SQLite database {path.resolve()}"
    return f"the database {mask_url(url)}"


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; a SQLite file gets its folder created, WAL and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg"))
    return create_engine(url, pool_pre_ping=True)


def create_schema(engine: Engine) -> None:
    """Create the tables, or upgrade those of an older fediguard: run the migrations up to the newest
    revision (records/migrate.py)."""
    migrate.upgrade(engine)


_STRING_LENGTHS = {
    c.name: c.type.length for c in decisions.columns if isinstance(c.type, String) and c.type.length
}
"""Decision columns of bounded length: values are cut to fit, so PostgreSQL never refuses a record."""


_SCANNED_HERE = IN_PROCESS_SCANNERS - {"cache"}
"""The gateway's own scanner names whose passes the verdict cache reuses: not ``cache``, a reuse
itself (older versions recorded reuses as cache entries; the pass they reused is found instead)."""


class RecordStore:
    """Reads and writes decision records. Thread-safe; calls block, so async code runs them in a thread."""

    def __init__(self, url: str) -> None:
        self.label = database_label(url)
        """How messages name this database ("no decision record 35 in the SQLite database …")."""
        self.engine = create_db_engine(url)
        create_schema(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def add(self, decision: NewDecision) -> int:
        return self.add_many([decision])[0]

    def add_many(self, batch: Sequence[NewDecision]) -> list[int]:
        """Insert several decisions in one transaction; their ids, in order."""
        now = datetime.now(UTC)
        rows = []
        for decision in batch:
            row = {k: getattr(decision, k) for k in NewDecision.__dataclass_fields__}
            row["labels"] = list(decision.labels)
            row["reasons"] = list(decision.reasons)
            row["results"] = list(decision.results)
            row["created_at"] = now
            for name, length in _STRING_LENGTHS.items():  # caller-given text (a Content-Type) may be long
                if isinstance(row.get(name), str) and len(row[name]) > length:
                    row[name] = row[name][:length]
            rows.append(row)
        statement = decisions.insert().returning(decisions.c.id, sort_by_parameter_order=True)
        with self.engine.begin() as conn:
            return [int(i) for i in conn.execute(statement, rows).scalars()]

    def get(self, record_id: int) -> DecisionRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(decisions).where(decisions.c.id == record_id)).mappings().first()
        return _to_record(row) if row else None

    def recent(
        self, limit: int = 50, verdict: str | None = None, before_id: int | None = None
    ) -> list[DecisionRecord]:
        query = select(decisions).order_by(decisions.c.id.desc()).limit(limit)
        if verdict:
            query = query.where(decisions.c.verdict == verdict)
        if before_id:
            query = query.where(decisions.c.id < before_id)
        with self.engine.connect() as conn:
            return [_to_record(r) for r in conn.execute(query).mappings()]

    def find_pass(
        self, sha256: str, fingerprint: str, workers: Collection[str] = ()
    ) -> tuple[int, list[dict[str, Any]] | None] | None:
        """The newest scanned pass for these bytes under this fingerprint (the verdict cache): its id
        and its PDQ hashes, which the decision that reuses it records too. Only passes made by the
        gateway's own scanners or by one of ``workers`` (the remote workers whose keys it still
        accepts) count: a revoked worker's passes are never reused."""
        scanner = decisions.c.scanner
        query = (
            select(decisions.c.id, decisions.c.pdq)
            .where(
                decisions.c.sha256 == sha256,
                decisions.c.verdict == "pass",
                decisions.c.fingerprint == fingerprint,
                decisions.c.review.is_(None) | (decisions.c.review != "confirmed"),
                or_(
                    scanner.in_(sorted({*_SCANNED_HERE, *workers})),
                    scanner.startswith(LOCAL_SLOT_PREFIX),
                ),
            )
            .order_by(decisions.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            found = conn.execute(query).first()
        return (int(found.id), found.pdq) if found is not None else None

    def pdq_of(self, sha256: str) -> list[dict[str, Any]] | None:
        """The PDQ hashes recorded for these bytes by the newest decision that hashed them."""
        query = (
            select(decisions.c.pdq)
            .where(decisions.c.sha256 == sha256, decisions.c.pdq.is_not(None))
            .order_by(decisions.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            found = conn.execute(query).scalar()
        return list(found) if found else None

    def set_review(self, record_id: int, review: str, note: str, by: str) -> None:
        """Mark a decision as ``confirmed`` or ``overturned`` by an admin."""
        if review not in ("confirmed", "overturned"):
            raise ValueError(f"review must be confirmed or overturned, not {review!r}")
        values = {"review": review, "review_note": note, "reviewed_by": by, "reviewed_at": datetime.now(UTC)}
        with self.engine.begin() as conn:
            conn.execute(decisions.update().where(decisions.c.id == record_id).values(**values))

    def count(self, verdict: str | None = None) -> int:
        query = select(func.count()).select_from(decisions)
        if verdict:
            query = query.where(decisions.c.verdict == verdict)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())


def _to_record(row: Any) -> DecisionRecord:
    data = dict(row)
    created = data["created_at"]
    if created is not None and created.tzinfo is None:  # SQLite returns naive datetimes
        data["created_at"] = created.replace(tzinfo=UTC)
    data["labels"] = tuple(data["labels"] or ())
    data["reasons"] = tuple(data["reasons"] or ())
    data["results"] = tuple(data["results"] or ())
    return DecisionRecord(**data)
