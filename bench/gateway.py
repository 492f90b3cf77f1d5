"""Gateway benchmark: end-to-end latency and overhead of the pict-rs validation path.

Starts the real gateway (`fediguard serve`) and, for the remote part, real worker processes, all
on loopback, and drives them with pict-rs-like clients (raw body, Content-Type, no auth header).

    python bench/gateway.py            # everything (~3 minutes on 2 cores)
    python bench/gateway.py --quick    # shorter runs
    python bench/gateway.py --only models   # the default models on a benign 1024x768 photo

The gateway runs the fediguard found on PYTHONPATH (so two checkouts can be compared side by side:
``PYTHONPATH=/tmp/prev/src python bench/gateway.py --only models``).

Load comes from wrk (`apt-get install wrk`) when installed, else from an httpx client in-process.

Overhead = end-to-end latency minus the detector's own time (a fixed 50 ms sleep), so it is what the
gateway, the queue, the records database and HTTP add. The load generator runs on the same machine
and competes for the same cores; the figures include that.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
SLEEP_S = 0.05
WORKER_KEYS = {f"bench{i}": f"bench-worker-key-{i:02d}-0123456789" for i in range(4)}


def sample_png() -> bytes:
    image = Image.new("RGB", (640, 480), (40, 90, 160))
    ImageDraw.Draw(image).ellipse((100, 80, 540, 400), fill=(230, 190, 60))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def process(cmd: list[str], env: dict[str, str]) -> Any:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


EXTRA: dict[str, str] = {}
"""Settings given with --set, applied to every gateway this benchmark starts."""


def base_env(data_dir: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDIGUARD_")}
    env.update(
        # The fediguard on PYTHONPATH when one is set (to compare two checkouts side by side),
        # else the checkout this script is in, not whatever fediguard is installed.
        PYTHONPATH=os.pathsep.join([os.environ.get("PYTHONPATH") or str(ROOT / "src"), str(TESTS)]),
        FEDIGUARD_DATA_DIR=data_dir,
        FEDIGUARD_LOG_LEVEL="WARNING",
        FG_TEST_SLEEP_S=str(SLEEP_S),
        FEDIGUARD_WORKER_KEYS=",".join(f"{n}:{k}" for n, k in WORKER_KEYS.items()),
        # Every request sends the same bytes: without these, all but the first would be answered
        # from the verdict cache, and PDQ hashing would add its own cost to the detector's.
        FEDIGUARD_VERDICT_CACHE="false",
        FEDIGUARD_BANKS="false",
    )
    env.update(extra)
    env.update(EXTRA)
    return env


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready")


WRK_SCRIPT = """
local f = io.open(os.getenv("FG_BODY"), "rb")
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = os.getenv("FG_TYPE")
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %.3f %.3f %.3f %.3f %d %d\\n", summary.requests,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    summary.duration / 1e6, summary.errors.status, summary.errors.timeout))
end
"""


def photo_jpeg() -> bytes:
    """A benign 1024x768 photo (scikit-image's astronaut, enlarged), JPEG q88."""
    from skimage import data

    image = Image.fromarray(data.astronaut()).resize((1024, 768))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=88)
    return buf.getvalue()


def has_setting(name: str) -> bool:
    from fediguard.config import Settings

    return name in Settings.model_fields


def models_gateway(args: argparse.Namespace, data: str) -> None:
    """The default detectors (nudity, age) with banks on and the verdict cache off, on a benign
    photo: what nearly all traffic costs. With screening forced off (``screening_threshold=0``,
    where the setting exists) the age model runs on the frame as it does on an explicit one."""
    print("== default models (nudity + age), benign 1024x768 JPEG, verdict cache off, banks on")
    body = photo_jpeg()
    cases = [("benign photo", {})]
    if has_setting("screening_threshold"):
        cases.append(("screening off (explicit-frame cost)", {"FEDIGUARD_SCREENING_THRESHOLD": "0"}))
    for name, extra in cases:
        port = free_port()
        env = base_env(data, FEDIGUARD_PORT=str(port), FEDIGUARD_BANKS="true", FEDIGUARD_QUEUE_MAX="1000",
                       FEDIGUARD_DETECTORS="nudity,age", **extra)  # fmt: skip
        env.pop("FG_TEST_SLEEP_S", None)
        url = f"http://127.0.0.1:{port}"
        with process([sys.executable, "-m", "fediguard", "serve"], env) as proc:
            wait_ready(url, timeout=120)
            for conc in (1, 4):
                c0 = cpu_seconds(proc.pid)
                result = measure(f"{url}/api/v1/scan/IPADDR", body, conc, args, "image/jpeg")
                cpu = 1000 * (cpu_seconds(proc.pid) - c0) / result.n
                report(f"{name}, {conc} concurrent", result, 0.0)
                print(
                    f"{'':44} gateway process CPU per upload (sandbox not counted): {cpu:.1f} ms",
                    flush=True,
                )


def measure(
    url: str, body: bytes, concurrency: int, args: argparse.Namespace, content_type: str = "image/png"
) -> Result:
    """Latency percentiles (ms) and throughput for ``concurrency`` pict-rs-like clients.

    Uses wrk (a C load generator, Debian package `wrk`) when installed, so the client does not
    steal the gateway's CPU; otherwise an httpx client in this process."""
    if shutil.which("wrk"):
        with tempfile.TemporaryDirectory() as tmp:
            script, payload = Path(tmp, "post.lua"), Path(tmp, "body.png")
            script.write_text(WRK_SCRIPT)
            payload.write_bytes(body)
            wrk = ["wrk", "-t1", f"-c{concurrency}", f"-d{args.seconds}s", "--timeout", "30s"]
            cmd = [*wrk, "-s", str(script), url]
            env = dict(os.environ, FG_BODY=str(payload), FG_TYPE=content_type)
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
        fields = next(line for line in out.splitlines() if line.startswith("RESULT")).split()
        n, p50, p95, p99, wall, bad, timeouts = (float(x) for x in fields[1:])
        if bad or timeouts:
            raise RuntimeError(f"{int(bad)} non-2xx answers, {int(timeouts)} timeouts")
        return Result(int(n), p50, p95, p99, n / wall, "wrk")
    total = max(args.requests, concurrency * 4)
    asyncio.run(drive(url, body, concurrency, min(concurrency, 8), content_type))
    lat, wall = asyncio.run(drive(url, body, concurrency, total, content_type))
    ms = [v * 1000 for v in lat]
    return Result(len(ms), pct(ms, 0.5), pct(ms, 0.95), pct(ms, 0.99), len(ms) / wall, "httpx")


@dataclass(frozen=True)
class Result:
    n: int
    p50: float
    p95: float
    p99: float
    rate: float
    client: str


async def drive(
    url: str, body: bytes, concurrency: int, total: int, content_type: str = "image/png"
) -> tuple[list[float], float]:
    """``total`` uploads from ``concurrency`` clients; returns latencies (s) and wall time."""
    latencies: list[float] = []
    remaining = total
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:

        async def client() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t = time.perf_counter()
                r = await http.post(url, content=body, headers={"Content-Type": content_type})
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise RuntimeError(f"unexpected {r.status_code}: {r.text[:200]}")

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(label: str, r: Result, detector_s: float) -> None:
    d = detector_s * 1000
    print(
        f"{label:<44} n={r.n:5d}  p50 {r.p50:7.1f}  p95 {r.p95:7.1f}  p99 {r.p99:7.1f} ms"
        f"  | overhead p50 {r.p50 - d:6.1f}  p99 {r.p99 - d:6.1f} ms  | {r.rate:6.1f}/s  ({r.client})",
        flush=True,
    )


def local_gateway(args: argparse.Namespace, body: bytes, data: str) -> None:
    print("== in-process scanner (fediguard serve)")
    for detector, detector_s in (("support.plugins:sleepy", SLEEP_S), ("hashlist", 0.0)):
        port = free_port()
        env = base_env(data, FEDIGUARD_DETECTORS=detector, FEDIGUARD_SCANNER_THREADS="64",
                       FEDIGUARD_QUEUE_MAX="1000", FEDIGUARD_PORT=str(port))  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        with process([sys.executable, "-m", "fediguard", "serve"], env) as proc:
            wait_ready(url)
            time.sleep(1)
            if detector == "hashlist":
                print(f"gateway RSS at idle, no ML models: {rss_mb(proc.pid):.0f} MB")
                c0 = cpu_seconds(proc.pid)
                time.sleep(args.idle_s)
                print(f"gateway idle CPU: {100 * (cpu_seconds(proc.pid) - c0) / args.idle_s:.2f} %")
            for conc in (1, 4, 16, 64):
                name = "50 ms sleep" if detector_s else "hashlist (cheapest real)"
                report(
                    f"{name}, {conc} concurrent",
                    measure(f"{url}/api/v1/scan/IPADDR", body, conc, args),
                    detector_s,
                )


def remote_workers(args: argparse.Namespace, body: bytes, data: str) -> None:
    print("== remote workers (fediguard serve --no-local-scanner + fediguard worker)")
    plugin = "support.plugins:sleepy"
    for n_workers, concurrency_per_worker, loads in (
        (1, 64, (1, 16, 64)),
        (1, 1, (16,)),
        (2, 1, (16,)),
        (4, 1, (16,)),
    ):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = base_env(data, FEDIGUARD_DETECTORS=plugin, FEDIGUARD_QUEUE_MAX="1000", FEDIGUARD_PORT=str(port),
                       FEDIGUARD_LOCAL_SCANNER="false")  # fmt: skip
        with process([sys.executable, "-m", "fediguard", "serve"], env) as gw:
            wait_ready_http(url)
            names = list(WORKER_KEYS)[:n_workers]
            procs = []
            try:
                for name in names:
                    wenv = dict(env, FEDIGUARD_WORKER_KEY=WORKER_KEYS[name],
                                FEDIGUARD_WORKER_CONCURRENCY=str(concurrency_per_worker))  # fmt: skip
                    procs.append(subprocess.Popen(
                        [sys.executable, "-m", "fediguard", "worker", "--server", url], env=wenv,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
                wait_ready(url)
                deadline = time.monotonic() + 60
                while len([s for s in httpx.get(f"{url}/api/v1/workers").json()["scanners"]]) < n_workers:
                    if time.monotonic() > deadline:
                        raise RuntimeError("workers did not connect")
                    time.sleep(0.1)
                if n_workers == 1 and concurrency_per_worker == 1:
                    time.sleep(1)
                    g0, w0 = cpu_seconds(gw.pid), cpu_seconds(procs[0].pid)
                    time.sleep(args.idle_s)
                    print(f"idle CPU: gateway {100 * (cpu_seconds(gw.pid) - g0) / args.idle_s:.2f} %, "
                          f"worker {100 * (cpu_seconds(procs[0].pid) - w0) / args.idle_s:.2f} %")  # fmt: skip
                for conc in loads:
                    g0, w0 = cpu_seconds(gw.pid), sum(cpu_seconds(p.pid) for p in procs)
                    result = measure(f"{url}/api/v1/scan/IPADDR", body, conc, args)
                    g1, w1 = cpu_seconds(gw.pid), sum(cpu_seconds(p.pid) for p in procs)
                    report(f"{n_workers} worker(s) x {concurrency_per_worker} slot(s), {conc} concurrent",
                           result, SLEEP_S)  # fmt: skip
                    # Where the cores go: on 2 shared cores, CPU per upload caps the throughput.
                    print(f"{'':44} CPU per upload: gateway {1000 * (g1 - g0) / result.n:.1f} ms, "
                          f"worker(s) {1000 * (w1 - w0) / result.n:.1f} ms")  # fmt: skip
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.wait(15)


def wait_ready_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/healthz", timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not start")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["local", "remote", "models"])
    parser.add_argument("--requests", type=int, help="uploads per measurement (httpx client)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE",
        help="an extra setting for the gateway, e.g. --set decode_sandbox=false",
    )  # fmt: skip
    args = parser.parse_args()
    EXTRA.update(
        (f"FEDIGUARD_{name.strip().upper()}", value)
        for name, _, value in (item.partition("=") for item in args.set)
    )
    args.requests = args.requests or (100 if args.quick else 400)
    args.seconds = 4 if args.quick else 10
    args.idle_s = 3.0 if args.quick else 10.0
    body = sample_png()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, body {len(body)} bytes PNG")
    with tempfile.TemporaryDirectory(prefix="fediguard-bench-") as data:
        if args.only in (None, "local"):
            local_gateway(args, body, data)
        if args.only in (None, "remote"):
            remote_workers(args, body, data)
        if args.only in (None, "models"):
            models_gateway(args, data)


if __name__ == "__main__":
    main()
