"""The records database behind one small class: decisions in, decisions out."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    String,
    cast,
    create_engine,
    event,
    func,
    or_,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from fediguard.config import IN_PROCESS_SCANNERS, LOCAL_SLOT_PREFIX, mask_url
from fediguard.errors import RecordError
from fediguard.records import migrate
from fediguard.records.schema import decision_flags, decisions, spool_marks

BUSY_TIMEOUT_S = 30.0
"""How long a write waits for a locked database, but in the gateway (``db_busy_timeout_s``)."""


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
    created_at: datetime | None = None
    """When it was decided (None: when it is written). A decision written late, from the spool,
    keeps the time it was made."""


@dataclass(frozen=True)
class DecisionRecord(NewDecision):
    """A recorded decision."""

    id: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    review: str | None = None
    review_note: str | None = None
    reviewed_at: datetime | None = None
    reviewed_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As plain data (`fediguard decisions --json`, evidence manifests)."""
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["labels"], data["reasons"], data["results"] = (
            list(self.labels),
            list(self.reasons),
            list(self.results),
        )
        data["created_at"] = self.created_at.isoformat()
        data["reviewed_at"] = self.reviewed_at.isoformat() if self.reviewed_at else None
        return data


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL (None: another database, or SQLite in memory)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    database = str(parsed.database)
    if database.startswith("file:"):  # a URI filename (``?uri=true``): its path, without options
        database = database.removeprefix("file:").partition("?")[0]
    return Path(database)


def database_label(url: str) -> str:
    """How messages name a database: a SQLite file by its absolute path, any other by its URL with
    the password hidden."""
    path = sqlite_file(url)
    if path is not None:
        return f"the SQLite database {path.resolve()}"
    return f"the database {mask_url(url)}"


def create_db_engine(url: str, busy_timeout_s: float = BUSY_TIMEOUT_S) -> Engine:
    """An engine for ``url``; a SQLite file gets its folder created, WAL and a busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_timeout_s})

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

    def __init__(self, url: str, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        self.label = database_label(url)
        """How messages name this database ("no decision record 35 in the SQLite database …")."""
        self.busy_timeout_s = busy_timeout_s
        self.engine = create_db_engine(url, busy_timeout_s)
        try:
            create_schema(self.engine)
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise RecordError(f"{self.where} cannot be opened: {_cause(exc)}") from exc

    @property
    def where(self) -> str:
        """The database, as an error message names it (password hidden)."""
        return f"{self.label} (setting database_url, or data_dir for the default SQLite file)"

    def check_writable(self) -> None:
        """Write a row and roll it back: raises RecordError, naming ``database_url``, when the
        database cannot take writes (read-only, full, locked past the busy timeout, corrupt)."""
        try:
            with self.engine.connect() as conn, conn.begin() as transaction:
                self._limit_lock_wait(conn)
                conn.execute(
                    spool_marks.insert().values(
                        generation=f"probe-{datetime.now(UTC).timestamp()}", applied_seq=0,
                        updated_at=datetime.now(UTC),
                    )
                )  # fmt: skip
                transaction.rollback()
        except SQLAlchemyError as exc:
            raise RecordError(f"{self.where} cannot be written: {_cause(exc)}") from exc

    def _limit_lock_wait(self, conn: Connection) -> None:
        """PostgreSQL's lock waits, like SQLite's busy timeout, end after ``busy_timeout_s``."""
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(self.busy_timeout_s * 1000)}")

    def close(self) -> None:
        self.engine.dispose()

    def add(self, decision: NewDecision) -> int:
        return self.add_many([decision])[0]

    def add_many(self, batch: Sequence[NewDecision]) -> list[int]:
        """Insert several decisions in one transaction; their ids, in order."""
        with self.engine.begin() as conn:
            self._limit_lock_wait(conn)
            return _insert(conn, batch)

    def apply_spooled(self, generation: str, entries: Sequence[tuple[int, NewDecision]]) -> int:
        """Write the decisions of one spool segment (``generation``; ``entries`` as (sequence number,
        decision), in order) that the database does not hold yet, in one transaction that also
        raises the segment's mark in ``spool_marks``: each is written exactly once, even by two
        processes at once (the one that loses the race changes nothing). How many were written."""
        with self.engine.begin() as conn:
            self._limit_lock_wait(conn)
            where = spool_marks.c.generation == generation
            applied = conn.execute(select(spool_marks.c.applied_seq).where(where)).scalar()
            todo = [(seq, d) for seq, d in entries if applied is None or seq > applied]
            if not todo:
                return 0
            _insert(conn, [d for _, d in todo])
            last, now = todo[-1][0], datetime.now(UTC)
            if applied is None:
                mark = {"generation": generation, "applied_seq": last, "updated_at": now}
                conn.execute(spool_marks.insert().values(**mark))
            else:
                moved = conn.execute(
                    spool_marks.update().where(where, spool_marks.c.applied_seq == applied)
                    .values(applied_seq=last, updated_at=now)
                ).rowcount  # fmt: skip
                if moved != 1:
                    raise RecordError(f"spool segment {generation} is being written by another process")
            return len(todo)

    def skip_spooled(self, generation: str, seq: int) -> None:
        """Count a spooled decision the database refused as dealt with (raise the mark past it)."""
        with self.engine.begin() as conn:
            self._limit_lock_wait(conn)
            where = spool_marks.c.generation == generation
            applied = conn.execute(select(spool_marks.c.applied_seq).where(where)).scalar()
            now = datetime.now(UTC)
            if applied is None:
                mark = {"generation": generation, "applied_seq": seq, "updated_at": now}
                conn.execute(spool_marks.insert().values(**mark))
            elif applied < seq:
                conn.execute(spool_marks.update().where(where).values(applied_seq=seq, updated_at=now))

    def get(self, record_id: int) -> DecisionRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(decisions).where(decisions.c.id == record_id)).mappings().first()
        return _to_record(row) if row else None

    def recent(
        self,
        limit: int = 50,
        verdict: str | None = None,
        before_id: int | None = None,
        *,
        label: str | None = None,
        since: datetime | None = None,
    ) -> list[DecisionRecord]:
        """The newest decisions first: of this ``verdict``, carrying ``label`` (``unscanned``: the
        verdict), made at or after ``since``, older than record ``before_id`` (the next page)."""
        query = select(decisions).order_by(decisions.c.id.desc()).limit(limit)
        if verdict:
            query = query.where(decisions.c.verdict == verdict)
        if label:
            query = query.where(label_filter(label))
        if since is not None:
            query = query.where(decisions.c.created_at >= since)
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
            self._limit_lock_wait(conn)  # on an upload's way to its verdict
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
            self._limit_lock_wait(conn)
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


ANY_FLAG = "*"
"""The flag row every flagged decision has (decision_flags): the review queue's "any flag"."""


def flags_of(verdict: str, labels: Sequence[str]) -> list[str]:
    """The ``decision_flags`` rows of a decision: its labels but ``allowlisted``, ``unscanned`` for
    that verdict, and :data:`ANY_FLAG` when there is any."""
    flags = [label[:32] for label in dict.fromkeys(labels) if label != "allowlisted"]
    if verdict == "unscanned":
        flags.append("unscanned")
    return [*flags, ANY_FLAG] if flags else []


def label_filter(label: str) -> ColumnElement[bool]:
    """Decisions carrying ``label``; ``unscanned`` is a verdict, not a label, and selects that verdict.
    Labels are a JSON list; its text holds each label quoted (the same on SQLite and PostgreSQL)."""
    if label == "unscanned":
        return decisions.c.verdict == "unscanned"
    return cast(decisions.c.labels, String).like(f'%"{label}"%')


def _rows(batch: Sequence[NewDecision]) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    rows = []
    for decision in batch:
        row = {k: getattr(decision, k) for k in NewDecision.__dataclass_fields__}
        row["labels"] = list(decision.labels)
        row["reasons"] = list(decision.reasons)
        row["results"] = list(decision.results)
        row["created_at"] = decision.created_at or now
        for name, length in _STRING_LENGTHS.items():  # caller-given text (a Content-Type) may be long
            if isinstance(row.get(name), str) and len(row[name]) > length:
                row[name] = row[name][:length]
        rows.append(row)
    return rows


def refused(exc: BaseException) -> bool:
    """Whether an error writing decisions is about the decisions themselves (a value the database
    refuses), which trying again later cannot fix, rather than about the database (locked, full,
    read-only, down, corrupt)."""
    return isinstance(exc, IntegrityError | DataError) or not isinstance(exc, SQLAlchemyError | RecordError)


def _cause(exc: SQLAlchemyError) -> str:
    """The database's own words, without SQLAlchemy's statement and parameters."""
    orig = getattr(exc, "orig", None)
    return f"{type(orig or exc).__name__}: {str(orig or exc).strip().splitlines()[0]}"


def describe_error(exc: BaseException) -> str:
    """An error from the database, as a log line or a reason shows it."""
    return _cause(exc) if isinstance(exc, SQLAlchemyError) else f"{type(exc).__name__}: {exc}"


def _insert(conn: Connection, batch: Sequence[NewDecision]) -> list[int]:
    """Insert decisions and their review-queue flags (``decision_flags``); their ids, in order."""
    statement = decisions.insert().returning(decisions.c.id, sort_by_parameter_order=True)
    ids = [int(i) for i in conn.execute(statement, _rows(batch)).scalars()]
    marks = [
        {"flag": flag, "decision_id": record_id}
        for record_id, decision in zip(ids, batch, strict=True)
        for flag in flags_of(decision.verdict, decision.labels)
    ]
    if marks:
        conn.execute(decision_flags.insert(), marks)
    return ids


def _to_record(row: Any) -> DecisionRecord:
    data = dict(row)
    created = data["created_at"]
    if created is not None and created.tzinfo is None:  # SQLite returns naive datetimes
        data["created_at"] = created.replace(tzinfo=UTC)
    data["labels"] = tuple(data["labels"] or ())
    data["reasons"] = tuple(data["reasons"] or ())
    data["results"] = tuple(data["results"] or ())
    return DecisionRecord(**data)
