"""Latency, throughput and memory of the CPU detectors (NudeNet nudity, CenterFace + age).

Answers "threads or processes for ONNX on 2 cores" by timing the same work three ways:
(a) one thread, one instance per detector, intra_op_num_threads=2;
(b) two threads, each with its own instances, intra_op_num_threads=1;
(c) a ProcessPoolExecutor of two processes, each with its own instances, intra_op_num_threads=1.

Run: ``python bench/detectors.py [--images 80] [--repeats 30]``. The photo is scikit-image's
astronaut resized with Pillow; like the decoder, frames handed to detectors have a long side ≤ 1280.
Other load on the machine skews absolute figures: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from fediguard.detectors.age import AgeDetector
from fediguard.detectors.base import Detector, Subject
from fediguard.detectors.nudity import NudityDetector
from fediguard.media.frames import DecodedMedia, Frame

RGB = npt.NDArray[np.uint8]
MAX_SIDE = 1280
KINDS: dict[str, tuple[Callable[..., Detector], ...]] = {
    "nudity": (NudityDetector,),
    "age": (AgeDetector,),
    "both": (NudityDetector, AgeDetector),
}


def photo(width: int, height: int) -> RGB:
    from skimage import data

    astronaut = np.asarray(data.astronaut())  # type: ignore[no-untyped-call]
    return np.asarray(Image.fromarray(astronaut).resize((width, height), Image.Resampling.LANCZOS))


def as_frame(image: RGB) -> tuple[RGB, float]:
    """The frame a detector gets (long side ≤ 1280, as the decoder shrinks it) and the shrink time."""
    started = time.perf_counter()
    height, width = image.shape[:2]
    scale = min(1.0, MAX_SIDE / max(height, width))
    if scale < 1.0:
        size = (round(width * scale), round(height * scale))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    return np.ascontiguousarray(image), time.perf_counter() - started


def subject(frame: RGB) -> Subject:
    media = DecodedMedia("image/png", frame.shape[1], frame.shape[0], [Frame(0, frame)])
    return Subject(b"", "bench", "image/png", lambda: media)


def build(kind: str, threads: int) -> list[Detector]:
    detectors = [make(threads=threads) for make in KINDS[kind]]
    for d in detectors:
        d.warm_up()
    return detectors


def scan(detectors: Sequence[Detector], frame: RGB) -> None:
    s = subject(frame)
    for d in detectors:
        d.detect(s)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# ---------------------------------------------------------------------------------------- latency


def latency(frames: dict[str, RGB], repeats: int) -> None:
    print(f"\nLatency per upload, one frame, {repeats} runs after 3 warm runs (ms; p50 / p95)")
    for threads in (1, 2):
        for kind in ("nudity", "age", "both"):
            detectors = build(kind, threads)
            cells = []
            for frame in frames.values():
                for _ in range(3):
                    scan(detectors, frame)
                times = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    scan(detectors, frame)
                    times.append((time.perf_counter() - started) * 1000)
                cells.append(f"{percentile(times, 50):6.1f} / {percentile(times, 95):6.1f}")
            row = "   ".join(f"{n}: {c}" for n, c in zip(frames, cells, strict=True))
            print(f"  intra={threads} {kind:<7} {row}")


# ------------------------------------------------------------------------------------- throughput


def one_thread(kind: str, frame: RGB, images: int) -> float:
    detectors = build(kind, threads=2)
    started = time.perf_counter()
    for _ in range(images):
        scan(detectors, frame)
    return images / (time.perf_counter() - started)


def two_threads(kind: str, frame: RGB, images: int) -> float:
    ready = threading.Barrier(3)
    done = threading.Barrier(3)

    def worker(count: int) -> None:
        detectors = build(kind, threads=1)  # own instances per thread, as the scanner does
        ready.wait()
        for _ in range(count):
            scan(detectors, frame)
        done.wait()

    workers = [threading.Thread(target=worker, args=(n,)) for n in (images // 2, images - images // 2)]
    for w in workers:
        w.start()
    ready.wait()
    started = time.perf_counter()
    done.wait()
    elapsed = time.perf_counter() - started
    for w in workers:
        w.join()
    return images / elapsed


_process_detectors: list[Detector] = []
_process_barrier: Any = None


def _process_init(kind: str, barrier: Any) -> None:
    global _process_barrier
    _process_barrier = barrier
    _process_detectors.extend(build(kind, threads=1))


def _process_scan(frame: RGB) -> None:
    scan(_process_detectors, frame)


def _process_warm(frame: RGB) -> None:
    scan(_process_detectors, frame)
    # Each worker blocks here until the other arrives, so each takes exactly one warm-up task and
    # both have loaded their models before the clock starts.
    assert _process_barrier is not None
    _process_barrier.wait(timeout=120)


def two_processes(kind: str, frame: RGB, images: int) -> float:
    # spawn, not fork: forking a parent that has onnxruntime thread pools is unsafe.
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    pool = ProcessPoolExecutor(2, mp_context=context, initializer=_process_init, initargs=(kind, barrier))
    with pool:
        list(pool.map(_process_warm, [frame] * 2))
        started = time.perf_counter()
        # The frame is pickled to the worker each time, as an upload's bytes would be sent.
        list(pool.map(_process_scan, [frame] * images))
        return images / (time.perf_counter() - started)


def throughput(frame: RGB, images: int, rounds: int) -> None:
    print(
        f"\nThroughput, {images} uploads of one {frame.shape[1]}x{frame.shape[0]} frame (images/s; "
        f"median [min-max] of {rounds} interleaved rounds)"
    )
    ways = (
        ("(a) 1 thread intra=2", one_thread),
        ("(b) 2 threads intra=1", two_threads),
        ("(c) 2 processes intra=1", two_processes),
    )
    print(f"  {'':<7}" + "".join(f"{name:>26}" for name, _ in ways))
    for kind in ("nudity", "age", "both"):
        # Interleaved, so a burst of other load on the machine hits every way alike.
        runs: list[list[float]] = [[] for _ in ways]
        for _ in range(rounds):
            for i, (_, way) in enumerate(ways):
                runs[i].append(way(kind, frame, images))
        cells = [f"{statistics.median(r):.1f} [{min(r):.1f}-{max(r):.1f}]" for r in runs]
        print(f"  {kind:<7}" + "".join(f"{c:>26}" for c in cells))


# ----------------------------------------------------------------------------------------- memory


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    return float("nan")


def _rss_probe(frame: RGB) -> tuple[float, float, float]:
    """(MB after imports, MB after loading both detectors and scanning once, peak MB) in a fresh process.

    Peak is VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec, so a spawned child
    would report its parent's peak."""
    before = _status_mb("VmRSS")
    detectors = build("both", threads=1)
    scan(detectors, frame)
    return before, _status_mb("VmRSS"), _status_mb("VmHWM")


def memory(frame: RGB) -> None:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        before, after, peak = pool.submit(_rss_probe, frame).result()
    print(
        f"\nMemory, one process: {before:.0f} MB after imports, {after:.0f} MB with both detectors "
        f"loaded and one scan done (+{after - before:.0f} MB), peak RSS {peak:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--images", type=int, default=80, help="uploads per throughput run")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per latency cell")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per way")
    args = parser.parse_args()

    small, _ = as_frame(photo(1024, 768))
    large, shrink = as_frame(photo(4000, 3000))
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}")
    print(
        f"photos: 1024x768 as is; 4000x3000 shrunk to {large.shape[1]}x{large.shape[0]} "
        f"by the decoder's rule ({shrink * 1000:.0f} ms with Pillow, not counted below)"
    )
    latency({"1024x768": small, "4000x3000": large}, args.repeats)
    throughput(small, args.images, args.rounds)
    memory(small)
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
