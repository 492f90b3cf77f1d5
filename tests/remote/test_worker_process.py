"""The remote worker process stays light: it never loads the gateway's, the records' or the
metrics' code (a GPU box at home needs no database driver or web server)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from fediguard.cli import build_parser
args = build_parser("worker").parse_args(["worker", "--server", "http://127.0.0.1:9", "--key", "k" * 20])
import fediguard.remote.client
heavy = ("sqlalchemy", "starlette", "uvicorn", "prometheus_client", "fediguard.records", "fediguard.gateway",
         "fediguard.metrics", "fediguard.scanning.service", "fediguard.sweeper", "fediguard.storage")
print(sorted(m for m in sys.modules if m.startswith(heavy)))
"""


def test_the_worker_command_loads_no_database_web_server_or_metrics_code() -> None:
    found = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    assert found.stdout.strip() == "[]", found.stdout


def test_every_command_is_still_listed_in_the_help() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "fediguard", "--help"], capture_output=True, text=True, timeout=120
    )
    for command in (
        "serve",
        "scan",
        "sweep",
        "restore",
        "worker",
        "workers",
        "banks",
        "allow",
        "confirm",
        "config",
    ):
        assert f"    {command} " in shown.stdout, command
