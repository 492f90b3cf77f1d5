"""Sweep throughput and memory: 10,000 small images from a local folder and from a real S3 server
(Ceph radosgw on loopback), scanned in-process by a detector of fixed cost (a 50 ms sleep).

    python bench/sweep.py [--count 10000] [--threads 8] [--concurrency 8] [--no-s3]

Prints objects/s against the detector's own limit (threads / 0.05 s), the process RSS after 1,000
objects and at the end (flat memory means the listing is streamed), and the peak RSS (VmHWM) of
the sweep, which also catches a spike between those two samples. Listing-only speed is
measured by bench/sweep_listing.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fediguard.config import load_settings  # noqa: E402
from fediguard.records import RecordStore  # noqa: E402
from fediguard.scanning.service import ScanService  # noqa: E402
from fediguard.storage import get_layout, open_source  # noqa: E402
from fediguard.sweeper.judges import Judgement  # noqa: E402
from fediguard.sweeper.progress import Progress, SweepStats  # noqa: E402
from fediguard.sweeper.run import Sweeper, SweepOptions  # noqa: E402
from fediguard.sweeper.state import SweepState  # noqa: E402

SLEEP_S = 0.05


def rss_mb(field: str = "VmRSS") -> float:
    """The process's resident memory in MB: now (VmRSS) or its peak so far (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    """Start VmHWM afresh, so each sweep's peak is its own (Linux 4.0+; ignored elsewhere)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def image(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (i % 256, i // 256 % 256, 77)).save(buf, "PNG")
    return buf.getvalue()


class _Judge:
    def __init__(self, service: ScanService) -> None:
        self.service = service

    async def judge(self, data: bytes, key: str) -> Judgement:
        outcome = await self.service.screen(data, None, client="bench", source="sweep", deadline_s=300)
        return Judgement(outcome.decision.verdict.value, outcome.record_id, outcome.sha256)


async def sweep(url: str, options: dict[str, Any], args: argparse.Namespace, data_dir: Path) -> None:
    os.environ["FG_TEST_SLEEP_S"] = str(SLEEP_S)
    settings = load_settings(
        environ={}, data_dir=data_dir, detectors=["support.plugins:sleepy"], scanner_threads=args.threads,
        queue_max=1000, banks=False, verdict_cache=False, log_level="WARNING",
    )  # fmt: skip
    records = RecordStore(settings.effective_database_url)
    service = ScanService(settings, records)
    await service.start()
    source = open_source(url, **options)
    state = SweepState(records.engine)
    source_id = state.source_id(source.url, {})
    stats = SweepStats()
    options_ = SweepOptions(layout=get_layout("plain"), concurrency=args.concurrency)
    sweeper = Sweeper(source, source_id, state, _Judge(service), options_, Progress(stats, log_every=1e9))
    rss_at_1000: list[float] = []

    async def watch() -> None:
        while True:
            if not rss_at_1000 and stats.scanned >= 1000:
                rss_at_1000.append(rss_mb())
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    reset_peak_rss()
    started = time.perf_counter()
    await sweeper.run()
    elapsed = time.perf_counter() - started
    watcher.cancel()
    limit = args.threads / SLEEP_S
    rate = stats.scanned / elapsed
    early = rss_at_1000[0] if rss_at_1000 else float("nan")
    print(
        f"{url.split(':')[0]:5} {stats.scanned:6d} objects in {elapsed:6.1f} s: {rate:6.1f}/s "
        f"(detector limit {limit:.0f}/s, {100 * rate / limit:5.1f} %)  "
        f"RSS after 1,000: {early:.0f} MB, at end: {rss_mb():.0f} MB, peak: {rss_mb('VmHWM'):.0f} MB",
        flush=True,
    )
    await source.close()
    await service.stop()
    records.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=8, help="in-process scanner threads")
    parser.add_argument("--concurrency", type=int, default=16, help="objects read at once (2x threads)")
    parser.add_argument("--no-s3", action="store_true")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; {args.count} PNGs of 32x32; detector: {SLEEP_S * 1000:.0f} ms sleep; "
          f"{args.threads} scanner threads; {args.concurrency} concurrent reads")  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="fediguard-bench-sweep-"))
    try:
        folder = work / "files"
        for i in range(args.count):
            sub = folder / f"{i // 100:03d}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"{i:06d}.png").write_bytes(image(i))
        asyncio.run(sweep(f"file://{folder}", {}, args, work / "data-local"))
        if not args.no_s3:
            from servers import radosgw

            if radosgw.missing_binaries():
                print("S3: radosgw is not installed (bash .ci/install-services.sh)")
                return
            server = radosgw.start()
            try:
                import boto3
                from botocore.config import Config

                s3 = boto3.client(
                    "s3", endpoint_url=server.endpoint_url, region_name=server.region,
                    aws_access_key_id=server.access_key, aws_secret_access_key=server.secret_key,
                    config=Config(s3={"addressing_style": "path"}, max_pool_connections=32),
                )  # fmt: skip
                s3.create_bucket(Bucket="bench")
                with ThreadPoolExecutor(16) as pool:
                    list(pool.map(lambda i: s3.put_object(Bucket="bench", Key=f"{i // 100:03d}/{i:06d}.png",
                                                          Body=image(i)), range(args.count)))  # fmt: skip
                os.environ.update(
                    AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key
                )
                options = {"endpoint_url": server.endpoint_url, "region": server.region}
                asyncio.run(sweep("s3://bench/", options, args, work / "data-s3"))
            finally:
                server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
