"""`fediguard worker`: scan jobs for a gateway from anywhere (a GPU at home behind NAT)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

from fediguard.cli.common import add_config_option, settings_from
from fediguard.errors import ConfigError

HELP = """\
Load the detectors here and pull jobs from a gateway over HTTP(S). Only outbound connections are
made, so this works behind NAT. The gateway must list this worker's key in FEDIGUARD_WORKER_KEYS
(name:key pairs) and run the same detectors (names and versions); it refuses a worker that differs.
Reconnects with backoff forever; SIGINT/SIGTERM finish the jobs in hand, then exit.

  fediguard worker --server https://fediguard.example.org --key-file /etc/fediguard/worker.key
"""


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "worker", help="scan jobs for a remote gateway", description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--server", help="the gateway's base URL (FEDIGUARD_WORKER_SERVER)")
    p.add_argument(
        "--key", help="this worker's key (prefer --key-file or FEDIGUARD_WORKER_KEY: argv is public)"
    )
    p.add_argument("--key-file", type=Path, help="file holding this worker's key")
    p.add_argument(
        "--concurrency", type=int, help="jobs scanned at once (FEDIGUARD_WORKER_CONCURRENCY, default 1)"
    )
    p.add_argument(
        "--ca-file",
        type=Path,
        help="CA certificate(s) to verify the gateway's TLS certificate with, e.g. a self-signed one "
        "(FEDIGUARD_WORKER_CA_FILE; default: the system's roots)",
    )
    p.add_argument("--insecure", action="store_true", help="do not verify the gateway's TLS certificate")
    add_config_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fediguard.detectors.registry import check_detectors
    from fediguard.media.decode import decode
    from fediguard.media.sandbox import DecoderPool
    from fediguard.remote.client import RemoteWorker
    from fediguard.scanning.pipeline import make_pipeline_factory, sandbox_limits

    key = args.key_file.read_text().strip() if args.key_file else args.key
    settings = settings_from(
        args,
        worker_server=args.server,
        worker_key=key,
        worker_concurrency=args.concurrency,
        worker_ca_file=args.ca_file,
    )
    if not settings.worker_server or not settings.worker_key:
        raise ConfigError("worker needs --server and --key/--key-file (or FEDIGUARD_WORKER_SERVER/_KEY)")
    check_detectors(settings)
    # Decoding in child processes under OS limits, one per slot (FEDIGUARD_DECODE_SANDBOX).
    sandbox = None
    if settings.decode_sandbox:
        sandbox = DecoderPool(settings.worker_concurrency, sandbox_limits(settings))
    worker = RemoteWorker(
        settings.worker_server,
        settings.worker_key,
        make_pipeline_factory(settings, decoder=sandbox.decode if sandbox else decode),
        concurrency=settings.worker_concurrency,
        verify=False if args.insecure else str(settings.worker_ca_file) if settings.worker_ca_file else True,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await worker.run(stop)

    try:
        if sandbox is not None:
            sandbox.start()
        _run_loop(main())
    finally:
        if sandbox is not None:
            sandbox.close()
    return 0


def _run_loop(coro: Any) -> None:
    """uvloop where installed (as the gateway's uvicorn uses it): less latency per job."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)
