"""Sha256Index: exact lookups of upload digests."""

from __future__ import annotations

import hashlib

import pytest

from fediguard.banks.sha256 import Sha256Index, parse_sha256


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("flat_below", [10**9, 1], ids=["scan", "table"])
def test_lookup_add_remove(flat_below: int) -> None:
    index = Sha256Index(flat_below=flat_below, delta_capacity=500)
    index.add_many((i, digest(f"upload {i}".encode())) for i in range(3_000))
    index.add(10_000, digest(b"upload 7"))  # a second bank entry for the same bytes
    assert index.lookup(digest(b"upload 7")) == [7, 10_000]
    assert index.lookup(digest(b"upload 2999").upper()) == [2_999]
    assert index.lookup(digest(b"never uploaded")) == []

    assert index.remove(7)
    assert index.lookup(digest(b"upload 7")) == [10_000]
    assert not index.remove(7)
    assert 7 not in index and 10_000 in index
    assert len(index) == 3_000
    index.compact()
    assert index.lookup(digest(b"upload 7")) == [10_000]
    assert index.lookup(digest(b"upload 8")) == [8]


def test_near_digests_do_not_match() -> None:
    index = Sha256Index()
    value = digest(b"x")
    index.add(1, value)
    neighbour = value[:-1] + ("0" if value[-1] != "0" else "1")
    assert index.lookup(neighbour) == []


def test_parse_sha256() -> None:
    value = digest(b"")
    assert parse_sha256(f" {value.upper()} ") == value
    with pytest.raises(ValueError, match="not a SHA-256 digest"):
        parse_sha256(value[:40])  # a SHA-1 length
    with pytest.raises(ValueError, match="not a SHA-256 digest"):
        Sha256Index().add(1, "g" * 64)
