"""Options and helpers that several subcommands share."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fediguard.config import Settings, load_settings
from fediguard.logs import setup_logging


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML settings file (default: $FEDIGUARD_CONFIG, if set)"
    )


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings from the file, the environment and the command line; logging configured from them."""
    settings = load_settings(getattr(args, "config", None), **overrides)
    setup_logging(settings.log_level)
    return settings
