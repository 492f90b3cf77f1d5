"""`fediguard admin`: desk accounts with Argon2id hashes, every change in the audit log."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from fediguard.cli import main
from fediguard.desk.accounts import Accounts
from fediguard.desk.audit import AuditLog
from fediguard.records import RecordStore
from fediguard.records.schema import desk_accounts


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RecordStore:
    for key in [k for k in os.environ if k.startswith("FEDIGUARD_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FEDIGUARD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FEDIGUARD_LOG_LEVEL", "WARNING")
    return RecordStore(f"sqlite:///{tmp_path / 'data' / 'fediguard.sqlite3'}")


def _admin(monkeypatch: pytest.MonkeyPatch, *args: str, password: str | None = None) -> int:
    if password is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
        args = (*args, "--password-stdin")
    return main(["admin", *args])


def test_add_list_passwd_remove(
    store: RecordStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _admin(monkeypatch, "add", "alice", "--role", "admin", password="correct horse 1") == 0
    assert _admin(monkeypatch, "add", "bob", password="battery staple") == 0
    accounts = Accounts(store.engine)
    with store.engine.connect() as conn:
        stored = conn.execute(select(desk_accounts.c.password_hash)).scalars().all()
    assert all(h.startswith("$argon2id$") for h in stored) and "battery staple" not in "".join(stored)
    assert accounts.verify("bob", "battery staple") is not None
    assert accounts.verify("bob", "battery stapl") is None
    assert accounts.verify("nobody", "battery staple") is None
    assert accounts.get("bob").role == "reviewer" and accounts.get("alice").role == "admin"  # type: ignore[union-attr]

    capsys.readouterr()
    assert _admin(monkeypatch, "list") == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and "admin" in listing and "bob" in listing

    assert _admin(monkeypatch, "passwd", "bob", "--role", "admin", password="a new password") == 0
    assert accounts.verify("bob", "battery staple") is None
    assert accounts.verify("bob", "a new password").role == "admin"  # type: ignore[union-attr]

    assert _admin(monkeypatch, "remove", "bob") == 0
    assert accounts.get("bob") is None
    actions = [(e.action, e.detail) for e in AuditLog(store.engine).recent()]
    assert [a for a, _ in actions] == ["account_remove", "account_password", "account_add", "account_add"]
    assert all(e.actor.startswith("cli:") for e in AuditLog(store.engine).recent())


def test_bad_input_is_refused_and_changes_nothing(
    store: RecordStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _admin(monkeypatch, "add", "carol", password="short") == 2
    assert "at least 10 characters" in capsys.readouterr().err
    assert _admin(monkeypatch, "add", "../x", password="long enough pw") == 2
    assert _admin(monkeypatch, "remove", "nobody") == 2
    assert "no desk account 'nobody'" in capsys.readouterr().err
    assert _admin(monkeypatch, "add", "dave", password="long enough pw") == 0
    assert _admin(monkeypatch, "add", "dave", password="long enough pw") == 2
    assert "exists already" in capsys.readouterr().err
    assert [a.name for a in Accounts(store.engine).all()] == ["dave"]
    assert [e.action for e in AuditLog(store.engine).recent()] == ["account_add"]
