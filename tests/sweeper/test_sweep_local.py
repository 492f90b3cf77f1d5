"""`fediguard sweep` over a local folder, as an admin runs it: real processes, the real database."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from fediguard.banks.formats import BankEntry
from fediguard.banks.store import BankStore
from fediguard.records import RecordStore
from support.daemon import wait_for
from support.images import encode
from support.workers import CHILD_PYTHONPATH

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
    env.update(PYTHONPATH=CHILD_PYTHONPATH, FEDIGUARD_DATA_DIR=str(data_dir), FEDIGUARD_DETECTORS=detectors,
               FEDIGUARD_LOG_LEVEL="INFO", **extra)  # fmt: skip
    return env


def sweep(
    data_dir: Path, *args: str, detectors: str = "support.plugins:benign", **env: str
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "fediguard", "sweep", *args]
    return subprocess.run(
        cmd, env=env_for(data_dir, detectors, **env), capture_output=True, text=True, timeout=300
    )


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


def restore(data_dir: Path, object_id: int, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "fediguard", "restore", str(object_id), *args]
    return subprocess.run(cmd, env=env_for(data_dir), capture_output=True, text=True, timeout=120)


def object_id(data_dir: Path, key: str) -> int:
    (found,) = db(data_dir).execute("select id from sweep_objects where key = ?", (key,)).fetchone()
    return int(found)


def action_of(data_dir: Path, key: str) -> tuple[str | None, str | None]:
    query = "select action, action_state from sweep_objects where key = ?"
    return tuple(db(data_dir).execute(query, (key,)).fetchone())  # type: ignore[return-value]


def test_quarantine_restore_and_skip_on_rerun(tmp_path: Path) -> None:
    store, quarantine, data = tmp_path / "pictrs", tmp_path / "quarantine", tmp_path / "data"
    store.mkdir()
    files = pictrs_tree(store, 6)
    bad_key = sorted(files)[2]
    deny(data, files[bad_key])

    source = (f"file://{store}", "--layout", "pictrs")
    quarantining = (*source, "--action", "quarantine", "--quarantine", str(quarantine))
    run = sweep(data, *quarantining)
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

    again = sweep(data, *quarantining)
    assert again.returncode == 0 and "5 listed, 0 scanned, 5 skipped" in again.stderr, again.stderr

    # The deny entry holds the file's own hash, which no allow entry can outweigh: drop it first.
    with db(data) as conn:
        conn.execute("delete from bank_entries")
    restored = restore(data, object_id)
    assert restored.returncode == 0, restored.stderr
    assert (store / bad_key).read_bytes() == files[bad_key] and not (quarantine / bad_key).exists()
    assert "overturned" in restored.stdout
    third = sweep(data, *quarantining)
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
    assert run.returncode == 3, run.stderr  # the undecodable one is left without a verdict
    # good + truncated are media; empty and notes.txt are not; links and the FIFO are never listed.
    assert "4 listed, 1 scanned, 0 skipped (unchanged), 2 not media" in run.stderr, run.stderr
    assert "0 unscanned (retried next run), 1 undecodable, 0 too large" in run.stderr
    statuses = dict(
        db(data).execute("select key, status || ' ' || coalesce(verdict, '-') from sweep_objects")
    )
    assert statuses == {"good.png": "scanned pass", "empty.png": "not_media -", "notes.txt": "not_media -",
                        "truncated.png": "undecodable unscanned"}  # fmt: skip
    # Undecodable media gives the same answer every time: skipped while unchanged, like the rest.
    again = sweep(data, f"file://{store}")
    assert "4 listed, 0 scanned, 4 skipped" in again.stderr, again.stderr


def test_a_name_that_is_not_utf8_is_scanned_acted_on_and_restorable(tmp_path: Path) -> None:
    store, quarantine, data = tmp_path / "store", tmp_path / "quarantine", tmp_path / "data"
    store.mkdir()
    for i in range(3):
        (store / f"ok{i}.png").write_bytes(picture(i))
    hostile = os.fsencode(store) + b"/bad\xff\xfe.png"  # a name no database column can hold as is
    with open(hostile, "wb") as f:
        f.write(picture(7))
    deny(data, picture(7))
    args = (f"file://{store}", "--action", "quarantine", "--quarantine", str(quarantine))
    run = sweep(data, *args)
    assert run.returncode == 1, run.stderr
    assert "4 listed, 4 scanned" in run.stderr and "1 flagged, 1 actions, 0 errors" in run.stderr, run.stderr
    assert "bad\\xff\\xfe.png is not valid UTF-8" in run.stderr and "Traceback" not in run.stderr
    assert not os.path.exists(hostile)
    with open(os.fsencode(quarantine) + b"/bad\xff\xfe.png", "rb") as f:
        assert f.read() == picture(7), "quarantined under its own raw name"
    assert action_of(data, "bad\\xff\\xfe.png") == ("quarantine", "done")
    again = sweep(data, *args)
    assert again.returncode == 0 and "3 listed, 0 scanned, 3 skipped" in again.stderr, again.stderr
    restored = restore(data, object_id(data, "bad\\xff\\xfe.png"), "--no-allow")
    assert restored.returncode == 0 and "restored bad\\xff\\xfe.png" in restored.stdout, restored.stderr
    with open(hostile, "rb") as f:
        assert f.read() == picture(7)


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
    # No verdict cache: nothing but the sweep's own records may keep an object from a second scan.
    env = env_for(data, detectors="support.plugins:sleepy", FG_TEST_SLEEP_S="0.15", FEDIGUARD_BANKS="false",
                  FEDIGUARD_VERDICT_CACHE="false")  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    finished = "select count(*) from sweep_objects where status = 'scanned'"
    while True:
        assert time.monotonic() < deadline and proc.poll() is None, (
            "the sweep ended before it could be killed"
        )
        done = 0
        if (data / "fediguard.sqlite3").exists():
            with contextlib.suppress(sqlite3.OperationalError):
                done = db(data).execute(finished).fetchone()[0]
        if done >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    first = db(data).execute(finished).fetchone()[0]
    assert 6 <= first < 24
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"24 listed, {24 - first} scanned, {first} skipped" in rerun.stderr, rerun.stderr
    assert_decided_once(data, files.values())


def assert_decided_once(data: Path, bodies: Iterable[bytes]) -> None:
    by_sha = dict(db(data).execute("select sha256, count(*) from decisions group by sha256").fetchall())
    for body in bodies:
        assert by_sha.get(hashlib.sha256(body).hexdigest()) == 1, "every object scanned exactly once"
    linked = "select count(*) from sweep_objects o join decisions d on d.id = o.decision_id"
    assert db(data).execute(linked).fetchone()[0] == len(by_sha)


def test_a_decision_recorded_just_before_a_kill_is_taken_up_not_redone(tmp_path: Path) -> None:
    """Killed after the decider recorded its decision but before the object's record was finished:
    the record still says the object was claimed for scanning. The next run takes the decision up,
    with the verdict cache off and for a reject too, and acts on it."""
    store, data = tmp_path / "store", tmp_path / "data"
    store.mkdir()
    files = pictrs_tree(store, 3)
    bad, good, _ = sorted(files)
    deny(data, files[bad])
    no_cache = {"FEDIGUARD_VERDICT_CACHE": "false"}
    first = sweep(data, f"file://{store}", "--layout", "pictrs", **no_cache)
    assert first.returncode == 1 and "3 scanned" in first.stderr, first.stderr
    with db(data) as conn:  # what the kill leaves: claimed rows, their decisions recorded
        conn.execute(
            "update sweep_objects set status = 'scanning', verdict = null, decision_id = null, "
            "scanned_at = (select created_at from decisions d where d.id = decision_id) where key in (?, ?)",
            (bad, good),
        )
    again = sweep(data, f"file://{store}", "--layout", "pictrs", "--action", "delete", **no_cache)
    assert again.returncode == 1, again.stderr
    assert "3 listed, 2 scanned, 1 skipped" in again.stderr and "1 flagged, 1 actions" in again.stderr
    assert again.stderr.count("reached for it by an interrupted run") == 2, again.stderr
    assert not (store / bad).exists() and (store / good).exists()
    assert_decided_once(data, files.values())
    statuses = dict(db(data).execute("select key, status || ' ' || verdict from sweep_objects"))
    assert statuses[bad] == "scanned reject" and statuses[good] == "scanned pass"


def test_concurrency_above_the_queue_size_waits_for_room(tmp_path: Path) -> None:
    """More readers than the scan queue holds: each waits for room, none is refused as queue_full."""
    store, data = tmp_path / "store", tmp_path / "data"
    store.mkdir()
    for i in range(40):
        (store / f"{i:02d}.png").write_bytes(picture(i))
    run = sweep(data, f"file://{store}", "--concurrency", "16", detectors="support.plugins:sleepy",
                FG_TEST_SLEEP_S="0.02", FEDIGUARD_QUEUE_MAX="2")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "40 listed, 40 scanned" in run.stderr and "0 unscanned" in run.stderr, run.stderr
    assert "queue_full" not in run.stderr
    verdicts = db(data).execute("select verdict, count(*) from decisions group by verdict").fetchall()
    assert verdicts == [("pass", 40)]


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


def quarantine_one(tmp_path: Path) -> tuple[Path, Path, Path, str, bytes]:
    """A pict-rs folder swept with quarantine: (store, quarantine, data, the held key, its bytes)."""
    store, quarantine, data = tmp_path / "pictrs", tmp_path / "quarantine", tmp_path / "data"
    store.mkdir()
    files = pictrs_tree(store, 3)
    bad_key = sorted(files)[1]
    deny(data, files[bad_key])
    run = sweep(data, f"file://{store}", "--layout", "pictrs", "--action", "quarantine",
                "--quarantine", str(quarantine))  # fmt: skip
    assert run.returncode == 1 and (quarantine / bad_key).exists(), run.stderr
    return store, quarantine, data, bad_key, files[bad_key]


def test_restore_after_a_later_sweep_without_quarantine(tmp_path: Path) -> None:
    store, quarantine, data, key, body = quarantine_one(tmp_path)
    later = sweep(data, f"file://{store}", "--layout", "pictrs")  # report only: no --quarantine
    assert later.returncode == 0, later.stderr
    restored = restore(data, object_id(data, key), "--no-allow")
    assert restored.returncode == 0, restored.stderr
    assert (store / key).read_bytes() == body and not (quarantine / key).exists()


def test_a_later_quarantine_sweep_uses_the_remembered_location(tmp_path: Path) -> None:
    store, quarantine, data, _, _ = quarantine_one(tmp_path)
    newcomer = f"files/01/8f/3a/dd/0e/7b/{UUIDS[33]}.png"
    (store / newcomer).parent.mkdir(parents=True)
    (store / newcomer).write_bytes(picture(33))
    deny(data, picture(33))
    later = sweep(data, f"file://{store}", "--layout", "pictrs", "--action", "quarantine")
    assert later.returncode == 1, later.stderr
    assert (quarantine / newcomer).read_bytes() == picture(33) and not (store / newcomer).exists()


def test_quarantine_without_a_location_to_remember_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    store, data = tmp_path / "store", tmp_path / "data"
    store.mkdir()
    run = sweep(data, f"file://{store}", "--action", "quarantine")
    assert run.returncode == 2 and "--action quarantine needs --quarantine LOCATION" in run.stderr, run.stderr
    assert "no earlier sweep" in run.stderr and not data.exists()


def test_a_plain_path_is_a_local_folder(tmp_path: Path) -> None:
    store, data = tmp_path / "store", tmp_path / "data"
    store.mkdir()
    pictrs_tree(store, 2)
    first = sweep(data, str(store), "--layout", "pictrs")
    assert first.returncode == 0 and "2 listed, 2 scanned" in first.stderr, first.stderr
    again = sweep(data, f"file://{store}", "--layout", "pictrs")  # the same source
    assert again.returncode == 0 and "2 listed, 0 scanned, 2 skipped" in again.stderr, again.stderr
    # The summary is given once (a log line), not also printed beside it.
    assert len([line for line in again.stderr.splitlines() if "2 listed, 0 scanned" in line]) == 1


def test_restore_of_an_object_a_deny_entry_still_matches_moves_nothing(tmp_path: Path) -> None:
    store, quarantine, data, key, body = quarantine_one(tmp_path)
    oid = object_id(data, key)
    refused = restore(data, oid)
    assert refused.returncode == 1, refused.stderr
    assert "is NOT restored; it stays in quarantine" in refused.stderr, refused.stderr
    assert "deny bank 'known-bad' entry" in refused.stderr and "fediguard banks remove known-bad --id" in (
        refused.stderr
    )
    assert f"fediguard restore {oid} --no-allow" in refused.stderr
    assert (quarantine / key).read_bytes() == body and not (store / key).exists()
    assert action_of(data, key) == ("quarantine", "done")
    # What it says to run works: remove the entry, then the same restore.
    entry = re.search(r"fediguard banks remove known-bad --id ([\d ]+)", refused.stderr)
    assert entry is not None
    removed = subprocess.run(
        [sys.executable, "-m", "fediguard", "banks", "remove", "known-bad", "--id", *entry.group(1).split()],
        env=env_for(data), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    restored = restore(data, oid)
    assert restored.returncode == 0, restored.stderr
    assert (store / key).read_bytes() == body and "overturned" in restored.stdout
    twice = restore(data, oid)
    assert twice.returncode == 0 and "restored already" in twice.stdout, twice.stderr
    assert "overturned already" in twice.stdout


def test_restore_names_the_database_it_read(tmp_path: Path) -> None:
    _, _, data, key, _ = quarantine_one(tmp_path)
    missing = restore(data, 999)
    assert missing.returncode == 2, missing.stderr
    assert f"no swept object 999 in the SQLite database {data / 'fediguard.sqlite3'}" in missing.stderr
    nowhere = restore(tmp_path / "elsewhere", object_id(data, key))
    assert nowhere.returncode == 2 and f"no records database at {tmp_path / 'elsewhere'}" in nowhere.stderr
    assert not (tmp_path / "elsewhere").exists(), "a restore creates no database"


def test_restore_from_a_quarantine_location_given_again(tmp_path: Path) -> None:
    store, quarantine, data, key, body = quarantine_one(tmp_path)
    elsewhere = tmp_path / "new-quarantine"
    later = sweep(data, f"file://{store}", "--layout", "pictrs", "--quarantine", str(elsewhere))
    assert "1 object(s) stay in the old one" in later.stderr, later.stderr
    lost = restore(data, object_id(data, key), "--no-allow")
    assert lost.returncode == 2 and "is not in the quarantine location" in lost.stderr, lost.stderr
    restored = restore(data, object_id(data, key), "--no-allow", "--quarantine", str(quarantine))
    assert restored.returncode == 0, restored.stderr
    assert (store / key).read_bytes() == body


def test_a_dry_run_does_not_move_the_remembered_quarantine(tmp_path: Path) -> None:
    store, quarantine, data, key, body = quarantine_one(tmp_path)
    trial = tmp_path / "trial-quarantine"
    dry = sweep(data, f"file://{store}", "--layout", "pictrs", "--action", "quarantine", "--quarantine",
                str(trial), "--dry-run")  # fmt: skip
    assert dry.returncode == 0 and "stay in the old one" not in dry.stderr, dry.stderr
    (options,) = db(data).execute("select options from sweep_sources").fetchone()
    assert json.loads(options) == {"quarantine_dir": str(quarantine)}
    restored = restore(data, object_id(data, key), "--no-allow")
    assert restored.returncode == 0, restored.stderr
    assert (store / key).read_bytes() == body and not trial.exists()


def test_failed_restore_leaves_the_object_restorable(tmp_path: Path) -> None:
    store, quarantine, data, key, body = quarantine_one(tmp_path)
    oid = object_id(data, key)
    (store / key).write_bytes(b"a newcomer under the same name")
    for _ in range(2):  # refused for the same clear reason every time, never "not in quarantine"
        failed = restore(data, oid, "--no-allow")
        assert failed.returncode == 2, failed.stderr
        assert "already exists" in failed.stderr and "stays in quarantine" in failed.stderr, failed.stderr
        assert action_of(data, key) == ("quarantine", "done")
        assert (quarantine / key).read_bytes() == body
    # A row left as restore/failed by an older version is restorable too.
    with db(data) as conn:
        conn.execute(
            "update sweep_objects set action = 'restore', action_state = 'failed' where id = ?", (oid,)
        )
    (store / key).unlink()
    restored = restore(data, oid, "--no-allow")
    assert restored.returncode == 0, restored.stderr
    assert (store / key).read_bytes() == body and action_of(data, key) == ("restore", "done")
    # A restore that moved the file but crashed before recording it is finished, not failed.
    with db(data) as conn:
        conn.execute("update sweep_objects set action_state = 'pending' where id = ?", (oid,))
    finished = restore(data, oid, "--no-allow")
    assert finished.returncode == 0 and action_of(data, key) == ("restore", "done"), finished.stderr


def test_dry_run_reports_pending_actions_without_carrying_them_out(tmp_path: Path) -> None:
    store, data = tmp_path / "store", tmp_path / "data"
    store.mkdir()
    files = pictrs_tree(store, 3)
    bad_key = sorted(files)[0]
    deny(data, files[bad_key])
    assert sweep(data, f"file://{store}", "--layout", "pictrs").returncode == 1
    with db(data) as conn:  # what a run that crashed between recording and deleting leaves behind
        conn.execute("update sweep_objects set action = 'delete', action_state = 'pending' where key = ?",
                     (bad_key,))  # fmt: skip
    before = snapshot(store)
    dry = sweep(data, f"file://{store}", "--layout", "pictrs", "--action", "delete", "--dry-run")
    assert dry.returncode == 0 and "pending from an earlier run; left as it is" in dry.stderr, dry.stderr
    assert snapshot(store) == before and action_of(data, bad_key) == ("delete", "pending")
    # A report-only run never deletes, whatever an earlier run meant to do.
    report = sweep(data, f"file://{store}", "--layout", "pictrs")
    assert report.returncode == 0 and snapshot(store) == before, report.stderr
    assert "left as it is (this run's action is report): a sweep with --action delete finishes it" in (
        report.stderr
    )
    assert action_of(data, bad_key) == ("delete", "pending")
    wet = sweep(data, f"file://{store}", "--layout", "pictrs", "--action", "delete")
    assert wet.returncode == 0 and not (store / bad_key).exists(), wet.stderr
    assert "finishing delete of" in wet.stderr and action_of(data, bad_key) == ("delete", "done")


def test_a_pending_action_of_another_kind_is_not_carried_out(tmp_path: Path) -> None:
    """A quarantine run does not finish a crashed delete run's delete: the object is quarantined
    (restorable) instead, as this run's action says."""
    store, quarantine, data = tmp_path / "store", tmp_path / "quarantine", tmp_path / "data"
    store.mkdir()
    files = pictrs_tree(store, 3)
    bad_key = sorted(files)[0]
    deny(data, files[bad_key])
    assert sweep(data, f"file://{store}", "--layout", "pictrs").returncode == 1
    with db(data) as conn:
        conn.execute("update sweep_objects set action = 'delete', action_state = 'pending' where key = ?",
                     (bad_key,))  # fmt: skip
    run = sweep(data, f"file://{store}", "--layout", "pictrs", "--action", "quarantine",
                "--quarantine", str(quarantine))  # fmt: skip
    assert run.returncode == 1 and "a sweep with --action delete finishes it" in run.stderr, run.stderr
    assert (quarantine / bad_key).read_bytes() == files[bad_key]
    assert action_of(data, bad_key) == ("quarantine", "done")


def test_objects_without_a_verdict_are_retried(tmp_path: Path) -> None:
    store, data = tmp_path / "store", tmp_path / "data"
    store.mkdir()
    pictrs_tree(store, 3)
    blind = sweep(data, f"file://{store}", "--layout", "pictrs", FEDIGUARD_LOCAL_SCANNER="false")
    assert blind.returncode == 3, blind.stderr  # nothing got a verdict: not a clean sweep
    assert "3 listed, 0 scanned" in blind.stderr and "3 unscanned (retried next run)" in blind.stderr, (
        blind.stderr
    )
    statuses = {s for (s,) in db(data).execute("select status || ' ' || error from sweep_objects")}
    assert statuses == {"unscanned no_scanner"}
    seeing = sweep(data, f"file://{store}", "--layout", "pictrs")
    assert seeing.returncode == 0, seeing.stderr
    assert "3 listed, 3 scanned, 0 skipped" in seeing.stderr and "0 unscanned" in seeing.stderr, seeing.stderr
    # Records of an older version, which saved "no verdict" as scanned, are retried too; and errors.
    with db(data) as conn:
        conn.execute("update sweep_objects set verdict = 'unscanned' where rowid = 1")
        conn.execute("update sweep_objects set status = 'error', verdict = null where rowid = 2")
    third = sweep(data, f"file://{store}", "--layout", "pictrs")
    assert "3 listed, 2 scanned, 1 skipped" in third.stderr, third.stderr


def test_large_files_are_judged_before_being_read(tmp_path: Path) -> None:
    store, data = tmp_path / "store", tmp_path / "data"
    store.mkdir()
    (store / "backup.tar").write_bytes(b"ustar" + bytes(3_000_000))
    (store / "huge.png").write_bytes(picture(1) + bytes(3_000_000))  # media, over the limit
    (store / "fine.png").write_bytes(picture(2))
    first = sweep(data, f"file://{store}", FEDIGUARD_MAX_BODY_MB="1")
    assert first.returncode == 3, first.stderr  # the one too large is left without a verdict
    assert "3 listed, 1 scanned" in first.stderr and "1 not media" in first.stderr, first.stderr
    assert "1 too large" in first.stderr and "0 errors" in first.stderr, first.stderr
    statuses = dict(db(data).execute("select key, status from sweep_objects"))
    assert statuses == {"backup.tar": "not_media", "huge.png": "too_large", "fine.png": "scanned"}
    again = sweep(data, f"file://{store}", FEDIGUARD_MAX_BODY_MB="1")
    assert "3 listed, 0 scanned, 3 skipped" in again.stderr and "0 errors" in again.stderr, again.stderr
    raised = sweep(data, f"file://{store}", FEDIGUARD_MAX_BODY_MB="5")  # a raised limit: tried again
    assert "3 listed, 1 scanned, 2 skipped" in raised.stderr, raised.stderr


def test_daemon_lists_everything_every_full_every(tmp_path: Path) -> None:
    store, data = tmp_path / "store", tmp_path / "data"
    store.mkdir()
    pictrs_tree(store, 2)
    log_path = tmp_path / "daemon.log"
    cmd = [sys.executable, "-m", "fediguard", "sweep", f"file://{store}", "--layout", "pictrs", "--daemon",
           "--interval", "0.2s", "--full-every", "2s"]  # fmt: skip
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(cmd, env=env_for(data), stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        wait_for(lambda: "(pass 2, changes only)" in log_path.read_text(), proc)
        # Copied in with its old modification time (rsync -a, mv): no incremental pass sees it.
        key = f"files/01/8f/3a/ff/0e/7b/{UUIDS[30]}.png"
        (store / key).parent.mkdir(parents=True)
        (store / key).write_bytes(picture(30))
        os.utime(store / key, (time.time() - 86400, time.time() - 86400))
        # The end of the pass, not the object's record: a stop in the middle of a pass exits 130.
        wait_for(lambda: "3 listed, 1 scanned, 2 skipped" in log_path.read_text(), proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = log_path.read_text()
    assert proc.returncode == 0, text
    full = [line for line in text.splitlines() if ", full)" in line]
    assert "(pass 1, full)" in full[0], text
    assert any("3 listed, 1 scanned, 2 skipped" in line for line in full), text


def test_daemon_outlives_a_folder_that_disappears_and_comes_back(tmp_path: Path) -> None:
    store, away, data = tmp_path / "store", tmp_path / "away", tmp_path / "data"
    store.mkdir()
    pictrs_tree(store, 2)
    for path in store.rglob("*.png"):  # older than the first pass: the newcomer is the only change
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    log_path = tmp_path / "daemon.log"
    cmd = [sys.executable, "-m", "fediguard", "sweep", f"file://{store}", "--layout", "pictrs", "--daemon",
           "--interval", "0.3s"]  # fmt: skip
    # Whichever pass it is: one may run between the folder's return and the newcomer's arrival.
    newcomer_scanned = re.compile(r"\(pass \d+, changes only\): 1 listed, 1 scanned")
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(cmd, env=env_for(data), stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        wait_for(lambda: "(pass 1, full)" in log_path.read_text(), proc)
        store.rename(away)  # unmounted, moved away: every pass now fails
        wait_for(lambda: "pass failed (3 in a row)" in log_path.read_text(), proc)
        away.rename(store)
        key = f"files/01/8f/3a/ee/0e/7b/{UUIDS[31]}.png"
        (store / key).parent.mkdir(parents=True)
        written = tmp_path / "newcomer.png"  # whole before it appears: no pass sees half of it
        written.write_bytes(picture(31))
        written.replace(store / key)
        wait_for(lambda: newcomer_scanned.search(log_path.read_text()), proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = log_path.read_text()
    assert proc.returncode == 0, text
    assert db(data).execute("select 1 from sweep_objects where key = ?", (key,)).fetchone()
    assert f"the storage root {store} is gone" in text and "retrying in 0.3s" in text, text
    assert "Traceback" not in text
    # The next pass lists what changed since the last pass that went through: the newcomer only.
    assert newcomer_scanned.search(text), text
