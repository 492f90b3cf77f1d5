"""Options and helpers that several subcommands share."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any

from fediguard.config import CONFIG_SEARCH_PATH, Settings, load_settings
from fediguard.logs import setup_logging


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, metavar="FILE",
        help=f"TOML settings file (default: $FEDIGUARD_CONFIG, else the first of {CONFIG_SEARCH_PATH})",
    )  # fmt: skip


def add_command(sub: Any, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand whose long description keeps its line breaks, with --config."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_option(parser)
    return parser


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings from the file, the environment and the command line; logging configured from them."""
    warnings: list[str] = []
    settings = load_settings(getattr(args, "config", None), warnings=warnings, **overrides)
    setup_logging(settings.log_level)
    for warning in warnings:
        logging.getLogger("fediguard.config").warning("%s", warning)
    return settings


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str) -> float:
    """'30s', '20m', '2h', '1d' or plain seconds → seconds."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 20m, 2h, 1d)")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
