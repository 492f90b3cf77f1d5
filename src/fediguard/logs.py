"""Process-wide logging set-up: one plain line per event, to stderr."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter stays at WARNING unless the admin asks for DEBUG.
    for name in ("uvicorn.access", "httpx", "httpcore", "botocore", "asyncssh", "alembic"):
        logging.getLogger(name).setLevel(level if level == "DEBUG" else "WARNING")
