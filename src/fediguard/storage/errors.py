"""Errors a storage source raises. Each names one failure the sweeper handles differently."""

from __future__ import annotations

from fediguard.errors import FediguardError
from fediguard.logs import shown


class SourceError(FediguardError):
    """A storage operation failed (unreadable object, refused key, server error...).

    Its message is one printable line, whatever names or server text it quotes: control characters,
    backslashes and bytes that are not UTF-8 are shown escaped (:func:`fediguard.logs.shown`), so it
    is logged and printed as it is. Quote names raw (``'{key}'``), never with ``!r``."""

    def __init__(self, message: str = "") -> None:
        super().__init__(shown(message))


class UnsafeKey(SourceError):
    """A key that could escape the source root or alias another key (``..``, absolute, NUL...)."""


class ObjectGone(SourceError):
    """The object vanished between listing and the operation (deleted, moved): nothing to scan."""


class ObjectChanged(SourceError):
    """The object kept changing while it was read: the bytes read may be no version of it at all.
    Nothing is decided about it; it is read again on the next pass."""


class ObjectTooLarge(SourceError):
    """The object is larger than the caller's limit; it was not read whole."""

    def __init__(self, key: str, size: int | None, limit: int) -> None:
        what = "more than" if size is None else f"{size} bytes,"
        super().__init__(f"'{key}' is {what} over the {limit}-byte limit")
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
