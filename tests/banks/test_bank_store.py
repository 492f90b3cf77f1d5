"""Banks in the records database (real SQLite and PostgreSQL) and the matcher built from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fediguard.banks.formats import BankEntry
from fediguard.banks.matcher import BankMatcher
from fediguard.banks.pdq import PdqHash, pdq_hash
from fediguard.banks.store import BankError, BankStore
from fediguard.records import RecordStore
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
    hits = matcher.match_pdq([(3, pdq_hash(reencoded))])
    assert len(hits) == 1 and hits[0].bank_kind == "deny" and hits[0].frame == 3 and hits[0].distance <= 31
    result = matcher.result(hits)
    assert result is not None and result.decisive and result.scores["deny"] == 1.0
    assert (
        result.notes[0].startswith("denied: matches bank 'deny' entry") and "seen before" in result.notes[0]
    )

    from skimage import data

    assert matcher.match_pdq([(0, pdq_hash(np.ascontiguousarray(data.coffee())))]) == []
    flat = PdqHash("00" * 32, 0)
    assert matcher.match_pdq([(0, flat)]) == [], "low-quality hashes are ignored"
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
