"""HashIndex against a brute-force numpy reference, on random hashes with planted near neighbours."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fediguard.banks.index import HashIndex

SCAN_ONLY = {"flat_below": 10**9}
MULTI_INDEX = {"flat_below": 1}
LAYOUTS = {"scan": SCAN_ONLY, "multi-index": MULTI_INDEX}
PLANTED_DISTANCES = (0, 1, 2, 15, 16, 17, 30, 31, 32, 33, 47, 48, 49, 63, 64, 100)
RADII = (0, 1, 16, 31, 32, 47, 48, 64, 128, 256)


class Reference:
    """The obvious implementation: XOR and count bits against every live entry."""

    def __init__(self) -> None:
        self.codes: dict[int, np.ndarray] = {}

    def add(self, entry_id: int, code: np.ndarray) -> None:
        self.codes[entry_id] = code

    def search(self, code: np.ndarray, max_distance: int) -> list[tuple[int, int]]:
        if not self.codes:
            return []
        ids = np.array(list(self.codes))
        codes = np.stack(list(self.codes.values()))
        distances = np.unpackbits(codes ^ code, axis=1).sum(axis=1)
        hit = distances <= max_distance
        order = np.lexsort((ids[hit], distances[hit]))
        return list(zip(ids[hit][order].tolist(), distances[hit][order].tolist(), strict=True))


def hex_of(code: np.ndarray) -> str:
    return bytes(code).hex()


def flip(code: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    unpacked = np.unpackbits(code)
    unpacked[rng.choice(256, bits, replace=False)] ^= 1
    return np.packbits(unpacked)


def random_codes(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (n, 32), dtype=np.uint8)


def build(rng: np.random.Generator, n: int, **options: int) -> tuple[HashIndex, Reference, list[np.ndarray]]:
    """A bank of ``n`` random hashes plus, around 5 query hashes, one entry at each planted distance."""
    index, reference = HashIndex(**options), Reference()
    codes = random_codes(n, rng)
    entries = [(int(i) * 7 + 3, code) for i, code in enumerate(codes)]
    queries = list(random_codes(5, rng))
    next_id = 10**9
    for query in queries:
        for distance in PLANTED_DISTANCES:
            entries.append((next_id, flip(query, distance, rng)))
            next_id += 1
    rng.shuffle(entries)  # type: ignore[arg-type]
    half = len(entries) // 2
    index.add_many((entry_id, hex_of(code)) for entry_id, code in entries[:half])  # bulk: rebuilds
    for entry_id, code in entries[half:]:  # one by one: the buffer, and merges when it fills
        index.add(entry_id, hex_of(code))
    for entry_id, code in entries:
        reference.add(entry_id, code)
    return index, reference, queries


@pytest.mark.parametrize("layout", LAYOUTS)
def test_search_equals_brute_force(layout: str) -> None:
    rng = np.random.default_rng(1)
    index, reference, queries = build(rng, 4_000, delta_capacity=700, **LAYOUTS[layout])
    assert len(index) == len(reference.codes)
    for query in queries:
        for radius in RADII:
            found = index.search(hex_of(query), radius)
            assert found == reference.search(query, radius), (layout, radius)
            planted_within = sum(1 for d in PLANTED_DISTANCES if d <= radius)
            assert sum(1 for _, d in found if d in PLANTED_DISTANCES) >= planted_within
    for _ in range(100):  # random queries, mostly matching nothing
        query = random_codes(1, rng)[0]
        assert index.search(hex_of(query), 31) == reference.search(query, 31)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_planted_neighbours_are_found_at_their_distance(layout: str) -> None:
    rng = np.random.default_rng(2)
    index = HashIndex(**LAYOUTS[layout])
    query = random_codes(1, rng)[0]
    index.add_many((i, hex_of(code)) for i, code in enumerate(random_codes(2_000, rng)))
    index.add_many((10_000 + d, hex_of(flip(query, d, rng))) for d in PLANTED_DISTANCES)
    found = dict(index.search(hex_of(query), 31))
    for d in PLANTED_DISTANCES:
        assert (found.get(10_000 + d) == d) == (d <= 31)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_remove_and_re_add(layout: str) -> None:
    rng = np.random.default_rng(3)
    index, reference, queries = build(rng, 3_000, delta_capacity=500, **LAYOUTS[layout])
    ids = sorted(reference.codes)
    for entry_id in ids[::3]:
        assert index.remove(entry_id)
        del reference.codes[entry_id]
    assert not index.remove(ids[0])  # already gone
    assert not index.remove(-5)  # never there
    assert len(index) == len(reference.codes)
    assert ids[0] not in index and ids[1] in index
    for query in queries:
        assert index.search(hex_of(query), 48) == reference.search(query, 48)

    readded = ids[0]
    code = flip(queries[0], 3, rng)
    index.add(readded, hex_of(code))
    reference.add(readded, code)
    assert (readded, 3) in index.search(hex_of(queries[0]), 31)
    index.compact()
    for query in queries:
        assert index.search(hex_of(query), 48) == reference.search(query, 48)


def test_tombstones_are_compacted_away() -> None:
    rng = np.random.default_rng(4)
    index, reference, queries = build(rng, 12_000, **MULTI_INDEX)
    index.compact()
    before = index.nbytes
    for entry_id in sorted(reference.codes)[:5_000]:  # over a quarter: triggers a rebuild
        index.remove(entry_id)
        del reference.codes[entry_id]
    assert index.nbytes < before
    assert len(index) == len(reference.codes)
    for query in queries:
        assert index.search(hex_of(query), 64) == reference.search(query, 64)


def test_clustered_bank_falls_back_to_a_scan_and_stays_exact() -> None:
    """Hashes sharing most chunks overfill the probed buckets; the index must scan instead, exactly."""
    rng = np.random.default_rng(5)
    codes = np.zeros((3_000, 32), dtype=np.uint8)
    codes[:, :4] = rng.integers(0, 256, (3_000, 4), dtype=np.uint8)  # only 32 bits vary
    index, reference = HashIndex(**MULTI_INDEX), Reference()
    index.add_many((i, hex_of(code)) for i, code in enumerate(codes))
    for i, code in enumerate(codes):
        reference.add(i, code)
    for query in [np.zeros(32, dtype=np.uint8), codes[0], flip(codes[1], 20, rng)]:
        for radius in (8, 31, 48):
            assert index.search(hex_of(query), radius) == reference.search(query, radius)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_search_many_equals_search(layout: str) -> None:
    rng = np.random.default_rng(6)
    index, _, queries = build(rng, 2_000, delta_capacity=300, **LAYOUTS[layout])
    hexes = [hex_of(q) for q in queries] + [hex_of(c) for c in random_codes(20, rng)]
    assert index.search_many(hexes, 31) == [index.search(h, 31) for h in hexes]
    assert index.search_many([], 31) == []


def test_ties_are_ordered_by_entry_id() -> None:
    index = HashIndex()
    index.add_many([(9, "0" * 64), (2, "0" * 64), (5, "0" * 63 + "1"), (1, "0" * 63 + "3")])
    assert index.search("0" * 64, 31) == [(2, 0), (9, 0), (5, 1), (1, 2)]


def test_add_many_is_all_or_nothing() -> None:
    index = HashIndex()
    index.add(1, "a" * 64)
    with pytest.raises(ValueError, match="not a PDQ hash"):
        index.add_many([(2, "b" * 64), (3, "not hex")])
    with pytest.raises(ValueError, match="entry id 1 is already"):
        index.add_many([(4, "c" * 64), (1, "d" * 64)])
    with pytest.raises(ValueError, match="entry id 5 appears more than once"):
        index.add_many([(5, "c" * 64), (5, "d" * 64)])
    assert len(index) == 1
    assert index.search("b" * 64, 0) == [] and index.search("c" * 64, 0) == []


def test_bulk_presence_check_covers_buffer_and_segment() -> None:
    index = HashIndex(delta_capacity=1_000)
    index.add_many((i, f"{i:064x}") for i in range(2_000))  # into the segment
    index.add(5_000, "f" * 64)  # into the buffer
    for clash in (1_999, 5_000):
        with pytest.raises(ValueError, match=f"entry id {clash} is already"):
            index.add_many([(10_000 + i, f"{i:064x}") for i in range(100)] + [(clash, "e" * 64)])
    assert len(index) == 2_001


def test_invalid_arguments() -> None:
    index = HashIndex()
    index.add(1, "a" * 64)
    with pytest.raises(ValueError, match="max_distance"):
        index.search("a" * 64, -1)
    with pytest.raises(ValueError, match="max_distance"):
        index.search("a" * 64, 257)
    with pytest.raises(ValueError, match="not a PDQ hash"):
        index.search("a" * 63, 31)
    with pytest.raises(TypeError):
        index.add(True, "b" * 64)
    with pytest.raises(ValueError, match="64 bits"):
        index.add(1 << 63, "b" * 64)
    with pytest.raises(ValueError, match="tables"):
        HashIndex(tables=17)
    assert "x" not in index and True not in index


def test_memory_per_hash_of_a_multi_indexed_segment() -> None:
    n = 200_000
    index = HashIndex(flat_below=1)
    codes = random_codes(n, np.random.default_rng(7))
    text = codes.tobytes().hex()
    index.add_many((i, text[i * 64 : (i + 1) * 64]) for i in range(n))
    fixed = (16 * 65_536 + 1) * 4 + 1_024 * 41  # bucket offsets, and the empty add buffer
    assert (index.nbytes - fixed) / n <= 89


def test_concurrent_searches_while_adding_and_removing() -> None:
    """Readers must always see the stable entries, never crash, while a writer churns and rebuilds."""
    rng = np.random.default_rng(8)
    index = HashIndex(flat_below=1_000, delta_capacity=64)
    index.add_many((i, hex_of(code)) for i, code in enumerate(random_codes(5_000, rng)))
    targets = random_codes(8, rng)
    stable = {100_000 + i: flip(code, 9, rng) for i, code in enumerate(targets)}
    index.add_many((entry_id, hex_of(code)) for entry_id, code in stable.items())
    target_hex = [hex_of(t) for t in targets]
    stop = threading.Event()
    errors: list[BaseException] = []
    searches = [0]

    def reader() -> None:
        try:
            while not stop.is_set():
                for i, found in enumerate(index.search_many(target_hex, 31)):
                    assert (100_000 + i, 9) in found, found
                    # Anything else must be one of the writer's entries, each 5 bits from its target.
                    assert all(d == 5 and e >= 200_000 for e, d in found if e != 100_000 + i), found
                assert (100_003, 9) in index.search(target_hex[3], 31)
                searches[0] += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def writer() -> None:
        try:
            next_id = 200_000
            while not stop.is_set():
                batch = [(next_id + k, hex_of(flip(targets[k % 8], 5, rng))) for k in range(40)]
                index.add_many(batch[:20])
                for entry_id, value in batch[20:]:
                    index.add(entry_id, value)
                for entry_id, _ in batch[::2]:
                    assert index.remove(entry_id)
                next_id += 40
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)] + [threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors[0]
    assert searches[0] > 50
    for i, target in enumerate(target_hex):
        found = dict(index.search(target, 31))
        assert found[100_000 + i] == 9
        assert all(d <= 31 for d in found.values())
