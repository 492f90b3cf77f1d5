"""The records store on real SQLite and real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from fediguard.records import NewDecision, RecordStore


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> RecordStore:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sub' / 'records.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    s = RecordStore(url)
    request.addfinalizer(s.close)
    return s


def test_add_get_recent_count(store: RecordStore) -> None:
    ids = []
    for i, verdict in enumerate(["pass", "reject", "unscanned"]):
        ids.append(
            store.add(
                NewDecision(
                    source="gateway",
                    client="lemmy",
                    media_type="image/png",
                    size=100 + i,
                    sha256=f"{i:064x}",
                    verdict=verdict,
                    labels=["csam_suspect"] if verdict == "reject" else [],
                    reasons=["frame 0: x"],
                    results=[{"detector": "nudity", "scores": {"explicit": 0.9}}],
                    timings={"total": 0.01},
                    fail_reason="deadline" if verdict == "unscanned" else None,
                    fail_policy="closed" if verdict == "unscanned" else None,
                )
            )
        )
    assert ids == sorted(ids) and len(set(ids)) == 3
    rec = store.get(ids[1])
    assert rec is not None
    assert rec.verdict == "reject" and rec.labels == ("csam_suspect",) and rec.size == 101
    assert rec.results[0]["scores"]["explicit"] == 0.9
    assert rec.created_at.tzinfo is not None
    assert store.get(10**9) is None
    assert [r.id for r in store.recent(limit=2)] == [ids[2], ids[1]]
    assert [r.id for r in store.recent(verdict="pass")] == [ids[0]]
    assert store.count() == 3 and store.count("unscanned") == 1


def test_an_existing_database_gains_the_bank_generation_table(store: RecordStore) -> None:
    """A database made before the generation table existed (entries already in it, and no
    migrations yet) gets the table and its row when opened, and bank changes raise the generation
    from then on."""
    from sqlalchemy import inspect, text

    from fediguard.banks.formats import BankEntry
    from fediguard.banks.store import BankStore
    from fediguard.records.schema import bank_generation

    banks = BankStore(store.engine)
    banks.create("old", "deny")
    banks.add("old", [BankEntry("sha256", "ab" * 32)], "t", "t")
    bank_generation.drop(store.engine)
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    assert "bank_generation" not in inspect(store.engine).get_table_names()

    reopened = RecordStore(store.engine.url.render_as_string(hide_password=False))
    try:
        assert "bank_generation" in inspect(reopened.engine).get_table_names()
        again = BankStore(reopened.engine)
        before = again.state()
        again.add("old", [BankEntry("sha256", "cd" * 32)], "t", "t")
        assert again.state() > before
        RecordStore(store.engine.url.render_as_string(hide_password=False)).close()  # idempotent
        assert again.state() == before + 1
    finally:
        reopened.close()


def test_overlong_caller_text_is_cut_to_fit_on_postgresql(postgres_url: str) -> None:
    from fediguard.records.store import NewDecision

    store = RecordStore(postgres_url)
    try:
        decision = NewDecision(source="gateway", client="c" * 300, media_type="image/png;" + "x" * 300,
                               size=1, sha256="ab" * 32, verdict="pass")  # fmt: skip
        record = store.get(store.add(decision))
        assert record is not None and len(record.media_type or "") == 200 and len(record.client) == 200
    finally:
        store.close()


def test_the_verdict_cache_reuses_only_passes_of_scanners_still_trusted(store: RecordStore) -> None:
    def scanned(scanner: str) -> int:
        return store.add(
            NewDecision(
                source="gateway", client="c", media_type=None, size=1, sha256=scanner.ljust(64, "0")[:64],
                verdict="pass", scanner=scanner, fingerprint="fp",
            )
        )  # fmt: skip

    ids = {name: scanned(name) for name in ("scanner-1", "gateway", "home-gpu", "cache")}

    def found(name: str, workers: tuple[str, ...] = ()) -> int | None:
        hit = store.find_pass(name.ljust(64, "0")[:64], "fp", workers)
        return hit[0] if hit else None

    assert found("scanner-1") == ids["scanner-1"] and found("gateway") == ids["gateway"]
    assert found("home-gpu", ("home-gpu",)) == ids["home-gpu"]
    assert found("home-gpu") is None, "a worker whose key was removed"
    assert found("cache") is None, "a reuse (as older versions recorded them) is no cache entry"
