"""The queue's filters and keyset pages, one reviewer per item, and removing a swept object."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from fediguard.desk.actions import ActionError, DeskActions
from fediguard.desk.audit import AuditLog
from fediguard.desk.queue import DeskQueue, QueueFilter
from fediguard.records import NewDecision, RecordStore
from fediguard.records.schema import decisions, desk_items
from fediguard.storage import StoredObject
from fediguard.sweeper.state import SweepState


def _add(store: RecordStore, verdict: str, labels: tuple[str, ...], source: str = "gateway",
         client: str = "IPADDR", sha256: str = "ab" * 32) -> int:  # fmt: skip
    return store.add(NewDecision(source, client, "image/png", 10, sha256, verdict, labels, ("r",)))


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> RecordStore:
    url = f"sqlite:///{tmp_path / 'records.sqlite3'}"
    s = RecordStore(url if request.param == "sqlite" else request.getfixturevalue("postgres_url"))
    request.addfinalizer(s.close)
    return s


def test_filters_and_keyset_pages(store: RecordStore) -> None:
    flagged = []
    for i in range(23):
        _add(store, "pass", ())
        label = ("csam_suspect", "nsfw", "denylisted", "review")[i % 4]
        verdict = "pass" if label in ("nsfw", "review") else "reject"
        flagged.append(
            _add(store, verdict, (label,), source="sweep" if i % 2 else "gateway", client=f"c{i % 3}")
        )
    flagged.append(_add(store, "unscanned", ()))
    _add(store, "pass", ("allowlisted",))
    queue = DeskQueue(store.engine)

    seen, before = [], None
    while True:
        items, before = queue.page(QueueFilter(before=before), limit=5)
        seen += [i.id for i in items]
        if before is None:
            break
    assert seen == sorted(flagged, reverse=True), "every flagged decision once, newest first, nothing else"

    nsfw, _ = queue.page(QueueFilter(label="nsfw"), limit=100)
    assert nsfw and all(i.labels == ("nsfw",) for i in nsfw)
    assert [i.verdict for i in queue.page(QueueFilter(label="unscanned"))[0]] == ["unscanned"]
    swept, _ = queue.page(QueueFilter(source="sweep", client="c1"), limit=100)
    assert swept and all(i.source == "sweep" and i.client == "c1" for i in swept)

    store.set_review(flagged[-1], "confirmed", "seen", "alice")
    assert flagged[-1] not in [i.id for i in queue.page(QueueFilter(), 100)[0]]
    assert [i.id for i in queue.page(QueueFilter(state="reviewed"), 100)[0]] == [flagged[-1]]

    with store.engine.begin() as conn:
        conn.execute(update(decisions).values(created_at=datetime.now(UTC) - timedelta(days=2)))
    new = _add(store, "reject", ("csam_suspect",))
    recent = queue.page(QueueFilter(since=datetime.now(UTC) - timedelta(hours=1)))[0]
    assert [i.id for i in recent] == [new]


def test_an_item_is_held_by_one_reviewer_until_the_claim_expires(store: RecordStore) -> None:
    record_id = _add(store, "reject", ("csam_suspect",))
    queue = DeskQueue(store.engine, claim_s=600)
    assert queue.claim(record_id, "alice") is None
    assert queue.claim(record_id, "alice") is None, "the holder renews"
    assert queue.claim(record_id, "bob") == "alice"
    with store.engine.begin() as conn:
        conn.execute(update(desk_items).values(claimed_until=datetime.now(UTC) - timedelta(seconds=1)))
    assert queue.claim(record_id, "bob") is None, "an expired claim is free"
    queue.release(record_id, "bob")
    assert queue.claim(record_id, "carol") is None


def test_remove_deletes_the_swept_object_with_these_bytes(store: RecordStore, tmp_path: Path) -> None:
    media = tmp_path / "media"
    (media / "ab").mkdir(parents=True)
    data = b"stored bytes of a flagged object"
    (media / "ab" / "object.png").write_bytes(data)
    (media / "ab" / "other.png").write_bytes(b"something else")
    sha = hashlib.sha256(data).hexdigest()
    record_id = _add(store, "reject", ("csam_suspect",), source="sweep", sha256=sha)
    state = SweepState(store.engine)
    source_id = state.source_id(f"file://{media}", {})
    obj = StoredObject("ab/object.png", len(data), datetime.now(UTC), None)
    state.save(source_id, obj, status="scanned", sha256=sha, verdict="reject", decision_id=record_id)
    audit = AuditLog(store.engine)
    actions = DeskActions(store, audit, DeskQueue(store.engine))

    with pytest.raises(ActionError, match="needs a reason"):
        asyncio.run(actions.remove(record_id, "  ", "alice"))
    assert (media / "ab" / "object.png").exists()
    summary = asyncio.run(actions.remove(record_id, "confirmed abuse", "alice"))
    assert "deleted 1" in summary and not (media / "ab" / "object.png").exists()
    assert (media / "ab" / "other.png").exists()
    assert [(e.action, e.decision_id) for e in audit.recent()] == [("remove", record_id)]

    unknown = _add(store, "reject", ("csam_suspect",), sha256="cd" * 32)
    with pytest.raises(ActionError, match="no stored object"):
        asyncio.run(actions.remove(unknown, "why", "alice"))


def test_upgrading_an_older_database_indexes_its_flagged_decisions(tmp_path: Path) -> None:
    from alembic import command

    from fediguard.records import migrate
    from fediguard.records.store import create_db_engine

    engine = create_db_engine(f"sqlite:///{tmp_path / 'old.sqlite3'}")
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(conn), "0001")
        rows = [("reject", ["csam_suspect"]), ("pass", []), ("unscanned", []), ("pass", ["allowlisted"]),
                ("pass", ["nsfw"])]  # fmt: skip
        base = {"created_at": datetime.now(UTC), "source": "gateway", "client": "c", "size": 1}
        base.update(sha256="ab" * 32, reasons=[], results=[], timings={})
        conn.execute(decisions.insert(), [{**base, "verdict": v, "labels": labels} for v, labels in rows])
    engine.dispose()
    store = RecordStore(f"sqlite:///{tmp_path / 'old.sqlite3'}")  # upgrades to the newest revision
    items, _ = DeskQueue(store.engine).page(QueueFilter())
    assert [(i.id, i.verdict) for i in items] == [(5, "pass"), (3, "unscanned"), (1, "reject")]
    assert [i.id for i in DeskQueue(store.engine).page(QueueFilter(label="unscanned"))[0]] == [3]
