"""A records database that fails the way real ones do: locked by another process, full, read-only,
corrupted mid-file. Each is a context manager; the database is as before once it exits."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url

_SQLITE_LOCKER = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    sys.stdin.readline()
    conn.execute("ROLLBACK")
    """
)

_POSTGRES_LOCKER = textwrap.dedent(
    """
    import psycopg, sys
    with psycopg.connect(sys.argv[1]) as conn:
        conn.execute(f"LOCK TABLE decisions IN {sys.argv[2]} MODE")  # EXCLUSIVE: reads go on
        print("locked", flush=True)
        sys.stdin.readline()
        conn.rollback()
    """
)


class Lock:
    """Another process holding the database's write lock until :meth:`release`."""

    def __init__(self, url: str, mode: str = "EXCLUSIVE") -> None:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            script, target = _SQLITE_LOCKER, str(parsed.database)
        else:
            script = _POSTGRES_LOCKER
            target = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        self.process = subprocess.Popen(
            [sys.executable, "-c", script, target, mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line == b"locked\n", f"the lock holder did not lock: {line!r}"
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()
        self.process.wait(30)
        self.released = True

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextmanager
def locked(url: str, mode: str = "EXCLUSIVE") -> Iterator[Lock]:
    """The database's write lock held by another process (PostgreSQL: ``mode`` on the decisions
    table; ACCESS EXCLUSIVE holds reads too)."""
    lock = Lock(url, mode)
    try:
        yield lock
    finally:
        lock.release() if lock.process.poll() is None else None
        lock.kill()


@contextmanager
def on_every_connection(engine: Engine, *statements: str) -> Iterator[None]:
    """Every connection ``engine`` makes from now on runs ``statements`` first (its pool is emptied
    so none escapes); afterwards its connections are new again."""

    def _run(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        for statement in statements:
            cur.execute(statement)
        cur.close()
        if engine.dialect.name == "postgresql":
            dbapi_conn.commit()

    event.listen(engine, "connect", _run)
    engine.dispose()
    try:
        yield
    finally:
        event.remove(engine, "connect", _run)
        engine.dispose()


def full(engine: Engine) -> Any:
    """SQLite that cannot grow by a single page: "database or disk is full"."""
    with engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
    return on_every_connection(engine, f"PRAGMA max_page_count = {pages}")


def read_only(engine: Engine) -> Any:
    """SQLite in query-only mode, or PostgreSQL sessions that are read-only by default: every write
    is refused."""
    if engine.dialect.name == "sqlite":
        return on_every_connection(engine, "PRAGMA query_only = ON")
    return on_every_connection(engine, "SET default_transaction_read_only = on")


@contextmanager
def corrupted(engine: Engine) -> Iterator[None]:
    """The SQLite file with everything after its first page overwritten with garbage (its schema
    page stays, so it still opens), then its bytes put back as they were."""
    path = Path(str(engine.url.database))
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        page = int(conn.exec_driver_sql("PRAGMA page_size").scalar() or 4096)
    original = path.read_bytes()
    engine.dispose()  # connections keep pages cached; the next ones read the file
    path.write_bytes(original[:page] + bytes([0x5A]) * (len(original) - page))
    engine.dispose()  # and any opened meanwhile (the bank refresh)
    try:
        yield
    finally:
        engine.dispose()
        path.write_bytes(original)  # the failed writes committed nothing to the WAL
        engine.dispose()


class TcpProxy:
    """A loopback TCP proxy in front of a database server, to take the database "down" (every
    connection cut, new ones refused) and bring it back on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            if listener is not None:
                with contextlib.suppress(OSError):
                    listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread; close alone does not
                listener.close()
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: down
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
