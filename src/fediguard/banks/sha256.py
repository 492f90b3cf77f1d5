"""Exact-match bank of SHA-256 digests of upload bytes: catches byte-identical copies before decoding.

It is a :class:`~fediguard.banks.index.HashIndex` asked only for distance 0, so it shares the index's
thread safety and memory layout. One 16-bit table is enough for exact lookups (a million digests
spread ~15 to a bucket), which makes it ~44 bytes a digest, against ~140 for a dict of bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

from fediguard.banks._hex import parse_hex256
from fediguard.banks.index import DELTA_CAPACITY, FLAT_BELOW, HashIndex


def parse_sha256(text: str) -> str:
    """Validate a SHA-256 digest written as hex and return it as 64 lowercase hex characters.

    Raises ValueError whose message says what is wrong.
    """
    return parse_hex256(text, "SHA-256 digest")


class Sha256Index:
    """Entry ids keyed by SHA-256 digest (several entries may share one). Thread-safe."""

    def __init__(self, *, delta_capacity: int = DELTA_CAPACITY, flat_below: int = FLAT_BELOW) -> None:
        self._index = HashIndex(
            tables=1, delta_capacity=delta_capacity, flat_below=flat_below, kind="SHA-256 digest"
        )

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._index

    def add(self, entry_id: int, sha256_hex: str) -> None:
        """Add one entry. Raises ValueError for a malformed digest or an entry id already present."""
        self._index.add(entry_id, sha256_hex)

    def add_many(self, entries: Iterable[tuple[int, str]]) -> None:
        """Add entries all at once or, when one is malformed or already present, none of them."""
        self._index.add_many(entries)

    def remove(self, entry_id: int) -> bool:
        """Remove an entry; returns whether it was there."""
        return self._index.remove(entry_id)

    def lookup(self, sha256_hex: str) -> list[int]:
        """Entry ids whose digest equals this one, in ascending order. Raises ValueError if malformed."""
        return [entry_id for entry_id, _ in self._index.search(sha256_hex, 0)]

    def compact(self) -> None:
        """See :meth:`HashIndex.compact`."""
        self._index.compact()
