"""Benchmark of the review desk: the queue page with 100 000 decisions, and the blurred greyscale
thumbnail of a 1024x768 JPEG.

Run: ``python bench/desk.py``. Targets (issue 16): queue page p95 server time ≤ 100 ms; thumbnail
(decode + blur + greyscale) ≤ 30 ms p95. A real desk (uvicorn, real sockets, SQLite) on loopback,
timed from the client, so each figure includes the HTTP round trip. Benign images only.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fediguard.desk.thumbs import THUMB_DECODE_SIDE, thumbnail
from fediguard.media.decode import decode
from fediguard.media.sandbox import DecoderPool
from fediguard.records import NewDecision, RecordStore
from fediguard.scanning.pipeline import media_limits, sandbox_limits
from support.desk import add_account, start_desk
from support.gateway import make_settings

REASON = "frame 0: porn 0.91; face apparent age 30 ± 4"
LABELS = [("csam_suspect",), ("denylisted",), ("nsfw",), ("review",), ()]


def _ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1e3, q))


def fill(store: RecordStore, total: int, flagged_share: float) -> None:
    rng = random.Random(16)
    batch = []
    for i in range(total):
        flagged = rng.random() < flagged_share
        labels = rng.choice(LABELS[:4]) if flagged else ()
        verdict = "reject" if labels in (("csam_suspect",), ("denylisted",)) else "pass"
        if flagged and rng.random() < 0.1:
            labels, verdict = (), "unscanned"
        batch.append(NewDecision(
            source=rng.choice(("gateway", "gateway", "sweep")), client=f"client{rng.randrange(20)}",
            media_type="image/jpeg", size=rng.randrange(10_000, 4_000_000), sha256=f"{i:064x}",
            verdict=verdict, labels=labels, reasons=(REASON,) if labels else (),
            results=[{"detector": "nudity", "version": "3", "scores": {"explicit": 0.91}, "frames": []}],
            pdq=[{"frame": 0, "hash": "ab" * 32, "quality": 100}], timings={"total": 0.05},
        ))  # fmt: skip
        if len(batch) == 5000:
            store.add_many(batch)
            batch = []
    if batch:
        store.add_many(batch)


def bench_queue(total: int, requests: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = make_settings(Path(folder), log_level="WARNING", decode_sandbox=False)
        store = RecordStore(settings.effective_database_url)
        t = time.perf_counter()
        fill(store, total, 0.1)
        print(f"filled {total} decisions in {time.perf_counter() - t:.1f} s")
        add_account(store, "bench", "admin")
        desk = start_desk(settings, store)
        try:
            http = desk.sign_in("bench")
            rng = random.Random(1)
            cases = {
                "first page": lambda: "/",
                "deep page (random before=)": lambda: f"/?before={rng.randrange(total // 100, total)}",
                "label=csam_suspect": lambda: "/?label=csam_suspect",
                "label=unscanned, deep": lambda: (
                    f"/?label=unscanned&before={rng.randrange(total // 100, total)}"
                ),
                "client=client7, last 24 h": lambda: "/?client=client7&hours=24",
                "state=all": lambda: "/?state=all",
            }
            worst = {"client matching nothing (full scan)": lambda: "/?client=nobody"}
            everything: list[float] = []
            for name, url in cases.items():
                for _ in range(5):
                    assert http.get(url()).status_code == 200
                samples = []
                for _ in range(requests):
                    start = time.perf_counter()
                    answer = http.get(url())
                    samples.append(time.perf_counter() - start)
                    assert answer.status_code == 200
                everything += samples
                print(f"queue {name:<28} p50 {_ms(samples, 50):6.1f} ms  p95 {_ms(samples, 95):6.1f} ms")
            p50, p95 = _ms(everything, 50), _ms(everything, 95)
            print(f"queue all cases               p50 {p50:6.1f} ms  p95 {p95:6.1f} ms")
            for name, url in worst.items():
                samples = []
                for _ in range(max(5, requests // 5)):
                    start = time.perf_counter()
                    assert http.get(url()).status_code == 200
                    samples.append(time.perf_counter() - start)
                print(f"worst case: {name} p50 {_ms(samples, 50):6.1f} ms  p95 {_ms(samples, 95):6.1f} ms")
        finally:
            desk.stop()
            store.close()


def bench_thumbnail(rounds: int) -> None:
    photo = Image.fromarray(skimage.data.astronaut()).resize((1024, 768))
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    with tempfile.TemporaryDirectory() as folder:
        settings = make_settings(Path(folder))
    limits = replace(media_limits(settings), max_frame_side=THUMB_DECODE_SIDE)  # as the desk decodes
    with DecoderPool(1, sandbox_limits(settings)) as pool:
        for label, decoder in (("in process", lambda: decode(data, limits=limits)),
                               ("decoder sandbox", lambda: pool.decode(data, limits=limits))):  # fmt: skip
            for _ in range(5):
                thumbnail(decoder(), 16)
            samples, cpu, blur_only = [], [], []
            for _ in range(rounds):
                start, start_cpu = time.perf_counter(), time.thread_time()
                media = decoder()
                mid = time.perf_counter()
                thumbnail(media, 16)
                end = time.perf_counter()
                samples.append(end - start)
                cpu.append(time.thread_time() - start_cpu)
                blur_only.append(end - mid)
            print(
                f"thumbnail 1024x768 JPEG, decode {label:<16} wall p50 {_ms(samples, 50):5.1f} ms  "
                f"p95 {_ms(samples, 95):5.1f} ms; this thread's CPU p95 {_ms(cpu, 95):5.1f} ms; "
                f"blur+grey+encode alone p95 {_ms(blur_only, 95):4.1f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=100, help="per queue case")
    parser.add_argument("--rounds", type=int, default=200, help="thumbnails per decoder")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} (2 cores)")
    bench_thumbnail(args.rounds)
    bench_queue(args.decisions, args.requests)


if __name__ == "__main__":
    main()
