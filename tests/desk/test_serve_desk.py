"""`fediguard serve` runs the desk on its own address beside the gateway, and stops both on SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

import fediguard


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_runs_gateway_and_desk(tmp_path: Path) -> None:
    gateway_port, desk_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDIGUARD_")}
    env["PYTHONPATH"] = str(Path(fediguard.__file__).parents[1])  # this checkout's fediguard
    env.update(FEDIGUARD_DATA_DIR=str(tmp_path / "data"), FEDIGUARD_DETECTORS="hashlist")
    env.update(FEDIGUARD_PORT=str(gateway_port), FEDIGUARD_DESK_PORT=str(desk_port))
    env.update(FEDIGUARD_DECODE_SANDBOX="false", FEDIGUARD_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([sys.executable, "-m", "fediguard", "serve"], env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        answers: dict[str, int] = {}
        while time.monotonic() < deadline and len(answers) < 2:
            for name, url in (("gateway", f"http://127.0.0.1:{gateway_port}/healthz"),
                              ("desk", f"http://127.0.0.1:{desk_port}/login")):  # fmt: skip
                with contextlib.suppress(httpx.TransportError):
                    answers[name] = httpx.get(url, timeout=5).status_code
            assert proc.poll() is None, "fediguard serve exited"
            time.sleep(0.1)
        assert answers == {"gateway": 200, "desk": 200}
        desk_page = httpx.get(f"http://127.0.0.1:{desk_port}/", timeout=5)
        assert desk_page.status_code == 303, "the queue needs a session"
        assert httpx.get(f"http://127.0.0.1:{gateway_port}/login", timeout=5).status_code == 404, "apart"
        secret = tmp_path / "data" / "desk-secret"
        assert secret.stat().st_mode & 0o077 == 0
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
