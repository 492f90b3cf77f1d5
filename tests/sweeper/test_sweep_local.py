"""`fediguard sweep` over a local folder, as an admin runs it: real processes, the real database."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from fediguard.banks.formats import BankEntry
from fediguard.banks.store import BankStore
from fediguard.records import RecordStore
from support.images import encode

TESTS_DIR = Path(__file__).resolve().parents[1]
UUIDS = [f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(1, 40)]


def picture(i: int) -> bytes:
    image = Image.new("RGB", (96, 64), (20 + i * 5 % 200, 90, 160))
    ImageDraw.Draw(image).rectangle((i % 50, 5, i % 50 + 30, 50), fill=(250, 240 - i, 10))
    return encode(image, "PNG")


def pictrs_tree(root: Path, count: int) -> dict[str, bytes]:
    """pict-rs 0.5's file store: six two-hex-digit folders, then a UUID file name."""
    files = {}
    for i in range(count):
        key = f"files/01/8f/3a/{i:02x}/0e/7b/{UUIDS[i]}.png"
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(picture(i))
        files[key] = picture(i)
    (root / "sled-repo").mkdir()
    (root / "sled-repo" / "db").write_bytes(b"not media, not in the layout")
    return files


def env_for(data_dir: Path, detectors: str = "support.plugins:benign", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDIGUARD_")}
    env.update(PYTHONPATH=str(TESTS_DIR), FEDIGUARD_DATA_DIR=str(data_dir), FEDIGUARD_DETECTORS=detectors,
               FEDIGUARD_LOG_LEVEL="INFO", **extra)  # fmt: skip
    return env


def sweep(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "fediguard", "sweep", *args]
    return subprocess.run(cmd, env=env_for(data_dir, **env), capture_output=True, text=True, timeout=300)


def deny(data_dir: Path, *bodies: bytes) -> None:
    records = RecordStore(f"sqlite:///{data_dir / 'fediguard.sqlite3'}")
    banks = BankStore(records.engine)
    banks.ensure("known-bad", "deny")
    banks.add(
        "known-bad", [BankEntry("sha256", hashlib.sha256(b).hexdigest()) for b in bodies], "test", "test"
    )
    records.close()


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()
    }  # fmt: skip


def db(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(data_dir / "fediguard.sqlite3")


def test_quarantine_restore_and_skip_on_rerun(tmp_path: Path) -> None:
    store, quarantine, data = tmp_path / "pictrs", tmp_path / "quarantine", tmp_path / "data"
    store.mkdir()
    files = pictrs_tree(store, 6)
    bad_key = sorted(files)[2]
    deny(data, files[bad_key])

    run = sweep(
        data,
        f"file://{store}",
        "--layout",
        "pictrs",
        "--action",
        "quarantine",
        "--quarantine",
        str(quarantine),
    )
    assert run.returncode == 1, run.stderr
    assert "6 listed, 6 scanned, 0 skipped" in run.stderr and "1 flagged, 1 actions, 0 errors" in run.stderr
    assert not (store / bad_key).exists()
    assert (quarantine / bad_key).read_bytes() == files[bad_key]
    assert "sled-repo" not in run.stderr
    (object_id,) = db(data).execute("select id from sweep_objects where key = ?", (bad_key,)).fetchone()
    assert f"object {object_id}" in run.stderr
    assert db(data).execute(
        "select action, action_state from sweep_objects where id = ?", (object_id,)
    ).fetchone() == ("quarantine", "done")

    again = sweep(
        data,
        f"file://{store}",
        "--layout",
        "pictrs",
        "--action",
        "quarantine",
        "--quarantine",
        str(quarantine),
    )
    assert again.returncode == 0 and "5 listed, 0 scanned, 5 skipped" in again.stderr, again.stderr

    cmd = [sys.executable, "-m", "fediguard", "restore", str(object_id)]
    restored = subprocess.run(cmd, env=env_for(data), capture_output=True, text=True, timeout=120)
    assert restored.returncode == 0, restored.stderr
    assert (store / bad_key).read_bytes() == files[bad_key] and not (quarantine / bad_key).exists()
    assert "overturned" in restored.stdout
    third = sweep(
        data,
        f"file://{store}",
        "--layout",
        "pictrs",
        "--action",
        "quarantine",
        "--quarantine",
        str(quarantine),
    )
    assert third.returncode == 0 and "0 flagged" in third.stderr, third.stderr
    assert (store / bad_key).exists(), "an allow-listed, restored file is not quarantined again"
    bad_sha = hashlib.sha256(files[bad_key]).hexdigest()
    decisions = (
        db(data).execute("select verdict from decisions where sha256 = ? order by id", (bad_sha,)).fetchall()
    )
    assert [d[0] for d in decisions] in ([("reject")], ["reject", "pass"]), (
        "scanned once when skipped as unchanged, or re-decided as allowed"
    )


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    store, data = tmp_path / "store", tmp_path / "data"
    store.mkdir()
    files = pictrs_tree(store, 4)
    deny(data, *files.values())
    before = snapshot(store)
    run = sweep(data, f"file://{store}", "--layout", "pictrs", "--action", "delete", "--dry-run")
    assert run.returncode == 1 and "4 flagged, 0 actions" in run.stderr, run.stderr
    assert "dry run: would delete" in run.stderr
    assert snapshot(store) == before


def test_delete_and_since(tmp_path: Path) -> None:
    store, data = tmp_path / "store", tmp_path / "data"
    store.mkdir()
    files = pictrs_tree(store, 4)
    old, new = sorted(files)[:2], sorted(files)[2:]
    for key in old:
        os.utime(store / key, (time.time() - 7200, time.time() - 7200))
    deny(data, *files.values())
    run = sweep(data, f"file://{store}", "--layout", "pictrs", "--since", "1h", "--action", "delete")
    assert "2 listed, 2 scanned" in run.stderr and "2 flagged, 2 actions" in run.stderr, run.stderr
    assert all((store / k).exists() for k in old) and not any((store / k).exists() for k in new)


def test_bad_objects_never_stop_a_sweep(tmp_path: Path) -> None:
    store, data, outside = tmp_path / "store", tmp_path / "data", tmp_path / "outside"
    store.mkdir()
    outside.mkdir()
    (outside / "secret.png").write_bytes(picture(1))
    (store / "good.png").write_bytes(picture(2))
    (store / "empty.png").write_bytes(b"")
    (store / "notes.txt").write_text("not media")
    (store / "truncated.png").write_bytes(picture(3)[:60])
    (store / "link.png").symlink_to(outside / "secret.png")
    (store / "dirlink").symlink_to(outside)
    os.mkfifo(store / "fifo.png")
    run = sweep(data, f"file://{store}")
    assert run.returncode == 0, run.stderr
    # good + truncated are media; empty and notes.txt are not; links and the FIFO are never listed.
    assert "4 listed, 2 scanned, 0 skipped (unchanged), 2 not media" in run.stderr, run.stderr
    keys = {k for (k,) in db(data).execute("select key from sweep_objects")}
    assert keys == {"good.png", "empty.png", "notes.txt", "truncated.png"}
    verdicts = dict(
        db(data).execute("select key, verdict from sweep_objects where status = 'scanned'").fetchall()
    )
    assert verdicts == {"good.png": "pass", "truncated.png": "unscanned"}


def test_interrupted_sweep_resumes_and_scans_each_object_once(tmp_path: Path) -> None:
    store, data = tmp_path / "store", tmp_path / "data"
    store.mkdir()
    files = pictrs_tree(store, 24)
    cmd = [
        sys.executable,
        "-m",
        "fediguard",
        "sweep",
        f"file://{store}",
        "--layout",
        "pictrs",
        "--concurrency",
        "2",
    ]
    env = env_for(data, detectors="support.plugins:sleepy", FG_TEST_SLEEP_S="0.15", FEDIGUARD_BANKS="false")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline and proc.poll() is None, (
            "the sweep ended before it could be killed"
        )
        done = 0
        if (data / "fediguard.sqlite3").exists():
            with contextlib.suppress(sqlite3.OperationalError):
                done = db(data).execute("select count(*) from sweep_objects").fetchone()[0]
        if done >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    first = db(data).execute("select count(*) from sweep_objects").fetchone()[0]
    assert 6 <= first < 24
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"24 listed, {24 - first} scanned, {first} skipped" in rerun.stderr, rerun.stderr
    scans = (
        db(data)
        .execute("select sha256, count(*) from decisions where scanner is not 'cache' group by sha256")
        .fetchall()
    )
    by_sha = dict(scans)
    for body in files.values():
        assert by_sha.get(hashlib.sha256(body).hexdigest()) == 1, "every object scanned exactly once"


@pytest.mark.parametrize("args,message", [
    (["--action", "quarantine"], "--quarantine LOCATION"),
    (["--concurrency", "0"], "--concurrency"),
    (["--since", "soon"], "not a duration"),
])  # fmt: skip
def test_bad_arguments_are_explained(tmp_path: Path, args: list[str], message: str) -> None:
    run = sweep(tmp_path / "data", f"file://{tmp_path}", *args)
    assert run.returncode == 2 and message in run.stderr


def test_unknown_source_scheme(tmp_path: Path) -> None:
    run = sweep(tmp_path / "data", "ftp://example.org/x")
    assert run.returncode == 2 and "unsupported storage URL scheme" in run.stderr
