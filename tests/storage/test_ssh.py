"""ssh:// source against a real OpenSSH server (SFTP), logged in as an unprivileged user."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fediguard.storage import (
    ObjectGone,
    ObjectTooLarge,
    QuarantineConflict,
    SourceAuthError,
    SourceError,
    UnsafeKey,
    get_layout,
    iter_media,
    open_source,
)
from fediguard.storage.ssh import SSHSource

from .test_base import HOSTILE_KEYS
from .trees import mastodon_tree, pictrs_tree

pytestmark = pytest.mark.slow


def chown_tree(path: Path, server: Any) -> None:
    """Hand a tree built by the test (as root) to the SSH login user."""
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), server.uid, server.gid, follow_symlinks=False)


@pytest.fixture
async def make_source(sshd_server: Any) -> AsyncIterator[Any]:
    opened: list[SSHSource] = []

    def make(path: Path, **options: Any) -> SSHSource:
        options = {
            "key_file": str(sshd_server.key_path),
            "known_hosts": str(sshd_server.known_hosts),
            **options,
        }
        url = f"ssh://{sshd_server.user}@{sshd_server.host}:{sshd_server.port}{path}"
        source = open_source(url, **options)
        assert isinstance(source, SSHSource)
        opened.append(source)
        return source

    yield make
    for source in opened:
        await source.close()


async def test_listing_and_reading_a_pictrs_tree(ssh_dir: Path, sshd_server: Any, make_source: Any) -> None:
    media, other = pictrs_tree(ssh_dir, count=9)
    outside = ssh_dir.parent / f"{ssh_dir.name}-outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"outside")
    (ssh_dir / "files" / "link_dir").symlink_to(outside)
    (ssh_dir / "files" / "link_file").symlink_to(outside / "secret")
    chown_tree(ssh_dir, sshd_server)
    source = make_source(ssh_dir)
    listed = {o.key: o async for o in source.list()}
    assert set(listed) == set(media) | other  # '.', '..' and symlinks never appear
    found = {o.key async for o in iter_media(source, get_layout("pictrs"))}
    assert found == set(media)
    for key, data in media.items():
        assert listed[key].size == len(data) and listed[key].modified.tzinfo is UTC
        assert await source.read(key, 1 << 20) == data
    for key in ("files/link_file", "files/link_dir/secret"):
        with pytest.raises(SourceError):
            await source.read(key, 100)
    assert {o.key async for o in source.list("files/0")} == {k for k in media if k.startswith("files/0")}


async def test_mastodon_tree_and_since(ssh_dir: Path, sshd_server: Any, make_source: Any) -> None:
    media, _ = mastodon_tree(ssh_dir)
    now = time.time()
    old = next(iter(media))
    os.utime(ssh_dir / old, (now - 7200, now - 7200))
    chown_tree(ssh_dir, sshd_server)
    source = make_source(ssh_dir)
    assert {o.key async for o in iter_media(source, get_layout("mastodon"))} == set(media)
    recent = {o.key async for o in source.list(since=datetime.fromtimestamp(now - 60, UTC))}
    assert old not in recent and set(media) - {old} <= recent


async def test_read_cap_empty_and_concurrency(ssh_dir: Path, sshd_server: Any, make_source: Any) -> None:
    (ssh_dir / "big").write_bytes(b"z" * 100_000)
    (ssh_dir / "empty").write_bytes(b"")
    blobs = {f"blob{i}": os.urandom(20_000 + i) for i in range(20)}
    for name, data in blobs.items():
        (ssh_dir / name).write_bytes(data)
    source = make_source(ssh_dir)
    assert await source.read("big", 100_000) == b"z" * 100_000
    with pytest.raises(ObjectTooLarge):
        await source.read("big", 99_999)
    assert await source.read("empty", 10) == b""
    assert await asyncio.gather(*(source.read(k, 1 << 20) for k in blobs)) == list(blobs.values())


async def test_vanished_between_listing_and_reading(ssh_dir: Path, make_source: Any) -> None:
    (ssh_dir / "d").mkdir()
    (ssh_dir / "d" / "f").write_bytes(b"x")
    source = make_source(ssh_dir)
    listed = [o async for o in source.list()]
    (ssh_dir / "d" / "f").unlink()
    with pytest.raises(ObjectGone):
        await source.read(listed[0].key, 10)
    with pytest.raises(ObjectGone):
        await source.delete(listed[0].key)
    shutil.rmtree(ssh_dir / "d")
    with pytest.raises(ObjectGone):
        await source.read("d/f", 10)


async def test_delete(ssh_dir: Path, make_source: Any) -> None:
    (ssh_dir / "f").write_bytes(b"x")
    source = make_source(ssh_dir)
    await source.delete("f")
    assert not (ssh_dir / "f").exists()


async def test_quarantine_and_restore(ssh_dir: Path, sshd_server: Any, make_source: Any) -> None:
    root = ssh_dir / "root"
    media, _ = pictrs_tree(root, count=2)
    chown_tree(ssh_dir, sshd_server)
    qdir = sshd_server.make_dir(f"{ssh_dir.name}-q")
    key, data = next(iter(media.items()))
    source = make_source(root, quarantine_path=str(qdir / "held"))
    await source.quarantine(key, f"2024/{key}")  # creates held/2024/... on the server
    assert (qdir / "held" / "2024" / key).read_bytes() == data
    assert not (root / key).exists()
    assert key not in {o.key async for o in source.list()}

    (root / key).write_bytes(b"newcomer")
    with pytest.raises(QuarantineConflict):
        await source.restore(f"2024/{key}", key)
    (root / key).unlink()
    await source.restore(f"2024/{key}", key)
    assert (root / key).read_bytes() == data and not (qdir / "held" / "2024" / key).exists()

    (qdir / "held" / "taken").write_bytes(b"x")
    with pytest.raises(QuarantineConflict):
        await source.quarantine(key, "taken")
    assert (root / key).read_bytes() == data


async def test_quarantine_inside_root_is_not_listed(ssh_dir: Path, make_source: Any) -> None:
    (ssh_dir / "img").write_bytes(b"x")
    source = make_source(ssh_dir, quarantine_path=str(ssh_dir / "quarantine"))
    await source.quarantine("img", "img")
    assert [o async for o in source.list()] == []


async def test_permission_denied(ssh_dir: Path, make_source: Any) -> None:
    # The test runs as root; the SSH user is not root, so these modes are really enforced.
    (ssh_dir / "mine").write_bytes(b"x")
    (ssh_dir / "roots_secret").write_bytes(b"x")
    (ssh_dir / "roots_secret").chmod(0o600)
    (ssh_dir / "locked").mkdir(mode=0o700)
    (ssh_dir / "locked" / "f").write_bytes(b"x")
    if os.geteuid() != 0:
        pytest.skip("needs root to make files the SSH user cannot read")
    source = make_source(ssh_dir)
    assert {o.key async for o in source.list()} == {"mine", "roots_secret"}
    assert source.listing_errors == 1
    with pytest.raises(SourceError, match="permission denied"):
        await source.read("roots_secret", 10)


@pytest.mark.parametrize("key", HOSTILE_KEYS)
async def test_hostile_keys(ssh_dir: Path, make_source: Any, key: str) -> None:
    (ssh_dir / "ok").write_bytes(b"x")
    source = make_source(ssh_dir, quarantine_path=str(ssh_dir.parent / f"{ssh_dir.name}-q"))
    for call in (
        source.read(key, 10),
        source.delete(key),
        source.quarantine(key, "d"),
        source.quarantine("ok", key),
    ):
        with pytest.raises(UnsafeKey):
            await call
    assert (ssh_dir / "ok").exists()


async def test_wrong_key_is_a_clear_auth_error(ssh_dir: Path, tmp_path: Path, make_source: Any) -> None:
    import asyncssh

    stranger = tmp_path / "stranger_key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(stranger))
    source = make_source(ssh_dir, key_file=str(stranger))
    with pytest.raises(SourceAuthError, match="refused our key"):
        await source.read("anything", 10)


async def test_unknown_host_key_is_refused_by_default(
    ssh_dir: Path, tmp_path: Path, make_source: Any
) -> None:
    (ssh_dir / "f").write_bytes(b"x")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(SourceAuthError, match="host key not trusted"):
        await make_source(ssh_dir, known_hosts=str(empty)).read("f", 10)
    # The explicit opt-in for throwaway servers skips the check.
    assert await make_source(ssh_dir, known_hosts=None, insecure_host_key=True).read("f", 10) == b"x"


async def test_reconnects_after_the_connection_drops(ssh_dir: Path, make_source: Any) -> None:
    (ssh_dir / "f").write_bytes(b"x")
    source = make_source(ssh_dir)
    assert await source.read("f", 10) == b"x"
    assert source._conn is not None
    source._conn.abort()  # simulate a network drop under the open connection
    await asyncio.sleep(0.05)
    with pytest.raises(SourceError):
        await source.read("f", 10)
    assert await source.read("f", 10) == b"x"


async def test_missing_root_is_an_error(ssh_dir: Path, make_source: Any) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        _ = [o async for o in make_source(ssh_dir / "nope").list()]


async def test_listing_many_folders(ssh_dir: Path, make_source: Any) -> None:
    for i in range(600):
        d = ssh_dir / f"{i % 60:02d}" / f"{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i}").write_bytes(b"")
    source = make_source(ssh_dir)
    listed = [o.key async for o in source.list()]
    assert len(listed) == len(set(listed)) == 600
    assert max([o.modified async for o in source.list()]) <= datetime.now(UTC) + timedelta(seconds=5)
    # Stopping early cancels the listing workers; the connection stays usable.
    async with contextlib.aclosing(source.list()) as listing:
        async for _ in listing:
            break
    assert len([o async for o in source.list("00/")]) == 10


async def test_listing_goes_depth_first_with_few_pending_folders(ssh_dir: Path, make_source: Any) -> None:
    """pict-rs keeps one file per folder at the bottom of a fan-out tree: a breadth-first walk comes
    to hold almost every leaf folder at once, a depth-first one at most depth x fan-out per worker."""
    depth, fan_out = 4, 5
    expected: set[str] = set()
    folders = [""]
    for _ in range(depth):
        folders = [f"{parent}{i}/" for parent in folders for i in range(fan_out)]
    for folder in folders:
        (ssh_dir / folder).mkdir(parents=True)
        key = f"{folder}{uuid.uuid4()}"
        (ssh_dir / key).write_bytes(b"")
        expected.add(key)
    (ssh_dir / "top").write_bytes(b"")
    expected.add("top")
    source = make_source(ssh_dir, list_concurrency=4)
    listed = [o.key async for o in source.list()]
    assert len(listed) == len(expected) and set(listed) == expected  # every file, exactly once
    # Measured: 53 here; a breadth-first queue peaks at 624 (every leaf folder but one).
    assert 0 < source.peak_pending_dirs <= depth * fan_out * 4 < len(folders) / 4
    under = sorted(k for k in expected if k.startswith("1/"))
    assert sorted([o.key async for o in source.list("1/")]) == under


async def test_read_head(ssh_dir: Path, make_source: Any) -> None:
    (ssh_dir / "big").write_bytes(b"\x89PNG" + b"z" * 100_000)
    (ssh_dir / "empty").write_bytes(b"")
    source = make_source(ssh_dir)
    assert await source.read_head("big", 16) == b"\x89PNG" + b"z" * 12
    assert await source.read_head("empty", 16) == b""
    with pytest.raises(ObjectGone):
        await source.read_head("missing", 16)
    with pytest.raises(UnsafeKey):
        await source.read_head("../big", 16)


async def test_a_name_that_is_not_utf8_is_listed_and_read(
    ssh_dir: Path, sshd_server: Any, make_source: Any
) -> None:
    raw = os.fsencode(ssh_dir) + b"/bad\xff\xfe.png"
    with open(raw, "wb") as f:
        f.write(b"\x89PNG hostile name")
    (ssh_dir / "fine.png").write_bytes(b"\x89PNG fine")
    chown_tree(ssh_dir, sshd_server)
    source = make_source(ssh_dir)
    keys = sorted([o.key async for o in source.list()])
    bad = os.fsdecode(b"bad\xff\xfe.png")
    assert keys == sorted([bad, "fine.png"])
    assert await source.read(bad, 1000) == b"\x89PNG hostile name"
    await source.delete(bad)
    assert not os.path.exists(raw)
