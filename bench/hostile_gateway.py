"""Hostile uploads through a real gateway: ``python bench/hostile.py --gateway`` (see hostile.py).

A ``fediguard serve`` subprocess on a free loopback port with its defaults (2 scanner threads, 8 s
deadline, fail-closed, decoder sandbox on) but the ``hashlist`` detector (no models: the frames are
still decoded, for PDQ hashing and the banks) and no verdict cache (every post is decoded). For
every bomb: the time to answer it, the peak extra RSS of the gateway (its process plus its decoder
children, from /proc every 2 ms) over the whole measurement, the latency of a benign 1024x768 JPEG
posted at the same moment, and that of one posted beside 4 copies of the bomb at once. Then the
p50 latency of posting that JPEG to this gateway and to a second one with ``decode_sandbox=false``
(interleaved blocks of 25), whose difference is what decoding out of process costs a normal photo.
"""

from __future__ import annotations

import functools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

SRC = Path(__file__).resolve().parents[1] / "src"


class Gateway:
    """A ``fediguard serve`` subprocess; stopped (SIGTERM) by :meth:`close`."""

    def __init__(self, **settings: str) -> None:
        self.folder = tempfile.TemporaryDirectory(prefix="fediguard-bench-")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEDIGUARD_")}
        env |= {
            "PYTHONPATH": str(SRC),
            "FEDIGUARD_PORT": str(port),
            "FEDIGUARD_DATA_DIR": self.folder.name,
            "FEDIGUARD_DETECTORS": "hashlist",
            "FEDIGUARD_VERDICT_CACHE": "false",
            "FEDIGUARD_LOG_LEVEL": "ERROR",
            "FEDIGUARD_DESK": "false",  # two gateways at once would both bind the desk's port
        }
        env |= {f"FEDIGUARD_{k.upper()}": v for k, v in settings.items()}
        self.process = subprocess.Popen([sys.executable, "-m", "fediguard", "serve"], env=env)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.05)

    def post(self, data: bytes) -> tuple[float, httpx.Response]:
        started = time.perf_counter()
        with httpx.Client(timeout=60) as http:
            response = http.post(f"{self.url}/api/v1/scan/IPADDR", content=data)
        return time.perf_counter() - started, response

    def settle(self, timeout: float = 120) -> None:
        """Wait until nothing is queued and the gateway with its decoder children is idle (a bomb's
        decode may outlast its answer, in a slot written off as stuck, until the sandbox's limits end
        it), so one measurement does not spill into the next."""
        deadline = time.monotonic() + timeout
        before = _cpu_ticks(self.pids())
        while time.monotonic() < deadline:
            time.sleep(0.3)
            now = _cpu_ticks(self.pids())
            listing = httpx.get(f"{self.url}/api/v1/workers", timeout=30).json()
            if listing["queue_depth"] == 0 and now - before <= 3:
                return
            before = _cpu_ticks(self.pids())

    def pids(self) -> list[int]:
        """The gateway and every process under it (the forkserver, the decoder children)."""
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as children:
                        todo += [int(c) for c in children.read().split()]
            except OSError:
                pass  # gone meanwhile
        return found

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(60)
        self.folder.cleanup()


def _cpu_ticks(pids: list[int]) -> int:
    """User + system CPU time of the processes, in clock ticks."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def _at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls in threads released together; their results in order."""
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _outcome(response: httpx.Response) -> str:
    body = response.json()
    reason = (body.get("reasons") or ["-"])[0]
    return f"{response.status_code} {body.get('fail_reason') or body['verdict']}: {reason}"


def run(
    bombs: dict[str, Callable[[], bytes]], jpeg: bytes, repeats: int, peak_rss: Any, only: str | None
) -> None:
    """``peak_rss`` is hostile.py's PeakRss (a context manager over a pid list's summed RSS)."""
    gateway = Gateway()
    try:
        plain = Gateway(decode_sandbox="false")
    except BaseException:
        gateway.close()
        raise
    try:
        alone = [gateway.post(jpeg)[0] for _ in range(20)]
        normal = statistics.median(alone)
        print(f"\nthrough a gateway (pid {gateway.process.pid}): benign 1024x768 JPEG alone p50 "
              f"{normal * 1000:.1f} ms")  # fmt: skip
        # The same JPEG posted with 1 / 4 more of itself: what "beside" costs without any bomb.
        benign_post = functools.partial(gateway.post, jpeg)
        crowd = {
            n: statistics.median(_at_once([benign_post] * (n + 1))[-1][0] for _ in range(9)) for n in (1, 4)
        }
        print(f"benign beside 1 / 4 benign JPEGs: p50 {crowd[1] * 1000:.1f} / {crowd[4] * 1000:.1f} ms")
        print(f"{'bomb':30s} {'answer s':>8s} {'extra RSS MB':>12s} {'benign beside 1':>15s} "
              f"{'benign beside 4':>15s}  answer")  # fmt: skip
        for name, build in bombs.items():
            if only and only not in name:
                continue
            bomb = functools.partial(gateway.post, build())
            benign = functools.partial(gateway.post, jpeg)
            gateway.settle()
            with peak_rss(gateway.pids) as rss:
                seconds, response = bomb()
                gateway.settle()
                _, (beside_one, _) = _at_once([bomb, benign])
                gateway.settle()
                *_, (beside_four, _) = _at_once([bomb, bomb, bomb, bomb, benign])
                gateway.settle()
            print(f"{name:30s} {seconds:8.3f} {rss.extra_mb:12.0f} {beside_one * 1000:12.1f} ms "
                  f"{beside_four * 1000:12.1f} ms  {_outcome(response)[:80]}")  # fmt: skip
            sys.stdout.flush()
        times: dict[str, list[float]] = {"sandbox": [], "in-process": []}
        for _ in range(max(1, repeats // 25)):
            for name, target in (("sandbox", gateway), ("in-process", plain)):
                times[name] += [target.post(jpeg)[0] for _ in range(25)]
        print(f"\n1024x768 JPEG posted to a gateway, {len(times['sandbox'])} posts each, interleaved:")
        for name, values in times.items():
            print(f"  decode_sandbox {'on ' if name == 'sandbox' else 'off'}  p50 "
                  f"{statistics.median(values) * 1000:6.2f} ms")  # fmt: skip
        added = statistics.median(times["sandbox"]) - statistics.median(times["in-process"])
        print(f"  sandbox - in-process p50 {added * 1000:+6.2f} ms")
    finally:
        gateway.close()
        plain.close()
