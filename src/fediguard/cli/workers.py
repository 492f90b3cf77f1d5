"""`fediguard workers`: list the scanners a running gateway knows."""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx

from fediguard.cli.common import add_config_option, settings_from
from fediguard.errors import FediguardError


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "workers",
        help="list a running gateway's scanners (in-process and remote)",
        description="Ask a running gateway which scanners it knows: kind, detectors, last seen, "
        "jobs in hand and done. Allowed from an address in allowed_cidrs or with a client token.",
    )
    p.add_argument("--server", help="gateway URL (default: http://HOST:PORT from the settings)")
    p.add_argument("--token", help="a client token, when not calling from an allowed address")
    p.add_argument("--json", action="store_true", help="print the raw JSON")
    add_config_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # noqa: S104
    server = (args.server or f"http://{host}:{settings.port}").rstrip("/")
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    try:
        response = httpx.get(f"{server}/api/v1/workers", headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise FediguardError(f"cannot reach the gateway at {server}: {exc}") from exc
    if response.status_code != 200:
        raise FediguardError(f"gateway answered {response.status_code}: {response.text[:200]}")
    data = response.json()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"queue depth {data['queue_depth']}")
    print(
        f"{'NAME':24} {'KIND':6} {'SEEN':>8} {'BUSY':>4} {'DONE':>7} {'PER MIN':>7} {'EXPIRED':>7}  DETECTORS"
    )
    for s in data["scanners"]:
        print(
            f"{s['name'][:24]:24} {s['kind']:6} {s['last_seen_s_ago']:>7}s {s['busy']:>4} "
            f"{s['completed']:>7} {s.get('per_minute', 0):>7} {s['expired_leases']:>7}  {s['detectors']}"
        )
    return 0
