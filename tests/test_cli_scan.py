"""`fediguard scan FILE...` as an admin runs it: a real process, real files, a real SQLite database."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from support.images import astronaut_jpeg, drawn_png


def scan(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FEDIGUARD_")}
    environ.update(FEDIGUARD_DATA_DIR=str(tmp_path / "data"), FEDIGUARD_LOG_LEVEL="WARNING", **env)
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
    assert "frame 0:" in explained.stdout and "min_age=" in explained.stdout
