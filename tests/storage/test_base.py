"""Key safety, URL parsing and layouts: pure logic, no server."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fediguard.errors import ConfigError, FediguardError
from fediguard.logs import shown
from fediguard.storage import (
    LAYOUTS,
    ObjectGone,
    SourceError,
    StoredObject,
    UnsafeKey,
    check_key,
    check_object_key,
    get_layout,
    iter_media,
    open_source,
)
from fediguard.storage.local import LocalSource
from fediguard.storage.s3 import S3Source
from fediguard.storage.ssh import SSHSource

HOSTILE_KEYS = [
    "",
    "/etc/passwd",
    "../secret",
    "a/../../b",
    "a/./b",
    ".",
    "..",
    "a//b",
    "a/",
    "a\x00b",
]
"""Keys no folder listing gives, each of which could reach a file outside the root (or another
name): refused for folders (local, SFTP). In a bucket only "" and NUL are refused (check_object_key)."""


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_hostile_keys_are_refused(key: str) -> None:
    with pytest.raises(UnsafeKey):
        check_key(key)


ODD_NAMES = [
    "back\\slash.jpg",
    "a\\..\\b",
    "dir\\/x.png",
    "new\nline.jpg",
    "esc\x1b[31mred.jpg",
    "-rf.png",
    "--help",
    "tab\t\r.png",
    "\u202egnp.exe",
    os.fsdecode(b"bad\xff\xfe.png"),
    "x" * 255,
]
"""Names a folder may hold, each an ordinary name to open, scan, quarantine and restore."""


@pytest.mark.parametrize(
    "key", ["a", "files/01/8f/x.webp", "sp ace", "ünïcode/ké", "..a/b..", ".hidden", *ODD_NAMES]
)
def test_ordinary_keys_pass(key: str) -> None:
    assert check_key(key) == key
    assert check_object_key(key) == key


@pytest.mark.parametrize("key", ["a/../b", "../up", "/lead", "a//b", "..", ".", "trail/", "a\\..\\b"])
def test_object_keys_are_opaque_names(key: str) -> None:
    """In a bucket, path-like keys name objects of their own (S3 resolves no '..')."""
    assert check_object_key(key) == key


@pytest.mark.parametrize("key", ["", "a\x00b"])
def test_no_object_has_an_empty_key_or_nul(key: str) -> None:
    with pytest.raises(UnsafeKey):
        check_object_key(key)


def test_errors_share_the_project_base() -> None:
    assert issubclass(UnsafeKey, SourceError)
    assert issubclass(ObjectGone, SourceError)
    assert issubclass(SourceError, FediguardError)


def test_open_file_url(tmp_path: Path) -> None:
    source = open_source(tmp_path.as_uri(), quarantine_dir=str(tmp_path / "q"))
    assert isinstance(source, LocalSource)
    assert source.url == tmp_path.resolve().as_uri()


def test_open_s3_url() -> None:
    source = open_source(
        "s3://media/pictrs/files",
        endpoint_url="http://127.0.0.1:9",
        region="x",
        access_key_id="a",
        secret_access_key="b",
        quarantine_prefix="quarantine",
    )
    assert isinstance(source, S3Source)
    assert source.url == "s3://media/pictrs/files/"


def test_open_ssh_url() -> None:
    source = open_source("ssh://alice@files.example:2222/srv/pictrs/files", key_file="/k")
    assert isinstance(source, SSHSource)
    assert source.url == "ssh://alice@files.example:2222/srv/pictrs/files"


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("ftp://host/x", {}),
        ("file://otherhost/x", {}),
        ("s3:///nobucket", {}),
        ("ssh://alice:pw@host/x", {}),
        ("ssh://alice@host:99999/x", {}),
        ("ssh://alice@host/x", {"password": "nope"}),
        ("file:///tmp", {"endpoint_url": "http://x"}),  # an S3 option on a file source: a typo/mix-up
        ("s3://bucket/files", {"quarantine_prefix": ""}),  # quarantine would contain the swept prefix
    ],
)
def test_bad_urls_and_options_are_config_errors(url: str, options: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        open_source(url, **options)


def test_missing_local_root_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        open_source((tmp_path / "nope").as_uri())


PICTRS_MEDIA = [
    "files/01/8f/3a/9c/0e/7b/6b2d3f1e-8c4a-4b7e-9f10-2a3b4c5d6e7f.webp",  # 0.5 file store
    "01/8f/3a/9c/0e/7b/6b2d3f1e-8c4a-4b7e-9f10-2a3b4c5d6e7f",  # 0.5 object store
    "files/000/000/001/6b2d3f1e-8c4a-4b7e-9f10-2a3b4c5d6e7f",  # 0.4 style generator folders
]
PICTRS_OTHER = [
    "sled-repo/db",
    "files/readme.txt",
    "files/01/8f/not-a-uuid.png",
    "6b2d3f1e-8c4a-4b7e-9f10-2a3b4c5d6e7f",
    "sled-repo/snap.6b2d3f1e-8c4a-4b7e-9f10-2a3b4c5d6e7f",
]
MASTODON_MEDIA = [
    "media_attachments/files/109/348/123/456/789/012/original/0a1b2c3d4e5f6a7b.png",
    "media_attachments/files/109/348/123/456/789/012/small/0a1b2c3d4e5f6a7b.png",
    "cache/media_attachments/files/110/000/000/000/000/001/original/f.jpg",
    "cache/preview_cards/images/000/123/456/original/card.jpg",
    "accounts/avatars/000/000/001/original/me.gif",
    "cache/accounts/headers/109/000/000/000/000/002/static/h.png",
    "site_uploads/files/000/000/001/original/thumb.png",
    "site_uploads/files/000/000/001/@1x/thumb.png",  # the server thumbnail's renditions
    "site_uploads/files/000/000/001/@2x/thumb.png",
    "site_uploads/files/000/000/003/16/favicon.png",  # favicon and app icon sizes
    "site_uploads/files/000/000/004/1024/app_icon.png",
    "custom_emojis/images/000/000/007/static/blob.png",
    "media_attachments/thumbnails/110/000/000/000/000/009/original/poster.jpg",
]
MASTODON_OTHER = [
    "backups/dump.zip",
    "imports/000/000/001/original/follows.csv.gz",
    "media_attachments/files/original/x.png",
    "cache/other/000/original/x.png",
    "site_uploads/files/000/000/001/@x/thumb.png",
    "site_uploads/files/000/000/001/0/thumb.png",
    "site_uploads/files/000/000/001/thumbnail/thumb.png",
    "site_uploads/files/000/000/001/@1x/sub/thumb.png",
]


def test_pictrs_layout() -> None:
    layout = get_layout("pictrs")
    assert all(layout.is_media(k) for k in PICTRS_MEDIA)
    assert not any(layout.is_media(k) for k in PICTRS_OTHER)


def test_mastodon_layout() -> None:
    layout = get_layout("mastodon")
    assert all(layout.is_media(k) for k in MASTODON_MEDIA)
    assert not any(layout.is_media(k) for k in MASTODON_OTHER)
    # Walk prefixes never overlap, so no key is listed twice.
    for a in layout.prefixes:
        assert not any(b != a and b.startswith(a) for b in layout.prefixes)


def test_plain_layout_takes_everything() -> None:
    assert all(LAYOUTS["plain"].is_media(k) for k in [*PICTRS_OTHER, *MASTODON_OTHER])


def test_unknown_layout() -> None:
    with pytest.raises(ConfigError):
        get_layout("pixelfed")


class _FakeSource:
    """Answers list() from a fixed key list, recording the prefixes asked for."""

    name = url = "fake:"

    def __init__(self, keys: list[str]) -> None:
        self.keys, self.prefixes = keys, []  # type: list[str], list[str]

    async def list(self, prefix: str = "", since: datetime | None = None):  # type: ignore[no-untyped-def]
        self.prefixes.append(prefix)
        for key in self.keys:
            if key.startswith(prefix):
                yield StoredObject(key, 1, datetime(2024, 1, 1, tzinfo=UTC), None)


async def test_iter_media_walks_the_layout_prefixes_only() -> None:
    source = _FakeSource([*MASTODON_MEDIA, *MASTODON_OTHER])
    found = [o.key async for o in iter_media(source, get_layout("mastodon"))]  # type: ignore[arg-type]
    assert sorted(found) == sorted(MASTODON_MEDIA)
    assert "" not in source.prefixes


@pytest.mark.parametrize(("name", "expected"), [
    ("files/01/ünïcode 漢字.png", "files/01/ünïcode 漢字.png"),
    ("back\\slash.jpg", "back\\\\slash.jpg"),
    ("new\nline\r\t.jpg", "new\\nline\\r\\t.jpg"),
    ("esc\x1b[31mred\x1b[0m", "esc\\x1b[31mred\\x1b[0m"),
    ("del\x7f\x00nul", "del\\x7f\\x00nul"),
    ("line\u2028sep\u202eoverride\x85", "line\\u2028sep\\u202eoverride\\x85"),
    (os.fsdecode(b"bad\xff\xfe.png"), "bad\\xff\\xfe.png"),
])  # fmt: skip
def test_names_are_shown_escaped(name: str, expected: str) -> None:
    assert shown(name) == expected and expected.isprintable()


def test_storage_errors_show_names_escaped() -> None:
    message = str(ObjectGone("'new\nline\x1b[31m.jpg' is gone"))
    assert message == "'new\\nline\\x1b[31m.jpg' is gone"
