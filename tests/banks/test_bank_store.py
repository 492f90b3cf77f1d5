"""Banks in the records database (real SQLite and PostgreSQL) and the matcher built from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text

from fediguard.banks.formats import BankEntry
from fediguard.banks.matcher import BankMatcher
from fediguard.banks.pdq import FrameHash, PdqHash, crop_variants, pdq_hash
from fediguard.banks.store import BankError, BankStore
from fediguard.records import RecordStore
from fediguard.records.store import create_schema
from support.images import astronaut_jpeg, encode


@pytest.fixture(params=["sqlite", "postgresql"])
def banks(request: pytest.FixtureRequest, tmp_path: Path) -> BankStore:
    url = (
        f"sqlite:///{tmp_path / 'r.sqlite3'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    records = RecordStore(url)
    request.addfinalizer(records.close)
    return BankStore(records.engine)


def photo() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def test_create_list_add_delete(banks: BankStore) -> None:
    banks.create("known-bad", "deny", "shared list")
    banks.create("ok", "allow")
    with pytest.raises(BankError, match="exists already"):
        banks.create("ok", "allow")
    with pytest.raises(BankError, match="deny or allow"):
        banks.create("x", "maybe")
    with pytest.raises(BankError, match="bank names"):
        banks.create("../x", "deny")
    entries = [
        BankEntry("sha256", "ab" * 32, "n1"),
        BankEntry("pdq", "cd" * 32, "n2"),
        BankEntry("sha256", "AB" * 32),
    ]
    assert banks.add("known-bad", entries, "test", "me") == 2, "the upper-case duplicate is the same hash"
    assert banks.add("known-bad", entries, "test", "me") == 0
    assert [(b.name, b.kind, b.entries) for b in banks.list()] == [
        ("known-bad", "deny", 2),
        ("ok", "allow", 0),
    ]
    assert list(banks.entries("known-bad")) == entries[:2]
    with pytest.raises(BankError, match="is a deny bank"):
        banks.ensure("known-bad", "allow")
    assert banks.ensure("new", "allow").kind == "allow"
    before = banks.state()
    assert banks.delete("known-bad") == 2
    assert banks.state() != before
    with pytest.raises(BankError, match="no bank named"):
        banks.get("known-bad")


def test_matcher_finds_exact_and_near_copies(banks: BankStore) -> None:
    image = photo()
    banks.create("deny", "deny")
    banks.create("allow", "allow")
    banks.add("deny", [BankEntry("pdq", pdq_hash(image).hex, "seen before")], "t", "t")
    banks.add("allow", [BankEntry("sha256", "11" * 32)], "t", "t")
    matcher = BankMatcher(banks)
    assert matcher.reload_if_changed() and not matcher.reload_if_changed()

    reencoded = np.asarray(
        Image.open(__import__("io").BytesIO(encode(image, "JPEG", quality=50))).convert("RGB")
    )
    hits = matcher.match_pdq([FrameHash(3, pdq_hash(reencoded))])
    assert len(hits) == 1 and hits[0].bank_kind == "deny" and hits[0].frame == 3 and hits[0].distance <= 31
    result = matcher.result(hits)
    assert result is not None and result.decisive and result.scores["deny"] == 1.0
    assert (
        result.notes[0].startswith("denied: matches bank 'deny' entry") and "seen before" in result.notes[0]
    )

    from skimage import data

    assert matcher.match_pdq([FrameHash(0, pdq_hash(np.ascontiguousarray(data.coffee())))]) == []
    flat = PdqHash("00" * 32, 0)
    assert matcher.match_pdq([FrameHash(0, flat)]) == [], "low-quality hashes are ignored"
    assert [h.bank_kind for h in matcher.match_sha256("11" * 32)] == ["allow"]
    assert matcher.match_sha256("22" * 32) == []

    banks.add("allow", [BankEntry("sha256", "22" * 32)], "t", "t")
    assert matcher.reload_if_changed()
    assert len(matcher.match_sha256("22" * 32)) == 1


def test_records_keep_no_image(banks: BankStore, tmp_path: Path) -> None:
    """Banks hold hashes only: nothing in the database file resembles the image bytes."""
    data = astronaut_jpeg()
    banks.create("d", "deny")
    banks.add("d", [BankEntry("pdq", pdq_hash(photo()).hex)], "t", "t")
    db = tmp_path / "r.sqlite3"
    if db.exists():
        assert data[100:164] not in db.read_bytes()


def test_generation_changes_even_when_sqlite_reuses_entry_ids(
    banks: BankStore, request: pytest.FixtureRequest
) -> None:
    """Delete an allow bank holding X, create a deny bank holding Y: on SQLite Y gets X's entry id
    back, so count and highest id stay the same; the generation must still move, on every node."""
    other_node = RecordStore(banks.engine.url.render_as_string(hide_password=False))
    request.addfinalizer(other_node.close)
    matcher, stale = BankMatcher(BankStore(other_node.engine)), BankMatcher(banks)
    x, y = "a1" * 32, "b2" * 32
    banks.create("ok", "allow")
    banks.add("ok", [BankEntry("sha256", x)], "t", "t")
    assert matcher.reload_if_changed() and stale.reload_if_changed()
    assert [h.bank_kind for h in matcher.match_sha256(x)] == ["allow"]
    (old_id,) = [i for i, *_ in banks.all_hashes()]

    banks.delete("ok")
    banks.create("bad", "deny")
    banks.add("bad", [BankEntry("sha256", y)], "t", "t")
    if banks.engine.dialect.name == "sqlite":
        assert [i for i, *_ in banks.all_hashes()] == [old_id], "SQLite reused the deleted id"

    assert matcher.reload_if_changed(), "the change was seen"
    assert matcher.match_sha256(x) == []
    assert [h.bank_kind for h in matcher.match_sha256(y)] == ["deny"]
    assert not matcher.reload_if_changed()
    # Until a node reloads, a hit on X's old id must not be credited to the entry now holding it.
    assert stale.result(stale.match_sha256(x)) is None


def test_every_bank_write_raises_the_generation(banks: BankStore) -> None:
    seen = [banks.state()]

    def changed() -> None:
        seen.append(banks.state())
        assert seen[-1] > seen[-2]

    banks.create("b", "deny")
    changed()
    banks.add("b", [BankEntry("pdq", "cd" * 32), BankEntry("sha256", "ef" * 32)], "t", "t")
    changed()
    assert banks.add("b", [BankEntry("pdq", "cd" * 32)], "t", "t") == 0
    assert banks.state() == seen[-1], "adding nothing new changes nothing"
    assert banks.remove("b", entry_ids=[10**9]) == ()
    assert banks.state() == seen[-1], "removing nothing changes nothing"
    assert [e.value for e in banks.remove("b", hashes=["CD" * 32])] == ["cd" * 32]
    changed()
    (entry,) = [i for i, *_ in banks.all_hashes()]
    removed = banks.remove("b", entry_ids=[entry])
    assert [(e.id, e.bank, e.bank_kind, e.hash_kind) for e in removed] == [(entry, "b", "deny", "sha256")]
    changed()
    assert banks.get("b").entries == 0
    banks.delete("b")
    changed()
    banks.create("x", "deny")
    with pytest.raises(BankError, match="not a hash"):
        banks.remove("x", hashes=["zz"])


def test_remove_only_touches_the_named_bank_and_find_matches_exact_hashes(banks: BankStore) -> None:
    banks.create("one", "deny")
    banks.create("two", "deny")
    banks.create("ok", "allow")
    for name in ("one", "two", "ok"):
        banks.add(name, [BankEntry("sha256", "ab" * 32), BankEntry("pdq", "cd" * 32)], "t", "t")
    found = banks.find("deny", [("sha256", "AB" * 32), ("sha256", "cd" * 32), ("pdq", "99" * 32)])
    assert [(e.bank, e.hash_kind) for e in found] == [("one", "sha256"), ("two", "sha256")], (
        "only deny banks, only the same hash kind and value"
    )
    assert len(banks.remove("one", hashes=["ab" * 32, "cd" * 32])) == 2
    assert [(b.name, b.entries) for b in banks.list()] == [("ok", 2), ("one", 0), ("two", 2)]
    with pytest.raises(BankError, match="no bank named"):
        banks.remove("three", entry_ids=[1])


def test_crop_variants_belong_to_their_entry(banks: BankStore) -> None:
    banks.create("known-bad", "deny")
    parent, crop, other = "cd" * 32, "ef" * 32, "01" * 32
    entries = [
        BankEntry("sha256", "ab" * 32, "n"),
        BankEntry("pdq", parent, "n"),
        BankEntry("pdq", crop, "n", "left 5%", parent),
        BankEntry("pdq", other, "n"),
    ]
    assert banks.add("known-bad", entries, "test", "me") == 4
    assert (banks.get("known-bad").entries, banks.get("known-bad").crop_variants) == (4, 1)
    assert [(b.entries, b.crop_variants) for b in banks.list()] == [(4, 1)]
    # entries come back in the order they were stored: every entry, then the crop variants
    assert list(banks.entries("known-bad")) == [*entries[:2], entries[3], entries[2]]
    with pytest.raises(BankError, match="no pdq"):
        banks.add("known-bad", [BankEntry("pdq", "23" * 32, "", "top 5%", "45" * 32)], "test", "me")
    assert banks.get("known-bad").entries == 4, "nothing of the refused add was kept"

    (stored,) = banks.find("deny", [("pdq", crop)])
    assert stored.variant == "left 5%" and stored.variant_of is not None
    assert banks.describe([stored.variant_of])[stored.variant_of].value == parent
    # Removing the entry removes its crops; removing a crop alone leaves its entry.
    removed = banks.remove("known-bad", hashes=[parent])
    assert sorted(e.value for e in removed) == sorted([parent, crop])
    assert [e.value for e in banks.entries("known-bad")] == ["ab" * 32, other]


def test_crop_variant_hits_name_the_entry_and_the_crop(banks: BankStore) -> None:
    image = photo()
    banks.create("deny", "deny")
    original = pdq_hash(image)
    variants = crop_variants(image)
    banks.add("deny", [BankEntry("pdq", original.hex), *[BankEntry("pdq", h.hex, "", name, original.hex)
                                                          for name, h in variants]], "t", "me")  # fmt: skip
    matcher = BankMatcher(banks)
    matcher.reload_if_changed()
    cropped = pdq_hash(np.ascontiguousarray(image[:, : round(image.shape[1] * 0.95)]))
    result = matcher.result(matcher.match_pdq([FrameHash(0, cropped)]))
    assert result is not None and result.scores["deny"] == 1.0
    expected = "denied: matches bank 'deny' entry 1 (pdq of its crop 'right 5%' (entry "
    assert result.notes[0].startswith(expected), result.notes


def test_a_database_from_before_crop_variants_gains_their_columns(banks: BankStore) -> None:
    """Tables made by an older fediguard (before migrations) get the new nullable columns when the
    store opens them."""
    banks.create("old", "deny")
    banks.add("old", [BankEntry("pdq", "cd" * 32, "kept")], "test", "me")
    with banks.engine.begin() as conn:
        conn.execute(text("ALTER TABLE bank_entries DROP COLUMN variant"))
        conn.execute(text("ALTER TABLE bank_entries DROP COLUMN variant_of"))
        conn.execute(text("DROP TABLE alembic_version"))
    create_schema(banks.engine)
    create_schema(banks.engine)  # and again: nothing to do
    assert list(banks.entries("old")) == [BankEntry("pdq", "cd" * 32, "kept")]
    banks.add("old", [BankEntry("pdq", "ef" * 32, "", "top 5%", "cd" * 32)], "test", "me")
    assert banks.get("old").crop_variants == 1
