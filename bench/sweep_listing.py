"""Listing speed of the sweeper's storage sources (objects/s), on this machine, loopback only.

    python bench/sweep_listing.py [--count 10000] [--repeat 3] [--no-s3] [--no-ssh]

Local folder: two shapes of the same number of empty files (listing never reads them): pict-rs
0.5's, where nearly every file sits in its own leaf folder (~2.5 folders per file), and a flat-ish
one with 100 files per folder. S3: the same keys in a throwaway Ceph radosgw. SSH: the pict-rs tree over SFTP
from a private sshd. Servers come from tests/servers (install them with .ci/install-services.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fediguard.storage import Source, open_source
from servers import radosgw, sshd


def pictrs_keys(count: int) -> list[str]:
    """pict-rs 0.5 file store keys: six folders from a UUIDv7, whose first 48 bits are the upload
    time in ms. Simulated uploads 0.2-60 s apart give ~2.5 folders per file, as on a real server."""
    rng = random.Random(1)
    ms = int(time.time() * 1000) - 30 * 86_400_000
    keys = []
    for _ in range(count):
        ms += rng.randint(200, 60_000)
        h = f"{ms:012x}"
        keys.append("files/" + "/".join(h[i * 2 : i * 2 + 2] for i in range(6)) + f"/{uuid.uuid4()}")
    return keys


def flat_keys(count: int) -> list[str]:
    return [f"media/{i // 100:05d}/{i:08d}" for i in range(count)]


def make_tree(root: Path, keys: list[str]) -> None:
    for key in keys:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


async def rate(source: Source, expected: int, repeat: int) -> float:
    """Best objects/s over ``repeat`` full listings."""
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        n = 0
        async for _obj in source.list():
            n += 1
        elapsed = time.perf_counter() - start
        if n != expected:
            raise SystemExit(f"{source.name}: listed {n} objects, expected {expected}")
        best = max(best, n / elapsed)
    await source.close()
    return best


def bench_local(count: int, repeat: int, results: dict[str, float]) -> Path:
    base = Path(tempfile.mkdtemp(prefix="fediguard-bench-", dir="/tmp"))
    base.chmod(0o755)  # the SSH bench reads the same tree as an unprivileged user
    for shape, keys in (("pictrs", pictrs_keys(count)), ("flat", flat_keys(count))):
        make_tree(base / shape, keys)
        source = open_source((base / shape).as_uri())
        results[f"local, {shape} tree"] = asyncio.run(rate(source, count, repeat))
    return base


def bench_s3(count: int, repeat: int, results: dict[str, float]) -> None:
    server = radosgw.start()
    try:
        admin: Any = boto3.client(
            "s3",
            endpoint_url=server.endpoint_url,
            region_name=server.region,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=32),
        )
        admin.create_bucket(Bucket="bench")
        start = time.perf_counter()
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda k: admin.put_object(Bucket="bench", Key=k, Body=b""), pictrs_keys(count)))
        print(f"(uploaded {count} keys to radosgw in {time.perf_counter() - start:.1f} s)", file=sys.stderr)
        source = open_source(
            "s3://bench",
            endpoint_url=server.endpoint_url,
            region=server.region,
            access_key_id=server.access_key,
            secret_access_key=server.secret_key,
        )
        results["S3 (boto3) on radosgw"] = asyncio.run(rate(source, count, repeat))
    finally:
        server.stop()


def bench_ssh(tree: Path, count: int, repeat: int, results: dict[str, float]) -> None:
    server = sshd.start()
    try:
        source = open_source(
            f"ssh://{server.user}@{server.host}:{server.port}{tree}",
            key_file=str(server.key_path),
            known_hosts=str(server.known_hosts),
        )
        results["SSH/SFTP, pictrs tree"] = asyncio.run(rate(source, count, repeat))
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--no-ssh", action="store_true")
    args = parser.parse_args()
    results: dict[str, float] = {}
    base = bench_local(args.count, args.repeat, results)
    try:
        if not args.no_ssh:
            if sshd.missing_binaries():
                print("skipping SSH: openssh-server not installed", file=sys.stderr)
            else:
                bench_ssh(base / "pictrs", args.count, args.repeat, results)
        if not args.no_s3:
            if radosgw.missing_binaries():
                print("skipping S3: radosgw not installed", file=sys.stderr)
            else:
                bench_s3(args.count, args.repeat, results)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"listing {args.count} objects, best of {args.repeat}:")
    for name, value in results.items():
        print(f"  {name:<28} {value:>10,.0f} objects/s")


if __name__ == "__main__":
    main()
