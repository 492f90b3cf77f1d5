"""Benchmark of fediguard.banks: PDQ hashing time, match latency at 10k/100k/1M hashes, memory a million.

Run: ``python bench/banks.py`` (add ``--multihash`` to also time faiss IndexBinaryMultiHash at each
size, which needs ~335 MB a million). Targets: hash ≤ 20 ms; match ≤ 1 ms p99 at 1M; ≤ 100 MB a
million. Uses only benign scikit-image photos and random hashes; nothing is downloaded.

Issue 15: ``--sizes 1000000,10000000 --memory-sizes 1000000,10000000 --dihedral`` times matching and
memory at 10 M (target ≤ 2 ms p99, ≤ 1.5 GB; the 10 M run holds ~4 GB while it builds, run it once)
and what dihedral matching costs (8 hashes a frame: hashing and one query of 8); ``--feed 100000``
times a feed of 100 000 entries from one real gateway to a subscriber over loopback HTTP.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import faiss
import numpy as np
import pdqhash
import skimage.data
from PIL import Image

from fediguard.banks.index import HashIndex
from fediguard.banks.pdq import CROPS, HASH_LONG_SIDE, MATCH_DISTANCE, crop_variants, frame_hashes, pdq_hash
from fediguard.media.frames import Frame

SIZES = (10_000, 100_000, 1_000_000)
QUERIES = 2_000


def _percentiles(seconds: list[float], *qs: float) -> list[float]:
    return [float(np.percentile(np.array(seconds) * 1e3, q)) for q in qs]


def _time_each(fn: Callable[[int], object], n: int) -> list[float]:
    return _time_both(fn, n)[0]


def _time_both(fn: Callable[[int], object], n: int) -> tuple[list[float], list[float]]:
    """Wall-clock and this thread's CPU seconds per call.

    CPU time leaves out time spent descheduled, which on a shared 2-CPU machine is most of a wall-clock
    p99; both are printed so neither flatters.
    """
    wall, cpu = [], []
    for i in range(n):
        start, start_cpu = time.perf_counter(), time.thread_time()
        fn(i)
        cpu.append(time.thread_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return wall, cpu


def _photos_1024x768() -> dict[str, np.ndarray]:
    photos = {}
    for name in ("astronaut", "chelsea", "coffee", "camera", "rocket"):
        image = getattr(skimage.data, name)()
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        photos[name] = np.asarray(Image.fromarray(image).resize((1024, 768), Image.Resampling.LANCZOS))
    return photos


def bench_hashing(rounds: int) -> None:
    photos = _photos_1024x768()
    images = list(photos.values())
    for image in images:  # warm-up: first calls pay for page faults and lazy imports
        pdq_hash(image)
    shrunk, shrunk_cpu = _time_both(lambda i: pdq_hash(images[i % len(images)]), rounds * len(images))
    full, full_cpu = _time_both(lambda i: pdqhash.compute(images[i % len(images)]), rounds * len(images))
    crops, crops_cpu = _time_both(lambda i: crop_variants(images[i % len(images)]), len(images) * 2)
    frames = [Frame(0, image) for image in images]
    one, one_cpu = _time_both(lambda i: frame_hashes([frames[i % len(frames)]]), rounds * len(images))
    eight, eight_cpu = _time_both(
        lambda i: frame_hashes([frames[i % len(frames)]], dihedral=True), rounds * len(images)
    )
    print(f"PDQ hashing, 1024x768 benign photos (5 photos x {rounds} rounds); wall, then thread CPU")
    for label, wall, cpu in (
        (f"pdq_hash (shrink to {HASH_LONG_SIDE} px)", shrunk, shrunk_cpu),
        ("pdqhash at full size", full, full_cpu),
        ("frame_hashes (one view)", one, one_cpu),
        ("frame_hashes, dihedral (8)", eight, eight_cpu),
        (f"crop_variants ({len(CROPS)}, banks add)", crops, crops_cpu),
    ):
        print(
            "  {:28s} p50 {:.1f} ms  p95 {:.1f} ms   CPU p50 {:.1f} ms  p95 {:.1f} ms".format(
                label, *_percentiles(wall, 50, 95), *_percentiles(cpu, 50, 95)
            )
        )
    diffs = []
    for name, image in photos.items():
        bits, _ = pdqhash.compute(image)
        full_hex = np.packbits(bits.astype(np.uint8)).tobytes().hex()
        diffs.append((name, (int(full_hex, 16) ^ int(pdq_hash(image).hex, 16)).bit_count()))
    print("  bits between shrunk and full-size hash: " + ", ".join(f"{n} {d}" for n, d in diffs))


def _random_bank(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    text = codes.tobytes().hex()
    return codes, [text[i * 64 : (i + 1) * 64] for i in range(n)]


def _queries(codes: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Half unrelated random hashes, half bank hashes with 0-31 bits flipped (a match each)."""
    queries = []
    for i in range(QUERIES):
        if i % 2:
            queries.append(rng.integers(0, 256, 32, dtype=np.uint8))
        else:
            bits = np.unpackbits(codes[rng.integers(len(codes))])
            bits[rng.choice(256, rng.integers(0, MATCH_DISTANCE + 1), replace=False)] ^= 1
            queries.append(np.packbits(bits))
    return queries


def _row(
    method: str,
    n: int,
    p50: float | None,
    p99: float | None,
    cpu_p99: float | None = None,
    build: float | None = None,
) -> None:
    def cell(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    print(
        f"  {method:46s} {n:>9,} {cell(p50, '.3f'):>8} {cell(p99, '.3f'):>8} {cell(cpu_p99, '.3f'):>8}"
        f" {cell(build, '.2f'):>8}"
    )


def _latency(search: Callable[[int], object], passes: int) -> tuple[float, float, float]:
    """Wall p50/p99 and CPU p99 over the last of ``passes`` runs through the queries (the first warms up)."""
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(passes):
        wall, cpu = _time_both(search, QUERIES)
    p50, p99 = _percentiles(wall, 50, 99)
    return p50, p99, _percentiles(cpu, 99)[0]


def bench_dihedral(n: int, index: HashIndex, query_hex: list[str]) -> None:
    """One frame's query with dihedral matching on: its 8 hashes in one search_many."""
    rng = np.random.default_rng(3)
    eights = [[query_hex[i]] + [bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex() for _ in range(7)]
              for i in range(QUERIES)]  # fmt: skip
    _row("fediguard search_many of 8 (one dihedral frame)", n,
         *_latency(lambda i: index.search_many(eights[i], MATCH_DISTANCE), 2))  # fmt: skip


def bench_fediguard(
    n: int, codes: np.ndarray, query_hex: list[str], hexes: list[str], dihedral: bool = False
) -> None:
    start = time.perf_counter()
    index = HashIndex()
    index.add_many(zip(range(n), hexes, strict=True))
    build = time.perf_counter() - start
    first = _latency(lambda i: index.search(query_hex[i], MATCH_DISTANCE), 1)
    _row("fediguard HashIndex.search, first pass", n, *first, build=build)
    _row(
        "fediguard HashIndex.search, warm",
        n,
        *_latency(lambda i: index.search(query_hex[i], MATCH_DISTANCE), 2),
    )
    if dihedral:
        bench_dihedral(n, index, query_hex)
    batches = _time_each(lambda i: index.search_many(query_hex[i * 100 : (i + 1) * 100], MATCH_DISTANCE), 20)
    _row("fediguard search_many, per query (batch 100)", n, statistics.median(batches) * 1e3 / 100, None)
    added = _time_each(lambda i: index.add(n + i, query_hex[i]), 1_000)
    _row("fediguard HashIndex.add (to the buffer)", n, *_percentiles(added, 50, 99))
    removed = _time_each(lambda i: index.remove(i), 1_000)
    _row("fediguard HashIndex.remove (tombstone)", n, *_percentiles(removed, 50, 99))
    start = time.perf_counter()
    index.compact()
    _row("fediguard rebuild (compact)", n, None, None, build=time.perf_counter() - start)


def bench_faiss(n: int, codes: np.ndarray, queries: list[np.ndarray], multihash: bool) -> None:
    start = time.perf_counter()
    flat = faiss.IndexBinaryFlat(256)
    flat.add(codes)
    build = time.perf_counter() - start
    radius = MATCH_DISTANCE + 1  # faiss keeps distances strictly below the radius
    _row(
        "faiss IndexBinaryFlat.range_search",
        n,
        *_latency(lambda i: flat.range_search(queries[i][None, :], radius), 2),
        build=build,
    )
    if multihash:
        start = time.perf_counter()
        multi = faiss.IndexBinaryMultiHash(256, 16, 16)
        multi.nflip = 1
        multi.add(codes)
        build = time.perf_counter() - start
        _row(
            "faiss IndexBinaryMultiHash 16x16 nflip=1",
            n,
            *_latency(lambda i: multi.range_search(queries[i][None, :], radius), 2),
            build=build,
        )


def bench_matching(sizes: list[int], multihash: bool, dihedral: bool = False) -> None:
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(7)
    print(
        f"\nOne query at distance <= {MATCH_DISTANCE}, {QUERIES} queries: half near-duplicates, half random"
    )
    print(f"  {'method':46s} {'size':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU p99':>8} {'build s':>8}")
    for n in sizes:
        codes, hexes = _random_bank(n, rng)
        queries = _queries(codes, rng)
        bench_fediguard(n, codes, [bytes(q).hex() for q in queries], hexes, dihedral)
        if n <= 1_000_000:  # a flat scan of 10 M takes ~10 ms a query: not a contender
            bench_faiss(n, codes, queries, multihash)
        del codes, hexes, queries
        gc.collect()


def _rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _memory_child(n: int) -> None:
    """Runs in a fresh process so earlier benchmarks' allocations do not blur the figure."""
    _, hexes = _random_bank(n, np.random.default_rng(11))
    libc = ctypes.CDLL("libc.so.6")
    gc.collect()
    libc.malloc_trim(0)
    before = _rss_kib()
    index = HashIndex()
    index.add_many(zip(range(n), hexes, strict=True))
    peak = _rss_kib("VmHWM")
    gc.collect()
    libc.malloc_trim(0)  # hand back the build's freed temporaries so RSS shows what the index keeps
    after = _rss_kib()
    print(
        json.dumps(
            {
                "rss_delta_kib": after - before,
                "peak_delta_kib": peak - before,
                "nbytes": index.nbytes,
                "len": len(index),
            }
        )
    )


def bench_memory(n: int = 1_000_000) -> None:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(n)], check=True, capture_output=True, text=True
    ).stdout
    figures = json.loads(out)
    print(f"\nMemory for {n:,} PDQ hashes in a HashIndex (fresh process)")
    rss = figures["rss_delta_kib"] * 1024
    print(
        f"  RSS delta {rss / 1e6:.1f} MB ({rss / 2**20:.1f} MiB); arrays {figures['nbytes'] / 1e6:.1f} MB;"
        f" peak during build +{figures['peak_delta_kib'] * 1024 / 1e6:.1f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="hashing rounds over the 5 photos")
    parser.add_argument("--multihash", action="store_true", help="also time faiss IndexBinaryMultiHash")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="bank sizes, comma-separated")
    parser.add_argument("--skip-hashing", action="store_true", help="only time matching and memory")
    parser.add_argument("--memory-sizes", default="1000000", help="bank sizes whose memory is measured")
    parser.add_argument(
        "--dihedral", action="store_true", help="also time dihedral matching (8 hashes a frame)"
    )
    parser.add_argument(
        "--feed", type=int, default=0, help="time a feed of this many entries between gateways"
    )
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        _memory_child(args.memory_child)
        return
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"numpy {np.__version__}, faiss {faiss.__version__}, {os.cpu_count()} CPUs, load average {load}")
    if not args.skip_hashing:
        bench_hashing(args.rounds)
    if args.feed:
        from feeds import bench_feed  # bench/feeds.py: it starts real gateways

        bench_feed(args.feed)
        return
    bench_matching([int(n) for n in args.sizes.split(",")], args.multihash, args.dihedral)
    for n in args.memory_sizes.split(","):
        bench_memory(int(n))


if __name__ == "__main__":
    main()
