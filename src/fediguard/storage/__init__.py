"""Storage sources the sweeper reads: a local folder, S3-compatible buckets, SFTP servers."""

from fediguard.storage.base import Fetched, Source, StoredObject, check_key, check_object_key, quiet_listing
from fediguard.storage.errors import (
    ObjectChanged,
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
    "Fetched",
    "Layout",
    "ObjectChanged",
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
    "check_object_key",
    "get_layout",
    "iter_media",
    "open_source",
    "quiet_listing",
]
