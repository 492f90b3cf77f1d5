"""`fediguard sweep` end to end against the real S3 (radosgw) and SFTP (sshd) test servers."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from fediguard.banks.formats import BankEntry
from fediguard.banks.store import BankStore
from fediguard.records import RecordStore
from support.daemon import wait_for
from support.workers import CHILD_PYTHONPATH

from .images import picture

pytestmark = pytest.mark.slow
TESTS_DIR = Path(__file__).resolve().parents[1]


def environment(data_dir: Path, **env: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("FEDIGUARD_", "AWS_"))}
    environ.update(PYTHONPATH=CHILD_PYTHONPATH, FEDIGUARD_DATA_DIR=str(data_dir),
                   FEDIGUARD_DETECTORS="support.plugins:benign", **env)  # fmt: skip
    return environ


def run(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fediguard", *args], env=environment(data_dir, **env),
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def deny(data_dir: Path, *bodies: bytes) -> None:
    records = RecordStore(f"sqlite:///{data_dir / 'fediguard.sqlite3'}")
    banks = BankStore(records.engine)
    banks.ensure("known-bad", "deny")
    banks.add("known-bad", [BankEntry("sha256", hashlib.sha256(b).hexdigest()) for b in bodies], "t", "t")
    records.close()


def bucket_state(admin: Any, bucket: str) -> dict[str, str]:
    state: dict[str, str] = {}
    for page in admin.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            state[item["Key"]] = item["ETag"]
    return state


def test_s3_sweep_pages_quarantines_restores_and_dry_runs(
    s3_server: Any, s3_admin: Any, s3_bucket: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    bodies = {f"media/{i // 100:02d}/{i:05d}.png": picture(i) for i in range(1030)}
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(lambda kv: s3_admin.put_object(Bucket=s3_bucket, Key=kv[0], Body=kv[1]), bodies.items())
        )
    bad = "media/07/00712.png"
    deny(data, bodies[bad])
    quarantine = f"{s3_bucket}-q"
    s3_admin.create_bucket(Bucket=quarantine)
    creds = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    where = ["--endpoint-url", s3_server.endpoint_url, "--region", s3_server.region]
    before = bucket_state(s3_admin, s3_bucket)

    sweep = ["sweep", f"s3://{s3_bucket}/", *where, "--concurrency", "8"]
    dry = run(data, *sweep, "--action", "delete", "--dry-run", **creds)
    assert dry.returncode == 1, dry.stderr
    assert "1,030 listed, 1,030 scanned" in dry.stderr and "1 flagged, 0 actions" in dry.stderr
    assert bucket_state(s3_admin, s3_bucket) == before, "a dry run changes nothing in storage"

    # Acting after a report-only run: the unchanged objects are skipped, the flagged one is acted on.
    wet = run(data, *sweep, "--action", "quarantine", "--quarantine", f"s3://{quarantine}/held", **creds)
    assert wet.returncode == 1 and "1,030 listed, 1 scanned, 1,029 skipped" in wet.stderr, wet.stderr
    assert "1 flagged, 1 actions, 0 errors" in wet.stderr
    after = bucket_state(s3_admin, s3_bucket)
    assert bad not in after and len(after) == 1029
    assert s3_admin.get_object(Bucket=quarantine, Key=f"held/{bad}")["Body"].read() == bodies[bad]


def test_s3_quarantine_and_restore(s3_server: Any, s3_admin: Any, s3_bucket: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    bodies = {f"a/{i}.png": picture(i) for i in range(5)}
    for key, body in bodies.items():
        s3_admin.put_object(Bucket=s3_bucket, Key=key, Body=body)
    deny(data, bodies["a/3.png"])
    quarantine = f"{s3_bucket}-q"
    s3_admin.create_bucket(Bucket=quarantine)
    creds = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    where = ["--endpoint-url", s3_server.endpoint_url, "--region", s3_server.region]
    wet = run(data, "sweep", f"s3://{s3_bucket}/", *where, "--action", "quarantine",
              "--quarantine", f"s3://{quarantine}/held", **creds)  # fmt: skip
    assert wet.returncode == 1 and "1 flagged, 1 actions, 0 errors" in wet.stderr, wet.stderr
    assert "a/3.png" not in bucket_state(s3_admin, s3_bucket)
    assert s3_admin.get_object(Bucket=quarantine, Key="held/a/3.png")["Body"].read() == bodies["a/3.png"]
    object_id = next(line for line in wet.stderr.splitlines() if "flagged a/3.png" in line).split("object ")[
        1
    ]
    object_id = object_id.split(",")[0]
    # The deny entry holds the object's own hash, which no allow entry can outweigh: drop it first.
    with sqlite3.connect(data / "fediguard.sqlite3") as conn:
        conn.execute("delete from bank_entries")
    restored = run(data, "restore", object_id, **creds)
    assert restored.returncode == 0 and "overturned" in restored.stdout, restored.stderr
    assert s3_admin.get_object(Bucket=s3_bucket, Key="a/3.png")["Body"].read() == bodies["a/3.png"]
    assert "held/a/3.png" not in bucket_state(s3_admin, quarantine)
    wrong = run(data, "sweep", f"s3://{s3_bucket}/", *where, AWS_ACCESS_KEY_ID=s3_server.access_key,
                AWS_SECRET_ACCESS_KEY="wrong-secret-0000000000")  # fmt: skip
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr


def test_ssh_sweep_deletes_over_sftp(sshd_server: Any, ssh_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    bodies = {f"{i}.png": picture(i) for i in range(4)}
    for name, body in bodies.items():
        (ssh_dir / name).write_bytes(body)
        os.chown(ssh_dir / name, sshd_server.uid, sshd_server.gid)
    deny(data, bodies["2.png"])
    url = f"ssh://{sshd_server.user}@{sshd_server.host}:{sshd_server.port}{ssh_dir}"
    result = run(data, "sweep", url, "--ssh-key", str(sshd_server.key_path), "--known-hosts",
                 str(sshd_server.known_hosts), "--action", "delete")  # fmt: skip
    assert result.returncode == 1 and "4 listed, 4 scanned" in result.stderr, result.stderr
    assert "1 flagged, 1 actions" in result.stderr
    assert sorted(p.name for p in ssh_dir.iterdir()) == ["0.png", "1.png", "3.png"]
    again = run(data, "sweep", url, "--ssh-key", str(sshd_server.key_path), "--known-hosts",
                str(sshd_server.known_hosts))  # fmt: skip
    assert again.returncode == 0 and "3 listed, 0 scanned, 3 skipped" in again.stderr, again.stderr


def test_unreachable_s3_stops_a_single_run_but_not_a_daemon(tmp_path: Path) -> None:
    data = tmp_path / "data"
    creds = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}
    nowhere = ["s3://media/", "--endpoint-url", "http://127.0.0.1:9", "--region", "us-east-1"]
    once = run(data, "sweep", *nowhere, **creds)
    assert once.returncode == 2 and "S3 endpoint unreachable" in once.stderr, once.stderr
    assert "Traceback" not in once.stderr
    log_path = tmp_path / "daemon.log"
    cmd = [sys.executable, "-m", "fediguard", "sweep", *nowhere, "--daemon", "--interval", "2.5s"]
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(cmd, env=environment(data, **creds), stdout=subprocess.DEVNULL,
                                stderr=log_file)  # fmt: skip
    try:  # waits of 1 s, 2 s, then --interval: backoff, capped
        wait_for(lambda: "pass failed (4 in a row)" in log_path.read_text(), proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = log_path.read_text()
    assert proc.returncode == 0, text
    waits = [line.rsplit("retrying in ", 1)[1] for line in text.splitlines() if "retrying in" in line]
    assert waits[:4] == ["1s", "2s", "2.5s", "2.5s"], text
    assert "S3 endpoint unreachable" in text and "Traceback" not in text


def test_daemon_waits_for_a_bucket_that_does_not_exist_yet(
    s3_server: Any, s3_admin: Any, s3_bucket: str, tmp_path: Path
) -> None:
    data, bucket = tmp_path / "data", f"{s3_bucket}-later"
    creds = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    log_path = tmp_path / "daemon.log"
    where = ["--endpoint-url", s3_server.endpoint_url, "--region", s3_server.region]
    cmd = [sys.executable, "-m", "fediguard", "sweep", f"s3://{bucket}/", *where, "--daemon", "--interval",
           "0.3s"]  # fmt: skip
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(cmd, env=environment(data, **creds), stdout=subprocess.DEVNULL,
                                stderr=log_file)  # fmt: skip
    try:
        wait_for(lambda: "pass failed (2 in a row)" in log_path.read_text(), proc)
        s3_admin.create_bucket(Bucket=bucket)
        s3_admin.put_object(Bucket=bucket, Key="a/1.png", Body=picture(1))
        wait_for(lambda: "(pass 1, full): 1 listed, 1 scanned" in log_path.read_text(), proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = log_path.read_text()
    assert proc.returncode == 0 and "NoSuchBucket" in text and "Traceback" not in text, text
