"""`fediguard decisions`: recent decisions from a real SQLite records database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from fediguard.cli import main
from fediguard.records import NewDecision, RecordStore
from fediguard.records.schema import decisions


def _decision(verdict: str, labels: tuple[str, ...], client: str = "IPADDR") -> NewDecision:
    return NewDecision(
        source="gateway", client=client, media_type="image/png", size=10, sha256="ab" * 32,
        verdict=verdict, labels=labels, reasons=(f"because {verdict}",),
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RecordStore:
    for key in [k for k in __import__("os").environ if k.startswith("FEDIGUARD_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("FEDIGUARD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FEDIGUARD_LOG_LEVEL", "WARNING")
    return RecordStore(f"sqlite:///{tmp_path / 'data' / 'fediguard.sqlite3'}")


def _json_lines(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    assert main(["decisions", "--json", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_newest_first_filtered_by_label_and_time(
    store: RecordStore, capsys: pytest.CaptureFixture[str]
) -> None:
    old = store.add(_decision("reject", ("csam_suspect",)))
    ids = [store.add(_decision(v, labels)) for v, labels in [
        ("pass", ()), ("reject", ("denylisted",)), ("reject", ("csam_suspect",)), ("unscanned", ()),
        ("pass", ("nsfw",)),
    ]]  # fmt: skip
    with store.engine.begin() as conn:
        when = datetime.now(UTC) - timedelta(hours=3)
        conn.execute(update(decisions).where(decisions.c.id == old).values(created_at=when))

    everything = _json_lines(capsys)
    assert [d["id"] for d in everything] == [*reversed(ids), old]

    assert [d["id"] for d in _json_lines(capsys, "--label", "csam_suspect")] == [ids[2], old]
    assert [d["id"] for d in _json_lines(capsys, "--label", "csam_suspect", "--since", "1h")] == [ids[2]]
    assert [d["id"] for d in _json_lines(capsys, "--label", "unscanned")] == [ids[3]]
    assert [d["id"] for d in _json_lines(capsys, "--label", "nsfw")] == [ids[4]]
    assert [d["id"] for d in _json_lines(capsys, "--limit", "2")] == [ids[4], ids[3]]
    assert [d["id"] for d in _json_lines(capsys, "--before", str(ids[3]), "--limit", "1")] == [ids[2]]
    assert _json_lines(capsys, "--label", "csam_suspect")[0]["reasons"] == ["because reject"]


def test_table_output_and_empty(store: RecordStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decisions"]) == 0
    assert "no decisions match" in capsys.readouterr().out
    record_id = store.add(_decision("reject", ("denylisted",), client="lemmy"))
    assert main(["decisions", "--label", "denylisted"]) == 0
    out = capsys.readouterr().out
    assert f"{record_id}" in out and "lemmy" in out and "denylisted" in out and "because reject" in out


def test_bad_since_is_refused(store: RecordStore, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["decisions", "--since", "soon"])
    assert "not a duration" in capsys.readouterr().err
