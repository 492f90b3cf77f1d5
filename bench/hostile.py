"""Hostile uploads: how fast each decompression bomb is answered, and what it costs in memory.

For every bomb of tests/support/bombs.py (flat colours, built in memory, never written to disk):
the time to answer and the peak extra RSS of this process plus its decoder children (read from
/proc every 2 ms), when decoded

- ``in-process``: :func:`fediguard.media.decode.decode` in this process, header checks on;
- ``sandbox``: through a :class:`~fediguard.media.sandbox.DecoderPool` with the default settings
  (1536 MB, 8 s CPU, 12 s wall), header checks on: what ``fediguard serve`` does;
- ``sandbox, no header checks``: the same pool, with the animation budget and pixel limit lifted and
  the container checks off in the child, so the OS limits alone must stop the bomb (what a bomb the
  header checks do not foresee meets);
- ``unprotected`` (``--unprotected``, minutes): no header checks and no sandbox, each bomb in a fresh
  process killed after ``--unprotected-timeout`` seconds: what the bombs cost before.

Then the p50 of decoding a 1024x768 JPEG in-process and through the sandbox (interleaved, so both
meet the same load), the sandbox's round trip alone (a child that returns one 1024x768 frame without
decoding), the pool's start time and a further child's. The in-process figure depends on this
process's malloc state (fresh pages fault in for each decode; the children keep freed memory, see
fediguard.media.sandbox), so it is lower after the bombs have grown the heap.

With ``--gateway``, then the same bombs through a real gateway (bench/hostile_gateway.py): each
one's time to answer and the peak extra RSS of the gateway with its decoder children, the latency of
a benign upload posted beside it and beside 4 of it, and the p50 latency a normal photo gains from
decoding out of process, end to end; ``--gateway-only`` skips the rest.

Run: ``python bench/hostile.py [--repeats 200] [--unprotected] [--gateway | --gateway-only]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import multiprocessing
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fediguard.errors import MediaError
from fediguard.media import video
from fediguard.media.decode import DEFAULT_LIMITS, MediaLimits, decode
from fediguard.media.frames import DecodedMedia, Frame
from fediguard.media.sandbox import DecoderPool, SandboxLimits
from support import bombs

HUGE = (3840, 3840)
NO_HEADER_LIMITS = MediaLimits(max_composited_pixels=10**13, max_pixels=10**9, max_frames=10**9)

BOMBS: dict[str, Callable[[], bytes]] = {
    "webp 100 x 3840²": lambda: bombs.webp_animation(100, HUGE),
    "webp 900 x 3840²": lambda: bombs.webp_animation(900, HUGE),
    "apng 100 x 3840²": lambda: bombs.apng(100, HUGE),
    "gif 100 x 3840²": lambda: bombs.gif(100, HUGE),
    "avif 20 x 3840²": lambda: bombs.avif_animation(20, HUGE),
    "png declaring 100000²": lambda: bombs.png_declaring(100_000, 100_000),
    "jpeg declaring 65000²": lambda: bombs.jpeg_declaring(65_000, 65_000),
    "mp4 89 M samples (stsz+stts)": lambda: bombs.mp4_declaring_samples(89_000_000),
    "mp4 89 M samples (stsz)": lambda: bombs.mp4_declaring_samples(89_000_000, tables=("stsz",)),
    "mp4 60000² sample entry": lambda: bombs.mp4_declaring_size(60_000, 60_000),
    "webm 60000 px wide": lambda: bombs.webm_declaring_size(60_000),
}


def decode_without_header_checks(
    data: bytes, *, declared_type: str | None = None, limits: MediaLimits = DEFAULT_LIMITS
) -> DecodedMedia:
    """decode() with the container checks off (run in a decoder child: the patch stays there)."""
    video.check_iso_bmff = video.check_matroska = lambda *args: None  # type: ignore[assignment]
    return decode(data, declared_type=declared_type, limits=NO_HEADER_LIMITS)


_FRAME_1024x768 = np.full((768, 1024, 3), 128, dtype=np.uint8)


def one_fixed_frame(
    data: bytes, *, declared_type: str | None = None, limits: MediaLimits = DEFAULT_LIMITS
) -> DecodedMedia:
    """No decoding: one 1024x768 frame, to time the sandbox's round trip alone."""
    return DecodedMedia("image/jpeg", 1024, 768, [Frame(0, _FRAME_1024x768)], frame_count=1)


def timed_decode(
    data: bytes, *, declared_type: str | None = None, limits: MediaLimits = DEFAULT_LIMITS
) -> DecodedMedia:
    """decode(), its own duration in the first frame's time_s (to split a sandbox's time)."""
    started = time.perf_counter()
    media = decode(data, declared_type=declared_type, limits=limits)
    first = dataclasses.replace(media.frames[0], time_s=time.perf_counter() - started)
    return dataclasses.replace(media, frames=[first, *media.frames[1:]])


# --- what answers an upload ----------------------------------------------------------------------


class Target(Protocol):
    name: str

    def answer(self, data: bytes) -> str:
        """Decode (or post) one upload; the outcome in a few words."""
        ...

    def pids(self) -> list[int]:
        """The processes whose memory counts: this one and its decoder children."""
        ...


class InProcess:
    name = "in-process"

    def answer(self, data: bytes) -> str:
        return _outcome(lambda: decode(data))

    def pids(self) -> list[int]:
        return [os.getpid()]


class Sandbox:
    def __init__(self, name: str, pool: DecoderPool) -> None:
        self.name, self.pool = name, pool

    def answer(self, data: bytes) -> str:
        return _outcome(lambda: self.pool.decode(data))

    def pids(self) -> list[int]:
        return [os.getpid(), *self.pool.pids]


def _outcome(call: Callable[[], DecodedMedia]) -> str:
    try:
        media = call()
    except MediaError as exc:
        return f"MediaError: {exc}"
    return f"decoded {len(media.frames)} frames"


# --- measuring -----------------------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass  # a child that just died
    return 0


class PeakRss:
    """The peak of the summed RSS of ``pids()`` above its value at the start, sampled every 2 ms."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self._stop = threading.Event()
        self.start = self.peak = 0

    def _total(self) -> int:
        return sum(rss_kb(pid) for pid in self._pids())

    def __enter__(self) -> PeakRss:
        self.start = self.peak = self._total()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._total())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def extra_mb(self) -> float:
        return max(0, self.peak - self.start) / 1024


def measure(target: Target, data: bytes) -> tuple[float, float, str]:
    with PeakRss(target.pids) as rss:
        started = time.perf_counter()
        outcome = target.answer(data)
        seconds = time.perf_counter() - started
    return seconds, rss.extra_mb, outcome


def _unprotected_child(data: bytes, results: Any) -> None:
    base = rss_kb(os.getpid())
    started = time.perf_counter()
    outcome = _outcome(lambda: decode_without_header_checks(data))
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    results.put((time.perf_counter() - started, (peak - base) / 1024, outcome))


def measure_unprotected(data: bytes, timeout_s: float) -> tuple[float, float, str]:
    """In a fresh process (so its memory cannot spoil the other figures), killed after ``timeout_s``."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_unprotected_child, args=(data, results))
    process.start()
    peak = 0
    deadline = time.monotonic() + timeout_s
    while process.is_alive() and time.monotonic() < deadline and results.empty():
        peak = max(peak, rss_kb(process.pid or 0))
        time.sleep(0.01)
    if results.empty():
        process.kill()
        process.join()
        return timeout_s, peak / 1024, f"still decoding after {timeout_s:g} s: killed"
    answer: tuple[float, float, str] = results.get()
    process.join()
    return answer


def jpeg_latency(pool: DecoderPool, repeats: int) -> None:
    """In blocks of 25, alternating paths: both meet the same load, and neither evicts the other's
    caches between two decodes."""
    buf = io.BytesIO()
    _astronaut((1024, 768)).save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    with (
        DecoderPool(1, pool.limits, decoder=timed_decode) as timed,
        DecoderPool(1, pool.limits, decoder=one_fixed_frame) as transport,
    ):
        paths: dict[str, Callable[[], Any]] = {
            "in-process": lambda: decode(jpeg),
            "sandbox": lambda: pool.decode(jpeg),
            "sandbox, timed in the child": lambda: timed.decode(jpeg),
            "round trip alone (no decoding)": lambda: transport.decode(jpeg),
        }
        times: dict[str, list[float]] = {name: [] for name in paths}
        inside: list[float] = []
        for _ in range(max(1, repeats // 25)):
            for name, call in paths.items():
                for _ in range(25):
                    started = time.perf_counter()
                    media = call()
                    times[name].append(time.perf_counter() - started)
                    if name == "sandbox, timed in the child":
                        inside.append(media.frames[0].time_s or 0.0)
    print(f"\n1024x768 JPEG ({len(jpeg) // 1024} KB), {len(times['sandbox'])} runs per path:")
    for name, values in times.items():
        print(f"  {name:31s} p50 {statistics.median(values) * 1000:6.2f} ms  p95 {_p95(values):6.2f} ms")
    print(f"  (decode() itself inside the child: p50 {statistics.median(inside) * 1000:.2f} ms)")
    added = statistics.median(times["sandbox"]) - statistics.median(times["in-process"])
    print(f"  sandbox - in-process          p50 {added * 1000:+6.2f} ms")


def _p95(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.95)] * 1000


def _astronaut(size: tuple[int, int]) -> Any:
    from PIL import Image
    from skimage import data as sample_data

    return Image.fromarray(sample_data.astronaut()).resize(size)  # type: ignore[no-untyped-call]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=200, help="JPEG decodes per path (default 200)")
    parser.add_argument("--unprotected", action="store_true", help="also decode every bomb unprotected")
    parser.add_argument("--unprotected-timeout", type=float, default=60.0)
    parser.add_argument("--only", help="only the bombs whose name contains this")
    parser.add_argument("--gateway", action="store_true", help="also post every bomb to a real gateway")
    parser.add_argument("--gateway-only", action="store_true", help="only post the bombs to a real gateway")
    args = parser.parse_args()
    if args.gateway or args.gateway_only:
        import hostile_gateway

        buf = io.BytesIO()
        _astronaut((1024, 768)).save(buf, "JPEG", quality=90)
        if args.gateway_only:
            hostile_gateway.run(BOMBS, buf.getvalue(), args.repeats, PeakRss, args.only)
            return

    limits = SandboxLimits()
    started = time.perf_counter()
    pool = DecoderPool(1, limits)
    pool.start()
    print(f"sandbox: {limits}; 1 child started in {time.perf_counter() - started:.2f} s (with forkserver)")
    unchecked = DecoderPool(1, limits, decoder=decode_without_header_checks)
    started = time.perf_counter()
    unchecked.start()
    print(f"a further child started in {(time.perf_counter() - started) * 1000:.0f} ms")
    targets: list[Target] = [
        InProcess(),
        Sandbox("sandbox", pool),
        Sandbox("sandbox, no header checks", unchecked),
    ]

    print(f"\n{'bomb':30s} {'bytes':>9s}  {'path':26s} {'answer s':>9s} {'extra RSS MB':>12s}  outcome")
    for name, build in BOMBS.items():
        if args.only and args.only not in name:
            continue
        data = build()
        rows = [(target.name, *measure(target, data)) for target in targets]
        if args.unprotected:
            rows.append(("unprotected", *measure_unprotected(data, args.unprotected_timeout)))
        for path, seconds, extra_mb, outcome in rows:
            print(f"{name:30s} {len(data):9,d}  {path:26s} {seconds:9.3f} {extra_mb:12.0f}  {outcome[:90]}")
            sys.stdout.flush()
    print(f"children replaced: {pool.replaced} (sandbox), {unchecked.replaced} (no header checks)")
    jpeg_latency(pool, args.repeats)
    pool.close()
    unchecked.close()
    if args.gateway:
        hostile_gateway.run(BOMBS, buf.getvalue(), args.repeats, PeakRss, args.only)


if __name__ == "__main__":
    main()
