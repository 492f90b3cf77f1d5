"""`fediguard scan FILE...` as an admin runs it: a real process, real files, a real SQLite database."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from fediguard.banks.formats import BankEntry
from fediguard.banks.store import BankStore
from fediguard.records import RecordStore
from support.images import astronaut_jpeg, drawn_png
from support.workers import CHILD_PYTHONPATH


def scan(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FEDIGUARD_")}
    environ.update(PYTHONPATH=CHILD_PYTHONPATH, FEDIGUARD_DATA_DIR=str(tmp_path / "data"),
                   FEDIGUARD_LOG_LEVEL="WARNING", **env)  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "fediguard", "scan", *args],
        env=environ, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip


def test_exit_status_and_one_line_per_file(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(drawn_png(colour=(10, 200, 10)))
    bad.write_bytes(drawn_png(colour=(200, 10, 10)))
    deny = tmp_path / "deny.txt"
    deny.write_text(hashlib.sha256(bad.read_bytes()).hexdigest() + "\n")
    env = {"FEDIGUARD_DETECTORS": "hashlist", "FEDIGUARD_HASHLIST_DENY_FILE": str(deny)}

    passed = scan(tmp_path, str(good), **env)
    assert passed.returncode == 0, passed.stderr
    assert passed.stdout.startswith(f"{good}: pass")

    mixed = scan(tmp_path, str(good), str(bad), "--json", **env)
    assert mixed.returncode == 1, mixed.stderr
    lines = [json.loads(line) for line in mixed.stdout.splitlines()]
    assert [(d["file"], d["verdict"]) for d in lines] == [(str(good), "pass"), (str(bad), "reject")]
    assert lines[1]["labels"] == ["denylisted"] and lines[1]["id"] is not None

    missing = scan(tmp_path, str(good), str(tmp_path / "nope.png"), **env)
    assert missing.returncode == 2 and "nope.png: error" in missing.stderr

    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    undecided = scan(tmp_path, str(garbage), **env)
    assert undecided.returncode == 2 and "unscanned" in undecided.stdout


def test_explain_shows_the_detectors_even_for_a_file_that_passed_before(tmp_path: Path) -> None:
    """The real default detectors on a benign photo: it passes, and --explain lists their scores
    per frame although the verdict cache holds the earlier pass."""
    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(astronaut_jpeg())
    first = scan(tmp_path, str(photo))
    assert first.returncode == 0, first.stderr
    again = scan(tmp_path, str(photo))
    assert again.returncode == 0 and "cached" in again.stdout
    explained = scan(tmp_path, str(photo), "--explain")
    assert explained.returncode == 0, explained.stderr
    assert "cached" not in explained.stdout
    assert "  nudity " in explained.stdout and "  age " in explained.stdout
    assert "frame 0:" in explained.stdout
    # The cascade: nothing explicit, so the age model was not run, and --explain says why.
    assert "not run: no frame explicit at or above the screening threshold" in explained.stdout


def bank(data_dir: Path, name: str, kind: str, body: bytes) -> None:
    records = RecordStore(f"sqlite:///{data_dir / 'fediguard.sqlite3'}")
    banks = BankStore(records.engine)
    banks.ensure(name, kind)
    banks.add(name, [BankEntry("sha256", hashlib.sha256(body).hexdigest())], "test", "test")
    records.close()


def decisions(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "fediguard.sqlite3") as conn:
        return int(conn.execute("select count(*) from decisions").fetchone()[0])


def test_no_record_runs_the_same_pipeline_banks_included(tmp_path: Path) -> None:
    bad, allowed, plain = tmp_path / "bad.png", tmp_path / "allowed.png", tmp_path / "plain.png"
    bad.write_bytes(drawn_png(colour=(200, 10, 10)))
    allowed.write_bytes(drawn_png(colour=(10, 10, 200)))
    plain.write_bytes(drawn_png(colour=(10, 200, 10)))
    bank(tmp_path / "data", "known-bad", "deny", bad.read_bytes())
    bank(tmp_path / "data", "overturned", "allow", allowed.read_bytes())
    env = {"FEDIGUARD_DETECTORS": "support.plugins:benign"}
    before = decisions(tmp_path / "data")

    run = scan(tmp_path, str(bad), str(allowed), str(plain), "--json", "--no-record", **env)
    assert run.returncode == 1, run.stderr
    lines = {Path(d["file"]).name: d for d in map(json.loads, run.stdout.splitlines())}
    assert (lines["bad.png"]["verdict"], lines["bad.png"]["labels"]) == ("reject", ["denylisted"])
    assert (lines["allowed.png"]["verdict"], lines["allowed.png"]["labels"]) == ("pass", ["allowlisted"])
    assert (lines["plain.png"]["verdict"], lines["plain.png"]["labels"]) == ("pass", [])
    assert all(d["id"] is None for d in lines.values())
    assert decisions(tmp_path / "data") == before, "--no-record writes no decision"

    # The same answers when recording.
    recorded = scan(tmp_path, str(bad), str(allowed), "--json", **env)
    verdicts = [(d["verdict"], d["labels"]) for d in map(json.loads, recorded.stdout.splitlines())]
    assert verdicts == [("reject", ["denylisted"]), ("pass", ["allowlisted"])]


def test_no_record_without_a_database_creates_none(tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(drawn_png())
    run = scan(tmp_path, str(photo), "--no-record", FEDIGUARD_DETECTORS="support.plugins:benign")
    assert run.returncode == 0, run.stderr
    assert not (tmp_path / "data").exists()


def test_a_folder_is_scanned_file_by_file(tmp_path: Path) -> None:
    folder = tmp_path / "uploads"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(drawn_png(colour=(1, 2, 3)))
    (folder / "sub" / "b.png").write_bytes(drawn_png(colour=(4, 5, 6)))
    (folder / "notes.txt").write_text("not media")
    run = scan(tmp_path, str(folder), FEDIGUARD_DETECTORS="support.plugins:benign")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [f"{folder / 'a.png'}: pass", f"{folder / 'sub' / 'b.png'}: pass"]
    assert "1 file(s) that are not media skipped" in run.stderr
    assert "Is a directory" not in run.stderr
