"""Errors a storage source raises. Each names one failure the sweeper handles differently."""

from __future__ import annotations

from fediguard.errors import FediguardError


class SourceError(FediguardError):
    """A storage operation failed (unreadable object, refused key, server error...)."""


class UnsafeKey(SourceError):
    """A key that could escape the source root or alias another key (``..``, absolute, NUL...)."""


class ObjectGone(SourceError):
    """The object vanished between listing and the operation (deleted, moved): nothing to scan."""


class ObjectTooLarge(SourceError):
    """The object is larger than the caller's limit; it was not read whole."""

    def __init__(self, key: str, size: int | None, limit: int) -> None:
        shown = "more than" if size is None else f"{size} bytes,"
        super().__init__(f"{key!r} is {shown} over the {limit}-byte limit")
        self.key = key
        self.size = size
        self.limit = limit


class SourceAuthError(SourceError):
    """The server refused our credentials, or we refused its identity (unknown SSH host key)."""


class SourceUnavailable(SourceError):
    """The server could not be reached or dropped the connection; a later retry may work."""


class QuarantineConflict(SourceError):
    """The quarantine (or restore) destination already exists; we never overwrite."""


class QuarantineNotConfigured(SourceError):
    """quarantine/restore was called on a source opened without a quarantine location."""
