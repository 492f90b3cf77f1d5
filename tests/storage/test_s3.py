"""s3:// source against a real Ceph radosgw: pagination, since, caps, quarantine, auth errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from fediguard.storage import (
    ObjectGone,
    ObjectTooLarge,
    QuarantineConflict,
    SourceAuthError,
    UnsafeKey,
    get_layout,
    iter_media,
    open_source,
)
from fediguard.storage.s3 import S3Source

from .images import picture
from .test_base import HOSTILE_KEYS, MASTODON_MEDIA

pytestmark = pytest.mark.slow


def put_many(admin: Any, bucket: str, objects: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda kv: admin.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), objects.items()))


@pytest.fixture
async def make_source(s3_server: Any) -> AsyncIterator[Any]:
    opened: list[S3Source] = []

    def make(bucket: str, prefix: str = "", **options: Any) -> S3Source:
        options = {
            "endpoint_url": s3_server.endpoint_url,
            "region": s3_server.region,
            "access_key_id": s3_server.access_key,
            "secret_access_key": s3_server.secret_key,
            **options,
        }
        source = open_source(f"s3://{bucket}/{prefix}", **options)
        assert isinstance(source, S3Source)
        opened.append(source)
        return source

    yield make
    for source in opened:
        await source.close()


async def test_pagination_over_1000_keys(s3_admin: Any, s3_bucket: str, make_source: Any) -> None:
    keys = {f"files/{i % 37:02x}/{i:05d}" for i in range(1100)}
    put_many(s3_admin, s3_bucket, {k: b"x" for k in keys} | {"elsewhere/a": b"y"})
    listed = [o async for o in make_source(s3_bucket).list()]
    assert len(listed) == 1101 and len({o.key for o in listed}) == 1101
    under_files = {o.key async for o in make_source(s3_bucket, "files").list()}
    assert under_files == {k.removeprefix("files/") for k in keys}
    assert {o.key async for o in make_source(s3_bucket).list("files/0a/")} == {
        k for k in keys if k.startswith("files/0a/")
    }


async def test_objects_and_layouts(s3_admin: Any, s3_bucket: str, make_source: Any) -> None:
    media = {k: picture(i) for i, k in enumerate(MASTODON_MEDIA)}
    put_many(s3_admin, s3_bucket, media | {"backups/x.zip": b"PK", "folder/": b""})
    source = make_source(s3_bucket)
    found = {o.key: o async for o in iter_media(source, get_layout("mastodon"))}
    assert set(found) == set(media)
    key = MASTODON_MEDIA[0]
    assert found[key].size == len(media[key])
    assert found[key].etag and '"' not in found[key].etag
    assert found[key].modified.utcoffset() == timedelta(0)
    assert await source.read(key, 1 << 20) == media[key]
    assert "folder/" not in {o.key async for o in source.list()}  # folder markers are not objects


async def test_since(s3_admin: Any, s3_bucket: str, make_source: Any) -> None:
    s3_admin.put_object(Bucket=s3_bucket, Key="old", Body=b"1")
    time.sleep(1.1)
    s3_admin.put_object(Bucket=s3_bucket, Key="new", Body=b"2")
    source = make_source(s3_bucket)
    listed = {o.key: o.modified async for o in source.list()}
    assert {o.key async for o in source.list(since=listed["new"])} == {"new"}  # inclusive bound
    assert {o.key async for o in source.list(since=listed["old"])} == {"old", "new"}
    assert [o async for o in source.list(since=listed["new"] + timedelta(seconds=1))] == []


async def test_read_cap_and_empty_objects(s3_admin: Any, s3_bucket: str, make_source: Any) -> None:
    s3_admin.put_object(Bucket=s3_bucket, Key="big", Body=b"z" * 1000)
    s3_admin.put_object(Bucket=s3_bucket, Key="empty", Body=b"")
    source = make_source(s3_bucket)
    assert await source.read("big", 1000) == b"z" * 1000
    with pytest.raises(ObjectTooLarge) as info:
        await source.read("big", 999)
    assert info.value.size == 1000
    assert await source.read("empty", 10) == b""


async def test_vanished_and_delete(s3_admin: Any, s3_bucket: str, make_source: Any) -> None:
    s3_admin.put_object(Bucket=s3_bucket, Key="a/f", Body=b"x")
    source = make_source(s3_bucket)
    listed = [o async for o in source.list()]
    s3_admin.delete_object(Bucket=s3_bucket, Key="a/f")
    with pytest.raises(ObjectGone):
        await source.read(listed[0].key, 10)
    with pytest.raises(ObjectGone):
        await source.delete("a/f")
    s3_admin.put_object(Bucket=s3_bucket, Key="a/g", Body=b"x")
    await source.delete("a/g")
    assert s3_admin.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


async def test_quarantine_and_restore(s3_admin: Any, s3_bucket: str, make_source: Any) -> None:
    qbucket = f"{s3_bucket}-q"
    s3_admin.create_bucket(Bucket=qbucket)
    data = picture(7)
    s3_admin.put_object(Bucket=s3_bucket, Key="files/ab/img", Body=data, ContentType="image/png")
    source = make_source(s3_bucket, "files", quarantine_bucket=qbucket, quarantine_prefix="held")
    await source.quarantine("ab/img", "2024/ab/img")
    held = s3_admin.get_object(Bucket=qbucket, Key="held/2024/ab/img")
    assert held["Body"].read() == data and held["ContentType"] == "image/png"
    assert [o async for o in source.list()] == []
    with pytest.raises(ObjectGone):
        await source.read("ab/img", 1 << 20)

    s3_admin.put_object(Bucket=s3_bucket, Key="files/ab/img", Body=b"newcomer")
    with pytest.raises(QuarantineConflict):
        await source.restore("2024/ab/img", "ab/img")
    s3_admin.delete_object(Bucket=s3_bucket, Key="files/ab/img")
    await source.restore("2024/ab/img", "ab/img")
    assert await source.read("ab/img", 1 << 20) == data
    assert s3_admin.list_objects_v2(Bucket=qbucket).get("KeyCount") == 0

    s3_admin.put_object(Bucket=qbucket, Key="held/taken", Body=b"x")
    with pytest.raises(QuarantineConflict):
        await source.quarantine("ab/img", "taken")
    with pytest.raises(ObjectGone):
        await source.quarantine("no/such", "elsewhere")


async def test_quarantine_prefix_in_the_swept_bucket_is_skipped(
    s3_admin: Any, s3_bucket: str, make_source: Any
) -> None:
    s3_admin.put_object(Bucket=s3_bucket, Key="img", Body=b"x")
    source = make_source(s3_bucket, quarantine_prefix="quarantine")
    await source.quarantine("img", "img")
    assert [o.key async for o in source.list()] == []
    assert s3_admin.head_object(Bucket=s3_bucket, Key="quarantine/img")["ContentLength"] == 1


async def test_wrong_secret_is_a_clear_auth_error(s3_bucket: str, make_source: Any) -> None:
    source = make_source(s3_bucket, secret_access_key="not-the-secret")
    with pytest.raises(SourceAuthError, match="SignatureDoesNotMatch"):
        _ = [o async for o in source.list()]
    with pytest.raises(SourceAuthError):
        await source.read("anything", 10)


async def test_credentials_from_environment(
    s3_server: Any, s3_admin: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_admin.put_object(Bucket=s3_bucket, Key="k", Body=b"v")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    source = open_source(f"s3://{s3_bucket}", endpoint_url=s3_server.endpoint_url, region="default")
    try:
        assert await source.read("k", 10) == b"v"
    finally:
        await source.close()


@pytest.mark.parametrize("key", ["", "a\x00b"])
async def test_keys_no_object_can_have_never_reach_the_server(
    s3_bucket: str, make_source: Any, key: str
) -> None:
    source = make_source(s3_bucket, quarantine_prefix="q")
    for call in (
        source.read(key, 10),
        source.delete(key),
        source.quarantine(key, "d"),
        source.quarantine("ok", key),
    ):
        with pytest.raises(UnsafeKey):
            await call


@pytest.mark.parametrize("key", [k for k in HOSTILE_KEYS if k and "\x00" not in k])
async def test_path_like_keys_are_objects_of_their_own(
    s3_admin: Any, s3_bucket: str, make_source: Any, key: str
) -> None:
    """S3 resolves no '..' and no '//': 'a/../b' is one object, read and moved as it is."""
    s3_admin.put_object(Bucket=s3_bucket, Key=f"root/{key}", Body=b"odd")
    s3_admin.put_object(Bucket=s3_bucket, Key="root/b", Body=b"plain b")
    source = make_source(s3_bucket, "root", quarantine_prefix="q")
    assert {o.key async for o in source.list()} == {key, "b"}
    assert await source.read(key, 10) == b"odd"
    await source.quarantine(key, key)
    assert s3_admin.get_object(Bucket=s3_bucket, Key=f"q/{key}")["Body"].read() == b"odd"
    await source.restore(key, key)
    assert await source.read(key, 10) == b"odd" and await source.read("b", 10) == b"plain b"
    assert "q/" + key not in {o["Key"] for o in s3_admin.list_objects_v2(Bucket=s3_bucket)["Contents"]}


async def test_concurrent_reads(s3_admin: Any, s3_bucket: str, make_source: Any) -> None:
    objects = {f"k{i}": picture(i) for i in range(24)}
    put_many(s3_admin, s3_bucket, objects)
    source = make_source(s3_bucket)
    assert await asyncio.gather(*(source.read(k, 1 << 20) for k in objects)) == list(objects.values())


async def test_read_head(s3_admin: Any, s3_bucket: str, make_source: Any) -> None:
    s3_admin.put_object(Bucket=s3_bucket, Key="big", Body=b"\x89PNG" + b"z" * 100_000)
    s3_admin.put_object(Bucket=s3_bucket, Key="empty", Body=b"")
    source = make_source(s3_bucket)
    assert await source.read_head("big", 16) == b"\x89PNG" + b"z" * 12
    assert await source.read_head("empty", 16) == b""
    with pytest.raises(ObjectGone):
        await source.read_head("missing", 16)
