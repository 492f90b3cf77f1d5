"""In-memory index of bank hashes: which entries lie within a Hamming distance of an upload's PDQ hash.

Design, chosen by measurement (bench/banks.py, 2-CPU machine, one query at radius 31, 1 M hashes):

* The bulk of the hashes sits in an immutable :class:`~fediguard.banks._segment.Segment`: under
  ``flat_below`` hashes it is scanned whole by faiss (exact; ~0.03 ms at 10k), above that it carries
  an exact multi-index over 16-bit chunks: ~0.2 ms p50, 0.3-0.5 ms p99 of CPU time, 93 MB with its
  buffers. A plain faiss ``IndexBinaryFlat.range_search`` took ~1.0-1.1 ms p50 and 1.2-1.4 ms p99 of
  CPU time, and faiss's ``IndexBinaryMultiHash`` (16x16, nflip=1) 1.6 ms p50 at ~335 MB: neither meets
  the 1 ms p99 / 100 MB targets.
* New hashes go to an append-only buffer (up to ``delta_capacity`` rows, scanned by faiss, ~0.05 ms
  full) and are merged into a rebuilt segment when it fills (~0.5 s at 1 M). Removal is a tombstone
  flag; the segment is rebuilt without the dead once they exceed a quarter of it, or on
  :meth:`HashIndex.compact`.
* Concurrency is copy-on-write: searches read one immutable snapshot reference and take no lock;
  writers serialise on a lock, write only rows no published snapshot covers yet, and publish a new
  snapshot. Searches never wait, not even for a rebuild (the writer that triggers it pays).

faiss runs on one OpenMP thread in every thread that searches (set per thread: libgomp ignores the
main thread's setting in threads started later); parallelism comes from concurrent searches, in
``search_many`` as in ``search``. faiss releases the GIL while it scans.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fediguard.banks._hex import CODE_BYTES, codes_from_hex, parse_hex256
from fediguard.banks._segment import MAX_TABLES, Codes, Segment, hamming_range

FLAT_BELOW = 50_000
"""Segments smaller than this are scanned rather than multi-indexed.

Measured at radius 31: at 50k hashes a faiss scan (0.06 ms p50) costs what probing the tables does
in numpy call overhead; at 100k the scan takes 0.11 ms against 0.06 ms. Below the crossover the
tables' 48 bytes a hash and 4 MB of bucket offsets buy nothing.
"""

DELTA_CAPACITY = 65_536
"""Hashes added since the last rebuild that are kept in the scanned buffer (~0.05 ms to scan full).

The buffer starts at :data:`_DELTA_START` rows and doubles as needed, so small banks stay small.
"""

_DELTA_START = 1_024

_COMPACT_MIN_DEAD = 4_096
"""Tombstones tolerated before the quarter-of-the-segment rule applies: a handful of dead rows costs
a byte each and never changes an answer, so small banks are not rebuilt on every other removal."""

Match = tuple[int, int]
"""(entry id, distance in bits)."""


def _entry_id(entry_id: int) -> int:
    if isinstance(entry_id, bool):
        raise TypeError("entry id must be an int, not a bool")
    value = operator.index(entry_id)
    if not -(1 << 63) <= value < 1 << 63:
        raise ValueError(f"entry id {value} does not fit in 64 bits")
    return value


def _max_distance(max_distance: int) -> int:
    value = operator.index(max_distance)
    if not 0 <= value <= 256:
        raise ValueError(f"max_distance must be 0-256, got {value}")
    return value


@dataclass(frozen=True, eq=False)
class _Delta:
    """Preallocated rows for hashes added since the last rebuild; filled front to back."""

    codes: Codes
    ids: npt.NDArray[np.int64]
    dead: npt.NDArray[np.bool_]

    @classmethod
    def allocate(cls, capacity: int) -> _Delta:
        return cls(
            codes=np.zeros((capacity, CODE_BYTES), dtype=np.uint8),
            ids=np.zeros(capacity, dtype=np.int64),
            dead=np.zeros(capacity, dtype=bool),
        )

    @property
    def capacity(self) -> int:
        return int(self.ids.shape[0])

    def grown(self, capacity: int, count: int) -> _Delta:
        """A larger copy holding the first ``count`` rows; searches on the old one are unaffected."""
        bigger = _Delta.allocate(capacity)
        bigger.codes[:count] = self.codes[:count]
        bigger.ids[:count] = self.ids[:count]
        bigger.dead[:count] = self.dead[:count]
        return bigger


@dataclass(frozen=True, eq=False)
class _Snapshot:
    """What one search sees: the segment, and the first ``count`` rows of the delta buffer."""

    main: Segment
    delta: _Delta
    count: int


class HashIndex:
    """Entry ids with one 256-bit hash each, searchable by Hamming distance. Thread-safe.

    ``tables`` is how many 16-bit chunks the multi-index covers: 16 keeps searches up to distance 47
    on the fast path; the SHA-256 index uses 1 because it only asks for distance 0. ``kind`` names the
    hash in error messages.
    """

    def __init__(
        self,
        *,
        tables: int = 16,
        delta_capacity: int = DELTA_CAPACITY,
        flat_below: int = FLAT_BELOW,
        kind: str = "PDQ hash",
    ) -> None:
        if delta_capacity < 1:
            raise ValueError("delta_capacity must be at least 1")
        if not 1 <= tables <= MAX_TABLES:
            raise ValueError(f"tables must be 1-{MAX_TABLES}, got {tables}")
        self._tables = tables
        self._delta_capacity = delta_capacity
        self._flat_below = flat_below
        self._kind = kind
        self._lock = threading.Lock()
        self._snapshot = _Snapshot(Segment.empty(), self._new_delta(), 0)
        self._delta_slots: dict[int, int] = {}  # live entry id -> row in the current delta buffer
        self._alive = 0
        self._main_dead = 0

    def __len__(self) -> int:
        return self._alive

    def __contains__(self, entry_id: object) -> bool:
        if not isinstance(entry_id, int) or isinstance(entry_id, bool):
            return False
        with self._lock:
            return self._holds(self._snapshot, entry_id)

    @property
    def nbytes(self) -> int:
        """Bytes held in arrays (what RSS grows by, give or take the allocator)."""
        snap = self._snapshot
        delta = snap.delta.codes.nbytes + snap.delta.ids.nbytes + snap.delta.dead.nbytes
        return snap.main.nbytes + int(delta)

    def add(self, entry_id: int, hash_hex: str) -> None:
        """Add one entry. Raises ValueError for a malformed hash or an entry id already present."""
        self.add_many([(entry_id, hash_hex)])

    def add_many(self, entries: Iterable[tuple[int, str]]) -> None:
        """Add entries all at once or, when one is malformed or already present, none of them."""
        ids_list: list[int] = []
        hexes: list[str] = []
        for entry_id, hash_hex in entries:
            ids_list.append(_entry_id(entry_id))
            hexes.append(parse_hex256(hash_hex, self._kind))
        if not ids_list:
            return
        ids = np.array(ids_list, dtype=np.int64)
        codes = codes_from_hex(hexes)
        sorted_ids = np.sort(ids)
        repeated = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
        if repeated.size:
            raise ValueError(f"entry id {int(sorted_ids[repeated[0]])} appears more than once")
        with self._lock:
            snap = self._snapshot
            present = (
                [i for i in ids_list if self._holds(snap, i)]
                if len(ids_list) < 64
                else (self._present_bulk(snap, ids))
            )
            if present:
                raise ValueError(f"entry id {present[0]} is already in the index")
            if snap.count + len(ids_list) <= self._delta_capacity:
                self._append_locked(snap, ids, codes)
            else:
                self._rebuild_locked(ids, codes)
            self._alive += len(ids_list)

    def remove(self, entry_id: int) -> bool:
        """Remove an entry; returns whether it was there. Its hash stops matching at once."""
        entry_id = _entry_id(entry_id)
        with self._lock:
            snap = self._snapshot
            row = self._delta_slots.pop(entry_id, None)
            if row is not None:
                snap.delta.dead[row] = True
                self._alive -= 1
                return True
            slot = snap.main.locate(entry_id)
            if slot < 0 or snap.main.dead[slot]:
                return False
            snap.main.dead[slot] = True
            self._alive -= 1
            self._main_dead += 1
            if self._main_dead > max(_COMPACT_MIN_DEAD, snap.main.size // 4):
                self._rebuild_locked()
            return True

    def compact(self) -> None:
        """Merge recent additions and drop removed entries now, rather than when thresholds say so."""
        with self._lock:
            self._rebuild_locked()

    def search(self, hash_hex: str, max_distance: int) -> list[Match]:
        """Entries within ``max_distance`` bits of the hash, as (entry id, distance), nearest first.

        Exact: every entry within the distance is returned. Ties are ordered by entry id.
        Raises ValueError for a malformed hash or a distance outside 0-256.
        """
        code = codes_from_hex([parse_hex256(hash_hex, self._kind)])
        return self._search_codes(code, _max_distance(max_distance))[0]

    def search_many(self, hashes: Sequence[str], max_distance: int) -> list[list[Match]]:
        """:meth:`search` for each hash, sharing the scans between them; one list per hash, in order."""
        code = codes_from_hex([parse_hex256(h, self._kind) for h in hashes])
        return self._search_codes(code, _max_distance(max_distance))

    def _search_codes(self, queries: Codes, max_distance: int) -> list[list[Match]]:
        snap = self._snapshot  # one read: everything below sees a single consistent state
        if len(queries) == 1:
            main = [snap.main.search(queries[0], max_distance)]
        else:
            main = snap.main.search_many(queries, max_distance)
        recent = hamming_range(queries, snap.delta.codes, snap.count, max_distance)
        results = []
        for (main_slots, main_dist), (rows, row_dist) in zip(main, recent, strict=True):
            live = ~snap.delta.dead[rows]
            ids = np.concatenate([snap.main.ids[main_slots], snap.delta.ids[rows[live]]])
            distances = np.concatenate([main_dist, row_dist[live]])
            order = np.lexsort((ids, distances))
            results.append(list(zip(ids[order].tolist(), distances[order].tolist(), strict=True)))
        return results

    def _holds(self, snap: _Snapshot, entry_id: int) -> bool:
        if entry_id in self._delta_slots:
            return True
        slot = snap.main.locate(entry_id)
        return slot >= 0 and not snap.main.dead[slot]

    def _present_bulk(self, snap: _Snapshot, ids: npt.NDArray[np.int64]) -> list[int]:
        present = [int(i) for i in ids if int(i) in self._delta_slots] if self._delta_slots else []
        main = snap.main
        if main.size:
            slots = np.minimum(np.searchsorted(main.ids, ids), main.size - 1)
            found = (main.ids[slots] == ids) & ~main.dead[slots]
            present.extend(int(i) for i in ids[found])
        return present

    def _new_delta(self) -> _Delta:
        return _Delta.allocate(min(_DELTA_START, self._delta_capacity))

    def _append_locked(self, snap: _Snapshot, ids: npt.NDArray[np.int64], codes: Codes) -> None:
        start, end = snap.count, snap.count + len(ids)
        delta = snap.delta
        if end > delta.capacity:
            delta = delta.grown(min(self._delta_capacity, max(end, 2 * delta.capacity)), start)
        # Rows at or past snap.count are outside every published snapshot, so no search reads them
        # while they are written; the new snapshot that covers them is published afterwards.
        delta.codes[start:end] = codes
        delta.ids[start:end] = ids
        for row, entry_id in enumerate(ids.tolist(), start=start):
            self._delta_slots[entry_id] = row
        self._snapshot = _Snapshot(snap.main, delta, end)

    def _rebuild_locked(
        self,
        extra_ids: npt.NDArray[np.int64] | None = None,
        extra_codes: Codes | None = None,
    ) -> None:
        snap = self._snapshot
        main_live = ~snap.main.dead
        delta_live = ~snap.delta.dead[: snap.count]
        id_parts = [snap.main.ids[main_live], snap.delta.ids[: snap.count][delta_live]]
        code_parts = [snap.main.codes[main_live], snap.delta.codes[: snap.count][delta_live]]
        if extra_ids is not None and extra_codes is not None:
            id_parts.append(extra_ids)
            code_parts.append(extra_codes)
        main = Segment.build(
            np.concatenate(id_parts),
            np.concatenate(code_parts),
            tables=self._tables,
            flat_below=self._flat_below,
        )
        # A fresh buffer rather than reuse: searches still holding the old snapshot keep reading it.
        self._snapshot = _Snapshot(main, self._new_delta(), 0)
        self._delta_slots = {}
        self._main_dead = 0
