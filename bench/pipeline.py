"""The whole default pipeline on a CPU: decode, PDQ hashes, bank match, nudity and apparent age.

    python bench/pipeline.py [--repeats 15] [--photos 80]

Per input (1024x768 and 4000x3000 JPEG photos, a 5 s 720p MP4, a 100-frame GIF): end-to-end
latency p50/p95 of one pipeline run, with the per-stage medians. Then sustained photos per second
through the in-process scanner (2 threads, the default) on distinct photos (no verdict cache), and
the process's peak RSS with every default model loaded. Per-detector figures: bench/detectors.py.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fediguard.config import load_settings
from fediguard.records import RecordStore
from fediguard.scanning.pipeline import make_pipeline_factory
from fediguard.scanning.service import ScanService
from media import gif, jpeg, mp4


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency(repeats: int) -> None:
    settings = load_settings(environ={})
    pipeline = make_pipeline_factory(settings)("bench")
    pipeline.warm_up()
    inputs = {
        "photo 1024x768 JPEG": jpeg(1024, 768),
        "photo 4000x3000 JPEG": jpeg(4000, 3000),
        "video 5 s 720p MP4 (150 frames)": mp4(150, 1280, 720),
        "GIF 100 frames 480x360": gif(100, 480, 360),
    }
    print(f"{'input':34} {'p50 ms':>8} {'p95 ms':>8}  stage medians (ms)")
    for name, data in inputs.items():
        sha = hashlib.sha256(data).hexdigest()
        pipeline.run(data, sha, None)
        times: list[float] = []
        stages: dict[str, list[float]] = {}
        for _ in range(repeats):
            started = time.perf_counter()
            outcome = pipeline.run(data, sha, None)
            times.append((time.perf_counter() - started) * 1000)
            assert outcome.error is None, outcome.error_detail
            for stage, seconds in outcome.timings.items():
                stages.setdefault(stage, []).append(seconds * 1000)
        detail = ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in stages.items())
        print(f"{name:34} {pct(times, 0.5):8.0f} {pct(times, 0.95):8.0f}  {detail}", flush=True)


def distinct_photos(count: int) -> list[bytes]:
    """Crops of a photo at different offsets, so no two uploads share bytes or PDQ hashes exactly."""
    from skimage import data

    base = Image.fromarray(np.asarray(data.astronaut())).resize((1536, 1152))
    photos = []
    for i in range(count):
        x, y = (i * 37) % 500, (i * 53) % 380
        buf = io.BytesIO()
        base.crop((x, y, x + 1024, y + 768)).save(buf, "JPEG", quality=88)
        photos.append(buf.getvalue())
    return photos


async def sustained(photos: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(environ={}, data_dir=Path(tmp), verdict_cache=False, queue_max=1000)
        records = RecordStore(settings.effective_database_url)
        service = ScanService(settings, records)
        await service.start()
        await service.screen(photos[0], "image/jpeg", client="bench", source="scan")
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(service.screen(p, "image/jpeg", client="bench", source="scan", deadline_s=600) for p in photos)
        )
        elapsed = time.perf_counter() - started
        verdicts = {o.decision.verdict.value for o in outcomes}
        rate = len(photos) / elapsed
        print(f"sustained: {len(photos)} distinct 1024x768 photos in {elapsed:.1f} s = {rate:.1f} photos/s")
        print(f"  ({settings.scanner_threads} scanner threads; verdicts: {sorted(verdicts)})")
        await service.stop()
        records.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--photos", type=int, default=80)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    latency(args.repeats)
    asyncio.run(sustained(distinct_photos(args.photos)))
    print(f"peak RSS, all default models loaded (2 scanner threads + 1 pipeline): {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
