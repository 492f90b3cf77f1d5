"""file:// source on real folders: layouts, symlinks, unreadable entries, caps, quarantine."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fediguard.storage import (
    ObjectChanged,
    ObjectGone,
    ObjectTooLarge,
    QuarantineConflict,
    QuarantineNotConfigured,
    SourceError,
    UnsafeKey,
    get_layout,
    iter_media,
    open_source,
)
from fediguard.storage import local as local_module
from fediguard.storage.local import LocalSource

from .test_base import HOSTILE_KEYS
from .trees import mastodon_tree, pictrs_tree

SRC = str(Path(__file__).resolve().parents[2] / "src")


async def keys(source: LocalSource, prefix: str = "", since: datetime | None = None) -> set[str]:
    return {o.key async for o in source.list(prefix, since)}


async def test_pictrs_tree(tmp_path: Path) -> None:
    media, other = pictrs_tree(tmp_path)
    source = open_source(tmp_path.as_uri())
    assert await keys(source) == set(media) | other  # type: ignore[arg-type]
    found = {o.key: o async for o in iter_media(source, get_layout("pictrs"))}
    assert set(found) == set(media)
    for key, data in media.items():
        assert found[key].size == len(data)
        assert found[key].modified.tzinfo is UTC
        assert await source.read(key, 1 << 20) == data


async def test_mastodon_tree(tmp_path: Path) -> None:
    media, other = mastodon_tree(tmp_path)
    source = LocalSource(tmp_path)
    found = {o.key async for o in iter_media(source, get_layout("mastodon"))}
    assert found == set(media)
    assert await keys(source, "media_attachments/fi") == {k for k in media if k.startswith("media_att")}
    assert await keys(source, "cache/") == {k for k in media if k.startswith("cache/")}
    assert await keys(source, "nowhere/") == set()
    assert other <= await keys(source)


async def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "dir").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_bytes(b"outside the root")
    (root / "dir" / "real").write_bytes(b"inside")
    (root / "link_file").symlink_to(outside / "secret")
    (root / "link_dir").symlink_to(outside)
    (root / "dir" / "link_inside").symlink_to(root / "dir" / "real")
    source = LocalSource(root)
    assert await keys(source) == {"dir/real"}
    with pytest.raises(UnsafeKey):  # loud, not an empty listing: that would hide unswept media
        await keys(source, "link_dir/")
    for key in ("link_file", "link_dir/secret", "dir/link_inside"):
        with pytest.raises(UnsafeKey):
            await source.read(key, 100)
    with pytest.raises(SourceError):
        await source.delete("link_file")
    with pytest.raises(UnsafeKey):
        await source.delete("link_dir/secret")
    assert (outside / "secret").read_bytes() == b"outside the root"
    assert (root / "link_file").is_symlink()


async def test_root_given_through_a_symlink_works(tmp_path: Path) -> None:
    (tmp_path / "real" / "a").mkdir(parents=True)
    (tmp_path / "real" / "a" / "f").write_bytes(b"x")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    source = LocalSource(tmp_path / "alias")
    assert await keys(source) == {"a/f"}
    assert await source.read("a/f", 10) == b"x"


async def test_non_regular_entries_fail_on_read_not_listing(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    (tmp_path / "ok").write_bytes(b"fine")
    source = LocalSource(tmp_path)
    assert await keys(source) == {"ok"}
    # A FIFO where a file is expected must fail at once, not block waiting for a writer.
    with pytest.raises(SourceError, match="not a regular file"):
        await asyncio.wait_for(source.read("fifo", 100), timeout=5)
    with pytest.raises(SourceError, match="not a regular file"):
        await source.read("dir", 100)


def test_permission_denied_is_a_source_error(tmp_path: Path) -> None:
    """Unreadable file and folder, with permissions really enforced.

    Root bypasses file modes through CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, so as root the check
    runs in a child process that keeps uid 0 but drops those two capabilities (setpriv).
    """
    root = tmp_path / "root"
    (root / "locked_dir").mkdir(parents=True)
    (root / "locked_dir" / "hidden").write_bytes(b"x")
    (root / "locked_file").write_bytes(b"secret")
    (root / "open_file").write_bytes(b"fine")
    (root / "locked_file").chmod(0)
    (root / "locked_dir").chmod(0)
    script = textwrap.dedent(f"""
        import asyncio, json, sys
        sys.path.insert(0, {SRC!r})
        from fediguard.storage import SourceError, quiet_listing
        from fediguard.storage.local import LocalSource
        async def count(source):
            quiet_listing.set(True)  # a counting pass: reports nothing the listing proper reports
            return sorted([o.key async for o in source.list()])
        async def main():
            source = LocalSource({str(root)!r})
            listed = sorted([o.key async for o in source.list()])
            assert await asyncio.create_task(count(source)) == listed
            try:
                await source.read("locked_file", 100)
                read = "read"
            except SourceError as exc:
                read = type(exc).__name__ + ": " + str(exc)
            print(json.dumps({{"listed": listed, "errors": source.listing_errors, "read": read}}))
        asyncio.run(main())
    """)
    cmd = [sys.executable, "-c", script]
    if os.geteuid() == 0:
        caps = "-dac_override,-dac_read_search"
        cmd = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", *cmd]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    finally:
        (root / "locked_dir").chmod(0o755)
    result = json.loads(done.stdout)
    assert result["listed"] == ["locked_file", "open_file"]  # listing went on past the locked folder
    assert result["errors"] == 1  # once: the counting pass does not count it again
    assert result["read"].startswith("SourceError") and "Permission denied" in result["read"]


async def test_zero_byte_and_non_media(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello\n")
    source = LocalSource(tmp_path)
    listed = {o.key: o.size async for o in source.list()}
    assert listed == {"empty": 0, "notes.txt": 6}
    assert await source.read("empty", 10) == b""
    assert await source.read("notes.txt", 10) == b"hello\n"
    assert [o async for o in iter_media(source, get_layout("pictrs"))] == []


@pytest.mark.parametrize("key", HOSTILE_KEYS)
async def test_hostile_keys(tmp_path: Path, key: str) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "secret").write_bytes(b"x")
    source = LocalSource(tmp_path / "root", quarantine_dir=tmp_path / "q")
    (tmp_path / "root" / "ok").write_bytes(b"x")
    for call in (
        source.read(key, 10),
        source.delete(key),
        source.quarantine(key, "d"),
        source.quarantine("ok", key),
        source.restore(key, "ok"),
    ):
        with pytest.raises(UnsafeKey):
            await call
    assert (tmp_path / "secret").exists() and (tmp_path / "root" / "ok").exists()


async def test_read_cap(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 1000)
    source = LocalSource(tmp_path)
    assert len(await source.read("f", 1000)) == 1000
    with pytest.raises(ObjectTooLarge) as info:
        await source.read("f", 999)
    assert info.value.size == 1000 and info.value.limit == 999


async def test_read_head(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"\x89PNG" + b"z" * 100_000)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "dir").mkdir()
    source = LocalSource(tmp_path)
    assert await source.read_head("big", 16) == b"\x89PNG" + b"z" * 12
    assert await source.read_head("empty", 16) == b""
    with pytest.raises(ObjectGone):
        await source.read_head("missing", 16)
    with pytest.raises(SourceError, match="not a regular file"):
        await source.read_head("dir", 16)


async def test_since_filters_by_mtime(tmp_path: Path) -> None:
    now = time.time()
    for name, age in (("old", 3600), ("new", 10)):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (now - age, now - age))
    source = LocalSource(tmp_path)
    cut = datetime.fromtimestamp(now - 60, UTC)
    assert await keys(source, since=cut) == {"new"}
    assert await keys(source, since=cut - timedelta(hours=2)) == {"old", "new"}
    with pytest.raises(ValueError, match="timezone-aware"):
        await keys(source, since=datetime(2020, 1, 1))


async def test_vanished_objects(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x")
    source = LocalSource(tmp_path)
    listed = [o async for o in source.list()]
    (tmp_path / "a" / "f").unlink()
    with pytest.raises(ObjectGone):
        await source.read(listed[0].key, 10)
    with pytest.raises(ObjectGone):
        await source.delete(listed[0].key)
    with pytest.raises(ObjectGone):
        await source.read("nothing/here", 10)


async def test_delete(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    source = LocalSource(tmp_path)
    await source.delete("f")
    assert not (tmp_path / "f").exists()


async def test_quarantine_and_restore(tmp_path: Path) -> None:
    root, qdir = tmp_path / "root", tmp_path / "quarantine"
    media, _ = pictrs_tree(root, count=2)
    key, data = next(iter(media.items()))
    source = LocalSource(root, quarantine_dir=qdir)
    await source.quarantine(key, f"2024/{key}")
    assert not (root / key).exists()
    assert (qdir / "2024" / key).read_bytes() == data
    assert key not in await keys(source)

    (root / key).parent.mkdir(parents=True, exist_ok=True)
    (root / key).write_bytes(b"a new file took the old name")
    with pytest.raises(QuarantineConflict):  # restore never overwrites
        await source.restore(f"2024/{key}", key)
    (root / key).unlink()
    await source.restore(f"2024/{key}", key)
    assert (root / key).read_bytes() == data
    assert not (qdir / "2024" / key).exists()

    (qdir / "taken").write_bytes(b"already quarantined")
    with pytest.raises(QuarantineConflict):  # quarantine never overwrites either
        await source.quarantine(key, "taken")
    assert (root / key).read_bytes() == data
    with pytest.raises(ObjectGone):
        await source.quarantine("not/there", "x")


async def test_quarantine_folder_inside_root_is_not_swept(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    source = LocalSource(tmp_path, quarantine_dir=tmp_path / ".quarantine")
    await source.quarantine("f", "f")
    assert (tmp_path / ".quarantine" / "f").exists()
    assert await keys(source) == set()


async def test_quarantine_across_filesystems(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs a second filesystem (/dev/shm) to force a copy instead of a hard link")
    qdir = shm / f"fediguard-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        (tmp_path / "f").write_bytes(os.urandom(3000))
        data = (tmp_path / "f").read_bytes()
        source = LocalSource(tmp_path, quarantine_dir=qdir)
        await source.quarantine("f", "sub/f")
        assert (qdir / "sub" / "f").read_bytes() == data and not (tmp_path / "f").exists()
        await source.restore("sub/f", "f")
        assert (tmp_path / "f").read_bytes() == data and not (qdir / "sub" / "f").exists()
    finally:
        import shutil

        shutil.rmtree(qdir, ignore_errors=True)


async def test_quarantine_needs_configuration(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(QuarantineNotConfigured):
        await LocalSource(tmp_path).quarantine("f", "f")


async def test_listing_streams_and_releases_descriptors(tmp_path: Path) -> None:
    for i in range(3000):
        d = tmp_path / f"{i % 300:03d}"
        d.mkdir(exist_ok=True)
        (d / f"{i}").write_bytes(b"")
    source = LocalSource(tmp_path)
    fds_before = len(os.listdir("/proc/self/fd"))
    seen = 0
    # aclosing: leaving an `async for` early does not close an async generator by itself.
    async with contextlib.aclosing(source.list()) as listing:
        async for _ in listing:
            seen += 1
            if seen == 1500:
                break
    assert len(os.listdir("/proc/self/fd")) <= fds_before
    assert len(await keys(source)) == 3000


async def test_concurrent_reads(tmp_path: Path) -> None:
    media, _ = pictrs_tree(tmp_path, count=12)
    source = LocalSource(tmp_path)
    results = await asyncio.gather(*(source.read(k, 1 << 20) for k in media))
    assert results == list(media.values())


def appending_reads(monkeypatch: pytest.MonkeyPatch, path: Path, times: int) -> list[int]:
    """The first ``times`` whole-file reads each see the file grow right after they end, as a
    writer still appending to it would make them. Gives the list of reads made so far."""
    real = local_module._read_up_to
    reads: list[int] = []

    def read_then_grow(fd: int, limit: int) -> bytes:
        data = real(fd, limit)
        reads.append(len(data))
        if len(reads) <= times:
            with path.open("ab") as f:
                f.write(b"+more")
        return data

    monkeypatch.setattr(local_module, "_read_up_to", read_then_grow)
    return reads


async def test_a_file_that_changes_while_read_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f").write_bytes(b"start")
    reads = appending_reads(monkeypatch, tmp_path / "f", times=1)
    fetched = await LocalSource(tmp_path).fetch("f", 100)
    assert fetched.data == b"start+more" and reads == [5, 10]
    st = os.stat(tmp_path / "f")
    assert fetched.object.size == 10 and fetched.object.modified.timestamp() == pytest.approx(st.st_mtime)


async def test_a_file_that_never_holds_still_is_not_described(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f").write_bytes(b"start")
    appending_reads(monkeypatch, tmp_path / "f", times=1000)
    with pytest.raises(ObjectChanged, match="kept changing while it was read"):
        await LocalSource(tmp_path).fetch("f", 1000)
