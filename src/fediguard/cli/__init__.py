"""The `fediguard` command. Each subcommand lives in its own module with an ``add_parser`` function."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fediguard import __version__
from fediguard.cli import banks, config_cmd, db, scan, serve, sweep, worker, workers
from fediguard.errors import FediguardError

SUBCOMMANDS = [serve, scan, sweep, worker, workers, banks, db, config_cmd]

DESCRIPTION = """\
fediguard keeps child sexual abuse material and other abusive images off fediverse servers.

Point pict-rs at the gateway (pict-rs.toml):
    [media]
    external_validation = "http://127.0.0.1:14051/api/v1/scan/IPADDR"

then run `fediguard serve`. Every decision is recorded (hashes, scores, reasons; never the image).
Settings come from FEDIGUARD_* environment variables or a TOML file (--config); see `fediguard config`.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fediguard", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"fediguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except FediguardError as exc:
        print(f"fediguard: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
