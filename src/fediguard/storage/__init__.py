"""Storage sources the sweeper reads: a local folder, S3-compatible buckets, SFTP servers."""

from fediguard.storage.base import Source, StoredObject, check_key, quiet_listing
from fediguard.storage.errors import (
    ObjectGone,
    ObjectTooLarge,
    QuarantineConflict,
    QuarantineNotConfigured,
    SourceAuthError,
    SourceError,
    SourceUnavailable,
    UnsafeKey,
)
from fediguard.storage.layouts import LAYOUTS, Layout, get_layout, iter_media
from fediguard.storage.open import open_source

__all__ = [
    "LAYOUTS",
    "Layout",
    "ObjectGone",
    "ObjectTooLarge",
    "QuarantineConflict",
    "QuarantineNotConfigured",
    "Source",
    "SourceAuthError",
    "SourceError",
    "SourceUnavailable",
    "StoredObject",
    "UnsafeKey",
    "check_key",
    "get_layout",
    "iter_media",
    "open_source",
    "quiet_listing",
]
