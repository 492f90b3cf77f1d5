"""Remote workers in tests: their keys, a gateway that leaves all scanning to them, and real
`fediguard worker` processes started against it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

import fediguard
from support.gateway import RunningGateway

KEYS = {"w1": "worker-one-key-0123456789", "w2": "worker-two-key-0123456789", "w3": "worker-three-key-012345"}
WORKER_KEYS = ",".join(f"{n}:{k}" for n, k in KEYS.items())
TESTS_DIR = Path(__file__).resolve().parents[1]
CHILD_PYTHONPATH = os.pathsep.join([str(Path(fediguard.__file__).parents[1]), str(TESTS_DIR)])
"""Worker processes import the fediguard this test runs (a worktree's source, not only the install)."""
PLUGINS = "support.plugins:sleepy"

Start = Callable[..., RunningGateway]


def wait_for(predicate: Callable[[], bool], timeout: float = 90, what: str = "condition") -> None:
    """Wait for the condition; the timeout only bounds a broken run (a worker starts in seconds
    alone, but far slower on a loaded 2-core machine)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def remote(gw: RunningGateway) -> dict[str, dict[str, object]]:
    """The remote workers the gateway knows, by name, as `fediguard workers` lists them."""
    rows = httpx.get(f"{gw.url}/api/v1/workers").json()["scanners"]
    return {r["name"]: r for r in rows if r["kind"] == "remote"}


def gateway(gateway_for: Start, **overrides: object) -> RunningGateway:
    """A gateway without an in-process scanner, taking the test keys and running the sleepy plugin."""
    settings: dict[str, object] = {"local_scanner": False, "worker_keys": WORKER_KEYS, "detectors": [PLUGINS]}
    settings.update(overrides)
    return gateway_for(**settings)


class Workers:
    """Starts `fediguard worker` processes; :meth:`close` kills those still running."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def __call__(
        self,
        gw: RunningGateway,
        name: str,
        sleep_s: float = 0.05,
        detectors: str = PLUGINS,
        server: str | None = None,
        args: tuple[str, ...] = (),
    ) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(
            PYTHONPATH=CHILD_PYTHONPATH,
            FEDIGUARD_DETECTORS=detectors,
            FEDIGUARD_LOG_LEVEL="INFO",
            FG_TEST_SLEEP_S=str(sleep_s),
            FEDIGUARD_WORKER_KEY=KEYS[name],
        )
        cmd = [sys.executable, "-m", "fediguard", "worker", "--server", server or gw.url, *args]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            if proc.stderr:
                proc.stderr.close()
