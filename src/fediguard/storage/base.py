"""What every storage source offers the sweeper: listing, bounded reads, delete and quarantine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from fediguard.storage.errors import UnsafeKey

quiet_listing: ContextVar[bool] = ContextVar("quiet_listing", default=False)
"""Set in a task that lists a source a second time (to count what is ahead): the sources then
neither log nor count the directories they cannot read, which the main listing already reports."""


@dataclass(frozen=True)
class StoredObject:
    """One object as listed: ``key`` is relative to the source root, '/'-separated."""

    key: str
    size: int
    modified: datetime
    """Last modification, timezone-aware UTC."""
    etag: str | None
    """The backend's content tag where it has one (S3 ETag, quotes stripped); None otherwise."""


@dataclass(frozen=True)
class Fetched:
    """An object's bytes and what they are: ``object.size`` is ``len(data)``, and its modification
    time and ETag are those of the very bytes read (not of the listing, which may be older)."""

    data: bytes
    object: StoredObject


@runtime_checkable
class Source(Protocol):
    """A place media is stored. Every method is safe to call concurrently from one event loop."""

    @property
    def name(self) -> str:
        """A short label for logs and records."""
        ...

    @property
    def url(self) -> str:
        """The source URL, without credentials, for records."""
        ...

    def list(self, prefix: str = "", since: datetime | None = None) -> AsyncIterator[StoredObject]:
        """Stream every regular object whose key starts with ``prefix``.

        Memory stays flat however many objects there are. ``since`` keeps objects modified at or
        after that instant (inclusive, so a saved high-water mark never misses an object sharing
        its timestamp). Symlinks are never followed or listed; order is unspecified.
        """
        ...

    async def read(self, key: str, max_bytes: int) -> bytes:
        """The object's bytes: ``(await fetch(key, max_bytes)).data``."""
        ...

    async def fetch(self, key: str, max_bytes: int) -> Fetched:
        """The object's bytes with the size, modification time and ETag of those bytes, taken so
        that an object rewritten since it was listed is described as read. Raises ObjectGone,
        ObjectTooLarge (before reading it whole), ObjectChanged (it kept changing while read),
        UnsafeKey, or SourceError."""
        ...

    async def read_head(self, key: str, n: int) -> bytes:
        """The object's first ``n`` bytes (fewer if it is shorter), without reading the rest: enough
        to tell whether a large object is media. Raises ObjectGone, UnsafeKey, or SourceError."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object. Raises ObjectGone if it is already missing."""
        ...

    async def quarantine(self, key: str, dest_key: str) -> None:
        """Move the object to ``dest_key`` inside the quarantine location (never overwriting)."""
        ...

    async def restore(self, dest_key: str, key: str) -> None:
        """Move a quarantined object back to ``key`` (never overwriting)."""
        ...

    async def close(self) -> None:
        """Release connections and threads. Idempotent."""
        ...


def check_object_key(key: str) -> str:
    """Return ``key`` if it can name an object in a bucket (S3), else raise UnsafeKey.

    An object key is an opaque name, not a path: 'a/../b', '/x', 'a//b', '..' or 'back\\slash' each
    name one object of their own, which S3 stores, lists, reads and copies as it is. Only an empty
    key (the bucket itself) and NUL (which S3 refuses) are refused.
    """
    if not key:
        raise UnsafeKey("empty key")
    if "\x00" in key:
        raise UnsafeKey(f"key contains NUL: '{key}'")
    return key


def check_key(key: str) -> str:
    """Return ``key`` if it names a file under a folder's root (local, or over SFTP), else raise
    UnsafeKey.

    Refused: empty, absolute, NUL, and '.', '..' or empty segments ('a//b', a trailing '/'): no
    listing of a folder gives such a key, and each could reach a file outside the root or under
    another name. Every other byte is an ordinary part of a POSIX name and is accepted: backslash,
    newline and other control characters, a leading '-', bytes that are not UTF-8 (surrogates, as
    os.fsdecode gives them). Refusing any of them would leave such a file unscanned forever.
    """
    check_object_key(key)
    if key.startswith("/"):
        raise UnsafeKey(f"absolute key: '{key}'")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise UnsafeKey(f"key has an empty, '.' or '..' segment: '{key}'")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: '' or a key-like string that may end with '/'."""
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") and len(prefix) > 1 else prefix)
    return prefix
