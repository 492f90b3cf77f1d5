"""A real review desk (uvicorn, real sockets) on a free loopback port, and signing in to it."""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from fediguard.config import Settings
from fediguard.desk.accounts import Accounts
from fediguard.desk.app import Desk
from fediguard.desk.server import make_desk_server
from fediguard.records import RecordStore

PASSWORD = "a desk password"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class RunningDesk:
    url: str
    desk: Desk
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, follow_redirects=False)

    def sign_in(self, name: str, password: str = PASSWORD) -> httpx.Client:
        http = self.client()
        token = csrf_of(http.get("/login").text)
        answer = http.post("/login", data={"name": name, "password": password, "csrf": token})
        assert answer.status_code == 303, answer.text
        return http


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def add_account(records: RecordStore, name: str, role: str = "reviewer", password: str = PASSWORD) -> None:
    Accounts(records.engine).add(name, password, role)


def start_desk(settings: Settings, records: RecordStore) -> RunningDesk:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = make_desk_server(settings, records)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("desk did not start")
        time.sleep(0.01)
    desk = server.config.app.state.desk
    return RunningDesk(f"http://127.0.0.1:{port}", desk, server, thread)
