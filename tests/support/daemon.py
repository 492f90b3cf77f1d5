"""Waiting on a background `fediguard sweep --daemon` process in tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable


def wait_for(condition: Callable[[], object], proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Poll ``condition`` until it holds; fail if the daemon exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the daemon stopped"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
