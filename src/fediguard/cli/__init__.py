"""The `fediguard` command. Each subcommand lives in its own module with an ``add_parser`` function.

Only the module of the command being run is imported (all of them for `fediguard --help`), so
`fediguard worker` loads no database, web-server or metrics code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from fediguard import __version__
from fediguard.errors import FediguardError

SUBCOMMANDS: dict[str, str] = {
    "serve": "serve",
    "scan": "scan",
    "sweep": "sweep",
    "restore": "sweep",
    "rematch": "rematch",
    "worker": "worker",
    "workers": "workers",
    "banks": "banks",
    "allow": "banks",
    "confirm": "banks",
    "decisions": "decisions",
    "admin": "admin",
    "evidence": "evidence",
    "feed": "feed",
    "db": "db",
    "config": "config_cmd",
    "eval": "eval",
}
"""Command → the module under fediguard.cli that defines it (in the order `--help` lists them)."""

DESCRIPTION = """\
fediguard keeps child sexual abuse material and other abusive images off fediverse servers.

Point pict-rs at the gateway (pict-rs.toml):
    [media]
    external_validation = "http://127.0.0.1:14051/api/v1/scan/IPADDR"

then run `fediguard serve`. Every decision is recorded (hashes, scores, reasons; never the image).
Settings come from FEDIGUARD_* environment variables or a TOML file (--config); see `fediguard config`.
"""


def _modules(command: str | None) -> list[ModuleType]:
    names = [SUBCOMMANDS[command]] if command in SUBCOMMANDS else list(dict.fromkeys(SUBCOMMANDS.values()))
    return [importlib.import_module(f"fediguard.cli.{name}") for name in names]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``command`` only, or of every command (None, or a name that is none)."""
    parser = argparse.ArgumentParser(
        prog="fediguard", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"fediguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _modules(command):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((w for w in words if not w.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(words)
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
