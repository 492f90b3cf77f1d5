"""What the sweeper remembers per object, in the records database: enough to skip what was already
scanned, to resume an interrupted sweep, and to finish or undo actions."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from fediguard.records.schema import decisions, rematches, sweep_objects, sweep_sources
from fediguard.storage import StoredObject

log = logging.getLogger("fediguard.sweep")


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
    error: str | None = None
    sha256: str | None = None
    scanned_at: datetime | None = None


_PLAIN_KEY = re.compile(r"[^\\\x00\ud800-\udfff]*")
"""Keys stored as they are: no backslash, NUL or surrogate (a byte of a name that is not UTF-8)."""
_ESCAPE = re.compile(r"\\(\\|x[0-9a-fA-F]{2})")


def escape_key(key: str) -> str:
    """How a key is stored in the records (logs and messages show keys with
    :func:`fediguard.logs.shown`, which escapes control characters too).

    A key is kept as it is unless it holds a backslash, a NUL or a byte that is not UTF-8 (a file
    name from the filesystem decodes such bytes to surrogates, which no database can store). Then
    its raw bytes are written with ``\\\\`` for a backslash and ``\\xNN`` for NUL and every byte
    that is not part of valid UTF-8. Escaped keys always hold a backslash and plain keys never do,
    so the two never collide, and :func:`unescape_key` gives back the exact name to open.
    """
    if _PLAIN_KEY.fullmatch(key):
        return key
    try:
        raw = key.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate no filesystem name decodes to: not reversible
        raw = key.encode("utf-8", "backslashreplace")
    return raw.replace(b"\\", b"\\\\").replace(b"\x00", b"\\x00").decode("utf-8", "backslashreplace")


def unescape_key(stored: str) -> str:
    """The key :func:`escape_key` stored (a backslash that starts no escape is kept as it is)."""
    if "\\" not in stored:
        return stored
    out = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(stored):
        out += stored[pos : match.start()].encode("utf-8", "surrogateescape")
        code = match.group(1)
        out += b"\\" if code == "\\" else bytes([int(code[1:], 16)])
        pos = match.end()
    out += stored[pos:].encode("utf-8", "surrogateescape")
    return out.decode("utf-8", "surrogateescape")


def _text(message: str | None) -> str | None:
    """An error message the database can store (one quoting a name that is not UTF-8 may not be)."""
    if message is None:
        return None
    return message.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _record(row: Any) -> ObjectRecord:
    modified = row["modified"]
    if modified.tzinfo is None:
        modified = modified.replace(tzinfo=UTC)
    quarantine_key = row["quarantine_key"]
    return ObjectRecord(
        row["id"], row["source_id"], unescape_key(row["key"]), row["size"], modified, row["etag"],
        row["status"], row["verdict"], row["decision_id"], row["action"], row["action_state"],
        unescape_key(quarantine_key) if quarantine_key is not None else None, row["error"],
        row["sha256"], _utc(row["scanned_at"]),
    )  # fmt: skip


def _utc(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def unchanged(known: ObjectRecord, obj: StoredObject) -> bool:
    """Whether a listed object is the one already scanned: same size, and same ETag where the
    backend has one, else the same modification time."""
    if known.size != obj.size:
        return False
    if obj.etag is not None and known.etag is not None:
        return known.etag == obj.etag
    return abs((known.modified - obj.modified).total_seconds()) < 1e-3


QUARANTINE_OPTIONS = ("quarantine_dir", "quarantine_bucket", "quarantine_prefix", "quarantine_path")
"""Source options that say where quarantined objects are kept. They stay remembered when a later
sweep gives none, so what an earlier sweep quarantined can always be restored."""


def source_key(url: str, options: Mapping[str, Any]) -> str:
    """How a source is told apart in the records: its URL, plus the endpoint for S3 (the same
    bucket name on two S3 services is two sources)."""
    endpoint = options.get("endpoint_url")
    if url.startswith("s3://") and endpoint:
        return f"{url}?endpoint={str(endpoint).rstrip('/')}"
    return url


def merge_options(previous: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``given``, keeping the previous quarantine location when ``given`` names none."""
    if any(name in given for name in QUARANTINE_OPTIONS):
        return dict(given)
    kept = {name: previous[name] for name in QUARANTINE_OPTIONS if name in previous}
    return {**given, **kept}


def _warn_if_quarantine_moved(
    conn: Connection, source_id: int, previous: Mapping[str, Any], merged: Mapping[str, Any]
) -> None:
    """Objects quarantined in the old location stay there: say how to restore them."""
    old = {n: previous[n] for n in QUARANTINE_OPTIONS if n in previous}
    new = {n: merged[n] for n in QUARANTINE_OPTIONS if n in merged}
    if not old or old == new:
        return
    c = sweep_objects.c
    quarantined = (c.action == "quarantine") & (c.action_state == "done")
    restoring = (c.action == "restore") & c.action_state.in_(("pending", "failed"))
    query = select(func.count()).where(
        c.source_id == source_id, c.quarantine_key.is_not(None), quarantined | restoring
    )
    held = conn.execute(query).scalar_one()
    if held:
        log.warning(
            "the quarantine location changed (%s -> %s); %d object(s) stay in the old one: restore "
            "them with `fediguard restore ID --quarantine OLD`", old, new, held,
        )  # fmt: skip


class SweepState:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def source_id(self, url: str, options: dict[str, Any]) -> int:
        """The id of a source, registering it (with its non-secret options) on first use."""
        return self.register(url, options)[0]

    def register(
        self, url: str, options: dict[str, Any], *, remember: bool = True
    ) -> tuple[int, dict[str, Any]]:
        """The id of a source and its options: ``options``, plus the quarantine location remembered
        from an earlier sweep when ``options`` names none. Registers the source on first use.

        With ``remember=False`` (a dry run) the stored options are left as they are: a quarantine
        location given to a dry run is used by that run only, and a source registered by one is
        stored without it."""
        try:
            with self.engine.begin() as conn:
                return self._register(conn, url, options, remember)
        except IntegrityError:  # another sweeper registered it in the meantime
            with self.engine.begin() as conn:
                return self._register(conn, url, options, remember)

    def _register(
        self, conn: Connection, url: str, options: dict[str, Any], remember: bool
    ) -> tuple[int, dict[str, Any]]:
        key = source_key(url, options)
        now = datetime.now(UTC)
        row = self._find(conn, key, url)
        if row is None:
            stored = (
                options if remember else {k: v for k, v in options.items() if k not in QUARANTINE_OPTIONS}
            )
            new = conn.execute(
                sweep_sources.insert()
                .values(url=key, options=stored, updated_at=now)
                .returning(sweep_sources.c.id)
            ).scalar_one()
            return int(new), dict(options)
        previous = dict(row["options"])
        merged = merge_options(previous, options)
        if not remember:
            return int(row["id"]), merged
        _warn_if_quarantine_moved(conn, row["id"], previous, merged)
        conn.execute(
            update(sweep_sources)
            .where(sweep_sources.c.id == row["id"])
            .values(url=key, options=merged, updated_at=now)
        )
        return int(row["id"]), merged

    @staticmethod
    def _find(conn: Connection, key: str, url: str) -> Any:
        """The row registered under ``key``, or one registered by an older version under the bare
        URL (before S3 endpoints were part of the key) for the same endpoint."""
        query = select(sweep_sources)
        row = conn.execute(query.where(sweep_sources.c.url == key)).mappings().first()
        if row is None and key != url:
            row = conn.execute(query.where(sweep_sources.c.url == url)).mappings().first()
        if row is None or source_key(url, row["options"]) == key:
            return row
        # An older row for this bucket on another endpoint: not this source. Give it its own key.
        own = source_key(url, row["options"])
        if conn.execute(query.where(sweep_sources.c.url == own)).first() is not None:
            own = f"{own}#{row['id']}"
        conn.execute(update(sweep_sources).where(sweep_sources.c.id == row["id"]).values(url=own))
        return None

    def remembered(self, url: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options remembered for this source ({} for one never swept); changes nothing."""
        query = select(sweep_sources.c.options).where(sweep_sources.c.url == source_key(url, options))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return dict(row[0]) if row is not None else {}

    def source(self, source_id: int) -> tuple[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            row = conn.execute(select(sweep_sources).where(sweep_sources.c.id == source_id)).mappings().one()
        return str(row["url"]), dict(row["options"])

    def known(self, source_id: int, keys: Sequence[str]) -> dict[str, ObjectRecord]:
        """The records of these keys (one query for a whole batch of listed objects)."""
        if not keys:
            return {}
        query = select(sweep_objects).where(
            sweep_objects.c.source_id == source_id, sweep_objects.c.key.in_([escape_key(k) for k in keys])
        )
        with self.engine.connect() as conn:
            return {(record := _record(r)).key: record for r in conn.execute(query).mappings()}

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
            "verdict": verdict, "decision_id": decision_id, "error": _text(error), "action": action,
            "action_state": "pending" if action else None,
            "quarantine_key": escape_key(quarantine_key) if quarantine_key is not None else None,
            "scanned_at": datetime.now(UTC), "rematched_at": None,
        }  # fmt: skip
        key = escape_key(obj.key)
        key_match = (sweep_objects.c.source_id == source_id) & (sweep_objects.c.key == key)
        with self.engine.begin() as conn:
            found = conn.execute(select(sweep_objects.c.id).where(key_match)).scalar()
            if found is not None:
                conn.execute(update(sweep_objects).where(sweep_objects.c.id == found).values(**values))
                return int(found)
            new = conn.execute(
                sweep_objects.insert()
                .values(source_id=source_id, key=key, **values)
                .returning(sweep_objects.c.id)
            ).scalar_one()
            return int(new)

    def decision_since(self, sha256: str, since: datetime) -> tuple[int, str, tuple[str, ...]] | None:
        """The latest verdict (id, pass or reject, reasons) recorded for these bytes since
        ``since``, unless a reviewer overturned it."""
        c = decisions.c
        standing = or_(c.review.is_(None), c.review != "overturned")
        found = c.sha256 == sha256, c.created_at >= since, c.verdict.in_(("pass", "reject")), standing
        query = select(c.id, c.verdict, c.reasons).where(*found).order_by(c.id.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return int(row.id), str(row.verdict), tuple(str(r) for r in row.reasons or ())

    def action_done(self, object_id: int, state: str = "done", error: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(sweep_objects)
                .where(sweep_objects.c.id == object_id)
                .values(action_state=state, error=_text(error))
            )

    def set_quarantine_key(self, object_id: int, quarantine_key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(sweep_objects)
                .where(sweep_objects.c.id == object_id)
                .values(quarantine_key=escape_key(quarantine_key))
            )

    def objects_of(self, sha256: str, decision_id: int | None = None) -> list[ObjectRecord]:
        """The stored objects the sweeper found with these bytes (or recorded with this decision)."""
        match = sweep_objects.c.sha256 == sha256
        if decision_id is not None:
            match = match | (sweep_objects.c.decision_id == decision_id)
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(select(sweep_objects).where(match)).mappings()]

    def begin_action(self, object_id: int, action: str) -> None:
        """Record ``action`` as pending for an object (a reviewer's removal): done by
        :class:`~fediguard.sweeper.actions.ActionTaker` now, or by the next sweep of its source."""
        with self.engine.begin() as conn:
            conn.execute(
                update(sweep_objects)
                .where(sweep_objects.c.id == object_id)
                .values(action=action, action_state="pending", error=None)
            )

    def begin_restore(self, object_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(sweep_objects)
                .where(sweep_objects.c.id == object_id)
                .values(action="restore", action_state="pending")
            )

    def restore_failed(self, object_id: int, error: str) -> None:
        """A restore that did not happen leaves the object in quarantine, where a later restore
        can try again."""
        with self.engine.begin() as conn:
            conn.execute(
                update(sweep_objects)
                .where(sweep_objects.c.id == object_id)
                .values(action="quarantine", action_state="done", error=_text(error))
            )

    def get(self, object_id: int) -> ObjectRecord | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(sweep_objects).where(sweep_objects.c.id == object_id)).mappings().first()
            )
        return _record(row) if row else None

    def remember_action(self, source_id: int, action: str) -> None:
        """The action of the source's latest sweep, which `fediguard rematch` gives its objects."""
        with self.engine.begin() as conn:
            conn.execute(update(sweep_sources).where(sweep_sources.c.id == source_id).values(action=action))

    def remembered_action(self, source_id: int) -> str | None:
        with self.engine.connect() as conn:
            query = select(sweep_sources.c.action).where(sweep_sources.c.id == source_id)
            return conn.execute(query).scalar()

    def rematched(self, source_id: int | None = None) -> list[ObjectRecord]:
        """Objects a bank entry added since their decision now matches (retroactive matching), not
        flagged by a sweep since: of one source, or of every source."""
        query = select(sweep_objects).where(sweep_objects.c.rematched_at.is_not(None))
        if source_id is not None:
            query = query.where(sweep_objects.c.source_id == source_id)
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query.order_by(sweep_objects.c.id)).mappings()]

    def rematch_reasons(self, decision_id: int | None) -> tuple[str, ...]:
        """Why a decision was matched again: the bank entries that match it now."""
        r = rematches.c
        query = select(r.bank, r.entry_id, r.hash_kind, r.distance).where(r.decision_id == decision_id)
        with self.engine.connect() as conn:
            return tuple(
                f"denied (retroactively): matches bank {row.bank!r} entry {row.entry_id} "
                f"({row.hash_kind}, distance {row.distance}), added after decision {decision_id}"
                for row in conn.execute(query.order_by(r.distance, r.entry_id))
            )

    def pending(self, source_id: int) -> list[ObjectRecord]:
        query = select(sweep_objects).where(
            sweep_objects.c.source_id == source_id, sweep_objects.c.action_state == "pending"
        )
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query).mappings()]
