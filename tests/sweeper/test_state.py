"""The sweeper's memory of sources and objects, and how it reads large objects: real SQLite, real files."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fediguard.storage import Fetched, StoredObject, get_layout
from fediguard.storage.local import LocalSource
from fediguard.sweeper.judges import Judgement
from fediguard.sweeper.run import Sweeper, SweepOptions
from fediguard.sweeper.state import SweepState, escape_key, unescape_key


def test_the_quarantine_location_is_remembered(state: SweepState) -> None:
    url = "file:///srv/pictrs"
    first, options = state.register(url, {"quarantine_dir": "/srv/q"})
    again, options = state.register(url, {})
    assert again == first and options == {"quarantine_dir": "/srv/q"}
    assert state.source(first) == (url, {"quarantine_dir": "/srv/q"})
    _, options = state.register(url, {"quarantine_dir": "/srv/q2"})
    assert options == {"quarantine_dir": "/srv/q2"}
    s3 = "s3://media/"
    sid, _ = state.register(s3, {"quarantine_bucket": "held", "quarantine_prefix": "x/"})
    # A new location replaces the whole old one (never the old bucket with the new prefix).
    assert state.register(s3, {"quarantine_prefix": "y/"}) == (sid, {"quarantine_prefix": "y/"})


def test_a_dry_run_changes_no_stored_option(state: SweepState) -> None:
    url = "file:///srv/pictrs"
    first, _ = state.register(url, {"quarantine_dir": "/srv/q"})
    again, used = state.register(url, {"quarantine_dir": "/tmp/try"}, remember=False)
    assert again == first and used == {"quarantine_dir": "/tmp/try"}  # for this run only
    assert state.source(first) == (url, {"quarantine_dir": "/srv/q"})
    assert state.register(url, {}, remember=False) == (first, {"quarantine_dir": "/srv/q"})
    new, used = state.register("s3://fresh/", {"region": "eu", "quarantine_prefix": "q/"}, remember=False)
    assert used == {"region": "eu", "quarantine_prefix": "q/"}
    assert state.source(new) == ("s3://fresh/", {"region": "eu"})


def test_s3_sources_on_different_endpoints_are_different_sources(state: SweepState) -> None:
    a = state.source_id("s3://media/", {"endpoint_url": "https://a.example"})
    b = state.source_id("s3://media/", {"endpoint_url": "https://b.example/"})
    aws = state.source_id("s3://media/", {"region": "eu-west-1"})
    assert len({a, b, aws}) == 3
    assert state.source_id("s3://media/", {"endpoint_url": "https://a.example/"}) == a
    assert state.source(a)[0] == "s3://media/?endpoint=https://a.example"
    assert state.source_id("file:///srv", {}) == state.source_id("file:///srv", {})


def test_sources_recorded_by_url_alone_keep_their_state(tmp_path: Path, state: SweepState) -> None:
    """Rows an older version keyed by the bare URL are adopted by the same endpoint, not another."""
    with sqlite3.connect(tmp_path / "fediguard.sqlite3") as conn:
        for url, endpoint in (("s3://old/", "https://a.example"), ("s3://other/", "https://a.example")):
            conn.execute(
                "insert into sweep_sources (url, options, updated_at) values (?, ?, ?)",
                (url, json.dumps({"endpoint_url": endpoint}), datetime.now(UTC).isoformat()),
            )
    (old,) = [i for i in (1, 2) if state.source(i)[0] == "s3://old/"]
    assert state.source_id("s3://old/", {"endpoint_url": "https://a.example"}) == old
    assert state.source(old)[0] == "s3://old/?endpoint=https://a.example"
    # The same bucket name with no endpoint (AWS) or another endpoint is another source.
    other = next(i for i in (1, 2) if i != old)
    assert state.source_id("s3://other/", {}) != other
    assert state.source(other)[0] == "s3://other/?endpoint=https://a.example"
    assert state.source_id("s3://other/", {"endpoint_url": "https://a.example"}) == other


class CountingSource(LocalSource):
    """A real folder that counts whole reads and first-bytes reads."""

    reads: list[str]
    heads: list[str]

    async def fetch(self, key: str, max_bytes: int) -> Fetched:
        self.reads.append(key)
        return await super().fetch(key, max_bytes)

    async def read_head(self, key: str, n: int) -> bytes:
        self.heads.append(key)
        return await super().read_head(key, n)


class PassJudge:
    async def judge(self, data: bytes, key: str) -> Judgement:
        return Judgement("pass", None, None)


async def test_a_large_non_media_file_is_never_read_whole(tmp_path: Path, state: SweepState) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / "dump.sql").write_bytes(b"-- SQL dump\n" * 300_000)  # 3.6 MB, under the 40 MB limit
    (root / "small.txt").write_bytes(b"hello")
    source = CountingSource(root)
    source.reads, source.heads = [], []
    source_id = state.source_id(source.url, {})
    sweeper = Sweeper(source, source_id, state, PassJudge(), SweepOptions(layout=get_layout("plain")))
    stats = await sweeper.run()
    assert stats.not_media == 2 and stats.errors == 0
    assert source.heads == ["dump.sql"] and source.reads == ["small.txt"]
    assert {k: r.status for k, r in state.known(source_id, ["dump.sql", "small.txt"]).items()} == {
        "dump.sql": "not_media", "small.txt": "not_media",
    }  # fmt: skip


@pytest.mark.parametrize("name", [
    b"plain/key.png", "caf\u00e9/\u6f22\u5b57.png".encode(), b"bad\xff\xfe.png", b"a\\b.png",
    b"a\\xff.png", b"\\\\x41\xc3", b"trail\\", b"nul\x00.png", b"\xe2\x82.png",
])  # fmt: skip
def test_keys_that_are_not_utf8_are_stored_escaped_and_given_back_exactly(name: bytes) -> None:
    key = name.decode("utf-8", "surrogateescape")
    stored = escape_key(key)
    stored.encode("utf-8")  # storable
    assert "\x00" not in stored and unescape_key(stored) == key
    try:
        plain = name.decode("utf-8") == key and b"\\" not in name and b"\x00" not in name
    except UnicodeDecodeError:
        plain = False
    assert (stored == key) == plain, "only what the database cannot hold as it is gets escaped"


def test_an_escaped_key_never_takes_the_record_of_another(state: SweepState) -> None:
    """``bad\\xff.png`` (a literal backslash) and ``bad<0xff>.png`` are two objects, two records."""
    source_id = state.source_id("file:///srv/media", {})
    now = datetime.now(UTC)
    hostile = os.fsdecode(b"bad\xff.png")
    literal = "bad\\xff.png"
    for size, key in enumerate((hostile, literal, "bad.png"), start=1):
        state.save(source_id, StoredObject(key, size, now, None), status="scanned", verdict="pass",
                   action="quarantine", quarantine_key=key)  # fmt: skip
    known = state.known(source_id, [hostile, literal, "bad.png"])
    assert {k: r.size for k, r in known.items()} == {hostile: 1, literal: 2, "bad.png": 3}
    assert known[hostile].quarantine_key == hostile
    assert {r.key for r in state.pending(source_id)} == {hostile, literal, "bad.png"}
