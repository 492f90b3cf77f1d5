"""Bank governance on real SQLite and PostgreSQL: per-bank radius, switching banks and entries off
and on, provenance, match counts, the flood guard (exact under concurrency), retroactive matching."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fediguard.banks.formats import BankEntry
from fediguard.banks.governance import BankGovernance
from fediguard.banks.matcher import BankMatcher
from fediguard.banks.pdq import FrameHash, PdqHash
from fediguard.banks.rematch import Rematcher
from fediguard.banks.store import BankError, BankStore
from fediguard.policy import decide
from fediguard.records import NewDecision, RecordStore
from fediguard.records.schema import bank_alerts, bank_matches, rematches, sweep_objects, sweep_sources
from fediguard.verdicts import PolicyConfig, Verdict

BASE = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"


def flipped(bits: int, value: str = BASE) -> str:
    """``value`` with its lowest ``bits`` bits flipped: a hash exactly ``bits`` away."""
    return f"{int(value, 16) ^ ((1 << bits) - 1):064x}"


def frame(value: str) -> list[FrameHash]:
    return [FrameHash(0, PdqHash(value, 100))]


@pytest.fixture(params=["sqlite", "postgresql"])
def records(request: pytest.FixtureRequest, tmp_path: Path) -> RecordStore:
    url = (
        f"sqlite:///{tmp_path / 'r.sqlite3'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    store = RecordStore(url)
    request.addfinalizer(store.close)
    return store


def matcher_for(records: RecordStore) -> BankMatcher:
    matcher = BankMatcher(BankStore(records.engine), max_distance=31)
    matcher.reload_if_changed()
    return matcher


def test_each_bank_matches_within_its_own_radius(records: RecordStore) -> None:
    banks, governance = BankStore(records.engine), BankGovernance(records.engine)
    banks.create("narrow", "deny")
    banks.create("wide", "deny")
    banks.add("narrow", [BankEntry("pdq", BASE)], "t", "t")
    banks.add("wide", [BankEntry("pdq", flipped(1))], "t", "t")
    governance.configure("narrow", max_distance=4)
    near, far = frame(flipped(4)), frame(flipped(20))
    matcher = matcher_for(records)
    assert {f.note.split("'")[1] for f in matcher.check(near).findings} == {"narrow", "wide"}  # type: ignore[union-attr]
    assert {f.note.split("'")[1] for f in matcher.check(far).findings} == {"wide"}  # type: ignore[union-attr]
    governance.configure("wide", max_distance=10)
    matcher.reload_if_changed()
    assert matcher.check(far) is None
    governance.configure("wide", max_distance=None)  # back to the default (31)
    matcher.reload_if_changed()
    assert matcher.check(far) is not None
    with pytest.raises(BankError, match="max distance must be 0-128"):
        governance.configure("wide", max_distance=300)


def test_a_disabled_bank_or_entry_matches_nothing_until_enabled(records: RecordStore) -> None:
    banks, governance = BankStore(records.engine), BankGovernance(records.engine)
    banks.create("bad", "deny")
    banks.add("bad", [BankEntry("pdq", BASE), BankEntry("sha256", "ab" * 32)], "t", "t")
    pdq_id = next(e.id for e in banks.stored_entries("bad") if e.hash_kind == "pdq")
    matcher = matcher_for(records)
    assert matcher.check(frame(BASE)) is not None and matcher.match_sha256("ab" * 32)

    # Switched off: the very next match knows (its status is read with the hit), before any reload.
    assert governance.set_entries_status("bad", [pdq_id, 999999], "disabled", "too broad", "me") == [pdq_id]
    assert matcher.check(frame(BASE)) is None
    matcher.reload_if_changed()
    assert matcher.check(frame(BASE)) is None and matcher.match_sha256("ab" * 32)
    assert governance.set_bank_enabled("bad", False) and not governance.set_bank_enabled("bad", False)
    matcher.reload_if_changed()
    assert not matcher.match_sha256("ab" * 32) and not banks.get("bad").enabled
    assert banks.get("bad").entries == 2, "nothing was deleted"

    governance.set_bank_enabled("bad", True)
    governance.set_entries_status("bad", [pdq_id], "active", "", "me")
    matcher.reload_if_changed()
    result = matcher.check(frame(BASE))
    assert result is not None and result.decisive
    assert decide([result], PolicyConfig()).verdict is Verdict.REJECT


def test_entries_keep_their_provenance_and_count_their_matches(records: RecordStore) -> None:
    banks, governance = BankStore(records.engine), BankGovernance(records.engine)
    banks.create("bad", "deny")
    banks.add("bad", [BankEntry("sha256", "01" * 32)], "cli add x.png", "me")
    banks.add("bad", [BankEntry("sha256", "02" * 32)], "cli add --hash", "me")
    banks.add("bad", [BankEntry("sha256", "03" * 32)], "record 12", "me")
    banks.add("bad", [BankEntry("sha256", "04" * 32)], "import list.csv", "me")
    banks.add(
        "bad", [BankEntry("sha256", "05" * 32)], "https://peer.example/feed", "feed", source_kind="feed"
    )
    with pytest.raises(BankError, match="source kind must be one of"):
        banks.add("bad", [BankEntry("sha256", "06" * 32)], "x", "me", source_kind="rumour")
    entries = {e.value[:2]: e for e in banks.stored_entries("bad")}
    assert [entries[f"0{i}"].source_kind for i in range(1, 6)] == ["file", "hash", "record", "import", "feed"]
    assert entries["05"].source == "https://peer.example/feed"

    state = banks.state()
    first, second = entries["01"].last_matched_at, None
    assert first is None and entries["01"].match_count == 0
    now = datetime.now(UTC)
    governance.add_match_counts({entries["01"].id: (3, now)})
    governance.add_match_counts({entries["01"].id: (2, now)})
    second = banks.describe([entries["01"].id])[entries["01"].id]
    assert second.match_count == 5 and second.last_matched_at is not None
    assert banks.state() == state, "counting matches is no bank change (no reload, cached passes stay)"


def test_the_flood_guard_suspends_at_the_limit_and_holds_in_the_database(records: RecordStore) -> None:
    banks, governance = BankStore(records.engine), BankGovernance(records.engine)
    banks.create("bad", "deny")
    governance.configure("bad", flood_limit=3)
    banks.add("bad", [BankEntry("pdq", BASE)], "t", "t")
    entry = next(banks.stored_entries("bad")).id
    assert governance.record_matches([entry], "a" * 64) == []
    assert governance.record_matches([entry], "a" * 64) == [], "the same upload again is not a new one"
    assert governance.record_matches([entry], "b" * 64) == []
    state = banks.state()
    (suspension,) = governance.record_matches([entry], "c" * 64)
    assert (suspension.entry_id, suspension.bank, suspension.matched) == (entry, "bad", 3)
    assert banks.state() != state, "gateways reload"
    stored = banks.describe([entry])[entry]
    assert stored.status == "suspended" and "3 distinct uploads within 1 h" in (stored.status_note or "")
    (alert,) = governance.alerts()
    assert alert.entry_id == entry and "banks enable bad --entry" in alert.message
    assert governance.record_matches([entry], "d" * 64) == [], "suspended once"

    # A suspended entry's match decides nothing and asks for a review; a new matcher (a restart) too.
    result = matcher_for(records).check(frame(BASE))
    assert result is not None and not result.decisive and result.findings[0].suspended  # type: ignore[union-attr]
    decision = decide([result], PolicyConfig())
    assert decision.verdict is Verdict.PASS and decision.labels == ("review",)
    assert decision.reasons[0].startswith("held for review: matches suspended deny entry of bank 'bad'")

    governance.set_entries_status("bad", [entry], "active", "checked", "admin")
    assert governance.alerts() == [] and governance.alerts(include_resolved=True)[0].resolved_by == "admin"
    assert governance.record_matches([entry], "e" * 64) == [], "its window starts afresh"
    governance.configure("bad", flood_limit=0)
    assert all(governance.record_matches([entry], f"{i:064x}") == [] for i in range(5)), "0: no guard"
    governance.configure("bad", flood_limit=1)
    assert len(governance.record_matches([entry], "f" * 64)) == 1 and len(governance.alerts()) == 1
    banks.remove("bad", entry_ids=[entry])
    assert governance.alerts() == [], "removing the entry answers its alert"
    assert governance.alerts(include_resolved=True)[0].resolved_by == "removed"


def test_allow_banks_have_no_flood_guard_unless_set(records: RecordStore) -> None:
    banks, governance = BankStore(records.engine), BankGovernance(records.engine)
    banks.create("ok", "allow")
    banks.add("ok", [BankEntry("pdq", BASE)], "t", "t")
    entry = next(banks.stored_entries("ok")).id
    assert all(governance.record_matches([entry], f"{i:064x}") == [] for i in range(60))
    governance.configure("ok", flood_limit=2)
    governance.record_matches([entry], "a" * 64)
    assert len(governance.record_matches([entry], "b" * 64)) == 1


def test_the_flood_guard_counts_exactly_when_gateways_race(records: RecordStore) -> None:
    """Eight writers (as eight gateways on one database) record distinct uploads for one entry at
    once: it is suspended once, when its fifth distinct upload is counted, and never counts more."""
    banks, governance = BankStore(records.engine), BankGovernance(records.engine)
    banks.create("bad", "deny")
    governance.configure("bad", flood_limit=5)
    banks.add("bad", [BankEntry("pdq", BASE)], "t", "t")
    entry = next(banks.stored_entries("bad")).id
    start = threading.Barrier(8)
    found: list[object] = []

    def writer(i: int) -> None:
        start.wait()
        for j in range(3):
            found.extend(BankGovernance(records.engine).record_matches([entry], f"{i * 10 + j:064x}"))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with records.engine.connect() as conn:
        counted = conn.execute(select(func.count()).select_from(bank_matches)).scalar_one()
        alerts = conn.execute(select(func.count()).select_from(bank_alerts)).scalar_one()
    assert (len(found), alerts, counted) == (1, 1, 5)


def _decision(records: RecordStore, sha: str, pdq: str | None, **overrides: object) -> int:
    values: dict[str, object] = dict(
        source="gateway", client="t", media_type="image/png", size=1, sha256=sha, verdict="pass",
        pdq=[{"frame": 0, "hash": pdq, "quality": 100}] if pdq else None,
    )  # fmt: skip
    values.update(overrides)
    return records.add(NewDecision(**values))  # type: ignore[arg-type]


def test_rematch_flags_recorded_decisions_a_new_deny_entry_matches(records: RecordStore) -> None:
    banks, governance = BankStore(records.engine), BankGovernance(records.engine)
    near = _decision(records, "11" * 32, flipped(3))
    exact = _decision(records, "22" * 32, None)
    _decision(records, "33" * 32, flipped(3), verdict="reject")
    _decision(records, "44" * 32, flipped(3), labels=["allowlisted"])
    overturned = _decision(records, "55" * 32, flipped(3))
    records.set_review(overturned, "overturned", "", "me")
    far = _decision(records, "66" * 32, flipped(40))
    with records.engine.begin() as conn:
        source = conn.execute(
            sweep_sources.insert()
            .values(url="file:///x", options={}, updated_at=func.now())
            .returning(sweep_sources.c.id)
        ).scalar_one()
        conn.execute(sweep_objects.insert().values(
            source_id=source, key="a.png", size=1, modified=func.now(), status="scanned", verdict="pass",
            decision_id=near, scanned_at=func.now(),
        ))  # fmt: skip
    rematcher = Rematcher(records.engine)
    assert rematcher.pending() == 0 and rematcher.run() == []

    banks.create("bad", "deny")
    banks.create("ok", "allow")
    banks.add("ok", [BankEntry("pdq", flipped(40))], "t", "t")  # allow entries are not rematched
    banks.add("bad", [BankEntry("pdq", BASE), BankEntry("sha256", "22" * 32)], "t", "t")
    assert rematcher.pending() == 2
    found = {r.decision_id: r for r in rematcher.run()}
    assert sorted(found) == [near, exact]
    assert (found[near].hash_kind, found[near].distance, found[near].bank) == ("pdq", 3, "bad")
    assert found[near].objects and found[exact].hash_kind == "sha256"
    assert rematcher.pending() == 0 and rematcher.run() == [], "each entry is matched once"
    with records.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(rematches)).scalar_one() == 2
        marked = conn.execute(select(sweep_objects.c.verdict, sweep_objects.c.rematched_at)).one()
    assert marked.verdict == "reject" and marked.rematched_at is not None

    # A bank's own radius holds here too; re-enabling an entry matches it again (recorded once).
    banks.create("wide", "deny")
    governance.configure("wide", max_distance=45)
    banks.add("wide", [BankEntry("pdq", BASE)], "t", "t")
    assert {r.decision_id for r in rematcher.run()} == {near, far}
    pdq_id = next(e.id for e in banks.stored_entries("bad") if e.hash_kind == "pdq")
    governance.set_entries_status("bad", [pdq_id], "disabled", "", "me")
    governance.set_entries_status("bad", [pdq_id], "active", "", "me")
    assert rematcher.pending() == 1 and rematcher.run() == [], "found before: not recorded twice"
    banks.add("bad", [BankEntry("sha256", "66" * 32)], "t", "t")
    later = datetime.now(UTC) + timedelta(hours=1)
    assert rematcher.run(since=later) == [] and rematcher.pending() == 0, "--since: only newer decisions"
