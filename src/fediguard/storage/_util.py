"""Helpers shared by the source implementations (not public API)."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(since: datetime | None) -> datetime | None:
    """Normalise a ``since`` bound to aware UTC; a naive datetime is a caller bug, not "local time"."""
    if since is None:
        return None
    if since.tzinfo is None or since.utcoffset() is None:
        raise ValueError("since must be a timezone-aware datetime")
    return since.astimezone(UTC)


def from_timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def wanted(key: str, prefix: str, modified: datetime, since: datetime | None) -> bool:
    return key.startswith(prefix) and (since is None or modified >= since)
