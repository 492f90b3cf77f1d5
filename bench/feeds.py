"""Feed sync benchmark (issue 15): N random PDQ entries in a deny bank on a real gateway A, published
as a feed; a subscriber with its own SQLite database polls it over loopback HTTP until it holds them
all. Prints the publisher's batching time, the subscriber's poll time and the bytes on the wire.

Run: ``python bench/banks.py --feed 100000`` (or ``python bench/feeds.py 100000``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fediguard.banks.feeds.publisher import Publisher
from fediguard.banks.feeds.signing import generate_key, load_key
from fediguard.banks.feeds.subscriber import Subscriptions
from fediguard.banks.formats import BankEntry
from fediguard.banks.store import BankStore
from fediguard.records import RecordStore
from support.gateway import make_settings, start_gateway


def bench_feed(n: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        settings = make_settings(root, data_dir=root / "a", detectors=["hashlist"], log_level="WARNING")
        gw = start_gateway(settings)
        try:
            public = generate_key(settings.effective_feed_key_file)
            codes = np.random.default_rng(5).integers(0, 256, (n, 32), dtype=np.uint8).tobytes().hex()
            banks = BankStore(gw.store.engine)
            banks.create("shared", "deny")
            started = time.perf_counter()
            banks.add(
                "shared", [BankEntry("pdq", codes[i * 64 : (i + 1) * 64]) for i in range(n)], "bench", "bench"
            )
            added_s = time.perf_counter() - started
            publisher = Publisher(gw.store.engine)
            token = publisher.create("shared", ["shared"], notes=False, public=False)
            started = time.perf_counter()
            batches = publisher.sync("shared", load_key(settings.effective_feed_key_file))
            publish_s = time.perf_counter() - started

            subscriber = RecordStore(f"sqlite:///{root / 'b.sqlite3'}")
            subs = Subscriptions(subscriber.engine)
            subscription = subs.create("a", f"{gw.url}/api/v1/feeds/shared", public, token, "deny")
            wire = {"bytes": 0, "requests": 0}

            def count(response: httpx.Response) -> None:
                response.read()
                wire["bytes"] += response.num_bytes_downloaded
                wire["requests"] += 1

            started = time.perf_counter()
            with httpx.Client(timeout=120, event_hooks={"response": [count]}) as client:
                result = subs.poll(subscription, client)
            poll_s = time.perf_counter() - started
            held = sum(1 for _ in BankStore(subscriber.engine).entries("feed.a"))
            subscriber.close()
        finally:
            gw.stop()
    assert result.error is None and held == n, (result, held)
    print(f"\nFeed of {n:,} PDQ entries, one gateway to one subscriber over loopback HTTP")
    print(f"  adding them to A's bank: {added_s:.1f} s; publishing ({batches} batches): {publish_s:.1f} s")
    print(
        f"  subscriber's first poll: {poll_s:.1f} s for {result.applied} batches, {wire['requests']} requests"
    )
    print(f"  on the wire: {wire['bytes'] / 1e6:.2f} MB gzipped ({wire['bytes'] / n:.1f} bytes an entry)")


if __name__ == "__main__":
    bench_feed(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
