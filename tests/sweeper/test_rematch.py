"""Retroactive matching through the real commands: a bank gains an entry after a sweep; the next
sweep, or `fediguard rematch`, flags the stored object and acts on it without reading it again."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from test_sweep_local import db, env_for, object_id, pictrs_tree, sweep


def fediguard(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "fediguard", *args]
    return subprocess.run(cmd, env=env_for(data), capture_output=True, text=True, timeout=120)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decisions(data: Path) -> int:
    return int(db(data).execute("select count(*) from decisions").fetchone()[0])


def test_a_sweep_acts_on_stored_objects_a_new_deny_entry_matches(tmp_path: Path) -> None:
    store, quarantine, data = tmp_path / "pictrs", tmp_path / "quarantine", tmp_path / "data"
    store.mkdir()
    files = pictrs_tree(store, 6)
    first, second = sorted(files)[1], sorted(files)[4]
    source = (f"file://{store}", "--layout", "pictrs")
    quarantining = (*source, "--action", "quarantine", "--quarantine", str(quarantine))
    clean = sweep(data, *quarantining)
    assert clean.returncode == 0, clean.stderr
    scanned = decisions(data)
    assert scanned == 6

    # The bank gains the first file: unchanged objects used to be skipped as "6 skipped, 0 flagged".
    assert fediguard(data, "banks", "create", "known-bad", "--kind", "deny").returncode == 0
    added = fediguard(data, "banks", "add", "known-bad", "--kind", "sha256", "--hash", sha256(files[first]))
    assert added.returncode == 0, added.stderr
    again = sweep(data, *quarantining)
    assert again.returncode == 1, again.stderr
    assert "retroactive match: decision" in again.stderr and "bank 'known-bad'" in again.stderr
    assert f"flagged {first}" in again.stderr and "denied (retroactively)" in again.stderr, again.stderr
    assert "1 flagged" in again.stderr and "5 skipped" in again.stderr, again.stderr
    assert not (store / first).exists() and (quarantine / first).read_bytes() == files[first]
    assert decisions(data) == scanned, "no object was read or scanned again"
    state = (
        db(data)
        .execute(
            "select verdict, action, action_state, rematched_at from sweep_objects where id = ?",
            (object_id(data, first),),
        )
        .fetchone()
    )
    assert state == ("reject", "quarantine", "done", None)
    assert sweep(data, *quarantining).returncode == 0, "flagged once"

    # `fediguard rematch` does it now, with the action the source's latest sweep used.
    assert (
        fediguard(
            data, "banks", "add", "known-bad", "--kind", "sha256", "--hash", sha256(files[second])
        ).returncode
        == 0
    )
    rematched = fediguard(data, "rematch")
    assert rematched.returncode == 1, rematched.stderr
    assert (
        "flagged: decision" in rematched.stdout
        and f"swept object {object_id(data, second)}" in rematched.stdout
    )
    assert "1 swept object(s) flagged, 1 quarantined" in rematched.stdout, rematched.stdout + rematched.stderr
    assert (quarantine / second).read_bytes() == files[second] and not (store / second).exists()
    assert decisions(data) == scanned
    nothing = fediguard(data, "rematch")
    assert nothing.returncode == 0 and "no recorded decision matches" in nothing.stdout
