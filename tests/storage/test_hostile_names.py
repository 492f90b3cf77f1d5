"""Hostile names and objects rewritten under the sweeper, on each kind of source: a local folder,
a real S3 (radosgw) and a real SFTP server (sshd), driven through the Sweeper itself.

Every name a store can hold is listed, scanned, quarantined under its own name and restored, and
logged escaped; an object rewritten between the listing and the read is recorded as it was read.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fediguard.logs import shown
from fediguard.records import RecordStore
from fediguard.storage import Fetched, Source, get_layout, open_source
from fediguard.sweeper.actions import restore
from fediguard.sweeper.judges import Judgement
from fediguard.sweeper.run import Sweeper, SweepOptions
from fediguard.sweeper.state import SweepState

from .images import picture
from .test_sweep_remote import deny
from .test_sweep_remote import run as run_cli

FORGED = "\r\n2026-01-01 00:00:00,000 WARNING fediguard.sweep: all clear.jpg"
"""A name that would print a forged log line if it reached the log raw."""
ANY_STORE = [
    "back\\slash.jpg", "dir\\/in\\side.jpg", "new\nline.jpg", "esc\x1b[31mred\x1b[0m.jpg", "-rf.jpg",
    "--help.jpg", "tab\t.jpg", "\u202egpj.exe", "del\x7f.jpg", FORGED,
]  # fmt: skip
FOLDER_ONLY = [
    os.fsdecode(b"bad\xff\xfe.jpg"),  # not UTF-8: a surrogate-escaped name
    os.fsdecode(b"d\xff/sub\\\n/x.jpg"),
    "L" * 251 + ".jpg",  # as long as a file name can be (255 bytes)
]
BUCKET_ONLY = ["a/../b.jpg", "../up.jpg", "/lead.jpg", "a//b.jpg", "..", ".", "trail.jpg/", "\u2028ls.jpg",
               "k" * 900]  # fmt: skip


@dataclass
class Store:
    """A source with a quarantine location, and the test's own hands on what it holds."""

    source: Source
    names: list[str]
    put: Callable[[str, bytes], None]
    get: Callable[[str], bytes | None]
    """The object under a key, None when there is none."""
    held: Callable[[str], bytes | None]
    """The object held in quarantine under a key, None when there is none."""


def _folder(root: Path, quarantine: Path, source: Source, owner: tuple[int, int] | None = None) -> Store:
    def path(base: Path, key: str) -> bytes:
        return os.fsencode(base) + b"/" + os.fsencode(key)

    def put(key: str, data: bytes) -> None:
        target = path(root, key)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)
        if owner is not None:  # the SSH login user must own what it is to move
            for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
                for name in [dirpath, *(os.path.join(dirpath, n) for n in (*dirnames, *filenames))]:
                    os.chown(name, *owner, follow_symlinks=False)

    def read(base: Path, key: str) -> bytes | None:
        try:
            with open(path(base, key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    return Store(source, ANY_STORE + FOLDER_ONLY, put, lambda k: read(root, k), lambda k: read(quarantine, k))


@pytest.fixture(params=["local", "s3", "sftp"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "local":
        root, quarantine = tmp_path / "store", tmp_path / "quarantine"
        root.mkdir()
        source = open_source(root.as_uri(), quarantine_dir=str(quarantine))
        made = _folder(root, quarantine, source)
    elif request.param == "sftp":
        server = request.getfixturevalue("sshd_server")
        root = request.getfixturevalue("ssh_dir")
        held = server.make_dir(f"{root.name}-q")
        url = f"ssh://{server.user}@{server.host}:{server.port}{root}"
        source = open_source(url, key_file=str(server.key_path), known_hosts=str(server.known_hosts),
                             quarantine_path=str(held / "held"))  # fmt: skip
        made = _folder(root, held / "held", source, (server.uid, server.gid))
    else:
        made = _bucket(request)
    try:
        yield made
    finally:
        await made.source.close()


def _bucket(request: pytest.FixtureRequest) -> Store:
    server, admin = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_admin")
    bucket = request.getfixturevalue("s3_bucket")
    admin.create_bucket(Bucket=f"{bucket}-q")
    source = open_source(
        f"s3://{bucket}/media", endpoint_url=server.endpoint_url, region=server.region,
        access_key_id=server.access_key, secret_access_key=server.secret_key,
        quarantine_bucket=f"{bucket}-q", quarantine_prefix="held",
    )  # fmt: skip

    def get(where: str, key: str) -> bytes | None:
        try:
            body: bytes = admin.get_object(Bucket=where, Key=key)["Body"].read()
        except admin.exceptions.NoSuchKey:
            return None
        return body

    def put(key: str, data: bytes) -> None:
        admin.put_object(Bucket=bucket, Key=f"media/{key}", Body=data)

    return Store(source, ANY_STORE + BUCKET_ONLY, put, lambda k: get(bucket, f"media/{k}"),
                 lambda k: get(f"{bucket}-q", f"held/{k}"))  # fmt: skip


@pytest.fixture
def state(tmp_path: Path) -> Iterator[SweepState]:
    records = RecordStore(f"sqlite:///{tmp_path / 'fediguard.sqlite3'}")
    yield SweepState(records.engine)
    records.close()


class DenyJudge:
    """Rejects the bytes it is told to; remembers what it was given to judge under which key."""

    def __init__(self, *denied: bytes) -> None:
        self.denied = {hashlib.sha256(body).hexdigest() for body in denied}
        self.seen: dict[str, bytes] = {}

    async def judge(self, data: bytes, key: str) -> Judgement:
        self.seen[key] = data
        sha256 = hashlib.sha256(data).hexdigest()
        if sha256 in self.denied:
            return Judgement("reject", None, sha256, ("denylisted",))
        return Judgement("pass", None, sha256)


async def sweep(source: Source, state: SweepState, judge: DenyJudge, action: str = "report") -> Any:
    source_id = state.source_id(source.url, {})
    options = SweepOptions(layout=get_layout("plain"), action=action)
    return await Sweeper(source, source_id, state, judge, options).run()


def assert_logged_escaped(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        message = record.getMessage()
        assert message.isprintable(), f"a raw control character reached the log: {message!r}"


async def test_every_name_is_scanned_quarantined_restored_and_logged_escaped(
    store: Store, state: SweepState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fediguard")
    bodies = {name: picture(i) for i, name in enumerate(store.names)}
    for name, body in bodies.items():
        store.put(name, body)
    store.put("plain.jpg", picture(999))
    judge = DenyJudge(*bodies.values())

    stats = await sweep(store.source, state, judge, "quarantine")
    n = len(bodies)
    assert (stats.listed, stats.scanned, stats.flagged, stats.actions, stats.errors) == (
        n + 1,
        n + 1,
        n,
        n,
        0,
    )
    assert judge.seen == {**bodies, "plain.jpg": picture(999)}, "each judged under its name, with its bytes"
    source_id = state.source_id(store.source.url, {})
    records = state.known(source_id, list(bodies))
    for name, body in bodies.items():
        record = records[name]
        assert (record.action, record.action_state, record.quarantine_key) == ("quarantine", "done", name)
        assert record.size == len(body) and store.get(name) is None and store.held(name) == body, shown(name)
    flagged = "\n".join(r.getMessage() for r in caplog.records if r.getMessage().startswith("flagged"))
    assert all(f"flagged {shown(name)}: object" in flagged for name in bodies), flagged
    assert "\\x1b[31mred\\x1b[0m.jpg" in flagged and "\\r\\n2026-01-01" in flagged
    assert_logged_escaped(caplog)

    for name, body in bodies.items():
        done = await restore(store.source, state, records[name].id)
        assert (done.action, done.action_state, done.error) == ("restore", "done", None), shown(name)
        assert store.get(name) == body and store.held(name) is None, shown(name)
    again = await sweep(store.source, state, DenyJudge())
    assert (again.listed, again.scanned, again.skipped, again.errors) == (n + 1, 0, n + 1, 0)
    assert_logged_escaped(caplog)


class RewrittenBeforeRead:
    """A source whose object ``key`` is replaced (by ``rewrite``) after it is listed and just
    before the sweeper reads it: what an uploader replacing a file in between would do."""

    def __init__(self, source: Source, key: str, rewrite: Callable[[], None]) -> None:
        self.source, self.key, self.rewrite = source, key, rewrite
        self.rewritten = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    async def fetch(self, key: str, max_bytes: int) -> Fetched:
        if key == self.key and not self.rewritten:
            self.rewritten = True
            await asyncio.to_thread(self.rewrite)
        return await self.source.fetch(key, max_bytes)


async def test_an_object_rewritten_after_listing_is_recorded_as_read(
    store: Store, state: SweepState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fediguard")
    key, first, second = "new\nname.jpg", picture(1), picture(2, size=(160, 120))
    assert len(first) != len(second)
    store.put(key, first)
    listed = [o async for o in store.source.list()]
    assert [o.size for o in listed] == [len(first)]
    judge = DenyJudge()
    rewriting = RewrittenBeforeRead(store.source, key, lambda: store.put(key, second))

    stats = await sweep(rewriting, state, judge)  # type: ignore[arg-type]
    assert rewriting.rewritten and (stats.listed, stats.scanned, stats.errors) == (1, 1, 0)
    assert judge.seen == {key: second}
    record = state.known(state.source_id(store.source.url, {}), [key])[key]
    assert record.size == len(second), "the size of the bytes judged, not of the listing"
    assert record.sha256 == hashlib.sha256(second).hexdigest()
    (now,) = [o async for o in store.source.list()]
    assert (record.size, record.etag) == (now.size, now.etag), "the ETag of the bytes judged"
    if now.etag is None:  # folders: the mtime of the file as read
        assert abs((record.modified - now.modified).total_seconds()) < 1e-3
    assert any("changed since it was listed" in r.getMessage() for r in caplog.records)

    again = await sweep(store.source, state, judge)
    assert (again.scanned, again.skipped) == (0, 1), "recorded as it is now: not scanned twice"
    store.put(key, first)  # changed again after the sweep: the next one sees it and scans it
    third = await sweep(store.source, state, judge)
    assert (third.scanned, third.skipped) == (1, 0)
    assert state.known(state.source_id(store.source.url, {}), [key])[key].size == len(first)
    assert_logged_escaped(caplog)


def stored_id(data: Path, stored_key: str) -> str:
    with sqlite3.connect(data / "fediguard.sqlite3") as conn:
        (found,) = conn.execute("select id from sweep_objects where key = ?", (stored_key,)).fetchone()
    return str(found)


def test_hostile_names_are_swept_and_never_reach_the_log_raw(tmp_path: Path) -> None:
    store, quarantine, data = tmp_path / "store", tmp_path / "quarantine", tmp_path / "data"
    store.mkdir()
    names = {"back\\slash.png": 11, "new\nline\x1b[31mred.png": 12, "-rf \r\n2026-01-01 forged.png": 13}
    for name, i in names.items():
        (store / name).write_bytes(picture(i))
    (store / "fine.png").write_bytes(picture(14))
    deny(data, *(picture(i) for i in names.values()))
    args = (f"file://{store}", "--action", "quarantine", "--quarantine", str(quarantine))
    run = run_cli(data, "sweep", *args)
    assert run.returncode == 1, run.stderr
    assert "4 listed, 4 scanned" in run.stderr and "3 flagged, 3 actions, 0 errors" in run.stderr, run.stderr
    assert "\x1b" not in run.stderr and "\r" not in run.stderr, "no raw ESC or CR reaches the log"
    for line in run.stderr.splitlines():  # every line is a log line or the summary: none forged
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ |sweep of |ModuleNotFound", line), line
    for escaped in ("back\\\\slash.png", "new\\nline\\x1b[31mred.png", "-rf \\r\\n2026-01-01 forged.png"):
        assert f"flagged {escaped}: object" in run.stderr, run.stderr
    assert sorted(os.listdir(store)) == ["fine.png"]
    assert sorted(os.listdir(quarantine)) == sorted(names)
    again = run_cli(data, "sweep", *args)
    assert again.returncode == 0 and "1 listed, 0 scanned, 1 skipped" in again.stderr, again.stderr
    restored = run_cli(data, "restore", stored_id(data, "new\nline\x1b[31mred.png"), "--no-allow")
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith(
        "restored new\\nline\\x1b[31mred.png from quarantine (new\\nline\\x1b[31mred.png)\n"
    )
    assert "\x1b" not in restored.stdout
    assert (store / "new\nline\x1b[31mred.png").read_bytes() == picture(12)
    restored = run_cli(data, "restore", stored_id(data, "back\\\\slash.png"), "--no-allow")  # stored escaped
    assert restored.returncode == 0 and "restored back\\\\slash.png" in restored.stdout, restored.stderr
    assert (store / "back\\slash.png").read_bytes() == picture(11)
