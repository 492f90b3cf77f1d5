"""The whole default pipeline on a CPU: decode, PDQ hashes, bank match, nudity and apparent age.

    python bench/pipeline.py [--repeats 15] [--photos 80] [--inputs photo,large,video,gif] [--screening 0]

``--screening 0`` runs the age model on every frame (what an explicit frame costs) where the
``screening_threshold`` setting exists. Runs the fediguard found on PYTHONPATH, so two checkouts
compare side by side (docs/benchmarks.md).

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def overrides(screening: float | None) -> dict[str, Any]:
    """``screening_threshold`` when asked for and this fediguard has the setting."""
    from fediguard.config import Settings

    if screening is None or "screening_threshold" not in Settings.model_fields:
        return {}
    return {"screening_threshold": screening}


INPUTS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "photo": ("photo 1024x768 JPEG", lambda: jpeg(1024, 768)),
    "large": ("photo 4000x3000 JPEG", lambda: jpeg(4000, 3000)),
    "video": ("video 5 s 720p MP4 (150 frames)", lambda: mp4(150, 1280, 720)),
    "gif": ("GIF 100 frames 480x360", lambda: gif(100, 480, 360)),
}


def latency(repeats: int, keys: list[str], screening: float | None) -> None:
    settings = load_settings(environ={}, **overrides(screening))
    pipeline = make_pipeline_factory(settings)("bench")
    pipeline.warm_up()
    inputs = {INPUTS[key][0]: INPUTS[key][1]() for key in keys}
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


async def sustained(photos: list[bytes], screening: float | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            environ={}, data_dir=Path(tmp), verdict_cache=False, queue_max=1000, **overrides(screening)
        )
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
    parser.add_argument("--inputs", default=",".join(INPUTS), help=f"of {', '.join(INPUTS)}")
    parser.add_argument("--screening", type=float, help="screening_threshold (0: age on every frame)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
    latency(args.repeats, [k for k in args.inputs.split(",") if k], args.screening)
    asyncio.run(sustained(distinct_photos(args.photos), args.screening))
    print(f"peak RSS, all default models loaded (2 scanner threads + 1 pipeline): {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
