"""Commands that read the records database find the one `fediguard serve` uses, or say which one
they read: `allow`, `confirm`, `banks …` run in-process as an admin types them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fediguard.banks.store import BankStore
from fediguard.cli import main
from fediguard.records import NewDecision, RecordStore
from support.images import drawn_png


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("FEDIGUARD_CONFIG", "FEDIGUARD_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FEDIGUARD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FEDIGUARD_LOG_LEVEL", "WARNING")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "data"


def record(data: Path, verdict: str, reasons: tuple[str, ...] = ()) -> int:
    store = RecordStore(f"sqlite:///{data / 'fediguard.sqlite3'}")
    body = drawn_png(colour=(3, 4, 5))
    decision = NewDecision(
        source="gateway", client="ip:127.0.0.1", media_type="image/png", size=len(body),
        sha256=hashlib.sha256(body).hexdigest(), verdict=verdict, reasons=reasons,
    )  # fmt: skip
    record_id = store.add(decision)
    store.close()
    return record_id


def allowed_entries(data: Path) -> int:
    store = RecordStore(f"sqlite:///{data / 'fediguard.sqlite3'}")
    try:
        return sum(b.entries for b in BankStore(store.engine).list() if b.name == "allowed")
    finally:
        store.close()


def test_reading_commands_refuse_a_database_that_is_not_there(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (["allow", "35"], ["confirm", "35"], ["banks", "list"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"no records database at {data / 'fediguard.sqlite3'} (set by FEDIGUARD_DATA_DIR)" in err
    assert not data.exists(), "nothing is created where no database was"
    assert main(["banks", "create", "bad", "--kind", "deny"]) == 0
    assert f"creating a new records database at {data / 'fediguard.sqlite3'}" in capsys.readouterr().err


def test_not_found_names_the_database(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record(data, "pass")
    assert main(["allow", "35"]) == 2
    assert (
        f"no decision record 35 in the SQLite database {data / 'fediguard.sqlite3'}"
        in capsys.readouterr().err
    )
    assert main(["banks", "show", "nope"]) == 2
    assert f"no bank named 'nope' in the SQLite database {data}" in capsys.readouterr().err
    assert main(["banks", "create", "b", "--kind", "deny"]) == 0
    assert main(["banks", "remove", "b", "--id", "999"]) == 1
    assert f"not in bank 'b': entry 999 (in the SQLite database {data}" in capsys.readouterr().err


def test_allow_refuses_an_unscanned_record_unless_forced(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record_id = record(data, "unscanned", ("undecodable: corrupt PNG",))
    assert main(["allow", str(record_id)]) == 1
    err = capsys.readouterr().err
    assert "is NOT overturned: it is unscanned (undecodable: corrupt PNG)" in err and "never scanned" in err
    assert f"fediguard allow {record_id} --force" in err
    assert allowed_entries(data) == 0
    assert main(["allow", str(record_id), "--force"]) == 0
    assert "overturned" in capsys.readouterr().out and allowed_entries(data) == 1
    # Confirming an unscanned record (deny) needs no force: it only blocks more.
    assert main(["confirm", str(record(data, "unscanned"))]) == 0


def test_bank_messages_read_as_english(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "x.png"
    image.write_bytes(drawn_png())
    assert main(["banks", "create", "allowed", "--kind", "allow"]) == 0
    assert main(["banks", "add", "allowed", str(image)]) == 0
    capsys.readouterr()
    assert main(["banks", "add", "allowed", str(image)]) == 0
    assert "(2 already there)" in capsys.readouterr().out
    assert main(["confirm", str(record(data, "pass")), "--bank", "allowed"]) == 2
    assert "bank 'allowed' is an allow bank, not deny" in capsys.readouterr().err
