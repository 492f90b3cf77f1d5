"""An immutable block of 256-bit hashes searchable by Hamming distance: the bulk of a HashIndex.

Small blocks are scanned whole with faiss (exact, ~1 ns a hash). Large blocks also carry a
multi-index (Norouzi, Punjani & Fleet, "Fast search in Hamming space with multi-index hashing",
CVPR 2012): the 256 bits are cut into 16 chunks of 16 bits and, for each chunk, the slots are
bucketed by that chunk's value. Two hashes at most r bits apart differ in at most ⌊r/16⌋ bits in at
least one chunk (pigeonhole), so probing, in every table, the buckets within ⌊r/16⌋ bits of the query's
chunk finds every hash within r: exact, not approximate. For r = 31 that is 16 x 17 buckets, about
4,000 candidates among a million random hashes, whose full distances faiss then computes.

Memory per hash: 32 bytes of code, 8 of entry id, 1 tombstone flag, and per table a slot number
packed as uint16 + uint8 (uint16 + uint16 past 16.7 M hashes): 89 bytes with 16 tables, plus 4 MB of
bucket offsets. faiss's own IndexBinaryMultiHash keeps the same tables in hash maps (~335 bytes a
hash, MODELS.md) and answered slower; see bench/banks.py.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from fediguard.banks._hex import CODE_BYTES

Codes = npt.NDArray[np.uint8]
"""Hashes as an (n, 32) C-contiguous uint8 array, big-endian: row i is bytes.fromhex(hex_i)."""
Slots = npt.NDArray[np.intp]

CHUNK_BITS = 16
MAX_TABLES = 256 // CHUNK_BITS
_BUCKETS = 1 << CHUNK_BITS

_MAX_PROBE_RADIUS = 2
"""Beyond two flipped bits per chunk (137 buckets a table) probing costs more than a faiss scan."""

_FALLBACK_FRACTION = 4
"""Scan instead when the probed buckets hold over 1/4 of the hashes: clustered banks or huge radii.

Verifying a candidate in numpy costs several times what faiss spends per hash on a straight scan, so
past a quarter of the block the scan is both faster and still exact.
"""


def _flip_masks(radius: int) -> npt.NDArray[np.intp]:
    values = np.arange(_BUCKETS, dtype=np.intp)
    return values[np.bitwise_count(values) <= radius]


_MASKS = [_flip_masks(r) for r in range(_MAX_PROBE_RADIUS + 1)]
_EMPTY = np.empty(0, dtype=np.intp)
_thread_state = threading.local()


def _one_openmp_thread() -> None:
    """Make faiss use one OpenMP thread in the calling thread.

    One query gains nothing from a thread team and pays for waking it: with two OpenMP threads a
    single search was several times slower (MODELS.md: 24 ms against 4 ms at 1 M). The setting must be
    made per thread: libgomp keeps it per OS thread and threads started later (the gateway's workers)
    begin with the default, the CPU count, whatever the main thread set.
    """
    if not getattr(_thread_state, "limited", False):
        faiss.omp_set_num_threads(1)
        _thread_state.limited = True


def hamming_range(queries: Codes, codes: Codes, count: int, max_distance: int) -> list[tuple[Slots, Slots]]:
    """For each query row, the rows among the first ``count`` of ``codes`` within ``max_distance``.

    Returns (slots, distances) per query, unsorted: an exact linear scan in faiss's C++, on one
    OpenMP thread.
    """
    n_queries = queries.shape[0]
    if count == 0 or n_queries == 0:
        return [(_EMPTY, _EMPTY)] * n_queries
    if count > codes.shape[0]:
        raise ValueError(f"count {count} exceeds the {codes.shape[0]} rows given")
    # faiss reads raw memory: the rows must be packed (no copy is made when they already are).
    queries = np.ascontiguousarray(queries)
    codes = np.ascontiguousarray(codes)
    _one_openmp_thread()
    result = faiss.RangeSearchResult(n_queries)
    # faiss keeps hashes strictly closer than the radius it is given.
    faiss.hamming_range_search(  # type: ignore[attr-defined]  # in faiss, missing from its .pyi
        faiss.swig_ptr(queries), faiss.swig_ptr(codes), n_queries, count, max_distance + 1, CODE_BYTES, result
    )
    lims = faiss.rev_swig_ptr(result.lims, n_queries + 1).astype(np.intp)
    total = int(lims[-1])
    if total == 0:
        return [(_EMPTY, _EMPTY)] * n_queries
    labels = faiss.rev_swig_ptr(result.labels, total).astype(np.intp)
    distances = faiss.rev_swig_ptr(result.distances, total).astype(np.intp)
    return [(labels[lims[i] : lims[i + 1]], distances[lims[i] : lims[i + 1]]) for i in range(n_queries)]


@dataclass(frozen=True, eq=False)
class _Tables:
    """Per chunk, slots grouped by that chunk's value; bucket b of table t is positions
    offsets[t·65536 + b] up to offsets[t·65536 + b + 1] of the flattened lo/hi arrays."""

    count: int
    offsets: npt.NDArray[np.integer[Any]]  # uint32 unless tables x hashes reaches 2**32
    lo: npt.NDArray[np.uint16]
    hi: npt.NDArray[np.integer[Any]]  # uint8 up to 2**24 hashes, uint16 beyond

    @classmethod
    def build(cls, codes: Codes, count: int) -> _Tables:
        n = codes.shape[0]
        chunks = codes.view(">u2")
        lo = np.empty(count * n, dtype=np.uint16)
        hi = np.empty(count * n, dtype=np.uint8 if n <= 1 << 24 else np.uint16)
        counts = np.empty(count * _BUCKETS, dtype=np.int64)
        for t in range(count):
            key = chunks[:, t].astype(np.uint16)
            order = np.argsort(key, kind="stable")  # radix sort on 16-bit keys: ~10 ms a million
            lo[t * n : (t + 1) * n] = order  # keeps the low 16 bits
            hi[t * n : (t + 1) * n] = order >> 16
            counts[t * _BUCKETS : (t + 1) * _BUCKETS] = np.bincount(key, minlength=_BUCKETS)
        offset_type = np.uint32 if count * n < 1 << 32 else np.int64
        offsets: npt.NDArray[np.integer[Any]] = np.zeros(count * _BUCKETS + 1, dtype=offset_type)
        offsets[1:] = np.cumsum(counts)
        return cls(count=count, offsets=offsets, lo=lo, hi=hi)

    def candidates(self, code: Codes, max_distance: int, limit: int) -> Slots | None:
        """Slots that may lie within ``max_distance`` (with repeats), or None when scanning is cheaper."""
        radius = max_distance // self.count
        if radius > _MAX_PROBE_RADIUS:
            return None
        keys = code.view(">u2")[: self.count].astype(np.intp)
        base = np.arange(self.count, dtype=np.intp) * _BUCKETS
        probes = ((keys[:, None] ^ _MASKS[radius][None, :]) + base[:, None]).ravel()
        starts = self.offsets[probes].astype(np.intp)
        lengths = self.offsets[probes + 1].astype(np.intp) - starts
        total = int(lengths.sum())
        if total > limit:
            return None
        if total == 0:
            return _EMPTY
        nonempty = lengths > 0
        starts, lengths = starts[nonempty], lengths[nonempty]
        # Expand the [start, start + length) ranges into one array of positions without a Python loop.
        run_starts = np.cumsum(lengths) - lengths
        positions = np.arange(total, dtype=np.intp) + np.repeat(starts - run_starts, lengths)
        slots: Slots = np.take(self.lo, positions).astype(np.intp)
        slots |= np.take(self.hi, positions).astype(np.intp) << 16
        return slots

    @property
    def nbytes(self) -> int:
        return int(self.offsets.nbytes + self.lo.nbytes + self.hi.nbytes)


class Segment:
    """Hashes and their entry ids, sorted by id, never changed after building except for tombstones.

    ``dead`` is the one mutable part: the owning index flips flags under its writer lock, and a search
    running at the same moment either sees the flag or not, both of which are correct answers.
    """

    __slots__ = ("_tables", "codes", "dead", "ids")

    def __init__(self, ids: npt.NDArray[np.int64], codes: Codes, tables: _Tables | None) -> None:
        self.ids = ids
        self.codes = codes
        self.dead = np.zeros(ids.shape[0], dtype=bool)
        self._tables = tables

    @classmethod
    def build(cls, ids: npt.NDArray[np.int64], codes: Codes, *, tables: int, flat_below: int) -> Segment:
        """Sort by entry id and, from ``flat_below`` hashes on, index ``tables`` chunks (1-16).

        Raises ValueError when an entry id repeats.
        """
        if not 1 <= tables <= MAX_TABLES:
            raise ValueError(f"tables must be 1-{MAX_TABLES}, got {tables}")
        order = np.argsort(ids, kind="stable")
        ids = np.ascontiguousarray(ids[order], dtype=np.int64)
        codes = np.ascontiguousarray(codes[order], dtype=np.uint8)
        repeated = np.flatnonzero(ids[1:] == ids[:-1])
        if repeated.size:
            raise ValueError(f"entry id {int(ids[repeated[0]])} appears more than once")
        index = _Tables.build(codes, tables) if ids.shape[0] >= flat_below else None
        return cls(ids, codes, index)

    @classmethod
    def empty(cls) -> Segment:
        return cls(np.empty(0, dtype=np.int64), np.empty((0, CODE_BYTES), dtype=np.uint8), None)

    @property
    def size(self) -> int:
        return int(self.ids.shape[0])

    @property
    def nbytes(self) -> int:
        tables = self._tables.nbytes if self._tables is not None else 0
        return int(self.ids.nbytes + self.codes.nbytes + self.dead.nbytes) + tables

    def locate(self, entry_id: int) -> int:
        """The slot holding ``entry_id`` (dead or alive), or -1."""
        slot = int(np.searchsorted(self.ids, entry_id))
        if slot < self.size and int(self.ids[slot]) == entry_id:
            return slot
        return -1

    def search(self, code: Codes, max_distance: int) -> tuple[Slots, Slots]:
        """Live slots within ``max_distance`` of one hash (a (32,) row), with their distances."""
        if self.size == 0:
            return _EMPTY, _EMPTY
        slots = None
        if self._tables is not None:
            slots = self._tables.candidates(code, max_distance, self.size // _FALLBACK_FRACTION)
        if slots is None:
            slots, distances = hamming_range(
                code.reshape(1, CODE_BYTES), self.codes, self.size, max_distance
            )[0]
        else:
            # np.take gathers rows ~6x faster than fancy indexing, and faiss then verifies the gathered
            # rows ~3x faster than numpy's XOR + popcount over a length-4 axis (bench: 60 µs vs 370 µs).
            rows = np.take(self.codes, slots, axis=0)
            hits, distances = hamming_range(code.reshape(1, CODE_BYTES), rows, rows.shape[0], max_distance)[0]
            # A hash near the query in several chunks is a candidate in several tables: keep it once.
            slots, first = np.unique(slots[hits], return_index=True)
            distances = distances[first]
        alive = ~self.dead[slots]
        return slots[alive], distances[alive]

    def search_many(self, queries: Codes, max_distance: int) -> list[tuple[Slots, Slots]]:
        """:meth:`search` for each row of ``queries``; without tables, one faiss call for the batch."""
        if self._tables is not None:
            return [self.search(queries[i], max_distance) for i in range(queries.shape[0])]
        found = hamming_range(queries, self.codes, self.size, max_distance)
        return [(slots[~self.dead[slots]], dist[~self.dead[slots]]) for slots, dist in found]
