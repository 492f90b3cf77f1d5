"""The publisher's side of a feed: batches that add up to the banks, chained, signed, paged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fediguard.banks.feeds.publisher import BATCH_OPS, Publisher
from fediguard.banks.feeds.signing import FeedKeyError, generate_key, load_key, parse_public, verify
from fediguard.banks.feeds.subscriber import Subscription, verify_page
from fediguard.banks.formats import BankEntry
from fediguard.banks.store import BankError, BankStore
from fediguard.records import RecordStore


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[object]:
    records = RecordStore(f"sqlite:///{tmp_path / 'a.sqlite3'}")
    yield records.engine
    records.close()


def subscriber_at(seq: int, digest: str) -> Subscription:
    return Subscription(1, "x", "http://a/api/v1/feeds/big", "", None, "deny", "feed.x", seq, digest,
                        None, None, None)  # fmt: skip


def test_batches_add_up_to_the_banks_in_order(engine: object, tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    public = generate_key(key_file)
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = load_key(key_file)
    banks = BankStore(engine)  # type: ignore[arg-type]
    banks.create("deny", "deny")
    count = BATCH_OPS * 2 + 10
    entries = [BankEntry("pdq", f"{i:064x}", "secret note") for i in range(count)]
    banks.add("deny", entries, "test", "test")
    publisher = Publisher(engine)  # type: ignore[arg-type]
    assert publisher.create("big", ["deny"], notes=False, public=True) is None
    assert publisher.sync("big", key) == 3
    assert publisher.sync("big", key) == 0, "nothing changed, no batch"
    head, page = publisher.page("big", 0, limit=2)
    assert head == 3 and [b.seq for b in page] == [1, 2]
    _, rest = publisher.page("big", 2)
    raw = [b.to_json() for b in page + rest]
    good, refusal = verify_page(subscriber_at(0, ""), parse_public(public), head, raw)
    assert refusal is None and [b.seq for b in good] == [1, 2, 3]
    values = [op.value for b in good for op in b.ops]
    assert len(values) == count and sorted(values) == values
    assert "secret note" not in json.dumps(raw), "notes stay home unless asked"

    banks.remove("deny", hashes=[f"{i:064x}" for i in range(3)])
    assert publisher.sync("big", key) == 1
    _, (fourth,) = publisher.page("big", 3)
    assert verify(parse_public(public), fourth.body.encode(), fourth.signature)
    assert json.loads(fourth.body)["ops"] == [["retract", "pdq", f"{i:064x}"] for i in range(3)]
    assert json.loads(fourth.body)["prev"] == good[-1].digest


def test_only_deny_banks_are_published_and_keys_are_checked(engine: object, tmp_path: Path) -> None:
    banks = BankStore(engine)  # type: ignore[arg-type]
    banks.create("ok", "allow")
    publisher = Publisher(engine)  # type: ignore[arg-type]
    with pytest.raises(BankError, match="not a deny bank"):
        publisher.create("f", ["ok"], notes=False, public=False)
    with pytest.raises(BankError, match="no bank named"):
        publisher.create("f", ["missing"], notes=False, public=False)
    assert publisher.all() == []
    with pytest.raises(FeedKeyError, match="feed_key_file"):
        load_key(tmp_path / "none.pem")
    generate_key(tmp_path / "k.pem")
    with pytest.raises(FeedKeyError, match="exists already"):
        generate_key(tmp_path / "k.pem")
    assert isinstance(load_key(tmp_path / "k.pem"), Ed25519PrivateKey)
