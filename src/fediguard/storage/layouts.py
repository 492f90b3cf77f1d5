"""Which keys are media, per server software: data, not code. A layout names the prefixes to
walk and a pattern a key must match in full; keys are relative to the source root.

pict-rs (read from its source, 0.4 and 0.5): the file store writes ``<root>/<dirs>/<name>`` where
``<root>`` defaults to ``/mnt/files`` (so a source rooted at pict-rs's data folder sees a
``files/`` prefix, one rooted at ``files`` does not); the object store writes the same
``<dirs>/<name>`` as the object key, with no ``files/`` prefix. ``<dirs>`` come from a path
generator: 0.5 splits a UUIDv7 into six two-hex-digit folders (``01/8f/3a/9c/0e/7b``), 0.4 used a
counter-based generator with short numeric folders. ``<name>`` is a UUIDv4, optionally followed by
a file extension (0.5's file store appends one, the object store does not). Derived variants
(thumbnails) are stored the same way and are swept too. Anything else (``sled-repo/``, temp files)
never matches.

Mastodon (Paperclip): ``[cache/]<class>/<attachment>/<id partition>/<style>/<file>`` under
``public/system`` or the bucket root; ``cache/`` holds copies of remote media, the id partition is
the zero-padded id in three-digit groups, and the style folder names a rendition (read from
Mastodon's models): ``original`` for every attachment; ``small`` (media previews, video poster
frames); ``static`` (still PNGs of animated avatars, headers and custom emojis); and for site
uploads, ``@1x`` / ``@2x`` (the server thumbnail) and the pixel sizes of app icons and favicons
(``16`` … ``1024``). Every rendition is swept: a derived one is what visitors see.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from fediguard.errors import ConfigError
from fediguard.storage.base import Source, StoredObject


@dataclass(frozen=True)
class Layout:
    name: str
    prefixes: tuple[str, ...]
    """Prefixes to list; '' walks everything. They never overlap, so no key is listed twice."""
    pattern: re.Pattern[str]

    def is_media(self, key: str) -> bool:
        return self.pattern.fullmatch(key) is not None


_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

# Mastodon attachments that hold pictures or videos, relative to public/system (or the bucket).
_MASTODON_ATTACHMENTS = (
    "media_attachments/files",
    "media_attachments/thumbnails",  # poster frames of videos and audio
    "accounts/avatars",
    "accounts/headers",
    "preview_cards/images",  # link previews
    "custom_emojis/images",
    "site_uploads/files",  # server thumbnail, banners
)


# Paperclip style folders: named renditions, site uploads' densities (@1x, @2x...) and icon sizes.
_MASTODON_STYLES = r"(?:original|small|static|@[1-9]x|[1-9][0-9]{0,3})"


def _mastodon() -> Layout:
    bases = tuple(f"{cache}{path}/" for path in _MASTODON_ATTACHMENTS for cache in ("", "cache/"))
    alternatives = "|".join(re.escape(b) for b in bases)
    pattern = re.compile(rf"(?:{alternatives})(?:\d{{3}}/)+{_MASTODON_STYLES}/[^/]+")
    return Layout("mastodon", bases, pattern)


LAYOUTS: dict[str, Layout] = {
    "pictrs": Layout(
        "pictrs",
        ("",),
        re.compile(rf"(?:files/)?(?:[0-9A-Za-z]{{1,8}}/){{1,12}}{_UUID}(?:\.[0-9A-Za-z]{{1,5}})?"),
    ),
    "mastodon": _mastodon(),
    "plain": Layout("plain", ("",), re.compile(r".+", re.DOTALL)),
}


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ConfigError(f"unknown layout {name!r}; choose one of {', '.join(sorted(LAYOUTS))}") from None


async def iter_media(
    source: Source, layout: Layout, since: datetime | None = None
) -> AsyncIterator[StoredObject]:
    """Stream the objects of ``source`` that ``layout`` says are media."""
    for prefix in layout.prefixes:
        async for obj in source.list(prefix, since=since):
            if layout.is_media(obj.key):
                yield obj
