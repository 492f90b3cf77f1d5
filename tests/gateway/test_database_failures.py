"""The records database failing under a real gateway: locked by another process, full, read-only,
corrupted mid-file. No answer waits for it (each upload is answered while the fault lasts, its
decision kept in the spool), none is lost (once the database is back every decision is in it exactly
once, in the order made), `/readyz` says why meanwhile, and a gateway does not start on a database
it cannot write."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from fediguard.banks.formats import BankEntry
from fediguard.banks.pdq import frame_hashes
from fediguard.banks.store import BankStore
from fediguard.media.decode import decode
from fediguard.records import DecisionRecord, RecordStore
from support import dbfaults
from support.detectors import ScoreDetector
from support.gateway import RunningGateway
from support.images import astronaut_jpeg, drawn_png
from support.workers import CHILD_PYTHONPATH, wait_for

Start = Callable[..., RunningGateway]

LONG_NOTE = "n" * 6000
"""Makes every record bigger than a page, so a full SQLite file cannot take one in a page's slack."""


def _detector() -> ScoreDetector:
    return ScoreDetector("nudity", {"explicit": 0.01}, notes=[LONG_NOTE])


def _uploads(first: int, count: int) -> list[bytes]:
    return [drawn_png(colour=(10 + 20 * i, 90, 160)) for i in range(first, first + count)]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'fediguard.sqlite3'}"
    return str(request.getfixturevalue("postgres_url"))


def _readyz(gw: RunningGateway) -> httpx.Response:
    return httpx.get(f"{gw.url}/readyz", timeout=30)


def _metric(gw: RunningGateway, name: str) -> float:
    for line in httpx.get(f"{gw.url}/metrics", timeout=30).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


def _in_order(gw: RunningGateway) -> list[DecisionRecord]:
    return list(reversed(gw.store.recent(limit=1000)))


def _check_everything_recorded_once_in_order(gw: RunningGateway, sent: list[bytes]) -> None:
    writer = gw.service.writer
    assert writer is not None
    wait_for(lambda: writer.spool_depth == 0, what="the spool to drain")
    assert _readyz(gw).status_code == 200
    assert _metric(gw, "fediguard_spool_depth") == 0
    records = _in_order(gw)
    assert [r.sha256 for r in records] == [hashlib.sha256(d).hexdigest() for d in sent]
    made = [r.created_at for r in records]
    assert made == sorted(made), "the spooled decisions kept the time they were made"
    assert not list((gw.settings.data_dir / "spool").glob("*.jsonl")), "the drained spool is removed"


def test_a_locked_database_delays_no_answer_and_loses_no_decision(
    gateway_for: Start, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process holds the database's write lock: each upload is answered (and marked spooled)
    while it still holds it; once it lets go, the decisions are written, in order, once."""
    gw = gateway_for(_detector, database_url=database_url, db_busy_timeout_s=0.5)
    sent = _uploads(0, 1)
    assert gw.post(sent[0]).json()["id"] is not None
    with dbfaults.locked(database_url) as lock:
        during = _uploads(1, 3)
        bodies = [gw.post(data).json() for data in during]
        sent += during
        assert lock.process.poll() is None, "answered while the lock was still held"
        for body in bodies:
            assert body["verdict"] == "pass" and body["id"] is None and body["spooled"] is True, body
        ready = _readyz(gw)
        assert ready.status_code == 503
        assert "cannot be written" in ready.json()["records"]
        assert _metric(gw, "fediguard_spool_depth") == 3
        assert _metric(gw, "fediguard_database_errors_total") >= 1
        (logged,) = [r.getMessage() for r in caplog.records if "cannot be written" in r.getMessage()]
        assert "database_url" in logged and ("database is locked" in logged or "lock timeout" in logged)
    _check_everything_recorded_once_in_order(gw, sent)
    assert any("writable again: 3 spooled decision(s)" in r.getMessage() for r in caplog.records)


def test_a_table_locked_against_reads_delays_no_answer(gateway_for: Start, postgres_url: str) -> None:
    """PostgreSQL's decisions table locked even against reads (what VACUUM FULL or a migration
    takes): the verdict-cache lookup gives up after the busy timeout (``record_error``) instead of
    holding the answer until the lock goes."""
    gw = gateway_for(_detector, database_url=postgres_url, db_busy_timeout_s=0.5)
    sent = _uploads(0, 1)
    assert gw.post(sent[0]).json()["id"] is not None
    with dbfaults.locked(postgres_url, "ACCESS EXCLUSIVE") as lock:
        response = gw.post(sent[0])
        assert lock.process.poll() is None, "answered while the lock was still held"
        body = response.json()
        assert response.status_code == 503 and body["fail_reason"] == "record_error", body
        assert "lock timeout" in body["reasons"][0] and body["spooled"] is True
    _check_everything_recorded_once_in_order(gw, sent * 2)


def test_decisions_spooled_before_a_restart_are_written_by_the_next_gateway(gateway_for: Start) -> None:
    first = gateway_for(_detector, db_busy_timeout_s=0.5)
    sent = _uploads(0, 3)
    with dbfaults.locked(first.settings.effective_database_url):
        assert all(first.post(data).json()["spooled"] for data in sent)
        first.stop()
    assert len(list((first.settings.data_dir / "spool").glob("*.jsonl"))) == 1
    second = gateway_for(_detector)  # the same data_dir
    _check_everything_recorded_once_in_order(second, sent)


FAULTS: dict[str, Callable[[RunningGateway], AbstractContextManager[object]]] = {
    "full": lambda gw: dbfaults.full(gw.store.engine),
    "read-only": lambda gw: dbfaults.read_only(gw.store.engine),
    "corrupted": lambda gw: dbfaults.corrupted(gw.store.engine),
}


@pytest.mark.parametrize(
    ("fault", "backend"),
    [("full", "sqlite"), ("read-only", "sqlite"), ("read-only", "postgresql"), ("corrupted", "sqlite")],
)
def test_a_failing_database_delays_no_answer_and_loses_no_decision(
    gateway_for: Start, tmp_path: Path, fault: str, backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    gw = gateway_for(_detector, database_url=url)
    sent = _uploads(0, 1)
    assert gw.post(sent[0]).json()["id"] is not None
    with FAULTS[fault](gw):
        # Corrupted: the same bytes again (the verdict cache reads the database), then new ones. Full:
        # new ones only, each record needing pages the file cannot grow by.
        during = [sent[0], *_uploads(1, 2)] if fault == "corrupted" else _uploads(1, 3)
        responses = [gw.post(data) for data in during]
        sent += during
        for response in responses:
            body = response.json()
            assert body["id"] is None and body["spooled"] is True, body
            if fault == "corrupted":  # the verdict-cache lookup fails: no verdict, never a 500
                assert response.status_code == 503 and body["fail_reason"] == "record_error", body
                assert "malformed" in " ".join(body["reasons"])
            else:
                assert response.status_code == 200 and body["verdict"] == "pass", body
        assert _readyz(gw).status_code == 503
    _check_everything_recorded_once_in_order(gw, sent)


def test_a_database_that_is_down_delays_no_answer_and_loses_no_decision(
    gateway_for: Start, postgres_url: str
) -> None:
    """PostgreSQL goes away (every connection cut, none taken) and comes back on the same port: the
    verdict-cache lookup cannot be made (``record_error``), the decisions wait in the spool, and
    are written once it is back."""
    url = make_url(postgres_url)
    proxy = dbfaults.TcpProxy((str(url.host), int(url.port or 5432)))
    try:
        gw = gateway_for(
            _detector, database_url=url.set(port=proxy.port).render_as_string(hide_password=False)
        )
        sent = _uploads(0, 1)
        assert gw.post(sent[0]).json()["id"] is not None
        proxy.down()
        during = _uploads(1, 3)
        responses = [gw.post(data) for data in during]
        sent += during
        for response in responses:
            body = response.json()
            assert response.status_code == 503 and body["fail_reason"] == "record_error", body
            assert body["id"] is None and body["spooled"] is True, body
        assert _readyz(gw).status_code == 503
        proxy.up()
        _check_everything_recorded_once_in_order(gw, sent)
    finally:
        proxy.down()


def test_a_database_error_in_a_lookup_is_the_fail_policy_open_too(gateway_for: Start) -> None:
    """Under fail-open the upload passes unscanned, its decision kept to be swept later."""
    gw = gateway_for(_detector, fail_policy="open")
    data = _uploads(0, 1)[0]
    assert gw.post(data).json()["verdict"] == "pass"
    with dbfaults.corrupted(gw.store.engine):
        response = gw.post(data)
        body = response.json()
        assert response.status_code == 200, body
        assert body["verdict"] == "unscanned" and body["fail_reason"] == "record_error" and body["spooled"]
        assert _metric(gw, 'fediguard_fail_policy_applied_total{policy="open",reason="record_error"}') == 1
    writer = gw.service.writer
    assert writer is not None
    wait_for(lambda: writer.spool_depth == 0, what="the spool to drain")
    assert [r.fail_reason for r in _in_order(gw)] == [None, "record_error"]


def test_a_database_error_in_the_scanner_s_bank_check_is_the_fail_policy(gateway_for: Start) -> None:
    """The in-process scanner's frames match a bank entry, which the broken database cannot
    describe: ``record_error``, not a scanner error or a 500."""
    gw = gateway_for(_detector, verdict_cache=False, bank_refresh_s=0.1)
    data = astronaut_jpeg()
    (frame,) = frame_hashes(decode(data).frames)
    banks = BankStore(gw.store.engine)
    banks.create("known-bad", "deny")
    banks.add("known-bad", [BankEntry("pdq", frame.hash.hex)], "test", "test")
    loaded = banks.state()  # the generation with the entry: not the one creating the bank raised
    assert gw.service.banks is not None
    wait_for(lambda: gw.service.banks.matcher.state == loaded, what="the banks to load")  # type: ignore[union-attr]
    assert gw.post(data, "image/jpeg").status_code == 406
    with dbfaults.corrupted(gw.store.engine):
        response = gw.post(data, "image/jpeg")
    body = response.json()
    assert response.status_code == 503 and body["fail_reason"] == "record_error", body
    assert "matching the banks" in body["reasons"][0]


@pytest.fixture
def serve_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDIGUARD_")}
    env.update(
        PYTHONPATH=CHILD_PYTHONPATH,
        FEDIGUARD_DATA_DIR=str(tmp_path / "data"),
        FEDIGUARD_DETECTORS="hashlist",
        FEDIGUARD_PORT="0",
        FEDIGUARD_DECODE_SANDBOX="false",
    )
    yield env


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fediguard", "serve"], env=env, capture_output=True, text=True, timeout=120
    )


def test_the_gateway_refuses_to_start_on_a_read_only_sqlite_file(
    serve_env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "data" / "fediguard.sqlite3"
    RecordStore(f"sqlite:///{path}").close()
    serve_env["FEDIGUARD_DATABASE_URL"] = f"sqlite:///file:{path}?mode=ro&uri=true"
    done = _serve(serve_env)
    assert done.returncode == 2, done.stderr
    assert "database_url" in done.stderr and "cannot be written" in done.stderr, done.stderr
    assert "readonly" in done.stderr


def test_the_gateway_refuses_to_start_on_a_read_only_postgresql(
    serve_env: dict[str, str], postgres_url: str
) -> None:
    RecordStore(postgres_url).close()
    serve_env["FEDIGUARD_DATABASE_URL"] = postgres_url + "%20-cdefault_transaction_read_only%3Don"
    done = _serve(serve_env)
    assert done.returncode == 2, done.stderr
    assert "database_url" in done.stderr and "read-only transaction" in done.stderr, done.stderr


def test_the_gateway_refuses_to_start_without_a_writable_spool(
    serve_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "spool").write_text("a file where the spool folder goes")
    done = _serve(serve_env)
    assert done.returncode == 2, done.stderr
    assert "data_dir" in done.stderr and "spool" in done.stderr, done.stderr
