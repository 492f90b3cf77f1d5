"""Turn a source URL plus options into a Source: file:///path, s3://bucket/prefix, ssh://user@host/path."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from fediguard.errors import ConfigError
from fediguard.storage.base import Source
from fediguard.storage.local import LocalSource
from fediguard.storage.s3 import S3Source
from fediguard.storage.ssh import SSHSource

if TYPE_CHECKING:  # mypy proves each class satisfies the Source protocol
    _SOURCES: tuple[type[Source], ...] = (LocalSource, S3Source, SSHSource)


def open_source(url: str, **options: Any) -> Source:
    """Open the source named by ``url``. Options are the keyword arguments of the matching class:

    - ``file:///srv/pictrs/files``: quarantine_dir, name
    - ``s3://bucket/prefix``: endpoint_url, region, quarantine_bucket, quarantine_prefix, profile,
      access_key_id, secret_access_key, name, max_workers, page_size, connect_timeout, read_timeout
    - ``ssh://user@host[:port]/path`` (or ``sftp://``): key_file, known_hosts, insecure_host_key,
      quarantine_path, name, connect_timeout, list_concurrency

    Unknown options raise ConfigError, so a typo never silently drops a setting.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"file URL must be local (file:///path), got {url!r}")
        return _build(LocalSource, url, options, unquote(parts.path))
    if scheme == "s3":
        if not parts.netloc:
            raise ConfigError(f"s3 URL needs a bucket (s3://bucket/prefix), got {url!r}")
        return _build(S3Source, url, options, parts.netloc, unquote(parts.path))
    if scheme in ("ssh", "sftp"):
        if parts.password is not None:
            raise ConfigError("ssh URL: passwords are not supported, use key_file")
        if not parts.hostname:
            raise ConfigError(f"ssh URL needs a host (ssh://user@host/path), got {url!r}")
        try:
            port = parts.port or 22
        except ValueError as exc:
            raise ConfigError(f"ssh URL has an invalid port: {url!r}") from exc
        user = unquote(parts.username) if parts.username else None
        return _build(
            SSHSource,
            url,
            {"user": user, "port": port, **options},
            parts.hostname,
            unquote(parts.path) or "/",
        )
    raise ConfigError(f"unsupported storage URL scheme {parts.scheme!r} in {url!r} (file, s3, ssh)")


def _build(cls: type[Any], url: str, options: dict[str, Any], *args: Any) -> Source:
    params = inspect.signature(cls).parameters
    allowed = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} for {url!r}; allowed: {', '.join(sorted(allowed))}"
        )
    source: Source = cls(*args, **options)
    return source
