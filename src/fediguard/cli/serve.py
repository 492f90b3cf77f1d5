"""`fediguard serve`: the pict-rs validation gateway."""

from __future__ import annotations

import argparse
from typing import Any

from fediguard.cli.common import add_config_option, settings_from

HELP = """\
Run the validation gateway that pict-rs calls for every upload and every federated image.

  pict-rs.toml:  [media] external_validation = "http://HOST:PORT/api/v1/scan/IPADDR"
  (or a client token in place of IPADDR: FEDIGUARD_CLIENT_TOKENS=lemmy:<secret of 16+ chars>)

Answers 200 (pass), 406 (reject); when no verdict can be reached in time the fail policy answers:
200 with verdict "unscanned" (FEDIGUARD_FAIL_POLICY=open) or 503 (closed, the default).
Health: GET /healthz, readiness: GET /readyz, Prometheus: GET /metrics.
When the records database cannot be written, decisions wait in DATA_DIR/spool and are written when it
is back (answers then say "id": null, "spooled": true; /readyz answers 503 meanwhile). It refuses to
start on a database or data_dir it cannot write.

The moderators' review desk is served beside it on desk_host:desk_port (127.0.0.1:14052; desk=false
turns it off); accounts come from `fediguard admin add NAME --role admin`.
"""


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="run the pict-rs validation gateway",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; FEDIGUARD_HOST)")
    p.add_argument("--port", type=int, help="port to listen on (default 14051; FEDIGUARD_PORT)")
    p.add_argument(
        "--no-local-scanner",
        action="store_true",
        help="scan nothing in this process; leave every job to remote workers (`fediguard worker`)",
    )
    add_config_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fediguard.desk.server import serve_all
    from fediguard.detectors.registry import check_detectors

    overrides: dict[str, Any] = {"host": args.host, "port": args.port}
    if args.no_local_scanner:
        overrides["local_scanner"] = False
    settings = settings_from(args, **overrides)
    check_detectors(settings)
    serve_all(settings)
    return 0
