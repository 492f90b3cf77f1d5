"""Small process helpers shared by the server starters: free ports, bounded waits, kill by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class ServerStartError(RuntimeError):
    """A test server could not be started; the message carries the command and its log tail."""


def free_port() -> int:
    """A port free right now on 127.0.0.1 (may be taken again before use: callers retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(cmd: Sequence[str], timeout: float, log: Path) -> str:
    """Run an admin command with a hard timeout; output goes to a file, never a pipe we might not drain.

    Ceph daemons fork and keep inherited descriptors open, so a captured pipe would never reach EOF.
    """
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        start = out.tell()
        try:
            result = subprocess.run(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServerStartError(f"timed out after {timeout}s: {' '.join(cmd)}\n{tail(log)}") from exc
    if result.returncode != 0:
        raise ServerStartError(f"exit {result.returncode}: {' '.join(cmd)}\n{tail(log)}")
    with log.open("rb") as f:
        f.seek(start)
        return f.read().decode(errors="replace")


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise ServerStartError(f"{what} not ready after {timeout}s")


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def kill_pid(pid: int, sig: int = signal.SIGKILL, wait: float = 5.0) -> None:
    """Kill one process we started and wait until it is gone (reaping it if it is our child)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return
        except ChildProcessError:
            # Not our child (a daemon that forked): poll /proc instead. A killed daemon stays a
            # zombie until init reaps it, and that counts as gone.
            if not _alive(pid):
                return
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # Field 3 follows the parenthesised command name, which may itself contain spaces.
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def banner_ready(host: str, port: int, prefix: bytes) -> bool:
    """True when a TCP server on host:port greets with the given prefix (SSH sends one at once)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.settimeout(0.5)
            return sock.recv(len(prefix)).startswith(prefix)
    except OSError:
        return False


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
