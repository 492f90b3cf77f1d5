"""`fediguard config`: print the effective settings, secrets masked."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fediguard.cli.common import add_config_option
from fediguard.config import load_settings


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "config",
        help="print the effective configuration (secrets masked)",
        description="Print the settings fediguard would run with: defaults, then the TOML file, then "
        "FEDIGUARD_* environment variables. Secrets are shown as ***; config_file is the TOML file "
        "read. Unknown FEDIGUARD_* variables are warned about. Exits 2 on invalid settings.",
    )
    add_config_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    warnings: list[str] = []
    settings = load_settings(args.config, warnings=warnings)
    for warning in warnings:
        print(f"fediguard: warning: {warning}", file=sys.stderr)
    print(json.dumps(settings.masked(), indent=2, sort_keys=True))
    return 0
