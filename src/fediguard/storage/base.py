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
        """The object's bytes. Raises ObjectGone, ObjectTooLarge (before reading it whole),
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


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative '/'-separated key, else raise UnsafeKey.

    Refused: empty, absolute, NUL, '.' or '..' segments, empty segments ('a//b', trailing '/'),
    backslashes. The last two alias other keys on some backends, so one object could be scanned
    under one key and served under another.
    """
    if not key:
        raise UnsafeKey("empty key")
    if "\x00" in key:
        raise UnsafeKey(f"key contains NUL: {key!r}")
    if key.startswith("/"):
        raise UnsafeKey(f"absolute key: {key!r}")
    if "\\" in key:
        raise UnsafeKey(f"key contains a backslash: {key!r}")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise UnsafeKey(f"key has an empty, '.' or '..' segment: {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: '' or a key-like string that may end with '/'."""
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") and len(prefix) > 1 else prefix)
    return prefix
